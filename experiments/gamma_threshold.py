"""Experiment 4: is there a sharp critical discount below which the critic converges?

Claim (paper, docs/seem.md section 6): for a no-LN critic there is a critical gamma; on
walker2d-medium-expert (TD3, 1M steps) runs diverge for gamma >= 0.928 (SEEM 0.10-0.36) and
converge with SEEM ~0 for gamma <= 0.927.

Grid (full): plain offline TD3 in the service's divergence setting (experiments.service.demo_base:
seem_ray/pointmaze-umaze-dense-v0, 2000 transitions, bc_weight 0, tau 1, critic lr 3e-5),
critic.norm none, algo.gamma in {0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.99}, seeds {0, 1}, 3000
steps, SEEM and probe-Q every 100 steps, evaluation off; plus a LayerNorm critic at gamma
{0.97, 0.99} (2 seeds) as a contrast: 18 runs. Quick: gamma {0.8, 0.99} x 1 seed and LN at
0.99, 150 steps.

A run diverged when |mean Q on the probe| crossed its own return bound r_max/(1-gamma) (the
bound shrinks with gamma). The threshold estimate is the midpoint between the largest gamma
where no seed diverged and the smallest gamma where every seed did.

    python -m experiments.gamma_threshold [--quick]
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from experiments.common import (
    SummaryRow,
    experiment_main,
    fmt,
    num,
)
from experiments.report import section, span, table
from experiments.seem_vs_bound import (
    SEEM_THRESHOLD,
    curves,
    describe_setting,
    run_facts,
    training_time_text,
)
from experiments.service import demo_base, run_grid
from seem_ray.config import RunConfig

NAME = "gamma_threshold"
FIGURE = "gamma_threshold.png"
SECTION = "4"
TITLE = "Critical discount (gamma threshold)"
PAPER_THRESHOLD = (0.927, 0.928)
"""Paper, walker2d-medium-expert-v2: converges at 0.927, diverges at 0.928."""

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Settings:
    """The grid; every field is reported in results.md."""

    gammas: tuple[float, ...] = (0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.99)
    seeds: tuple[int, ...] = (0, 1)
    ln_gammas: tuple[float, ...] = (0.97, 0.99)
    steps: int = 3000
    log_every: int = 100
    seem_every: int = 100
    threshold: float = SEEM_THRESHOLD


QUICK = Settings(
    gammas=(0.8, 0.99), seeds=(0,), ln_gammas=(0.99,), steps=150, log_every=50, seem_every=50
)


def run_name(norm: str, gamma: float, seed: int) -> str:
    return f"{norm}_g{gamma:g}_s{seed}"


def _config(s: Settings, norm: str, gamma: float, seed: int) -> RunConfig:
    return demo_base(
        {
            "critic.norm": norm,
            "algo.gamma": gamma,
            "train.seed": seed,
            "train.steps": s.steps,
            "train.log_every": s.log_every,
            "seem.every": s.seem_every,
            "train.eval_every": 0,
            "train.eval_episodes": 0,
        }
    )


def configs(s: Settings) -> dict[str, RunConfig]:
    """No-LN runs at every gamma and LN runs at `ln_gammas`, each for every seed."""
    out = {}
    for norm, gammas in (("none", s.gammas), ("layer", s.ln_gammas)):
        for gamma in gammas:
            for seed in s.seeds:
                out[run_name(norm, gamma, seed)] = _config(s, norm, gamma, seed)
    return out


# ----------------------------------------------------------------------------- analysis


def per_gamma(runs: Sequence[dict[str, Any]], norm: str) -> list[dict[str, Any]]:
    """For each gamma (ascending) of one critic kind: divergence fraction and SEEM summary."""
    out = []
    for gamma in sorted({r["gamma"] for r in runs if r["norm"] == norm}):
        grp = [r for r in runs if r["norm"] == norm and r["gamma"] == gamma]
        ratios = [num(r["final_q_over_bound"]) for r in grp]
        finite = [x for x in ratios if math.isfinite(x)]
        out.append(
            {
                "gamma": gamma,
                "norm": norm,
                "seeds": len(grp),
                "diverged": sum(r["diverged"] for r in grp),
                "fraction": sum(r["diverged"] for r in grp) / len(grp),
                "q_bound": grp[0]["q_bound"],
                "max_seem": max((num(r["max_seem"]) for r in grp), default=math.nan),
                "late_seem": [r["late_seem_median"] for r in grp],
                "max_seem_per_seed": [r["max_seem"] for r in grp],
                "seed_ids": [r["seed"] for r in grp],
                "final_q_over_bound": [r["final_q_over_bound"] for r in grp],
                # a non-finite final Q (overflow) counts as above every finite one
                "final_q_over_bound_max": max(finite) if len(finite) == len(ratios) else math.inf,
                "first_seem_warn": [r["first_seem_warn"] for r in grp],
                "warned": sum(r["first_seem_warn"] is not None for r in grp),
                "bound_step": [r["bound_step"] for r in grp],
                "q_growth_late": [r["q_growth_late"] for r in grp],
            }
        )
    return out


def threshold_estimate(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Midpoint between the largest gamma with no divergence and the smallest with all.

    Returns bracketed False (and why) when either end is missing or they are in the wrong
    order; otherwise the bracket, its midpoint, the mixed gammas strictly inside it and whether
    the divergence fraction never falls as gamma grows.
    """
    rows = sorted(rows, key=lambda r: r["gamma"])
    fractions = [r["fraction"] for r in rows]
    monotone = all(a <= b for a, b in zip(fractions, fractions[1:], strict=False))
    none_div = [r["gamma"] for r in rows if r["diverged"] == 0]
    all_div = [r["gamma"] for r in rows if r["diverged"] == r["seeds"]]
    base: dict[str, Any] = {"monotone": monotone, "bracketed": False}
    if not none_div:
        return base | {"why": "every gamma had a diverging seed"}
    if not all_div:
        return base | {"why": "no gamma had every seed diverge"}
    low, high = max(none_div), min(all_div)
    if low >= high:
        return base | {
            "why": f"no divergence at {low:g} above full divergence at {high:g}",
            "low": low,
            "high": high,
        }
    mixed = [r["gamma"] for r in rows if low < r["gamma"] < high]
    return base | {
        "bracketed": True,
        "low": low,
        "high": high,
        "threshold": (low + high) / 2,
        "mixed": mixed,
    }


