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
    crash_step_from_eig,
    crash_step_from_fit,
    experiment_main,
    fmt,
    linear_fit,
    make_toy_maze,
    num,
    td_loss,
)
from experiments.report import section, table
from seem_ray.seem import compute_seem

NAME = "sgd_crash"
METHODS = ("eig", "fit", "local")
METHOD_NAMES = {"eig": "eigenvalue", "fit": "fit (long window)", "local": "fit (short window)"}
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
    local_span: float = 1.5
    """Same fit on a shorter, more recent window (RMS |Q| >= threshold / local_span)."""
    tail_window: tuple[float, float] = (10.0, 1e4)
    """Linearity check of Q^-(2L-2)/L in t on the steps with RMS |Q| in this range."""
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
    tail_r2 = tail_linearity(q_arr, layers, s.tail_window)
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
        "tail_r2": tail_r2,
        "q0": float(q_arr[0]),
        "q_min": float(np.nanmin(q_arr)),
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
    out: dict[str, Any] = {"pred_eig": eig}
    for key, span in (("fit", s.fit_span), ("local", s.local_span)):
        above = np.nonzero(q[: t0 + 1] >= threshold / span)[0]
        lo = int(above[0]) if above.size else t0
        pred = math.nan
        if t0 - lo >= 2:
            pred, _ = crash_step_from_fit(np.arange(lo, t0 + 1), q[lo : t0 + 1], layers)
        out[f"{key}_from"] = lo
        out[f"pred_{key}"] = pred
    if crash is not None and crash > t0:
        for key in METHODS:
            out[f"rel_err_{key}"] = (out[f"pred_{key}"] - crash) / (crash - t0)
    return out


def tail_linearity(q: np.ndarray, layers: int, window: tuple[float, float]) -> float:
    """R^2 of a line through Q^-(2L-2)/L against t where window[0] <= RMS |Q| <= window[1]."""
    idx = np.nonzero((q >= window[0]) & (q <= window[1]))[0]
    if idx.size < 3:
        return math.nan
    return linear_fit(idx.astype(float), q[idx] ** (-(2 * layers - 2) / layers)).r2


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
            errs: dict[str, list[float]] = {k: [] for k in METHODS}
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
        axes[0].plot([p["t0"], num(p["pred_eig"])], [1.0, 0.0], "--", color=c, lw=1)
        axes[0].axvline(r["crash"], color=c, ls=":", lw=1)
        axes[0].plot([p["t0"]], [1.0], "o", color=c)
    axes[0].set(
        xlabel="step t",
        ylabel="RMS|Q|^-(2L-2)/L, normalised at t0",
        title=f"lr={mid_lr:g}: dashed = eigenvalue prediction, dotted = actual",
    )
    axes[0].set_ylim(-0.05, 2.5)
    axes[0].legend(fontsize=8)
    markers = {"eig": "o", "fit": "x", "local": "+"}
    for i, layers in enumerate(s["layers"]):
        for key in METHODS:
            xs, ys = [], []
            for r in runs:
                if r["layers"] != layers or not r["crash"]:
                    continue
                for p in r["predictions"]:
                    v = num(p[f"pred_{key}"])
                    if p["threshold"] == s["primary"] and math.isfinite(v):
                        xs.append(r["crash"] - p["t0"])
                        ys.append(max(v - p["t0"], 0.5))
            axes[1].loglog(
                xs,
                ys,
                markers[key],
                color=f"C{i}",
                alpha=0.8,
                label=f"L={layers}, {METHOD_NAMES[key]}",
            )
    lo_, hi_ = axes[1].get_xlim()
    lim = (min(lo_, axes[1].get_ylim()[0]), max(hi_, axes[1].get_ylim()[1]))
    axes[1].plot(lim, lim, "k:", lw=1, label="exact")
    axes[1].set(
        xlabel="actual t* - t0",
        ylabel="predicted t* - t0",
        title=f"t0 at RMS|Q| >= {s['primary']:g}",
    )
    axes[1].legend(fontsize=7)
    styles = {"eig": "o-", "fit": "x--", "local": "+:"}
    for i, layers in enumerate(s["layers"]):
        rows = [r for r in result["by_threshold"] if r["layers"] == layers]
        ths = [r["threshold"] for r in rows]
        for key in METHODS:
            axes[2].semilogx(
                ths,
                [num(r[f"median_abs_{key}"]) for r in rows],
                styles[key],
                color=f"C{i}",
                label=f"L={layers}, {METHOD_NAMES[key]}",
            )
    axes[2].axhline(0.1, color="k", ls=":", lw=1)
    axes[2].set(
        xlabel="t0 threshold on RMS|Q|",
        ylabel="median |pred - actual| / (actual - t0)",
        title="error vs how late t0 is",
    )
    axes[2].legend(fontsize=7)
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


