"""seem_ray beside d3rlpy (and the CORL-style baseline) on the same local Minari dataset.

Usage:
    python benchmarks/bench_peers.py --dataset seem_ray/pointmaze-umaze-dense-v0 --json

For TD3+BC and IQL with matched hyper-parameters (256-256 nets, batch 256, lr 3e-4, tau 0.005,
gamma 0.99, TD3+BC alpha 2.5, IQL expectile 0.7 / temperature 3; raw observations on every side,
no state normalisation), the sides are timed ALTERNATELY in one process after a warm-up, in chunks
of ``--chunk`` steps, so load from other processes hits all alike:

- ``d3rlpy``: its own TD3PlusBC / IQL, fed the dataset through ``MDPDataset``, stepped as its
  ``fit`` does (``sample_transition_batch`` + ``update``);
- ``corl_style``: benchmarks/baselines.py, our single-file CORL-style re-creation (CORL itself
  needs d4rl, mujoco-py and wandb: it cannot be installed on this machine);
- ``seem_ray`` eager and ``seem_ray_compiled`` (``algo.compile``).

Peak RSS: each side alone in a fresh subprocess (``--only SIDE``): the high-water mark (VmHWM)
after its warm-up and measured steps, and the part the side adds over the imports and dataset.
Learning: ``--score-steps`` steps per seed for d3rlpy and seem_ray eager, then the normalized
score of the deterministic policy over ``--eval-episodes`` episodes (the same evaluation code
for both), ``--seeds`` seeds. A readable table is printed first; the JSON summary is the LAST
stdout line; figures are ratios against d3rlpy measured in the same run.

Needs the optional peer: ``make bench-deps`` (d3rlpy installed --no-deps: its wheel pins
gymnasium 1.0, seem_ray runs 1.4; the parts of d3rlpy used here do not touch gymnasium).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from baselines import BaselineBuffer, make_baseline  # noqa: E402
from timing import time_alternately  # noqa: E402

from seem_ray.algos import build_algorithm  # noqa: E402
from seem_ray.config import AlgoConfig, NetConfig  # noqa: E402
from seem_ray.data.batches import ReplaySampler, Transitions  # noqa: E402
from seem_ray.integrations.d3rlpy_callback import to_d3rlpy_dataset  # noqa: E402

log = logging.getLogger("bench_peers")
ALGOS = ("td3bc", "iql")
SIDES = ("d3rlpy", "corl_style", "seem_ray", "seem_ray_compiled")
HIDDEN = (256, 256)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="seem_ray/pointmaze-umaze-dense-v0")
    p.add_argument("--algos", default="td3bc,iql", help="comma-separated: td3bc, iql")
    p.add_argument("--steps", type=int, default=500, help="timed steps per side")
    p.add_argument("--warmup", type=int, default=50, help="untimed steps per side first")
    p.add_argument("--chunk", type=int, default=100, help="steps per alternation")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--threads", type=int, default=1, help="torch threads, every side")
    p.add_argument("--seeds", type=int, default=3, help="seeds for the learning check (0: skip)")
    p.add_argument("--score-steps", type=int, default=3000, help="training steps per seed")
    p.add_argument("--eval-episodes", type=int, default=10)
    p.add_argument("--no-rss", action="store_true", help="skip the per-side RSS subprocesses")
    p.add_argument("--only", choices=SIDES, help=argparse.SUPPRESS)  # the RSS child
    p.add_argument("--json", action="store_true", help="(JSON is always the last line)")
    args = p.parse_args(argv)
    args.algos = tuple(a for a in args.algos.split(",") if a)
    for a in args.algos:
        if a not in ALGOS:
            p.error(f"--algos: unknown {a!r}; choose from {', '.join(ALGOS)}")
    for name in ("steps", "chunk", "batch", "threads", "eval_episodes"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.warmup < 2:
        p.error("--warmup must be >= 2 (the compiled side compiles both passes in its warm-up)")
    return args


def load(dataset_id: str) -> tuple[Transitions, Any]:
    from seem_ray.data.minari import load_transitions

    return load_transitions(dataset_id)


# ------------------------------------------------------------------------------------ sides
Side = tuple[Callable[[int], None], Callable[[np.ndarray], np.ndarray]]
"""run(n steps), act(raw obs batch) -> actions."""


def make_d3rlpy(algo: str, data: Transitions, batch: int, seed: int) -> Side:
    import d3rlpy

    d3rlpy.seed(seed)
    enc = d3rlpy.models.VectorEncoderFactory(hidden_units=list(HIDDEN))
    common = {
        "batch_size": batch,
        "actor_learning_rate": 3e-4,
        "critic_learning_rate": 3e-4,
        "actor_encoder_factory": enc,
        "critic_encoder_factory": enc,
        "gamma": 0.99,
        "tau": 0.005,
    }
    if algo == "td3bc":
        config: Any = d3rlpy.algos.TD3PlusBCConfig(alpha=2.5, **common)
    else:
        config = d3rlpy.algos.IQLConfig(
            expectile=0.7, weight_temp=3.0, value_encoder_factory=enc, **common
        )
    model = config.create(device="cpu:0")
    dataset = to_d3rlpy_dataset(data)
    model.build_with_dataset(dataset)

    def run(n: int) -> None:
        for _ in range(n):
            model.update(dataset.sample_transition_batch(batch))

    return run, lambda obs: model.predict(obs.astype(np.float32))


def make_seem_ray(algo: str, data: Transitions, batch: int, seed: int, compiled: bool) -> Side:
    torch.manual_seed(seed)
    device = torch.device("cpu")
    model = build_algorithm(
        AlgoConfig(name=algo, batch_size=batch, compile=compiled),
        NetConfig(hidden=HIDDEN),
        NetConfig(hidden=HIDDEN),
        data.obs_dim,
        data.act_dim,
        1.0,
        device,
    )
    sampler = ReplaySampler(data, batch, device, seed=seed)

    def run(n: int) -> None:
        for _ in range(n):
            metrics = model.update(sampler.sample())
            if model.step % 100 == 0:  # as the training loop reads them
                {k: v.item() for k, v in metrics.items()}

    def act(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model.act(torch.as_tensor(obs, dtype=torch.float32)).numpy()

    return run, act


def make_corl_style(algo: str, data: Transitions, batch: int, seed: int) -> Side:
    torch.manual_seed(seed)
    agent = make_baseline(algo, data.obs_dim, data.act_dim, HIDDEN, False)
    buffer = BaselineBuffer(
        data.observations,
        data.actions,
        data.rewards,
        data.next_observations,
        data.terminals,
        batch,
    )

    def run(n: int) -> None:
        for _ in range(n):
            agent.train(buffer.sample())

    def act(obs: np.ndarray) -> np.ndarray:
        raise NotImplementedError("the CORL-style side is timed only")

    return run, act


def make_side(name: str, algo: str, data: Transitions, batch: int, seed: int) -> Side:
    if name == "d3rlpy":
        return make_d3rlpy(algo, data, batch, seed)
    if name == "corl_style":
        return make_corl_style(algo, data, batch, seed)
    return make_seem_ray(algo, data, batch, seed, compiled=name == "seem_ray_compiled")


# ------------------------------------------------------------------------------------ parts
def time_sides(args: argparse.Namespace, algo: str, data: Transitions) -> dict[str, float]:
    sides = {name: make_side(name, algo, data, args.batch, 0)[0] for name in SIDES}
    warmup_s, sps = time_alternately(
        sides,
        warmup=args.warmup,
        steps=args.steps,
        chunk=args.chunk,
        on_chunk=lambda done: log.info("%s timed %d/%d steps per side", algo, done, args.steps),
    )
    for name, seconds in warmup_s.items():
        log.info("%s %-18s warm-up %.1fs", algo, name, seconds)
    return sps


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_rss_mib(args: argparse.Namespace, algo: str, side: str) -> dict[str, float]:
    """The side alone in a fresh interpreter: its peak RSS, and the part of it the side adds."""
    cmd = [sys.executable, __file__, "--only", side, "--algos", algo, "--dataset", args.dataset]
    cmd += ["--steps", str(args.steps), "--warmup", str(args.warmup), "--batch", str(args.batch)]
    cmd += ["--threads", str(args.threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=os.environ.copy())
    child = json.loads(out.stdout.strip().splitlines()[-1])
    return {"total": child["peak_rss_mib"], "added": child["added_rss_mib"]}


def only_side(args: argparse.Namespace) -> int:
    """Imports and the dataset are common to every side: the peak high-water mark is reset after
    them (``/proc/self/clear_refs`` 5), so ``added`` is what building and stepping the side costs."""
    data, _ = load(args.dataset)
    import gc

    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = _status_kib("VmRSS")
    run, _ = make_side(args.only, args.algos[0], data, args.batch, 0)
    run(args.warmup + args.steps)
    peak = _status_kib("VmHWM")
    print(
        json.dumps(
            {
                "side": args.only,
                "peak_rss_mib": round(peak / 1024, 1),
                "added_rss_mib": round((peak - base) / 1024, 1),
            }
        )
    )
    return 0


def learning(args: argparse.Namespace, algo: str, data: Transitions) -> dict[str, list[float]]:
    from seem_ray.evaluate import evaluate_policy

    scores: dict[str, list[float]] = {"d3rlpy": [], "seem_ray": []}
    for seed in range(args.seeds):
        for name in scores:
            run, act = make_side(name, algo, data, args.batch, seed)
            t0 = time.perf_counter()
            run(args.score_steps)
            result = evaluate_policy(
                args.dataset, act, episodes=args.eval_episodes, seed=10_000 + seed
            )
            score = result.normalized_score
            scores[name].append(float(score if score is not None else result.return_mean))
            log.info(
                "%s %-9s seed %d: %d steps in %.0fs, score %.1f",
                algo,
                name,
                seed,
                args.score_steps,
                time.perf_counter() - t0,
                scores[name][-1],
            )
    return scores


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        import d3rlpy  # noqa: F401
    except ImportError:
        print("bench_peers: d3rlpy is not installed; run `make bench-deps` first", file=sys.stderr)
        return 2
    logging.getLogger("d3rlpy").setLevel(logging.WARNING)
    import structlog  # d3rlpy's logger: its per-dataset info lines would bury the table on stdout

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    if args.only:
        return only_side(args)
    try:
        data, info = load(args.dataset)
    except ValueError as err:  # DataError: unknown id, malformed data
        print(f"bench_peers: {err}", file=sys.stderr)
        return 2
    result: dict[str, Any] = {
        "dataset": args.dataset,
        "transitions": len(data),
        "steps": args.steps,
        "batch": args.batch,
        "hidden": list(HIDDEN),
        "threads": args.threads,
        "torch": torch.__version__,
        "d3rlpy": sys.modules["d3rlpy"].__version__,
        "corl": "not installable here (needs d4rl, mujoco-py, wandb): corl_style is our re-creation",
        "algos": {},
    }
    for algo in args.algos:
        sps = time_sides(args, algo, data)
        row: dict[str, Any] = {
            "steps_per_s": {k: round(v, 1) for k, v in sps.items()},
            "ratio_to_d3rlpy": {k: round(v / sps["d3rlpy"], 2) for k, v in sps.items()},
        }
        if not args.no_rss:
            row["peak_rss_mib"] = {side: peak_rss_mib(args, algo, side) for side in SIDES}
        if args.seeds:
            scores = learning(args, algo, data)
            row["score_steps"] = args.score_steps
            row["scores"] = {k: [round(s, 1) for s in v] for k, v in scores.items()}
            row["score_mean"] = {k: round(float(np.mean(v)), 1) for k, v in scores.items()}
        result["algos"][algo] = row
        log.info("%s: %s", algo, json.dumps(row))
    print(format_table(result))
    print(json.dumps(result))
    return 0


SIDE_TITLES = {
    "d3rlpy": "d3rlpy",
    "corl_style": "corl_style (CORL re-creation)",
    "seem_ray": "seem_ray eager",
    "seem_ray_compiled": "seem_ray algo.compile",
}


def format_table(result: dict[str, Any]) -> str:
    """The human-readable table (printed before the JSON line): one row per algorithm and side,
    speed as steps/s and the ratio to d3rlpy measured in the same run, peak RSS, mean score."""
    head = ["algo", "side", "steps/s", "vs d3rlpy", "peak RSS MiB (added)", "score (mean)"]
    rows = []
    for algo, row in result["algos"].items():
        for side, sps in row["steps_per_s"].items():
            rss = row.get("peak_rss_mib", {}).get(side)
            score = row.get("score_mean", {}).get(side)
            rows.append(
                [
                    algo,
                    SIDE_TITLES.get(side, side),
                    f"{sps:.1f}",
                    f"{row['ratio_to_d3rlpy'][side]:.2f}x",
                    f"{rss['total']:.0f} ({rss['added']:.0f})" if rss else "-",
                    f"{score:.1f}" if score is not None else "-",
                ]
            )
    score_steps = next(
        (r["score_steps"] for r in result["algos"].values() if "score_steps" in r), 0
    )
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]

    def line(cells: Any) -> str:
        return "  ".join(cells).rstrip()

    out = [
        f"{result['dataset']} ({result['transitions']} transitions), {result['steps']} timed "
        f"steps per side, batch {result['batch']}, {result['threads']} thread(s), "
        f"torch {result['torch']}, d3rlpy {result['d3rlpy']}"
        + (f"; score: normalized, after {score_steps} steps, mean of seeds" if score_steps else ""),
        line(h.ljust(w) for h, w in zip(head, widths, strict=True)),
        line("-" * w for w in widths),
        *(line(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows),
        f"CORL: {result['corl']}",
    ]
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
