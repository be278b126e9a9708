"""SEEM's share of a run's wall time at the shipped probe cadence, beside other cadences.

Usage: python benchmarks/bench_seem_share.py [--steps 8000] [--repeats 2] [--json]

Trains the mixed sweep's setting (plain offline TD3 on 1,000 local PointMaze transitions, tau 1,
no critic norm, gamma 0.99, 256-256 nets, 1 thread, stopper off) with ``run_local`` once per
cadence and repeat, cadences interleaved so machine load hits all alike, and reports each
run's summed probe seconds over its wall seconds (``RunSummary.seem_share``). Cadences: the
shipped SeemConfig, its startup phase followed by the denser every-100 early phase, the
previous default (every 100 steps to step 2,000, no startup phase) and no dense phase at all.
JSON summary on the last stdout line.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from seem_ray.config import parse_run_config  # noqa: E402
from seem_ray.runner import run_local  # noqa: E402

CADENCES: dict[str, dict[str, Any]] = {
    "shipped": {},
    "startup, then every 100 to step 2000": {"seem.early_every": 100},
    "previous: every 100 to step 2000": {"seem.startup_every": 0, "seem.early_every": 100},
    "regular only": {"seem.startup_every": 0, "seem.early_every": 0},
}
BASE = {
    "data.dataset": "seem_ray/pointmaze-umaze-dense-v0",
    "data.max_transitions": 1000,
    "algo.name": "td3bc",
    "algo.td3bc.bc_weight": 0.0,
    "algo.tau": 1.0,
    "algo.critic_lr": 3e-5,
    "algo.gamma": 0.99,
    "train.eval_episodes": 0,
    "train.checkpoint_every": 0,
    "train.threads": 1,
    "stopper.kind": "none",
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=8000)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--json", action="store_true", help="(JSON is always the last line)")
    args = p.parse_args(argv)
    if args.steps < 1 or args.repeats < 1:
        print("bench_seem_share: --steps and --repeats must be >= 1", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("MINARI_DATASETS_PATH", str(ROOT / "datasets"))
    from seem_ray.data.generate import ensure_dataset

    ensure_dataset(BASE["data.dataset"])
    shares: dict[str, list[float]] = {name: [] for name in CADENCES}
    probes: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            for name, over in CADENCES.items():
                cfg = parse_run_config({}, {**BASE, **over, "train.steps": args.steps})
                probes[name] = cfg.seem.probes_in(args.steps)
                result = run_local(cfg, Path(tmp) / f"{rep}-{name.replace(' ', '_')}")
                shares[name].append(result.seem_share)
                print(
                    f"{name:38s} repeat {rep}: {100 * result.seem_share:.2f}% of "
                    f"{result.wall_seconds:.1f} s, {probes[name]} probes",
                    file=sys.stderr,
                )
    out = {
        "steps": args.steps,
        "probes": probes,
        "seem_share_pct": {k: [round(100 * v, 2) for v in vs] for k, vs in shares.items()},
        "median_pct": {k: round(100 * statistics.median(vs), 2) for k, vs in shares.items()},
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