def seem_estimate(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The same bracket with "SEEM > threshold at some probe" in place of crossing the bound."""
    return threshold_estimate(
        [r | {"diverged": r["warned"], "fraction": r["warned"] / r["seeds"]} for r in rows]
    )


def threshold_verdict(est: dict[str, Any]) -> str:
    """reproduced: bracketed, monotone, no mixed gamma inside the bracket (sharp within one grid
    step); partly: bracketed with mixed gammas or a non-monotone fraction; not reproduced: no
    divergence above a gamma of full divergence; inconclusive: the grid does not reach both
    regimes (all or none diverge)."""
    if est["bracketed"]:
        return "reproduced" if est["monotone"] and not est["mixed"] else "partly"
    return "not reproduced" if "low" in est else "inconclusive"


# ----------------------------------------------------------------------------- running


def run(s: Settings, experiment: str) -> dict[str, Any]:
    """Train (or read back) the grid, analyse each run and each gamma."""
    cfgs = configs(s)
    records = run_grid(experiment, cfgs)
    runs = []
    for name, rec in records.items():
        facts = run_facts(rec, s.threshold)
        c = curves(rec)
        runs.append(
            {
                "norm": rec.config["critic"]["norm"],
                "gamma": rec.config["algo"]["gamma"],
                "seed": rec.config["train"]["seed"],
                **facts,
                **{k: c[k] for k in ("seem_step", "seem", "q_mean_step", "q_mean")},
            }
        )
        log.info("%s: diverged %s, max SEEM %.3f", name, facts["diverged"], facts["max_seem"])
    rows = per_gamma(runs, "none")
    est = threshold_estimate(rows)
    return {
        "settings": asdict(s),
        "train_seconds": sum(rec.wall_seconds for rec in records.values()),
        "config": next(iter(records.values())).config,
        "runs": runs,
        "by_gamma": rows,
        "by_gamma_ln": per_gamma(runs, "layer"),
        "estimate": est,
        "estimate_seem": seem_estimate(rows),
        "verdict": threshold_verdict(est),
    }


# ----------------------------------------------------------------------------- figure


LN_OFFSET = 0.002
"""Shift of the LayerNorm markers along gamma so they do not hide the no-LN ones."""


def make_figure(result: dict[str, Any], path: Path) -> Path:
    """Divergence fraction and SEEM vs gamma; |Q|/bound over steps per gamma (log y)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    rows, ln_rows, runs = result["by_gamma"], result["by_gamma_ln"], result["runs"]
    est = result["estimate"]
    thr = result["settings"]["threshold"]
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.6))
    g = [r["gamma"] for r in rows]
    axes[0].plot(g, [r["fraction"] for r in rows], "o-", color="C3", label="no LN: crossed bound")
    axes[0].plot(
        g,
        [r["warned"] / r["seeds"] for r in rows],
        "x--",
        color="C1",
        label=f"no LN: SEEM > {thr:g} at some probe",
    )
    if ln_rows:
        axes[0].plot(
            [r["gamma"] + LN_OFFSET for r in ln_rows],
            [r["fraction"] for r in ln_rows],
            "s",
            color="C0",
            ms=8,
            label="LayerNorm: crossed bound",
        )
    axes[0].set(
        xlabel="gamma",
        ylabel="fraction of seeds",
        ylim=(-0.05, 1.05),
        title="divergence vs gamma",
    )
    for r in runs:
        plain = r["norm"] == "none"
        c, marker, x = ("C3", "o", r["gamma"]) if plain else ("C0", "s", r["gamma"] + LN_OFFSET)
        axes[1].plot(x, num(r["max_seem"]), marker, color=c)
        axes[1].plot(x, num(r["late_seem_median"]), marker, mfc="none", color=c)
    axes[1].plot(g, [num(r["max_seem"]) for r in rows], "-", color="C3", lw=0.8)
    axes[1].axhline(thr, color="grey", lw=0.8)
    axes[1].axhline(0, color="black", lw=0.5)
    axes[1].set(xlabel="gamma", ylabel="SEEM", title="SEEM vs gamma (each seed)")
    axes[1].legend(
        handles=[
            Line2D([], [], color="k", marker="o", ls="", label="max over run"),
            Line2D([], [], color="k", marker="o", mfc="none", ls="", label="late-half median"),
            Line2D([], [], color="C3", marker="o", ls="", label="no LN"),
            Line2D([], [], color="C0", marker="s", ls="", label="LayerNorm"),
            Line2D([], [], color="grey", label=f"{thr:g}"),
        ],
        fontsize=7,
    )
    if est.get("bracketed"):
        for ax in axes[:2]:
            ax.axvline(est["threshold"], color="k", ls="--", lw=1)
        axes[0].plot([], [], "k--", lw=1, label=f"estimate (bound) {est['threshold']:.3g}")
    seem_est = result.get("estimate_seem", {})
    if seem_est.get("bracketed"):
        for ax in axes[:2]:
            ax.axvline(seem_est["threshold"], color="C1", ls=":", lw=1.2)
        axes[0].plot([], [], ":", color="C1", label=f"estimate (SEEM) {seem_est['threshold']:.3g}")
    axes[0].legend(fontsize=8)
    cmap = plt.get_cmap("viridis")
    gammas = sorted({r["gamma"] for r in runs})
    colour = {gm: cmap(i / max(len(gammas) - 1, 1)) for i, gm in enumerate(gammas)}
    for r in runs:
        ratio = np.abs(np.asarray([num(v) for v in r["q_mean"]])) / r["q_bound"]
        ls = "-" if r["norm"] == "none" else "--"
        axes[2].semilogy(r["q_mean_step"], ratio, ls, color=colour[r["gamma"]], lw=1.1)
    axes[2].axhline(1.0, color="grey", lw=0.8)
    for gm in gammas:
        axes[2].plot([], [], color=colour[gm], label=f"gamma {gm:g}")
    axes[2].plot([], [], "k--", label="LayerNorm")
    axes[2].set(
        xlabel="step",
        ylabel="|mean Q on probe| / (r_max / (1 - gamma))",
        title="|Q| / return bound over training",
    )
    axes[2].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- report


