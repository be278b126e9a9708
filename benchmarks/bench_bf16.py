"""What `train.bf16` (bfloat16 autocast of the training updates) does to speed, Q and SEEM.

Trains the demo's divergence setting (plain offline TD3 on 2,000 local PointMaze transitions,
256-256 critics, tau 1, critic lr 3e-5; experiments.service.demo_base) twice per critic norm,
fp32 and bf16, same seed, in this process, and compares: update throughput (train seconds
only, the loop's own timer), probe |mean Q| and SEEM at every report, and the step where |Q|
crosses r_max/(1-gamma). SEEM itself is always computed in fp32/fp64; only the training
arithmetic changes.

Usage: python benchmarks/bench_bf16.py [--steps 2000] [--threads 1] [--json]
Last stdout line: JSON with per-norm rows (speed ratio bf16/fp32, max relative |Q| gap, max
|SEEM gap|, crossing steps).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from experiments.service import demo_base  # noqa: E402
from seem_ray import metrics as M  # noqa: E402
from seem_ray.data.generate import ensure_dataset  # noqa: E402
from seem_ray.divergence import bound_crossing  # noqa: E402
from seem_ray.loop import TrainingRun, prepare_data  # noqa: E402

log = logging.getLogger("bench_bf16")


def train(norm: str, bf16: bool, steps: int, threads: int) -> dict[str, Any]:
    cfg = demo_base(
        {
            "critic.norm": norm,
            "train.steps": steps,
            "train.eval_episodes": 0,
            "train.bf16": bf16,
            "train.threads": threads,
        }
    )
    torch.set_num_threads(threads)
    ensure_dataset(cfg.data.dataset)  # generated locally on first use, like the demo
    data = prepare_data(cfg)
    run = TrainingRun(cfg, data, torch.device("cpu"))
    reports: list[dict[str, float]] = []

    def report(_run: TrainingRun, rep: Any) -> bool:
        reports.append(rep.metrics)
        if rep.step % 500 == 0:
            log.info(
                "%s %s step %d Q %.3g SEEM %.3g",
                norm,
                "bf16" if bf16 else "fp32",
                rep.step,
                rep.metrics.get(M.Q_MEAN, math.nan),
                rep.metrics.get(M.SEEM, math.nan),
            )
        return False

    run.run(report)
    return {
        "steps_per_s": steps / run.train_seconds,
        "q": [r[M.Q_MEAN] for r in reports],
        "seem": [r.get(M.SEEM, math.nan) for r in reports],
        "crossed_at": bound_crossing(reports, data.q_bound),
        "q_bound": data.q_bound,
    }


def compare(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """b (bf16) against a (fp32), report by report."""
    q_gap = [abs(qb - qa) / max(abs(qa), 1e-8) for qa, qb in zip(a["q"], b["q"], strict=True)]
    seem_gap = [
        abs(sb - sa)
        for sa, sb in zip(a["seem"], b["seem"], strict=True)
        if math.isfinite(sa) and math.isfinite(sb)
    ]
    return {
        "speed_bf16_over_fp32": b["steps_per_s"] / a["steps_per_s"],
        "fp32_steps_per_s": a["steps_per_s"],
        "bf16_steps_per_s": b["steps_per_s"],
        "max_rel_q_gap": max(q_gap),
        "median_rel_q_gap": sorted(q_gap)[len(q_gap) // 2],
        "max_abs_seem_gap": max(seem_gap) if seem_gap else None,
        "max_seem_fp32": max(s for s in a["seem"] if math.isfinite(s)),
        "max_seem_bf16": max(s for s in b["seem"] if math.isfinite(s)),
        "crossed_at_fp32": a["crossed_at"],
        "crossed_at_bf16": b["crossed_at"],
        "q_end_over_bound_fp32": abs(a["q"][-1]) / a["q_bound"],
        "q_end_over_bound_bf16": abs(b["q"][-1]) / b["q_bound"],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--norms", default="none,layer")
    p.add_argument("--json", action="store_true", help="(JSON is always the last line)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if args.steps < 100 or args.threads < 1:
        print("bench_bf16: --steps must be >= 100 and --threads >= 1", file=sys.stderr)
        return 2
    rows = {}
    for norm in [n for n in args.norms.split(",") if n]:
        fp32 = train(norm, False, args.steps, args.threads)
        bf16 = train(norm, True, args.steps, args.threads)
        rows[norm] = compare(fp32, bf16)
        log.info("%s: %s", norm, json.dumps(rows[norm]))
    print(json.dumps({"steps": args.steps, "threads": args.threads, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
