"""The paper's Maze2D (umaze, dense) row, made here: TD3+BC and IQL with and without LayerNorm.

Usage:
    python benchmarks/paper_row.py                 # run what is missing, then the table
    python benchmarks/paper_row.py --steps 20000 --seeds 3 --json

Each run is ``seem-ray train`` on seem_ray/pointmaze-umaze-dense-v0 (the library defaults:
256-256 nets, batch 256, lr 3e-4, tau 0.005, gamma 0.99, state normalisation) with the stopper
off, so every run goes the full budget; the policy is evaluated every ``--eval-every`` steps over
``--eval-episodes`` episodes. Runs are cached under ``--root`` (a finished run has summary.json),
so a rerun only scores. The final score is the mean of the last three evaluations; "plateau" is
that mean minus the mean of the three before them (near 0: the curve has flattened).

The paper's row for this task (Yue et al. 2023, D4RL maze2d-umaze) reads 86.5; our data is a
different, locally generated version of the task, so compare the trends, not the numbers.
The JSON summary is the last stdout line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

PAPER = 86.5
DATASET = "seem_ray/pointmaze-umaze-dense-v0"
ALGOS = ("td3bc", "iql")
NORMS = ("none", "layer")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default="runs/paper_row", help="run folders (the cache)")
    p.add_argument("--steps", type=int, default=20_000)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--eval-every", type=int, default=2000)
    p.add_argument("--eval-episodes", type=int, default=10)
    p.add_argument("--json", action="store_true", help="(JSON is always the last line)")
    args = p.parse_args(argv)
    for name in ("steps", "seeds", "eval_every", "eval_episodes"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.steps < 6 * args.eval_every:
        p.error("--steps must allow at least six evaluations (6 x --eval-every)")
    return args


def run_dir(args: argparse.Namespace, algo: str, norm: str, seed: int) -> Path:
    return Path(args.root) / f"{algo}-{norm}-s{seed}"


def ensure_run(args: argparse.Namespace, algo: str, norm: str, seed: int) -> Path:
    """Train the run unless its folder already holds a finished one of the same budget."""
    folder = run_dir(args, algo, norm, seed)
    summary = folder / "summary.json"
    if summary.exists() and json.loads(summary.read_text())["steps"] == args.steps:
        return folder
    sets = {
        "data.dataset": DATASET,
        "algo.name": algo,
        "critic.norm": norm,
        "train.seed": seed,
        "train.steps": args.steps,
        "train.eval_every": args.eval_every,
        "train.eval_episodes": args.eval_episodes,
        "train.checkpoint_every": args.steps,
        "train.threads": 1,
        "stopper.kind": "none",
        "tracking.experiment": "paper_row",
    }
    cmd = [sys.executable, "-m", "seem_ray.cli", "train", "--run-dir", str(folder)]
    for key, value in sets.items():
        cmd += ["--set", f"{key}={value}"]
    print(f"paper_row: training {folder.name} ({args.steps} steps)", file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, env=os.environ.copy(), stdout=subprocess.DEVNULL)
    return folder


def records(folder: Path) -> list[dict[str, float]]:
    """The run's metric records, in step order (metrics.jsonl)."""
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rows = []
    for algo in ALGOS:
        for norm in NORMS:
            finals, drifts, q_max, seem_max = [], [], [], []
            for seed in range(args.seeds):
                folder = ensure_run(args, algo, norm, seed)
                recs = records(folder)
                curve = [r["normalized_score"] for r in recs if "normalized_score" in r]
                finals.append(float(np.mean(curve[-3:])))
                drifts.append(float(np.mean(curve[-3:]) - np.mean(curve[-6:-3])))
                summary = json.loads((folder / "summary.json").read_text())
                q_max.append(float(summary["final_metrics"]["q_abs_max"]))
                seem_max.append(max(r.get("seem", 0.0) for r in recs))
            rows.append(
                {
                    "algo": algo,
                    "critic_norm": norm,
                    "scores": [round(s, 1) for s in finals],
                    "mean": round(float(np.mean(finals)), 1),
                    "std": round(float(np.std(finals)), 1),
                    "plateau_drift": round(float(np.mean(drifts)), 1),
                    "final_q_abs_max": round(float(np.mean(q_max)), 1),
                    "seem_max": round(float(max(seem_max)), 3),
                }
            )
    print(f"{'algo':6} {'critic':7} {'score':>12} {'drift':>6} {'max|Q|':>7} {'SEEM max':>8}")
    for r in rows:
        score = f"{r['mean']:.1f} +- {r['std']:.1f}"
        print(
            f"{r['algo']:6} {r['critic_norm']:7} {score:>12} {r['plateau_drift']:>+6.1f} "
            f"{r['final_q_abs_max']:>7.1f} {r['seem_max']:>8.3f}"
        )
    print(f"paper (D4RL maze2d-umaze): {PAPER}", flush=True)
    result = {
        "dataset": DATASET,
        "steps": args.steps,
        "seeds": args.seeds,
        "eval_every": args.eval_every,
        "eval_episodes": args.eval_episodes,
        "paper": PAPER,
        "rows": rows,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