def _estimate_txt(est: dict[str, Any], event: str = "diverged") -> str:
    """The bracket in words; `event` names what a seed did (diverged, or warned by SEEM)."""
    if est["bracketed"]:
        mixed = ", ".join(f"{g:g}" for g in est["mixed"])
        return (
            f"threshold ~{est['threshold']:.3g} (no seed {event} at {est['low']:g}, every seed "
            f"at {est['high']:g}" + (f"; mixed at {mixed}" if mixed else "") + ")"
        )
    why = est["why"].replace("diverg", "warn") if event != "diverged" else est["why"]
    return f"not bracketed ({why})"


def _warned(result: dict[str, Any]) -> str:
    return f"had SEEM > {result['settings']['threshold']:g}"


def _ln_txt(ln_rows: Sequence[dict[str, Any]]) -> str:
    return ", ".join(f"{r['diverged']}/{r['seeds']} at {r['gamma']:g}" for r in ln_rows)


def summary_rows(result: dict[str, Any]) -> list[SummaryRow]:
    """One row: the estimate, the bracket and the LN contrast."""
    est, ln_rows = result["estimate"], result["by_gamma_ln"]
    fr = ", ".join(f"{r['gamma']:g}: {r['diverged']}/{r['seeds']}" for r in result["by_gamma"])
    return [
        SummaryRow(
            SECTION,
            "A critical discount exists (walker2d-medium-expert: diverges for gamma >= 0.928, "
            "converges for gamma <= 0.927)",
            f"PointMaze, no LN: {_estimate_txt(est)}; diverged seeds per gamma {fr}; by SEEM > "
            f"{result['settings']['threshold']:g} instead: {_estimate_txt(result['estimate_seem'], _warned(result))}"
            f"; LN crossed {_ln_txt(ln_rows)}",
            result["verdict"],
        )
    ]


