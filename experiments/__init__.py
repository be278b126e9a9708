"""Reproductions of the SEEM paper's findings on CPU-sized problems (docs/results.md).

Not part of the `seem_ray` package: each module is a script, `python -m experiments.<name>
[--quick]`, that writes its figures to docs/figures/ and its numbers to
runs/experiments/<name>.json; `experiments.run_all` runs them all and rebuilds docs/results.md.
"""
