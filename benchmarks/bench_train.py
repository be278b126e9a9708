"""Training-speed benchmark: seem_ray's algorithms vs a straightforward CORL-style version.

Usage:
    python benchmarks/bench_train.py --algo td3bc --steps 500 --json

Trains on synthetic data (state 17, action 6, 256-256 nets, batch 256 by default) and prints,
as the LAST stdout line, JSON with ``steps_per_s`` (seem_ray), ``ms_per_step``, and unless
``--no-baseline``, ``baseline_steps_per_s`` and ``speedup`` measured IN THE SAME RUN on the
same data with the same maths in fp32 (benchmarks/baselines.py). ``--bf16`` adds
``bf16_steps_per_s`` (seem_ray under CPU/GPU bfloat16 autocast), reported separately;
``--autograd`` adds ``autograd_steps_per_s`` and ``hand_backward_gain`` (seem_ray with its
hand-written backward off: what algos/handgrad.py itself buys, in the same run); ``--compile``
adds ``compiled_steps_per_s``, ``compiled_speedup`` (against the same baseline) and
``compile_gain`` (against eager seem_ray) for td3bc or iql with ``algo.compile``, and ``compile_s``,
the warm-up time that includes compiling.

Fairness: both sides use the same ``torch.set_num_threads(--threads)``, both sample their own
batches (seem_ray: ReplaySampler, one gather per batch; baseline: CORL's numpy-indexed
buffer), and each side reads its metrics as its design intends (seem_ray: ``.item()`` every
``--log-every`` steps; baseline: every step). After a warm-up, the sides alternate in chunks
of ``--chunk`` steps so load from other processes hits both alike; throughput = total steps /
total time per side.

Threads default to 1: on the shared 2-core development machine, 2 OpenMP threads stall
whenever a neighbour holds the other core (measured 10-100x slowdowns of whole runs). On an
idle machine pass ``--threads 2``; the speedup grows with threads because seem_ray removes
per-step overhead, not FLOPs (both sides do the same matmuls).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from baselines import BaselineBuffer, make_baseline  # noqa: E402
from timing import time_alternately  # noqa: E402

from seem_ray.algos import build_algorithm  # noqa: E402
from seem_ray.config import AlgoConfig, ConfigError, NetConfig  # noqa: E402
from seem_ray.data.batches import ReplaySampler, Transitions  # noqa: E402

log = logging.getLogger("bench_train")


def synthetic(n: int, obs_dim: int, act_dim: int, seed: int) -> Transitions:
    rng = np.random.default_rng(seed)
    obs = rng.standard_normal((n, obs_dim), dtype=np.float32)
    return Transitions(
        observations=obs,
        actions=rng.uniform(-1, 1, (n, act_dim)).astype(np.float32),
        rewards=rng.standard_normal(n, dtype=np.float32),
        next_observations=obs + 0.1 * rng.standard_normal((n, obs_dim), dtype=np.float32),
        terminals=(rng.random(n) < 0.01).astype(np.float32),
        timeouts=np.zeros(n, dtype=np.float32),
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--algo", default="td3bc", choices=["td3bc", "iql", "cql"])
    p.add_argument("--steps", type=int, default=500, help="measured steps per side")
    p.add_argument("--warmup", type=int, default=50, help="unmeasured steps per side first")
    p.add_argument("--chunk", type=int, default=100, help="steps per alternation")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--hidden", type=str, default="256,256", help="comma-separated widths")
    p.add_argument("--obs-dim", type=int, default=17)
    p.add_argument("--act-dim", type=int, default=6)
    p.add_argument(
        "--norm", default="none", choices=["none", "layer"], help="critic norm (both sides)"
    )
    p.add_argument("--dataset-size", type=int, default=100_000)
    p.add_argument("--threads", type=int, default=1, help="torch threads, both sides")
    p.add_argument("--log-every", type=int, default=100, help="seem_ray metric read cadence")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-baseline", action="store_true", help="skip the reference implementation")
    p.add_argument("--bf16", action="store_true", help="also time seem_ray under bf16 autocast")
    p.add_argument(
        "--autograd",
        action="store_true",
        help="also time seem_ray with its hand-written backward off (algos/handgrad.py)",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="also time seem_ray with algo.compile (torch.compile of the td3bc or iql step)",
    )
    p.add_argument(
        "--json", action="store_true", help="(kept for the contract; JSON is always the last line)"
    )
    args = p.parse_args(argv)
    for name in ("steps", "chunk", "batch", "threads", "log_every", "dataset_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.compile and args.warmup < 2:
        p.error("--compile needs --warmup >= 2: both compiled passes must compile before timing")
    try:
        args.hidden = tuple(int(h) for h in args.hidden.split(","))
    except ValueError:
        p.error(f"--hidden must be comma-separated ints like 256,256, got {args.hidden!r}")
    return args


def make_ours(
    args: argparse.Namespace,
    data: Transitions,
    bf16: bool,
    by_hand: bool = True,
    compiled: bool = False,
) -> Callable[[int], None]:
    device = torch.device(args.device)
    algo = build_algorithm(
        AlgoConfig(name=args.algo, batch_size=args.batch, compile=compiled),
        NetConfig(hidden=args.hidden, norm=args.norm),
        NetConfig(hidden=args.hidden),
        data.obs_dim,
        data.act_dim,
        1.0,
        device,
    )
    algo.hand_backward = by_hand and algo.hand_backward  # type: ignore[attr-defined]
    sampler = ReplaySampler(data, args.batch, device, seed=args.seed)
    autocast = (
        (lambda: torch.autocast(device.type, dtype=torch.bfloat16))
        if bf16
        else contextlib.nullcontext
    )

    def run(n: int) -> None:
        for _ in range(n):
            with autocast():
                metrics = algo.update(sampler.sample())
            if algo.step % args.log_every == 0:
                {k: v.item() for k, v in metrics.items()}
        if device.type == "cuda":
            torch.cuda.synchronize()

    return run


def make_reference(args: argparse.Namespace, data: Transitions) -> Callable[[int], None]:
    agent = make_baseline(args.algo, data.obs_dim, data.act_dim, args.hidden, args.norm == "layer")
    buffer = BaselineBuffer(
        data.observations,
        data.actions,
        data.rewards,
        data.next_observations,
        data.terminals,
        args.batch,
    )

    def run(n: int) -> None:
        for _ in range(n):
            agent.train(buffer.sample())

    return run


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        args = parse_args(argv)
        torch.set_num_threads(args.threads)
        torch.manual_seed(args.seed)
        np.random.seed(args.seed)
        data = synthetic(args.dataset_size, args.obs_dim, args.act_dim, args.seed)
        sides: dict[str, Callable[[int], None]] = {"ours": make_ours(args, data, bf16=False)}
        if not args.no_baseline:
            if args.device != "cpu":
                raise ValueError(
                    "the baseline runs on CPU only; pass --no-baseline with --device cuda"
                )
            sides["baseline"] = make_reference(args, data)
        if args.bf16:
            sides["bf16"] = make_ours(args, data, bf16=True)
        if args.autograd:
            sides["autograd"] = make_ours(args, data, bf16=False, by_hand=False)
        if args.compile:
            sides["compiled"] = make_ours(args, data, bf16=False, compiled=True)
    except (ConfigError, ValueError) as err:
        print(f"bench_train: {err}", file=sys.stderr)
        return 2

    warmup_s, sps = time_alternately(sides, warmup=args.warmup, steps=args.steps, chunk=args.chunk)
    result: dict[str, object] = {
        "algo": args.algo,
        "steps": args.steps,
        "batch": args.batch,
        "hidden": list(args.hidden),
        "norm": args.norm,
        "threads": args.threads,
        "torch": torch.__version__,
        "steps_per_s": round(sps["ours"], 2),
        "ms_per_step": round(1000.0 / sps["ours"], 3),
    }
    if "baseline" in sps:
        result["baseline_steps_per_s"] = round(sps["baseline"], 2)
        result["baseline_ms_per_step"] = round(1000.0 / sps["baseline"], 3)
        result["speedup"] = round(sps["ours"] / sps["baseline"], 3)
    if "bf16" in sps:
        result["bf16_steps_per_s"] = round(sps["bf16"], 2)
        result["bf16_speedup_vs_fp32"] = round(sps["bf16"] / sps["ours"], 3)
    if "autograd" in sps:
        result["autograd_steps_per_s"] = round(sps["autograd"], 2)
        result["hand_backward_gain"] = round(sps["ours"] / sps["autograd"], 3)
    if "compiled" in sps:
        result["compiled_steps_per_s"] = round(sps["compiled"], 2)
        result["compiled_ms_per_step"] = round(1000.0 / sps["compiled"], 3)
        result["compile_gain"] = round(sps["compiled"] / sps["ours"], 3)
        result["compile_s"] = round(warmup_s["compiled"], 1)  # the warm-up, compile included
        if "baseline" in sps:
            result["compiled_speedup"] = round(sps["compiled"] / sps["baseline"], 3)
    for name, rate in sps.items():
        log.info("%-8s %8.1f steps/s  %7.3f ms/step", name, rate, 1000.0 / rate)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