def report_section(result: dict[str, Any], figures_rel: str) -> str:
    """Markdown section for docs/results.md."""
    s, cfg, est = result["settings"], result["config"], result["estimate"]
    data = cfg["data"]
    return section(
        f"{SECTION}. {TITLE}",
        "(paper; seem.md section 6): a sharp critical discount exists below which a "
        "no-LN critic converges (SEEM ~0) and above which it diverges (SEEM 0.10-0.36); on "
        f"walker2d-medium-expert it lies between {PAPER_THRESHOLD[0]} and {PAPER_THRESHOLD[1]}.",
        f"**Settings**: dataset {data['dataset']}, {data['max_transitions']} transitions. "
        f"{describe_setting(cfg)}. gamma in {list(s['gammas'])} with critic.norm none and in "
        f"{list(s['ln_gammas'])} with critic.norm layer (Linear -> LayerNorm -> ReLU in every "
        f"hidden layer); seeds {list(s['seeds'])}; {s['steps']} steps; evaluation off. A run "
        "diverged when |mean Q on the probe| crossed its own bound r_max/(1-gamma) at a report "
        "(the bound shrinks with gamma: see the table). Late SEEM = median over the probes "
        "after half the steps. Threshold = midpoint between the largest gamma where no seed "
        "diverged and the smallest where every seed did; verdict rule: reproduced if bracketed "
        "with a divergence fraction that never falls as gamma grows and no mixed gamma in the "
        "bracket (sharp to one grid step); partly if bracketed otherwise; not reproduced if a "
        "gamma without divergence lies above one with full divergence; inconclusive if the grid "
        "does not reach both regimes." + training_time_text(result),
        f"![Critical discount]({figures_rel}/{FIGURE})",
        table(
            [
                "critic",
                "gamma",
                "q_bound",
                "diverged",
                "crossed at",
                f"first SEEM > {s['threshold']:g}",
                "max SEEM",
                "late SEEM (per seed)",
                "final \\|Q\\|/bound (per seed)",
            ],
            (
                [
                    "LN" if row["norm"] != "none" else "no LN",
                    f"{row['gamma']:g}",
                    fmt(row["q_bound"]),
                    f"{row['diverged']}/{row['seeds']}",
                    _steps(row["bound_step"]),
                    _steps(row["first_seem_warn"]),
                    fmt(row["max_seem"], ".3f"),
                    _nums(row["late_seem"], ".3f"),
                    _nums(row["final_q_over_bound"], ".3g"),
                ]
                for row in [*result["by_gamma"], *result["by_gamma_ln"]]
            ),
        ),
        f"Estimate (bound crossing): {_estimate_txt(est)}. Verdict: **{result['verdict']}**. "
        f"Same bracket with 'SEEM > {s['threshold']:g} at some probe' as the criterion: "
        f"{_estimate_txt(result['estimate_seem'], _warned(result))}.",
        reading=reading(result),
    )


def _steps(values: Sequence[Any]) -> str:
    return ", ".join("-" if v is None else str(int(v)) for v in values)


def _g(row: dict[str, Any]) -> str:
    return f"{row['gamma']:g}"


def _step_range(values: Sequence[float]) -> str:
    if not values:
        return "n/a"
    lo, hi = int(min(values)), int(max(values))
    return str(lo) if lo == hi else f"{lo}-{hi}"


def _nums(values: Sequence[Any], spec: str) -> str:
    return ", ".join(fmt(v, spec) for v in values)


