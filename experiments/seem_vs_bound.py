"""Experiment 1: does SEEM flag a diverging critic before its Q crosses the return bound?

Claim (paper, docs/seem.md sections 2 and 6): SEEM turns positive, and stays well above 0, long
before Q crosses the return bound r_max/(1-gamma) in a critic that will diverge, stays ~0 for a
converging critic, and a LayerNorm critic keeps both SEEM ~0 and Q bounded.

Grid (full): plain offline TD3 in the service's divergence setting (experiments.service.demo_base:
bc_weight 0, tau 1, critic lr 3e-5), critic.norm in {none, layer}, seeds {0, 1}, 5000 steps,
SEEM and probe-Q every 100 steps, evaluation every 1000 steps (2 episodes), on
seem_ray/pointmaze-umaze-dense-v0 (2000 transitions) and seem_ray/hopper-random-v0 (1000
transitions): 8 runs. Quick: PointMaze only, one seed, 150 steps.

Per run: first step SEEM > 0 and > 0.05, first step |mean Q on the probe| > q_bound, the lead
(bound step / SEEM step), and the final Q, critic weight norm and normalized score. The helpers
`run_facts`, `curves` and `describe_setting` are shared with experiments.gamma_threshold.

    python -m experiments.seem_vs_bound [--quick]
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
from experiments.service import RunRecord, crossed_at, demo_base, first_step, run_grid, series
from seem_ray import metrics as M
from seem_ray.config import RunConfig

NAME = "seem_vs_bound"
FIGURE = "seem_vs_bound.png"
SECTION = "1"
TITLE = "SEEM vs the Q bound"
SEEM_THRESHOLD = 0.05
"""SEEM level that counts as a warning (the stopper's default threshold)."""

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatasetSpec:
    """One local Minari dataset and how many of its transitions the runs keep."""

    label: str
    dataset: str
    max_transitions: int


POINTMAZE = DatasetSpec("pointmaze", "seem_ray/pointmaze-umaze-dense-v0", 2000)
HOPPER = DatasetSpec("hopper", "seem_ray/hopper-random-v0", 1000)


@dataclass(frozen=True)
class Settings:
    """The grid; every field is reported in results.md."""

    datasets: tuple[DatasetSpec, ...] = (POINTMAZE, HOPPER)
    norms: tuple[str, ...] = ("none", "layer")
    seeds: tuple[int, ...] = (0, 1)
    steps: int = 5000
    log_every: int = 100
    seem_every: int = 100
    eval_every: int = 1000
    eval_episodes: int = 2
    threshold: float = SEEM_THRESHOLD


QUICK = Settings(
    datasets=(POINTMAZE,),
    seeds=(0,),
    steps=150,
    log_every=50,
    seem_every=50,
    eval_every=0,
    eval_episodes=1,
)


def run_name(spec: DatasetSpec, norm: str, seed: int) -> str:
    return f"{spec.label}_{norm}_s{seed}"


def configs(s: Settings) -> dict[str, RunConfig]:
    """One demo_base RunConfig per (dataset, norm, seed)."""
    out = {}
    for spec in s.datasets:
        for norm in s.norms:
            for seed in s.seeds:
                out[run_name(spec, norm, seed)] = demo_base(
                    {
                        "data.dataset": spec.dataset,
                        "data.max_transitions": spec.max_transitions,
                        "critic.norm": norm,
                        "train.seed": seed,
                        "train.steps": s.steps,
                        "train.log_every": s.log_every,
                        "seem.every": s.seem_every,
                        "train.eval_every": s.eval_every,
                        "train.eval_episodes": s.eval_episodes,
                    }
                )
    return out


# ----------------------------------------------------------------------------- analysis


def _last(values: np.ndarray) -> float:
    return float(values[-1]) if values.size else math.nan


def run_facts(rec: RunRecord, threshold: float = SEEM_THRESHOLD) -> dict[str, Any]:
    """The per-run numbers of both sections: warning steps, bound crossing, lead, final state.

    A run "warned before crossing" when SEEM exceeded `threshold` strictly before the first
    report with |mean Q| > q_bound; SEEM and Q share the report cadence, so a same-step warning
    is no warning. The late-half median SEEM (steps > steps/2) tells a sustained positive SEEM
    from an early transient; the lowest SEEM after the first warning shows whether it stayed up.
    """
    seem_pos = first_step(rec, M.SEEM, lambda v: v > 0)
    seem_thr = first_step(rec, M.SEEM, lambda v: v > threshold)
    bound = crossed_at(rec)
    seem_t, seem_v = series(rec, M.SEEM)
    q_t, q_v = series(rec, M.Q_MEAN)
    _, norm_v = series(rec, M.CRITIC_WEIGHT_NORM)
    _, score_v = series(rec, M.NORMALIZED_SCORE)
    finite_seem = seem_v[np.isfinite(seem_v)]
    after = (seem_t >= seem_thr) & np.isfinite(seem_v) if seem_thr is not None else None
    dip = int(np.argmin(np.where(after, seem_v, np.inf))) if after is not None else None
    before_bound = (
        seem_v[after & (seem_t < bound)] if after is not None and bound is not None else None
    )
    late = seem_v[(seem_t > rec.steps / 2) & np.isfinite(seem_v)]
    half = q_v[q_t <= rec.steps / 2]
    q_mid, q_end = (_last(half), _last(q_v))
    return {
        "name": rec.name,
        "q_bound": rec.q_bound,
        "steps": rec.steps,
        "first_seem_pos": seem_pos,
        "first_seem_warn": seem_thr,
        "bound_step": bound,
        "diverged": bound is not None,
        "warned_before": bound is not None and seem_thr is not None and seem_thr < bound,
        "lead": bound / seem_thr if bound is not None and seem_thr else None,
        "lead_pos": bound / seem_pos if bound is not None and seem_pos else None,
        "max_seem": float(finite_seem.max()) if finite_seem.size else math.nan,
        "late_seem_median": float(np.median(late)) if late.size else math.nan,
        "min_seem_after_warn": float(seem_v[dip]) if dip is not None else math.nan,
        "min_seem_after_warn_step": int(seem_t[dip]) if dip is not None else None,
        "min_seem_warn_to_bound": float(before_bound.min())
        if before_bound is not None and before_bound.size
        else math.nan,
        "final_q": q_end,
        "final_q_over_bound": abs(q_end) / rec.q_bound if rec.q_bound > 0 else math.nan,
        "q_growth_late": abs(q_end) / abs(q_mid) if q_mid and math.isfinite(q_mid) else math.nan,
        "final_weight_norm": _last(norm_v),
        "final_score": _last(score_v),
        "wall_seconds": rec.wall_seconds,
    }


def curves(rec: RunRecord) -> dict[str, list[float]]:
    """The metric histories the figures need (JSON-ready lists)."""
    out: dict[str, list[float]] = {}
    for key, label in (
        (M.SEEM, "seem"),
        (M.Q_MEAN, "q_mean"),
        (M.CRITIC_WEIGHT_NORM, "weight_norm"),
        (M.NORMALIZED_SCORE, "score"),
    ):
        steps, values = series(rec, key)
        out[f"{label}_step"] = steps.tolist()
        out[label] = values.tolist()
    return out


def early_warning_verdict(runs: Sequence[dict[str, Any]]) -> str:
    """The brief's rule: every bound-crossing run warned (SEEM > threshold) before crossing and
    no LayerNorm run crossed -> reproduced; one of the two -> partly; neither -> not reproduced;
    no run crossed -> inconclusive (nothing to warn about)."""
    crossing = [r for r in runs if r["diverged"]]
    if not crossing:
        return "inconclusive"
    all_warned = all(r["warned_before"] for r in crossing)
    ln_bounded = not any(r["diverged"] for r in runs if r["norm"] != "none")
    if all_warned and ln_bounded:
        return "reproduced"
    return "partly" if all_warned or ln_bounded else "not reproduced"


def quiet_verdict(runs: Sequence[dict[str, Any]], threshold: float = SEEM_THRESHOLD) -> str:
    """SEEM ~0 for the converging critics, i.e. the LayerNorm runs that stayed bounded: each
    one's late-half median SEEM <= threshold.

    No-LN runs that did not cross are left out: within a short budget they may be slow
    divergers, so they are no clean "converging" case. All quiet -> reproduced, some -> partly,
    none -> not reproduced, no such run -> inconclusive.
    """
    bounded = converging_runs(runs)
    if not bounded:
        return "inconclusive"
    quiet = sum(1 for r in bounded if num(r["late_seem_median"]) <= threshold)
    if quiet == len(bounded):
        return "reproduced"
    return "partly" if quiet else "not reproduced"


def converging_runs(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """LayerNorm runs whose Q never crossed the bound."""
    return [r for r in runs if r["norm"] != "none" and not r["diverged"]]


# ----------------------------------------------------------------------------- running


def run(s: Settings, experiment: str) -> dict[str, Any]:
    """Train (or read back) the grid and analyse each run."""
    cfgs = configs(s)
    records = run_grid(experiment, cfgs)
    runs = []
    for spec in s.datasets:
        for norm in s.norms:
            for seed in s.seeds:
                rec = records[run_name(spec, norm, seed)]
                facts = run_facts(rec, s.threshold)
                runs.append(
                    {"dataset": spec.label, "norm": norm, "seed": seed, **facts, **curves(rec)}
                )
    first = next(iter(records.values()))
    return {
        "settings": asdict(s),
        "train_seconds": sum(rec.wall_seconds for rec in records.values()),
        "config": first.config,
        "dataset_ids": {spec.label: spec.dataset for spec in s.datasets},
        "runs": runs,
        "verdict_warning": early_warning_verdict(runs),
        "verdict_quiet": quiet_verdict(runs, s.threshold),
    }


# ----------------------------------------------------------------------------- figure

NORM_COLORS = {"none": "C3", "layer": "C0"}


def _markers(ax: Any, r: dict[str, Any], color: str) -> None:
    if r.get("first_seem_warn") is not None:
        ax.axvline(r["first_seem_warn"], color=color, ls=":", lw=1)
    if r.get("bound_step") is not None:
        ax.axvline(r["bound_step"], color=color, ls="--", lw=1)


def make_figure(result: dict[str, Any], path: Path) -> Path:
    """Per dataset: SEEM, |Q mean|/q_bound (log), critic weight norm, normalized score vs step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    runs = result["runs"]
    labels = list(dict.fromkeys(r["dataset"] for r in runs))
    seeds = sorted({r["seed"] for r in runs})
    styles = {seed: ("-", "-.", (0, (5, 1)))[i % 3] for i, seed in enumerate(seeds)}
    thr = result["settings"]["threshold"]
    fig, axes = plt.subplots(len(labels), 4, figsize=(18, 3.8 * len(labels)), squeeze=False)
    for row, label in enumerate(labels):
        ax_s, ax_q, ax_n, ax_r = axes[row]
        for r in (x for x in runs if x["dataset"] == label):
            c, ls = NORM_COLORS.get(r["norm"], "C2"), styles[r["seed"]]
            ax_s.plot(r["seem_step"], _nan(r["seem"]), ls=ls, color=c, lw=1.2)
            ratio = np.abs(_nan(r["q_mean"])) / r["q_bound"]
            ax_q.semilogy(r["q_mean_step"], ratio, ls=ls, color=c, lw=1.2)
            ax_n.plot(r["weight_norm_step"], _nan(r["weight_norm"]), ls=ls, color=c, lw=1.2)
            if r["score"]:
                ax_r.plot(r["score_step"], _nan(r["score"]), ls=ls, color=c, marker="o", ms=3)
            for ax in (ax_s, ax_q, ax_n):
                _markers(ax, r, c)
        ax_s.axhline(thr, color="grey", lw=0.8)
        ax_s.axhline(0, color="black", lw=0.5)
        ax_q.axhline(1.0, color="grey", lw=0.8)
        ax_s.set(ylabel=f"{label}\nSEEM", title=f"{label}: SEEM (grey: {thr:g})")
        ax_q.set(ylabel="|mean Q on probe| / q_bound", title=f"{label}: |Q| / return bound")
        ax_n.set(ylabel="||theta_critic||", title=f"{label}: critic weight norm")
        ax_r.set(ylabel="normalized score", title=f"{label}: evaluation")
        for ax in axes[row]:
            ax.set_xlabel("step")
    handles = [Line2D([], [], color=c, label=f"critic.norm={n}") for n, c in NORM_COLORS.items()]
    handles += [Line2D([], [], color="k", ls=styles[s], label=f"seed {s}") for s in seeds]
    handles += [
        Line2D([], [], color="k", ls=":", label=f"first SEEM > {thr:g}"),
        Line2D([], [], color="k", ls="--", label="|Q| crosses bound"),
    ]
    axes[0][0].legend(handles=handles, fontsize=7, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _nan(values: Sequence[Any]) -> np.ndarray:
    """JSON nulls (non-finite values) back to nan so matplotlib leaves gaps."""
    return np.asarray([num(v) for v in values], dtype=np.float64)


# ----------------------------------------------------------------------------- report


def describe_setting(cfg: dict[str, Any]) -> str:
    """The training setting of one run's config, in words, for the report's Settings line."""
    a, t, s = cfg["algo"], cfg["train"], cfg["seem"]
    td3 = a["td3bc"]
    hidden = "-".join(str(h) for h in cfg["critic"]["hidden"])
    return (
        f"plain offline TD3 (TD3+BC with bc_weight {td3['bc_weight']:g}: actor loss "
        f"-{td3['bc_alpha']:g} Q/mean|Q|), twin {hidden} ReLU critics, tau {a['tau']:g} (hard "
        f"target copy at every actor update, policy_freq {td3['policy_freq']}), Adam critic lr "
        f"{a['critic_lr']:g}, actor lr {a['actor_lr']:g}, batch {a['batch_size']}, target noise "
        f"{td3['policy_noise']:g} (clip {td3['noise_clip']:g}), states standardised, "
        f"transitions subsampled at random (subsample seed {cfg['data']['subsample_seed']}, the "
        f"same for every training seed). SEEM on critic head {s['head']} over a fixed probe of "
        f"{s['probe_size']} training transitions (drawn once with replacement; X* = (s', online "
        f"actor(s')), terminals {'masked' if s['mask_terminals'] else 'not masked'}) every "
        f"{s['every']} steps; Q statistics on the same probe every {t['log_every']} steps; "
        "stopper off; 1 CPU thread per run"
    )


def training_time_text(result: dict[str, Any]) -> str:
    """Training time of the grid (summed run wall times), when recorded."""
    total = result.get("train_seconds")
    if total is None:
        return ""
    return (
        f" Training took {num(total) / 60:.1f} min summed over the {len(result['runs'])} runs "
        "(wall time per run, two runs at a time on a shared 2-core machine)."
    )


def _eval_txt(s: dict[str, Any]) -> str:
    if not s["eval_episodes"]:
        return "off"
    every = f"every {s['eval_every']} steps and " if s["eval_every"] else ""
    return f"{every}at the end ({s['eval_episodes']} episodes)"


def _step(value: Any) -> str:
    return "-" if value is None else str(int(value))


def _lead(value: Any) -> str:
    return "-" if value is None else f"{num(value):.1f}x"


def summary_rows(result: dict[str, Any]) -> list[SummaryRow]:
    """Two rows: the early warning (brief's rule) and SEEM ~0 for bounded critics."""
    runs, thr = result["runs"], result["settings"]["threshold"]
    crossing = [r for r in runs if r["diverged"]]
    warned = [r for r in crossing if r["warned_before"]]
    leads = [num(r["lead"]) for r in warned if r["lead"] is not None]
    ln = [r for r in runs if r["norm"] != "none"]
    ln_crossed = sum(r["diverged"] for r in ln)
    lead_txt = f", lead {min(leads):.1f}-{max(leads):.1f}x" if leads else ""
    probe0 = min((r["seem_step"][0] for r in runs if r["seem_step"]), default=None)
    if leads and all(r["first_seem_warn"] == probe0 for r in warned):
        lead_txt += f" (a lower bound: all warned at the first probe, step {_step(probe0)})"
    bounded = converging_runs(runs)
    quiet = [r for r in bounded if num(r["late_seem_median"]) <= thr]
    med = [num(r["late_seem_median"]) for r in bounded]
    med_txt = f"{min(med):.3f} to {max(med):.3f}" if med else "n/a"
    return [
        SummaryRow(
            SECTION,
            "SEEM > 0 flags divergence early: it turns positive long before Q crosses the "
            "return bound, and LayerNorm keeps Q bounded",
            f"{len(crossing)}/{len(runs)} runs crossed the bound; {len(warned)}/{len(crossing)} "
            f"had SEEM > {thr:g} before crossing{lead_txt}; {ln_crossed}/{len(ln)} LN runs "
            "crossed",
            result["verdict_warning"],
        ),
        SummaryRow(
            SECTION,
            "SEEM stays ~0 for a converging critic; LayerNorm keeps SEEM ~0",
            f"{len(quiet)}/{len(bounded)} LN runs that stayed bounded had late-half median SEEM <= {thr:g} "
            f"(range {med_txt})",
            result["verdict_quiet"],
        ),
    ]


def report_section(result: dict[str, Any], figures_rel: str) -> str:
    """Markdown section for docs/results.md."""
    s, cfg = result["settings"], result["config"]
    thr = s["threshold"]
    data_txt = "; ".join(
        f"{d['label']}: {result['dataset_ids'][d['label']]}, {d['max_transitions']} transitions"
        for d in s["datasets"]
    )
    gamma = cfg["algo"]["gamma"]
    bounds = {r["dataset"]: r["q_bound"] for r in result["runs"]}
    bound_txt = ", ".join(f"{k} {fmt(v)}" for k, v in bounds.items())
    return section(
        f"{SECTION}. {TITLE}",
        "(paper; seem.md sections 2 and 6): SEEM turns positive and stays well above 0 "
        "long before Q crosses the return bound in a critic that will diverge, stays ~0 in a "
        "converging critic, and a LayerNorm critic keeps SEEM ~0 and Q bounded.",
        f"**Settings**: datasets {data_txt}. {describe_setting(cfg)}. gamma {gamma:g}; "
        f"critic.norm in {list(s['norms'])} (LN = Linear -> LayerNorm -> ReLU in every hidden "
        f"layer); seeds {list(s['seeds'])}; {s['steps']} steps; evaluation {_eval_txt(s)}. "
        "Return bound "
        f"q_bound = max|r| / (1 - gamma): {bound_txt}. A run *crossed* when |mean Q on the "
        f"probe| > q_bound at a report; it *warned* when SEEM > {thr:g} at a report strictly "
        "before that. Lead = bound step / first warning step. Late SEEM = median SEEM over the "
        "probes after half the steps. Verdict rule (early warning): reproduced if every crossing "
        f"run warned before crossing and no LN run crossed; partly if one of the two holds. "
        f"Verdict rule (quiet): reproduced if every LN run that stayed bounded has late SEEM <= "
        f"{thr:g}; partly if some do (no-LN runs that did not cross are left out: they may be "
        "slow divergers)." + training_time_text(result),
        f"![SEEM vs the Q bound]({figures_rel}/{FIGURE})",
        table(
            [
                "dataset",
                "norm",
                "seed",
                "first SEEM > 0",
                f"first SEEM > {thr:g}",
                "crossed bound at",
                "lead",
                "max SEEM",
                "late SEEM",
                "final mean Q",
                "final \\|Q\\|/bound",
                "final \\|\\|theta\\|\\|",
                "final score",
            ],
            (
                [
                    r["dataset"],
                    r["norm"],
                    r["seed"],
                    _step(r["first_seem_pos"]),
                    _step(r["first_seem_warn"]),
                    _step(r["bound_step"]),
                    _lead(r["lead"]),
                    fmt(r["max_seem"], ".3f"),
                    fmt(r["late_seem_median"], ".3f"),
                    fmt(r["final_q"]),
                    fmt(r["final_q_over_bound"]),
                    fmt(r["final_weight_norm"]),
                    fmt(r["final_score"], ".1f"),
                ]
                for r in result["runs"]
            ),
        ),
        f"Verdicts: early warning **{result['verdict_warning']}**, quiet when bounded "
        f"**{result['verdict_quiet']}**.",
        reading=reading(result),
    )


def _group(runs: Sequence[dict[str, Any]], dataset: str, norm: str) -> list[dict[str, Any]]:
    return [r for r in runs if r["dataset"] == dataset and r["norm"] == norm]


def reading(result: dict[str, Any]) -> list[str]:
    """The interpretation, one bullet per dataset plus the caveats, numbers filled in."""
    runs, thr = result["runs"], result["settings"]["threshold"]
    out = []
    for label in dict.fromkeys(r["dataset"] for r in runs):
        parts = []
        for norm in result["settings"]["norms"]:
            grp = _group(runs, label, norm)
            if not grp:
                continue
            crossed = [r for r in grp if r["diverged"]]
            txt = (
                f"norm={norm}: {len(crossed)}/{len(grp)} crossed the bound"
                + (f" (at steps {', '.join(_step(r['bound_step']) for r in crossed)})")
                * bool(crossed)
                + f", first SEEM > {thr:g} at step(s) "
                + ", ".join(_step(r["first_seem_warn"]) for r in grp)
                + f", max SEEM {span([num(r['max_seem']) for r in grp])}, late SEEM "
                + span([num(r["late_seem_median"]) for r in grp])
                + f", final |Q|/bound {span([num(r['final_q_over_bound']) for r in grp], '.3g')}"
                + f", final score {span([num(r['final_score']) for r in grp], '.1f')}"
            )
            still = [
                r
                for r in grp
                if not r["diverged"] and num(r["q_growth_late"]) > 2 and r["norm"] == "none"
            ]
            if still:
                txt += (
                    f"; {len(still)} of them still growing (|Q| x"
                    f"{span([num(r['q_growth_late']) for r in still], '.1f')} over the second "
                    "half), so 'bounded' there means 'not yet crossed within the budget'"
                )
            parts.append(txt)
        out.append(f"- {label}: " + "; ".join(parts) + ".")
    crossing = [r for r in runs if r["diverged"] and r["first_seem_warn"] is not None]
    if crossing:
        probe0 = min(r["seem_step"][0] for r in runs if r["seem_step"])
        at_first = sum(1 for r in crossing if r["first_seem_warn"] == probe0)
        held = ", ".join(
            f"{r['dataset']}/{r['norm']}/s{r['seed']} {fmt(r['min_seem_warn_to_bound'], '.3f')}"
            for r in crossing
        )
        later = [
            f"{r['dataset']}/{r['norm']}/s{r['seed']} to {fmt(r['min_seem_after_warn'], '.3f')} "
            f"at step {_step(r['min_seem_after_warn_step'])}"
            for r in crossing
            if num(r["min_seem_after_warn"]) <= thr
            and r["min_seem_after_warn_step"] >= r["bound_step"]
        ]
        out.append(
            f"- Lead: {at_first}/{len(crossing)} crossing runs were already above {thr:g} at the "
            f"first probe (step {_step(probe0)}), so their lead is a lower bound set by the probe "
            "cadence. Lowest SEEM between the first warning and the crossing: "
            + held
            + (
                f". After the crossing SEEM fell to <= {thr:g} in {', '.join(later)} (seem.md "
                "notes SEEM can fall back once Q has blown up)."
                if later
                else f"; SEEM stayed above {thr:g} until the end in every one."
            )
        )
    pos_first = [r["first_seem_pos"] for r in runs]
    first_probe = min((p for p in pos_first if p is not None), default=None)
    n_at_first = sum(1 for p in pos_first if p is not None and p == first_probe)
    n_ln = sum(1 for r in runs if r["norm"] != "none")
    n_ln_pos = sum(1 for r in runs if r["norm"] != "none" and r["first_seem_pos"] is not None)
    ln_max = span([num(r["max_seem"]) for r in runs if r["norm"] != "none"])
    out.append(
        f"- SEEM > 0: {n_at_first}/{len(runs)} runs were positive at the first probe (step "
        f"{_step(first_probe)}) and {n_ln_pos}/{n_ln} LN runs were positive at some probe (LN "
        f"max SEEM {ln_max}), so the sign alone separates little here; the level and its "
        f"persistence (threshold {thr:g}) are the contrast."
    )
    scores = {
        norm: [num(r["final_score"]) for r in runs if r["norm"] == norm]
        for norm in result["settings"]["norms"]
    }
    if any(math.isfinite(x) for v in scores.values() for x in v):
        out.append(
            "- Final normalized score (each an average of only "
            f"{result['settings']['eval_episodes']} episodes, so noisy): "
            + "; ".join(f"norm={k}: {span(v, '.1f')}" for k, v in scores.items())
            + "."
        )
    sizes = ", ".join(
        f"{d['max_transitions']} {d['label']} transitions" for d in result["settings"]["datasets"]
    )
    out.append(
        f"- Our setting is not the paper's: {sizes} instead of D4RL's ~1-2M, critic lr "
        f"{result['config']['algo']['critic_lr']:g} instead of 3e-4, {result['settings']['steps']} "
        f"steps instead of 1M, {len(result['settings']['seeds'])} seed(s). 'Stayed bounded' "
        "holds for this budget only."
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
