"""Benchmark the SEEM engine (seem_ray.seem) against the naive per-sample-gradient protocol.

Contract: `bench_seem.py --n N --json` prints, as its last stdout line, JSON with at least
`seconds` and `seem` for a 256-256 critic (obs 17 + act 6) on seeded random data.

`--compare` (the default when --n is not given) times, for critics with and without LayerNorm,
each eigen-method given by `--eig` (default "dense,mixed"; layer-wise Gram for all) against the
official-style naive loop (one backward per sample, stacked float64 gradients, Gram by matmul,
numpy dense eigvals) in the same run at n = 256, 1024, 2560, and reports phases (gram/eig
seconds), speedups, |SEEM_fast - SEEM_naive| and the load average (a markdown table on stderr).
The fast path's time is the median of --repeats calls (default 3; the first call's time is in the
JSON too), the naive loop's a single call (it takes 20-30 s at n = 2560).
`--gram-paths` times the layer-wise against the generic Gram path on seem_ray's critic heads
with each normalization (none, layer, batch, spectral, weight) at --n (default 256).
`--threads` caps BLAS and torch threads for the whole run (the library never sets them). The critics are
first trained for a few hundred Adam TD steps on random data (seeded) so the spectrum is not the
one at init; random next actions stand in for pi(s'). Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time

import numpy as np
import torch
from torch import nn

from seem_ray.seem import EIG_METHODS, compute_seem

OBS, ACT, HIDDEN = 17, 6, 256
log = logging.getLogger("bench_seem")


class Critic(nn.Module):
    """The paper's TD3 critic head: Linear -> [LN] -> ReLU, twice, then Linear(256 -> 1)."""

    def __init__(self, layer_norm: bool) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        d = OBS + ACT
        for _ in range(2):
            layers.append(nn.Linear(d, HIDDEN))
            if layer_norm:
                layers.append(nn.LayerNorm(HIDDEN))
            layers.append(nn.ReLU())
            d = HIDDEN
        layers.append(nn.Linear(d, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([obs, act], dim=-1))


def probe(n: int, seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(n, OBS, generator=g)
    act = torch.rand(n, ACT, generator=g) * 2 - 1
    next_obs = obs + 0.1 * torch.randn(n, OBS, generator=g)
    next_act = torch.rand(n, ACT, generator=g) * 2 - 1
    return obs, act, next_obs, next_act


def make_critic(layer_norm: bool, seed: int, steps: int) -> Critic:
    """A critic moved off init by `steps` Adam TD steps (batch 256, gamma 0.99, lr 3e-4)."""
    torch.manual_seed(seed)
    critic = Critic(layer_norm)
    opt = torch.optim.Adam(critic.parameters(), lr=3e-4)
    obs, act, next_obs, next_act = probe(4096, seed + 1)
    rew = torch.randn(4096, generator=torch.Generator().manual_seed(seed + 2))
    gen = torch.Generator().manual_seed(seed + 3)
    for _ in range(steps):
        i = torch.randint(0, 4096, (256,), generator=gen)
        with torch.no_grad():
            target = rew[i] + 0.99 * critic(next_obs[i], next_act[i]).squeeze(-1)
        loss = ((critic(obs[i], act[i]).squeeze(-1) - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    opt.zero_grad(set_to_none=True)
    return critic


def naive_seem(critic: nn.Module, x: tuple[torch.Tensor, ...], gamma: float) -> dict[str, float]:
    """The official protocol: single-sample backward loop, stacked grads / sqrt(P), dense eig."""
    critic.eval()
    params = [p for p in critic.parameters() if p.requires_grad]
    n_params = sum(p.numel() for p in params)
    t0 = time.perf_counter()
    phis = []
    for obs, act in ((x[0], x[1]), (x[2], x[3])):
        rows = np.empty((obs.shape[0], n_params))
        for i in range(obs.shape[0]):
            q = critic(obs[i : i + 1], act[i : i + 1]).sum()
            grads = torch.autograd.grad(q, params)
            rows[i] = torch.cat([g.reshape(-1) for g in grads]).double().numpy()
        phis.append(rows / np.sqrt(n_params))
    t1 = time.perf_counter()
    phi, phi_s = phis
    a = gamma * (phi_s @ phi.T) - phi @ phi.T
    del phis, phi, phi_s
    t2 = time.perf_counter()
    lam = float(np.linalg.eigvals(a).real.max())
    t3 = time.perf_counter()
    return {
        "seem": lam / float(np.linalg.norm(a)),
        "max_eig": lam,
        "naive_grad_seconds": t1 - t0,
        "naive_gram_seconds": t2 - t1,
        "naive_eig_seconds": t3 - t2,
        "naive_seconds": t3 - t0,
    }


def fast(
    critic: nn.Module, x: tuple[torch.Tensor, ...], gamma: float, eig: str, repeats: int = 3
) -> dict:
    """The fast path, median of `repeats` calls by total time: SEEM runs again and again during
    training, and a process's first call also pays one-time costs (fresh memory, thread pools)
    that are a visible share of a 2 s call. The first call's time is reported too."""
    results = [compute_seem(critic, *x, gamma=gamma, eig=eig) for _ in range(max(1, repeats))]
    res = sorted(results, key=lambda r: r.seconds)[len(results) // 2]
    return {
        "seem": res.seem,
        "max_eig": res.max_eig,
        "seconds": res.seconds,
        "gram_seconds": res.gram_seconds,
        "eig_seconds": res.eig_seconds,
        "first_call_seconds": results[0].seconds,
        "calls": len(results),
        "method": res.method,
        "eig_method": res.eig_method,
    }


def _methods(spec: str) -> list[str]:
    methods = [m for m in spec.split(",") if m]
    bad = [m for m in methods if m not in EIG_METHODS]
    if not methods or bad:
        raise ValueError(f"--eig must list methods from {EIG_METHODS}; got {spec!r}")
    return methods


def compare(
    sizes: list[int], steps: int, gamma: float, seed: int, methods: list[str], repeats: int = 3
) -> dict:
    """Every eigen-method and the naive loop on the same critic and probe, per (LN, n)."""
    rows = []
    for layer_norm in (False, True):
        critic = make_critic(layer_norm, seed, steps)
        for n in sizes:
            x = probe(n, seed + 10 + n)
            runs = {}
            for method in methods:
                log.info("LN=%s n=%d: fast (eig=%s) ...", layer_norm, n, method)
                runs[method] = fast(critic, x, gamma, method, repeats)
            log.info("LN=%s n=%d: naive loop ...", layer_norm, n)
            ref = naive_seem(critic, x, gamma)
            row: dict = {"layer_norm": layer_norm, "n": n, "load_avg": os.getloadavg()[0], **ref}
            for method, run in runs.items():
                row[method] = {
                    **run,
                    "speedup": ref["naive_seconds"] / run["seconds"],
                    "seem_abs_diff": abs(run["seem"] - ref["seem"]),
                }
                log.info(
                    "LN=%s n=%5d %-6s seem=%+.6e |diff|=%.1e %.2fs (gram %.2f, eig %.2f %s) "
                    "naive=%.2fs speedup=%.1fx",
                    layer_norm,
                    n,
                    method,
                    run["seem"],
                    row[method]["seem_abs_diff"],
                    run["seconds"],
                    run["gram_seconds"],
                    run["eig_seconds"],
                    run["eig_method"],
                    ref["naive_seconds"],
                    row[method]["speedup"],
                )
            rows.append(row)
    log.info("%s", table(rows, methods))
    last = rows[-1][methods[0]]
    return {"seconds": last["seconds"], "seem": last["seem"], "rows": rows}


def gram_paths(n: int, gamma: float, seed: int) -> dict:
    """Layer-wise vs generic Gram on seem_ray's own critic heads with each normalization.

    BatchNorm, spectral and weight norm heads took the generic (per-sample gradient) path until
    the layer-wise path learned them; this measures what that saves, same probe, same value.
    """
    from seem_ray.config import NetConfig
    from seem_ray.nets import EnsembleCritic
    from seem_ray.seem import probe_critic

    rows = []
    for norm in ("none", "layer", "batch", "spectral", "weight"):
        torch.manual_seed(seed)
        ens = EnsembleCritic(OBS, ACT, NetConfig(hidden=(HIDDEN, HIDDEN), norm=norm), 2)
        with torch.no_grad():  # BN statistics and spectral u, v off their init
            for _ in range(5):
                ens(*probe(256, seed + 99)[:2])
        head = probe_critic(ens, 0)
        x = probe(n, seed + 10 + n)
        runs = {}
        for path in ("layerwise", "generic"):
            res = compute_seem(head, *x, gamma=gamma, gram=path)
            runs[path] = {"seem": res.seem, "seconds": res.seconds, "gram_s": res.gram_seconds}
        row = {
            "norm": norm,
            "n": n,
            **{f"{k}_{path}": v for path, r in runs.items() for k, v in r.items()},
            "speedup": runs["generic"]["seconds"] / runs["layerwise"]["seconds"],
            "seem_abs_diff": abs(runs["generic"]["seem"] - runs["layerwise"]["seem"]),
            "load_avg": os.getloadavg()[0],
        }
        log.info(
            "%-8s n=%d layerwise %.3fs generic %.3fs (%.1fx) |dSEEM| %.1e",
            norm,
            n,
            runs["layerwise"]["seconds"],
            runs["generic"]["seconds"],
            row["speedup"],
            row["seem_abs_diff"],
        )
        rows.append(row)
    return {
        "seconds": rows[-1]["seconds_layerwise"],
        "seem": rows[-1]["seem_layerwise"],
        "rows": rows,
    }


def table(rows: list[dict], methods: list[str]) -> str:
    """Markdown table: one line per (LN, n, method), naive phases alongside."""
    head = (
        "| LN | n | eig | used | seconds | gram s | eig s | naive s (grad/gram/eig) | speedup "
        "| abs dSEEM | load |"
    )
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        naive = (
            f"{r['naive_seconds']:.2f} ({r['naive_grad_seconds']:.2f}/"
            f"{r['naive_gram_seconds']:.2f}/{r['naive_eig_seconds']:.2f})"
        )
        for m in methods:
            f = r[m]
            lines.append(
                f"| {'yes' if r['layer_norm'] else 'no'} | {r['n']} | {m} | {f['eig_method']} "
                f"| {f['seconds']:.2f} | {f['gram_seconds']:.2f} | {f['eig_seconds']:.2f} "
                f"| {naive} | {f['speedup']:.1f}x | {f['seem_abs_diff']:.1e} "
                f"| {r['load_avg']:.1f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=None, help="probe size (fast path only)")
    parser.add_argument("--json", action="store_true", help="last stdout line is JSON")
    parser.add_argument("--compare", action="store_true", help="fast vs naive (default w/o --n)")
    parser.add_argument("--sizes", type=str, default="256,1024,2560")
    parser.add_argument("--layer-norm", action="store_true", help="LN critic for --n")
    parser.add_argument(
        "--eig",
        default=None,
        help=f"eigen-method from {EIG_METHODS}; compare mode takes a comma-separated list "
        "(default dense,mixed), --n mode one (default auto)",
    )
    parser.add_argument(
        "--gram-paths",
        action="store_true",
        help="layer-wise vs generic Gram on critic heads with every normalization (at --n, "
        "default 256)",
    )
    parser.add_argument("--threads", type=int, default=None, help="BLAS/torch threads")
    parser.add_argument("--train-steps", type=int, default=300)
    parser.add_argument("--gamma", type=float, default=0.99)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--repeats", type=int, default=3, help="fast-path calls per case; the median is reported"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    if args.n is not None and args.n < 2:
        print(f"--n must be >= 2; got {args.n}", file=sys.stderr)
        return 2
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s]
    except ValueError:
        print(f"--sizes must be comma-separated integers; got {args.sizes!r}", file=sys.stderr)
        return 2
    comparing = (args.compare or args.n is None) and not args.gram_paths
    try:
        methods = _methods(args.eig or ("dense,mixed" if comparing else "auto"))
    except ValueError as err:
        print(err, file=sys.stderr)
        return 2
    if not comparing and len(methods) != 1:
        print(f"--n takes one --eig method; got {args.eig!r}", file=sys.stderr)
        return 2
    limits = contextlib.nullcontext()
    if args.threads is not None:
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(args.threads)
        limits = threadpool_limits(args.threads)
    load_before = os.getloadavg()
    with limits:
        if args.gram_paths:
            out = gram_paths(args.n or 256, args.gamma, args.seed)
        elif comparing:
            out = compare(
                sizes if args.n is None else [args.n],
                args.train_steps,
                args.gamma,
                args.seed,
                methods,
                args.repeats,
            )
        else:
            critic = make_critic(args.layer_norm, args.seed, args.train_steps)
            x = probe(args.n, args.seed + 10 + args.n)
            out = {
                "n": args.n,
                "layer_norm": args.layer_norm,
                **fast(critic, x, args.gamma, methods[0], args.repeats),
            }
    out["load_avg_before"] = load_before
    out["load_avg_after"] = os.getloadavg()
    out["threads"] = args.threads
    print(json.dumps(out) if args.json else json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