def reading(result: dict[str, Any]) -> list[str]:
    """The interpretation with the measured numbers filled in."""
    rows, ln_rows, est = result["by_gamma"], result["by_gamma_ln"], result["estimate"]
    thr, steps = result["settings"]["threshold"], result["settings"]["steps"]
    trend = "never falls" if est["monotone"] else "is not monotone"
    out = [
        f"- Estimate: {_estimate_txt(est)}; the fraction of diverged seeds {trend} as gamma grows."
    ]
    calm = [r for r in rows if r["diverged"] == 0]
    wild = [r for r in rows if r["diverged"] == r["seeds"]]
    mixed = [r for r in rows if 0 < r["diverged"] < r["seeds"]]
    if calm:
        late = [num(x) for r in calm for x in r["late_seem"]]
        peak = max(num(r["max_seem"]) for r in calm)
        growing = [_g(r) for r in calm if any(num(x) > 2 for x in r["q_growth_late"])]
        txt = (
            f"- No seed crossed the bound at gamma {', '.join(_g(r) for r in calm)}: late SEEM "
            f"{span(late)}, max SEEM {fmt(peak, '.3f')}"
        )
        if peak == 0.0:
            txt += (
                " (exactly 0: the probe is drawn with replacement, its duplicate rows give A "
                "exact zero eigenvalues, and every other eigenvalue was negative)"
            )
        txt += "; " + (
            f"|Q| still grew more than 2x over the second half at gamma {', '.join(growing)}, "
            f"so those may be slow divergers that {steps} steps do not resolve."
            if growing
            else "|Q| grew by at most 2x over the second half in every one of these runs "
            "(the figure shows it levelling off)."
        )
        out.append(txt)
    for r in mixed:
        seeds = [
            f"seed {i}: crossed at {_steps([b])}, max SEEM {fmt(m, '.3f')}, late SEEM "
            f"{fmt(late, '.3f')}, final |Q|/bound {fmt(q, '.3g')}, |Q| x{fmt(g, '.2f')} over the "
            "second half"
            for i, b, m, late, q, g in zip(
                r["seed_ids"],
                r["bound_step"],
                r["max_seem_per_seed"],
                r["late_seem"],
                r["final_q_over_bound"],
                r["q_growth_late"],
                strict=True,
            )
        ]
        out.append(
            f"- Mixed at gamma {_g(r)} ({r['diverged']}/{r['seeds']} crossed; "
            f"{r['warned']}/{r['seeds']} had SEEM > {thr:g}): " + "; ".join(seeds) + "."
        )
    if wild:
        first = [x for r in wild for x in r["first_seem_warn"] if x is not None]
        cross = [x for r in wild for x in r["bound_step"] if x is not None]
        out.append(
            f"- Every seed crossed at gamma {', '.join(_g(r) for r in wild)}: max SEEM "
            f"{span([num(r['max_seem']) for r in wild])}; SEEM first exceeded {thr:g} at steps "
            f"{_step_range(first)} and Q crossed the bound at steps {_step_range(cross)}."
        )
    seem_est = result["estimate_seem"]
    out.append(
        f"- By SEEM (> {thr:g} at some probe) instead of the bound: {_estimate_txt(seem_est, _warned(result))}."
        + (
            " SEEM separates the two regimes more sharply than the bound crossing within this "
            "budget, likely because it reads the current linearised dynamics, while crossing "
            "the bound also takes enough steps."
            if seem_est["bracketed"]
            and not seem_est["mixed"]
            and seem_est["monotone"]
            and (not est["bracketed"] or est["mixed"])
            else ""
        )
    )
    if ln_rows:
        out.append(
            f"- LayerNorm contrast: crossed {_ln_txt(ln_rows)}; max SEEM "
            f"{fmt(max(num(r['max_seem']) for r in ln_rows), '.3f')}, final |Q|/bound up to "
            f"{fmt(max(num(r['final_q_over_bound_max']) for r in ln_rows), '.3g')}."
        )
    out.append(
        "- The value differs from the paper's 0.927-0.928 and is not expected to match: the "
        "paper trained TD3 on walker2d-medium-expert-v2 (2M transitions, critic lr 3e-4, 1M "
        f"steps), we train on {result['config']['data']['max_transitions']} PointMaze "
        f"transitions with critic lr {result['config']['algo']['critic_lr']:g} for {steps} "
        f"steps, {len(result['settings']['seeds'])} seed(s), on a grid of "
        f"{len(rows)} gammas; the threshold depends on the data, the network and the budget "
        "(a run near the threshold may cross only after our budget). What carries over is "
        "whether a threshold exists and whether it is sharp, not its value."
    )
    return out


# ----------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """CLI entry: train the grid (or read cached runs), write the JSON and the figure."""
    return experiment_main(
        argv,
        name=NAME,
        doc=__doc__,
        figure=FIGURE,
        run=lambda quick: run(QUICK if quick else Settings(), f"{NAME}-quick" if quick else NAME),
        make_figure=make_figure,
    )


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main()