def _tail_r2(result: dict[str, Any], layers: int) -> list[float]:
    return [num(r["tail_r2"]) for r in result["runs"] if r["layers"] == layers]


def summary_rows(result: dict[str, Any]) -> list[SummaryRow]:
    """Rows of the results.md summary table for this experiment."""
    s = result["settings"]
    parts, ok = [], True
    lin = []
    for layers in s["layers"]:
        p = _primary(result, layers)
        parts.append(
            f"L={layers}: median |err| {fmt(p['median_abs_eig'], '.1%')} (eigenvalue), "
            f"{fmt(p['median_abs_local'], '.1%')} / {fmt(p['median_abs_fit'], '.1%')} (short / "
            f"long fit); {p['within10_eig']}/{p['n']} eigenvalue predictions within 10%"
        )
        ok = ok and num(p["median_abs_eig"]) <= 0.10
        lin.append(f"L={layers}: min R^2 {fmt(np.nanmin(_tail_r2(result, layers)), '.4f')}")
    crashed = sum(1 for r in result["runs"] if r["crash"] is not None)
    lo, hi = s["tail_window"]
    return [
        SummaryRow(
            "3",
            "SGD: Q^-(2L-2)/L falls linearly in t near blow-up",
            f"{crashed}/{len(result['runs'])} runs blew up; line fit on RMS|Q| in "
            f"[{lo:g}, {hi:g}]: " + "; ".join(lin),
            "reproduced"
            if min(np.nanmin(_tail_r2(result, k)) for k in s["layers"]) >= 0.98
            else "partly: see section 3",
        ),
        SummaryRow(
            "3",
            "SGD: blow-up step t* ~ t0 + L/((2L-2) eta_eff lam_max(A_t0)), raw eigenvalue",
            f"t0 at RMS|Q| >= {s['primary']:g}: " + "; ".join(parts),
            "reproduced (median within 10%; error depends on t0, see section 3)"
            if ok
            else "partly: see section 3",
        ),
    ]


def report_section(result: dict[str, Any], figures_rel: str) -> str:
    """Markdown section for docs/results.md."""
    s = result["settings"]
    lo, hi = s["tail_window"]
    return section(
        "3. SGD crash step",
        "(seem.md section 5, derived there): for an L-homogeneous critic diverging "
        "under gradient descent, Q^-(2L-2)/L falls linearly in t and reaches 0 at "
        "t* = t0 + L / ((2L-2) eta_eff lam_max(A_t0)); the numpy check in seem.md predicted "
        "5806 vs actual 5813 (L=2).",
        f"**Settings**: the toy-maze of section 2 ({s['maze_length']}-state walk, N = "
        f"{s['maze_length'] - 1}, reward 0, walk seed = run seed); bias-free ReLU MLP, "
        f"L in {list(s['layers'])}, width {s['width']}, default init, float64; full-batch SGD "
        "(no momentum) on mean((Q - gamma max_a' Q(s',a'))^2), target from the same net without "
        f"gradient, gamma = {s['gamma']}, lr in {list(s['lrs'])}, seeds {list(s['seeds'])}, at "
        f"most {s['max_steps']} steps. eta_eff = 2 lr / N (plain mean-squared loss; checked in "
        "tests/test_experiments.py: one step moves delta by eta_eff A delta + O(lr^2)). Actual "
        f"t* = first step whose RMS |Q| over the data is non-finite or > {s['crash_q']:g}. t0 = "
        f"first step with RMS |Q| >= threshold, thresholds {list(s['thresholds'])} (initial RMS "
        f"|Q| is ~0.05-0.3); main table at {s['primary']:g}. At t0: A = gamma G(X*,X) - G(X,X) "
        "on all N pairs with X* = (s', argmax_a Q_t0(s', a)), raw eigenvalue "
        "(`compute_seem(..., scale_by_params=False).max_eig`). Fit predictors: least-squares "
        "line of RMS|Q|^-(2L-2)/L on the steps from RMS|Q| >= threshold/"
        f"{s['fit_span']:g} (long window) or threshold/{s['local_span']:g} (short window) up to "
        "t0, extrapolated to its zero crossing; both use only data up to t0. Relative error = "
        "(predicted - actual) / (actual - t0). Linearity check: R^2 of that line on all steps "
        f"with RMS|Q| in [{lo:g}, {hi:g}].",
        f"![SGD crash]({figures_rel}/{FIGURE})",
        f"Main table (t0 at RMS |Q| >= {s['primary']:g}):",
        table(
            [
                "L",
                "lr",
                "seed",
                "t0",
                "SEEM(t0)",
                "raw lam_max(A_t0)",
                "predicted (eig)",
                "predicted (short fit)",
                "predicted (long fit)",
                "actual",
                "rel. err (eig)",
                "rel. err (short / long fit)",
                "R^2 near blow-up",
            ],
            (_prediction_cells(r, s["primary"]) for r in result["runs"]),
        ),
        "Sensitivity to t0 (all runs that blew up; |relative error|, median / max / count "
        "within 10%):",
        table(
            ["L", "t0 threshold", "runs", "eigenvalue", "short fit", "long fit"],
            (
                [
                    row["layers"],
                    f"{row['threshold']:g}",
                    row["n"],
                    *(
                        f"{fmt(row[f'median_abs_{k}'], '.1%')} / "
                        f"{fmt(row[f'max_abs_{k}'], '.1%')} / {row[f'within10_{k}']}"
                        for k in ("eig", "local", "fit")
                    ),
                ]
                for row in result["by_threshold"]
            ),
        ),
        reading=reading(result),
    )


