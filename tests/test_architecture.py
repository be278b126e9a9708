"""The numerical core stays free of Ray, MLflow and Optuna (style.md rule 4)."""

from __future__ import annotations

import subprocess
import sys

CORE = [
    "seem_ray.config",
    "seem_ray.metrics",
    "seem_ray.runtime",
    "seem_ray.data.batches",
    "seem_ray.data.subsample",
    "seem_ray.data.normalize",
    "seem_ray.nets",
    "seem_ray.algos",
    "seem_ray.seem",
    "seem_ray.divergence",
    "seem_ray.loop",
    "seem_ray.checkpoint",
    "seem_ray.runner",
    "seem_ray.external",
]


def test_core_modules_do_not_import_frameworks() -> None:
    code = (
        "import sys, importlib\n"
        f"for m in {CORE!r}: importlib.import_module(m)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'mlflow', 'optuna'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"core imports frameworks: {out.stdout.strip()}"
