"""SEEM, MLflow logging and the divergence stop inside a d3rlpy ``fit(...)``.

d3rlpy's TD3+BC on a local Minari dataset (made with ``seem-ray datasets make
pointmaze-umaze-dense``), with a :class:`SeemCallback` that probes d3rlpy's own Q function at
the shipped cadence, logs ``seem/*`` to an MLflow run (sqlite store) and ends training on a
diverging verdict. Needs the optional peer: ``make bench-deps``.

    python examples/seem_d3rlpy.py                  # healthy TD3+BC: runs all 1000 steps
    python examples/seem_d3rlpy.py --no-bc          # d3rlpy's plain TD3 (no BC term)
    python examples/seem_d3rlpy.py --q-bound 0.3    # a bound mean Q soon passes: stopped
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="seem_ray/pointmaze-umaze-dense-v0")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--alpha", type=float, default=2.5, help="TD3+BC alpha (large: weak BC)")
    p.add_argument("--no-bc", action="store_true", help="plain TD3 (d3rlpy's TD3)")
    p.add_argument("--q-bound", type=float, default=None, help="default: max|r| / (1 - gamma)")
    p.add_argument("--mlflow", default=None, help="tracking URI (default: a temp sqlite store)")
    args = p.parse_args(argv)
    try:
        import d3rlpy
    except ImportError:
        print("seem_d3rlpy: d3rlpy is not installed; run `make bench-deps` first", file=sys.stderr)
        return 2
    import mlflow

    from seem_ray.data.batches import DataError
    from seem_ray.data.minari import load_transitions
    from seem_ray.integrations.d3rlpy_callback import (
        SeemCallback,
        fit_with_seem,
        probe_from_d3rlpy,
        to_d3rlpy_dataset,
    )

    try:
        dataset = to_d3rlpy_dataset(load_transitions(args.dataset)[0])
    except DataError as err:
        print(f"seem_d3rlpy: {err}", file=sys.stderr)
        return 2
    common = {"batch_size": 256, "gamma": 0.99, "tau": 0.005}
    if args.no_bc:
        config: object = d3rlpy.algos.TD3Config(**common)
    else:
        config = d3rlpy.algos.TD3PlusBCConfig(alpha=args.alpha, **common)
    algo = config.create(device="cpu:0")  # type: ignore[attr-defined]

    uri = args.mlflow or f"sqlite:///{Path(tempfile.mkdtemp()) / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("seem_d3rlpy")
    callback = SeemCallback(probe_from_d3rlpy(dataset), q_bound=args.q_bound)
    with mlflow.start_run() as run:
        checks, stopped = fit_with_seem(
            algo,
            dataset,
            args.steps,
            callback=callback,
            show_progress=False,
            logger_adapter=d3rlpy.logging.NoopAdapterFactory(),
        )
    for check in checks:
        print(f"step {check.step:6d}  SEEM {check.seem:+.4f}  max|Q| {check.q_abs_max:8.2f}")
    if stopped is not None:
        print(f"stopped at step {stopped.step}: {stopped.verdict.reason}")
    else:
        print(f"ran all {args.steps} steps: no divergence verdict")
    print(f"MLflow run {run.info.run_id} in {uri} (metrics seem/*)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