def _prediction_cells(r: dict[str, Any], primary: float) -> list[Any]:
    """One run's row of the main table: its predictions at t0 = `primary` (dashes if never)."""
    crash = r["crash"] if r["crash"] is not None else "none"
    head = [r["layers"], f"{r['lr']:g}", r["seed"]]
    p = next((p for p in r["predictions"] if p["threshold"] == primary), None)
    if p is None:
        return [*head, *["-"] * 6, crash, "-", "-", fmt(r["tail_r2"], ".4f")]
    return [
        *head,
        p["t0"],
        fmt(p["seem"], ".3f"),
        fmt(p["max_eig"], ".4g"),
        fmt(p["pred_eig"], ".1f"),
        fmt(p["pred_local"], ".1f"),
        fmt(p["pred_fit"], ".1f"),
        crash,
        fmt(p.get("rel_err_eig"), "+.1%"),
        f"{fmt(p.get('rel_err_local'), '+.1%')} / {fmt(p.get('rel_err_fit'), '+.1%')}",
        fmt(r["tail_r2"], ".4f"),
    ]


def reading(result: dict[str, Any]) -> list[str]:
    """The interpretation, with the measured numbers filled in."""
    s = result["settings"]
    prim = [
        (r, p)
        for r in result["runs"]
        for p in r["predictions"]
        if p["threshold"] == s["primary"] and p.get("rel_err_eig") is not None
    ]
    early = sum(1 for _, p in prim if num(p["rel_err_eig"]) < 0)
    lags = [
        r["crash"] - num(p["pred_eig"])
        for r in result["runs"]
        for p in r["predictions"]
        if p["threshold"] == max(s["thresholds"]) and r["crash"] is not None
    ]
    lags = [x for x in lags if math.isfinite(x)] or [math.nan]
    best = {
        layers: min(
            (r for r in result["by_threshold"] if r["layers"] == layers),
            key=lambda r: num(r["median_abs_eig"]),
        )["threshold"]
        for layers in s["layers"]
    }
    interior = all(min(s["thresholds"]) < v < max(s["thresholds"]) for v in best.values())
    shape = "is U-shaped" if interior else "depends on"
    # Best single prediction at the main t0, to set against seem.md's numpy check.
    best_run = min(prim, key=lambda rp: abs(num(rp[1]["rel_err_eig"])), default=None)
    best_txt = (
        f"our best run (L={best_run[0]['layers']}, lr={best_run[0]['lr']:g}, seed "
        f"{best_run[0]['seed']}) predicted {fmt(best_run[1]['pred_eig'], '.0f')} vs actual "
        f"{best_run[0]['crash']} from t0 = {best_run[1]['t0']}"
        if best_run
        else "no run blew up"
    )
    # Per seed: spread of the eigenvalue error across learning rates (time-rescaling check).
    spread = []
    for layers in s["layers"]:
        for seed in s["seeds"]:
            v = [
                num(p["rel_err_eig"])
                for r, p in prim
                if r["layers"] == layers and r["seed"] == seed
            ]
            if len(v) > 1:
                spread.append(max(v) - min(v))
    worst = []
    for layers in s["layers"]:
        errs: dict[int, list[float]] = {}
        for r, p in prim:
            if r["layers"] == layers:
                errs.setdefault(r["seed"], []).append(abs(num(p["rel_err_eig"])))
        if errs:
            seed = max(errs, key=lambda k: float(np.mean(errs[k])))
            r = next(x for x in result["runs"] if x["layers"] == layers and x["seed"] == seed)
            dip = (
                f", whose RMS|Q| first falls from {fmt(r['q0'], '.2g')} to "
                f"{fmt(r['q_min'], '.2g')} before it diverges"
                if num(r["q_min"]) < num(r["q0"]) / 2
                else ""
            )
            worst.append(
                f"L={layers}: seed {seed}, mean |error| {fmt(np.mean(errs[seed]), '.1%')}{dip}"
            )
    worst_txt = ("Worst seeds: " + "; ".join(worst) + ".") if worst else ""
    out = []
    for layers in s["layers"]:
        p = _primary(result, layers)
        r2 = _tail_r2(result, layers)
        out.append(
            f"- L={layers}: Q^-(2L-2)/L is a straight line near blow-up (R^2 >= "
            f"{fmt(np.nanmin(r2), '.4f')} over RMS|Q| in {list(s['tail_window'])}). With t0 at "
            f"RMS|Q| >= {s['primary']:g} the eigenvalue formula's median |error| is "
            f"{fmt(p['median_abs_eig'], '.1%')} of the remaining horizon ({p['within10_eig']}/"
            f"{p['n']} runs within 10%, worst {fmt(p['max_abs_eig'], '.1%')}); the short-window "
            f"fit {fmt(p['median_abs_local'], '.1%')}, the long-window fit "
            f"{fmt(p['median_abs_fit'], '.1%')}."
        )
    out += [
        f"- The eigenvalue prediction is early in {early}/{len(prim)} runs at the main t0, and "
        f"its error {shape} in t0 (best threshold: "
        + ", ".join(f"L={k}: {v:g}" for k, v in best.items())
        + "). Too early: lam_max is the growth rate of the most unstable mode only, and while "
        "theta is still turning toward its divergent direction the residual has weight on slower "
        "modes, so growth is slower than lam_max says. Too late: the formula is the "
        "continuous-time blow-up, where Q reaches infinity; discrete SGD needs a few more steps, "
        f"roughly squaring Q each, to pass {s['crash_q']:g} (at t0 = RMS|Q| >= "
        f"{max(s['thresholds']):g}, actual minus predicted is {fmt(min(lags), '.1f')}-"
        f"{fmt(max(lags), '.1f')} steps), a floor that becomes a large fraction of a short "
        "remaining horizon.",
        "- Learning rate mostly rescales time (gradient flow in lr * t): for a given (L, seed) "
        "the eigenvalue error changes by at most "
        f"{fmt(max(spread) if spread else math.nan, '.1%')} across the learning rates, so the "
        "error is set by the seed (initialisation and walk) and by the choice of t0, not by lr. "
        + worst_txt,
        "- The fit predictors need their window to lie on the asymptotic line already; at the "
        "thresholds where the eigenvalue does best, Q^-(2L-2)/L is still curving there and "
        "extrapolating the window's average slope mostly predicts too early (the long window "
        "more so). They improve as t0 moves later, where they meet the discrete-step floor too. "
        "The eigenvalue needs one Gram matrix at t0 and is the better early predictor here.",
        f"- seem.md's numpy check predicted 5806 vs 5813 (L=2); {best_txt}. Median errors at "
        "the main t0 are "
        + ", ".join(
            f"L={k}: {fmt(_primary(result, k)['median_abs_eig'], '.1%')}" for k in s["layers"]
        )
        + "; a seed whose Q first collapses toward 0 before diverging is off by the most.",
    ]
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """CLI entry: run the grid (or the quick one), write the JSON and the figure."""
    return experiment_main(
        argv,
        name=NAME,
        doc=__doc__,
        figure=FIGURE,
        run=lambda quick: run(QUICK if quick else SgdSettings()),
        make_figure=make_figure,
    )


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main()
