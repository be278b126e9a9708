"""Ray Train overhead: the plain loop vs the same loop under Ray Train with 1 and 2 workers.

Same config for all three (256-256 TD3+BC critic and actor, batch 256 per worker, SEEM off,
no evaluation), same machine, same run. The plain loop is seem_ray.loop.TrainingRun.run called
in-process; Ray Train runs seem_ray.train.train_loop_per_worker through a TorchTrainer. Speeds
are the loop's own steps/s over the last report window (start-up excluded); for 2 workers the
global sample rate (x2 batch) is reported too.

Usage: python benchmarks/bench_ray_overhead.py [--steps 1500] [--json]
Last stdout line: JSON with plain_steps_per_s, ray1_steps_per_s, ray2_steps_per_s and ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from seem_ray import metrics as M  # noqa: E402
from seem_ray.config import apply_overrides, parse_run_config  # noqa: E402


def config(steps: int, workers: int, threads: int):
    return parse_run_config(
        {
            "data": {"dataset": "seem_ray/pointmaze-umaze-dense-v0", "max_transitions": 5000},
            "algo": {"name": "td3bc"},
            "seem": {"enabled": False},
            "train": {
                "steps": steps,
                "log_every": steps // 3,
                "eval_episodes": 0,
                "checkpoint_every": 0,
                "threads": threads,
            },
            "scaling": {"num_workers": workers, "cpus_per_worker": 1.0},
        }
    )


def plain(steps: int, threads: int) -> float:
    import torch

    from seem_ray.loop import TrainingRun, prepare_data
    from seem_ray.runtime import set_threads

    cfg = config(steps, 1, threads)
    set_threads(threads)
    run = TrainingRun(cfg, prepare_data(cfg), torch.device("cpu"))
    speeds: list[float] = []
    run.run(lambda r, rep: speeds.append(rep.metrics[M.STEPS_PER_S]) or False)
    return speeds[-1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
    from seem_ray.data.generate import ensure_dataset
    from seem_ray.runtime import datasets_dir
    from seem_ray.train import fit
    from seem_ray.tune import init_ray

    datasets_dir()
    ensure_dataset("seem_ray/pointmaze-umaze-dense-v0")
    result = {"steps": args.steps, "threads_per_worker": args.threads}
    result["plain_steps_per_s"] = plain(args.steps, args.threads)
    init_ray("local")
    with tempfile.TemporaryDirectory() as tmp:
        for workers in (1, 2):
            cfg = apply_overrides(config(args.steps, workers, args.threads), {})
            metrics = fit(cfg, name=f"overhead{workers}", storage_path=tmp)
            result[f"ray{workers}_steps_per_s"] = metrics[M.STEPS_PER_S]
    result["plain_steps_per_s_again"] = plain(
        args.steps, args.threads
    )  # drift check on a noisy box
    base = (result["plain_steps_per_s"] + result["plain_steps_per_s_again"]) / 2
    result["ray1_vs_plain"] = result["ray1_steps_per_s"] / base
    result["ray2_vs_ray1_steps"] = result["ray2_steps_per_s"] / result["ray1_steps_per_s"]
    result["ray2_vs_ray1_samples"] = 2 * result["ray2_steps_per_s"] / result["ray1_steps_per_s"]
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
