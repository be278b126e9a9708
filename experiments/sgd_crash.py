"""Experiment 3: predicting the step at which full-batch SGD blows up (docs/seem.md section 5).

Claim (derived in seem.md, checked there with numpy: 5806 predicted vs 5813 actual for L=2):
for an L-homogeneous critic diverging under gradient descent, rho = ||theta|| obeys
d rho/dt = (eta lam_hat / L) rho^(2L-1), so Q^-(2L-2)/L falls linearly in t and reaches 0 at

    t* = t0 + L / ((2L - 2) * eta_eff * lam_max(A_t0)),

with lam_max the raw (not 1/P-scaled) rightmost eigenvalue of A = gamma G(X*, X) - G(X, X) on the
full batch and eta_eff = 2 lr / N for the plain mean-squared loss used here. We run full-batch
SGD on the zero-reward toy-maze with a bias-free ReLU MLP (L = 2 and 3), pick t0 as the first
step where RMS |Q| on the data reaches a threshold, and compare with the actual step where Q
becomes non-finite or exceeds 1e30; the alternative predictor fits Q^-(2L-2)/L linearly over
the steps before t0 and extrapolates to 0.

    python -m experiments.sgd_crash [--quick]
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from experiments.common import (
    SummaryRow,
    ToyCritic,
    base_parser,
    crash_step_from_eig,
    crash_step_from_fit,
    fmt,
    make_toy_maze,
    num,
    prepare_torch,
    results_path,
    td_loss,
    write_json,
)
from seem_ray.seem import compute_seem

NAME = "sgd_crash"
FIGURE = "sgd_crash.png"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SgdSettings:
    """Grid of the experiment; every field is reported in results.md."""

    layers: tuple[int, ...] = (2, 3)
    width: int = 64
    lrs: tuple[float, ...] = (1e-3, 2e-3, 5e-3)
    seeds: tuple[int, ...] = (0, 1, 2, 3)
    gamma: float = 0.99
    max_steps: int = 60_000
    crash_q: float = 1e30
    """'Actual' blow-up: first step whose RMS |Q| is non-finite or above this."""
    thresholds: tuple[float, ...] = (1.0, 3.0, 10.0, 30.0)
    """t0 = first step with RMS |Q| >= threshold (one prediction per threshold)."""
    primary: float = 3.0
    """Threshold of the main table."""
    fit_span: float = 4.0
    """The fit predictor uses the steps from RMS |Q| >= threshold / fit_span up to t0."""
    record_every: int = 10
    maze_length: int = 64


QUICK = SgdSettings(
    layers=(2, 3),
    lrs=(2e-2,),
    seeds=(1,),
    max_steps=2000,
    thresholds=(3.0,),
    record_every=2,
)


def run_sgd(layers: int, lr: float, seed: int, s: SgdSettings) -> dict[str, Any]:
    """One full-batch SGD run to blow-up; A is measured when Q first crosses each threshold."""
    torch.manual_seed(seed)
    maze = make_toy_maze(seed, length=s.maze_length)
    n = maze.obs.shape[0]
    eta_eff = 2.0 * lr / n
    critic = ToyCritic(4, s.width, layers).double()
    opt = torch.optim.SGD(critic.parameters(), lr=lr)
    q_hist: list[float] = []
    probes: dict[float, dict[str, Any]] = {}
    pending = sorted(s.thresholds)
    crash: int | None = None
    for t in range(s.max_steps):
        loss, q, next_act = td_loss(critic, maze, s.gamma)
        r = float(q.square().mean().sqrt())
        q_hist.append(r)
        if not math.isfinite(r) or r > s.crash_q:
            crash = t
            break
        while pending and r >= pending[0]:
            th = pending.pop(0)
            res = compute_seem(
                critic,
                maze.obs,
                maze.act,
                maze.next_obs,
                next_act,
                s.gamma,
                scale_by_params=False,
            )
            probes[th] = {"t0": t, "q_t0": r, "max_eig": res.max_eig, "seem": res.seem}
        opt.zero_grad()
        loss.backward()
        opt.step()
    q_arr = np.asarray(q_hist)
    preds = []
    for th in s.thresholds:
        p = probes.get(th)
        if p is None:
            continue
        preds.append({"threshold": th, **p, **predict(q_arr, p, th, layers, eta_eff, s, crash)})
    return {
        "layers": layers,
        "lr": lr,
        "seed": seed,
        "n": n,
        "eta_eff": eta_eff,
        "crash": crash,
        "steps_run": len(q_hist),
        "predictions": preds,
        "q": q_arr,
    }


def predict(
    q: np.ndarray,
    probe: dict[str, Any],
    threshold: float,
    layers: int,
    eta_eff: float,
    s: SgdSettings,
    crash: int | None,
) -> dict[str, Any]:
    """Both predictions for one t0, and their errors relative to (actual - t0)."""
    t0 = probe["t0"]
    eig = (
        crash_step_from_eig(t0, layers, eta_eff, probe["max_eig"])
        if probe["max_eig"] > 0
        else math.inf
    )
    above = np.nonzero(q[: t0 + 1] >= threshold / s.fit_span)[0]
    lo = int(above[0]) if above.size else t0
    fit = math.nan
    if t0 - lo >= 2:
        fit, _ = crash_step_from_fit(np.arange(lo, t0 + 1), q[lo : t0 + 1], layers)
    out: dict[str, Any] = {"fit_from": lo, "pred_eig": eig, "pred_fit": fit}
    if crash is not None and crash > t0:
        span = crash - t0
        out["rel_err_eig"] = (eig - crash) / span
        out["rel_err_fit"] = (fit - crash) / span
    return out


def run(s: SgdSettings) -> dict[str, Any]:
    """Every (L, lr, seed) run with its predictions; curves subsampled for the JSON."""
    runs = []
    for layers in s.layers:
        for lr in s.lrs:
            for seed in s.seeds:
                t0 = time.perf_counter()
                r = run_sgd(layers, lr, seed, s)
                q = r.pop("q")
                r["seconds"] = time.perf_counter() - t0
                # Keep the whole tail (last 200 steps) and a thinned head for the figure.
                idx = sorted(set(range(0, len(q), s.record_every)) | set(range(len(q))[-200:]))
                r["curve_t"] = idx
                r["curve_q"] = [float(q[i]) for i in idx]
                runs.append(r)
                prim = next((p for p in r["predictions"] if p["threshold"] == s.primary), None)
                log.info(
                    "L=%d lr=%g seed=%d: crash %s, t0 %s, pred eig %.1f fit %.1f (%.1fs)",
                    layers,
                    lr,
                    seed,
                    r["crash"],
                    prim and prim["t0"],
                    prim["pred_eig"] if prim else math.nan,
                    prim["pred_fit"] if prim else math.nan,
                    r["seconds"],
                )
    return {"settings": asdict(s), "runs": runs, "by_threshold": summarise(runs, s)}


def summarise(runs: list[dict[str, Any]], s: SgdSettings) -> list[dict[str, Any]]:
    """Per (L, threshold): median and max |relative error| of both predictors over crashed runs."""
    out = []
    for layers in s.layers:
        for th in s.thresholds:
            errs: dict[str, list[float]] = {"eig": [], "fit": []}
            for r in runs:
                if r["layers"] != layers:
                    continue
                for p in r["predictions"]:
                    if p["threshold"] != th:
                        continue
                    for k in errs:
                        v = p.get(f"rel_err_{k}")
                        if v is not None and math.isfinite(v):
                            errs[k].append(abs(v))
            row: dict[str, Any] = {"layers": layers, "threshold": th, "n": len(errs["eig"])}
            for k, v in errs.items():
                a = np.asarray(v)
                row[f"median_abs_{k}"] = float(np.median(a)) if a.size else math.nan
                row[f"max_abs_{k}"] = float(a.max()) if a.size else math.nan
                row[f"within10_{k}"] = int(np.sum(a <= 0.10))
            out.append(row)
    return out


def make_figure(result: dict[str, Any], path: Path) -> Path:
    """Q^-(2L-2)/L near blow-up for one run per L; predicted vs actual horizon; error vs t0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = result["settings"]
    runs = result["runs"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    mid_lr = sorted(s["lrs"])[len(s["lrs"]) // 2]
    for i, layers in enumerate(s["layers"]):
        c = f"C{i}"
        r = next(
            (x for x in runs if x["layers"] == layers and x["lr"] == mid_lr and x["crash"]), None
        )
        p = r and next((p for p in r["predictions"] if p["threshold"] == s["primary"]), None)
        if not r or not p:
            continue
        t, q = np.asarray(r["curve_t"], dtype=float), np.asarray(r["curve_q"])
        k = (2 * layers - 2) / layers
        lo = max(0, p["t0"] - (r["crash"] - p["t0"]))
        m = (t >= lo) & np.isfinite(q) & (q > 0)
        y0 = p["q_t0"] ** -k
        axes[0].plot(t[m], q[m] ** -k / y0, color=c, label=f"L={layers} (seed {r['seed']})")
        axes[0].plot([p["t0"], p["pred_eig"]], [1.0, 0.0], "--", color=c, lw=1)
        axes[0].axvline(r["crash"], color=c, ls=":", lw=1)
        axes[0].plot([p["t0"]], [1.0], "o", color=c)
    axes[0].set(
        xlabel="step t",
        ylabel="Q^-(2L-2)/L, normalised at t0",
        title=f"lr={mid_lr:g}: line = eigenvalue prediction, dotted = actual",
    )
    axes[0].set_ylim(-0.05, 2.5)
    axes[0].legend(fontsize=8)
    for i, layers in enumerate(s["layers"]):
        for key, marker in (("pred_eig", "o"), ("pred_fit", "x")):
            xs, ys = [], []
            for r in runs:
                if r["layers"] != layers or not r["crash"]:
                    continue
                for p in r["predictions"]:
                    if p["threshold"] == s["primary"] and math.isfinite(p[key]):
                        xs.append(r["crash"] - p["t0"])
                        ys.append(max(p[key] - p["t0"], 0.5))
            name = "eigenvalue" if key == "pred_eig" else "fit"
            axes[1].loglog(xs, ys, marker, color=f"C{i}", label=f"L={layers}, {name}", alpha=0.8)
    lo_, hi_ = axes[1].get_xlim()
    lim = (min(lo_, axes[1].get_ylim()[0]), max(hi_, axes[1].get_ylim()[1]))
    axes[1].plot(lim, lim, "k:", lw=1, label="exact")
    axes[1].set(
        xlabel="actual t* - t0",
        ylabel="predicted t* - t0",
        title=f"t0 at RMS|Q| >= {s['primary']:g}",
    )
    axes[1].legend(fontsize=8)
    for i, layers in enumerate(s["layers"]):
        rows = [r for r in result["by_threshold"] if r["layers"] == layers]
        ths = [r["threshold"] for r in rows]
        axes[2].semilogx(
            ths,
            [r["median_abs_eig"] for r in rows],
            "o-",
            color=f"C{i}",
            label=f"L={layers}, eigenvalue",
        )
        axes[2].semilogx(
            ths, [r["median_abs_fit"] for r in rows], "x--", color=f"C{i}", label=f"L={layers}, fit"
        )
    axes[2].axhline(0.1, color="k", ls=":", lw=1)
    axes[2].set(
        xlabel="t0 threshold on RMS|Q|",
        ylabel="median |pred - actual| / (actual - t0)",
        title="error vs how late t0 is",
    )
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- report


def _primary(result: dict[str, Any], layers: int) -> dict[str, Any]:
    s = result["settings"]
    return next(
        r
        for r in result["by_threshold"]
        if r["layers"] == layers and r["threshold"] == s["primary"]
    )


def summary_rows(result: dict[str, Any]) -> list[SummaryRow]:
    """Rows of the results.md summary table for this experiment."""
    s = result["settings"]
    parts, ok = [], True
    for layers in s["layers"]:
        p = _primary(result, layers)
        parts.append(
            f"L={layers}: median |err| {fmt(p['median_abs_eig'], '.1%')} (eig), {fmt(p['median_abs_fit'], '.1%')} "
            f"(fit); {p['within10_eig']}/{p['n']} within 10%"
        )
        ok = ok and num(p["median_abs_eig"]) <= 0.10
    crashed = sum(1 for r in result["runs"] if r["crash"] is not None)
    return [
        SummaryRow(
            "3",
            "SGD: Q^-(2L-2)/L falls linearly; blow-up at t0 + L/((2L-2) eta lam_max(A_t0))",
            f"{crashed}/{len(result['runs'])} runs blew up; t0 at RMS|Q| >= {s['primary']:g}: "
            + "; ".join(parts),
            "reproduced" if ok else "partly: see section 3",
        )
    ]


def report_section(result: dict[str, Any], figures_rel: str) -> str:
    """Markdown section for docs/results.md."""
    s = result["settings"]
    lines = [
        "## 3. SGD crash step",
        "",
        "**Claim** (seem.md section 5, derived there): for an L-homogeneous critic diverging "
        "under gradient descent, Q^-(2L-2)/L falls linearly in t and reaches 0 at "
        "t* = t0 + L / ((2L-2) eta_eff lam_max(A_t0)); the numpy check in seem.md predicted "
        "5806 vs actual 5813 (L=2).",
        "",
        f"**Settings**: the toy-maze of section 2 ({s['maze_length']}-state walk, N = "
        f"{s['maze_length'] - 1}, reward 0, walk seed = run seed); bias-free ReLU MLP, "
        f"L in {list(s['layers'])}, width {s['width']}, default init, float64; full-batch SGD "
        "(no momentum) on mean((Q - gamma max_a' Q(s',a'))^2), target from the same net without "
        f"gradient, gamma = {s['gamma']}, lr in {list(s['lrs'])}, seeds {list(s['seeds'])}, at "
        f"most {s['max_steps']} steps. eta_eff = 2 lr / N (plain mean-squared loss). Actual t* = "
        f"first step whose RMS |Q| over the data is non-finite or > {s['crash_q']:g}. t0 = first "
        f"step with RMS |Q| >= threshold, thresholds {list(s['thresholds'])} (initial RMS |Q| is "
        f"~0.05-0.3); main table at {s['primary']:g}. At t0: A = gamma G(X*,X) - G(X,X) on all N "
        "pairs with X* = (s', argmax_a Q_t0(s', a)), raw eigenvalue "
        "(`compute_seem(..., scale_by_params=False).max_eig`). Fit predictor: least-squares line "
        f"of RMS|Q|^-(2L-2)/L on the steps from RMS|Q| >= threshold/{s['fit_span']:g} to t0, "
        "zero crossing. Relative error = (predicted - actual) / (actual - t0).",
        "",
        f"![SGD crash]({figures_rel}/{FIGURE})",
        "",
        f"Main table (t0 at RMS |Q| >= {s['primary']:g}):",
        "",
        "| L | lr | seed | t0 | SEEM(t0) | raw lam_max(A_t0) | predicted (eig) | "
        "predicted (fit) | actual | rel. err (eig) | rel. err (fit) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["runs"]:
        p = next((p for p in r["predictions"] if p["threshold"] == s["primary"]), None)
        if p is None:
            lines.append(
                f"| {r['layers']} | {r['lr']:g} | {r['seed']} | - | - | - | - | - | "
                f"{r['crash'] if r['crash'] is not None else 'none'} | - | - |"
            )
            continue
        lines.append(
            f"| {r['layers']} | {r['lr']:g} | {r['seed']} | {p['t0']} | {fmt(p['seem'], '.3f')} | "
            f"{fmt(p['max_eig'], '.4g')} | {fmt(p['pred_eig'], '.1f')} | {fmt(p['pred_fit'], '.1f')} | "
            f"{r['crash'] if r['crash'] is not None else 'none'} | "
            f"{fmt(p.get('rel_err_eig'), '+.1%')} | {fmt(p.get('rel_err_fit', math.nan), '+.1%')} |"
        )
    lines += [
        "",
        "Sensitivity to t0 (all runs that blew up; |relative error|):",
        "",
        "| L | t0 threshold | runs | median (eig) | max (eig) | within 10% (eig) | "
        "median (fit) | max (fit) | within 10% (fit) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["by_threshold"]:
        lines.append(
            f"| {row['layers']} | {row['threshold']:g} | {row['n']} | "
            f"{fmt(row['median_abs_eig'], '.1%')} | {fmt(row['max_abs_eig'], '.1%')} | {row['within10_eig']} | "
            f"{fmt(row['median_abs_fit'], '.1%')} | {fmt(row['max_abs_fit'], '.1%')} | {row['within10_fit']} |"
        )
    lines += ["", "**Reading.**", "", *reading(result), ""]
    return "\n".join(lines)


def reading(result: dict[str, Any]) -> list[str]:
    """The interpretation, with the measured numbers filled in."""
    s = result["settings"]
    out = []
    signs = [
        p["rel_err_eig"]
        for r in result["runs"]
        for p in r["predictions"]
        if p["threshold"] == s["primary"] and p.get("rel_err_eig") is not None
    ]
    early = sum(1 for v in signs if v < 0)
    lags = [
        r["crash"] - num(p["pred_eig"])
        for r in result["runs"]
        for p in r["predictions"]
        if p["threshold"] == max(s["thresholds"]) and r["crash"] is not None
    ]
    lags = [x for x in lags if math.isfinite(x)] or [math.nan]
    for layers in s["layers"]:
        p = _primary(result, layers)
        out.append(
            f"- L={layers}, t0 at RMS|Q| >= {s['primary']:g}: the eigenvalue formula's median "
            f"|error| is {fmt(p['median_abs_eig'], '.1%')} of the remaining horizon "
            f"({p['within10_eig']}/{p['n']} runs within 10%, worst {fmt(p['max_abs_eig'], '.1%')}); the "
            f"linear fit of Q^-(2L-2)/L: median {fmt(p['median_abs_fit'], '.1%')}, worst "
            f"{fmt(p['max_abs_fit'], '.1%')}."
        )
    out += [
        f"- The eigenvalue prediction is early in {early}/{len(signs)} runs. Two causes: (i) "
        "lam_max is the growth rate of the most unstable mode only; while theta is still turning "
        "toward its divergent direction the residual has weight on slower modes, so the true "
        "growth is slower than lam_max says (the error shrinks as t0 moves later, sensitivity "
        "table); (ii) the formula is the continuous-time blow-up, where Q reaches infinity; "
        "discrete SGD needs a few more steps near the end, roughly squaring Q each step, to pass "
        f"{s['crash_q']:g}: with t0 at the highest threshold ({max(s['thresholds']):g}) actual "
        f"minus predicted is {fmt(min(lags), '.1f')}-{fmt(max(lags), '.1f')} steps. That floor is why small "
        "learning rates (long horizons) give small relative errors and why t0 cannot be taken "
        "arbitrarily late.",
        "- The fit predictor needs the window to be already on the asymptotic line; taken too "
        "early (low thresholds) it extrapolates the curved pre-asymptotic part and is much worse "
        "than the eigenvalue, which needs only one Gram at t0.",
    ]
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """CLI entry: run the grid (or the quick one), write the JSON and the figure."""
    parser = base_parser(NAME, __doc__.splitlines()[0] if __doc__ else NAME)
    args = parser.parse_args(argv)
    prepare_torch()
    json_path = args.json or results_path(NAME)
    if args.replot:
        result = json.loads(Path(json_path).read_text())
        make_figure(result, Path(args.figures) / FIGURE)
        return result
    settings = QUICK if args.quick else SgdSettings()
    t0 = time.perf_counter()
    result = run(settings)
    result["quick"] = bool(args.quick)
    result["seconds"] = time.perf_counter() - t0
    fig = make_figure(result, Path(args.figures) / FIGURE)
    result["figure"] = str(fig)
    out = write_json(json_path, result)
    log.info("wrote %s and %s in %.1fs", out, fig, result["seconds"])
    return result


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main()
