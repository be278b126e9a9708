"""Experiment 7: what the SEEM stopper saves, and how early it acts, against a Q-bound stopper.

Claim (project design, docs/seem.md section 9): stopping predicted divergers early saves compute
without killing trials that would not have diverged, and the SEEM stopper (the calibrated
composite predictor of seem_ray.divergence) detects divergence earlier than a stopper that waits
for |mean Q| to cross the return bound r_max/(1-gamma).

Method: train a mixed grid with the stopper off, so each run's whole metric stream is known, then
replay every stream through a fresh seem_ray.stopper.DivergenceStopper of each kind (seem,
q_bound) exactly as Ray Tune calls it (benchmarks.bench_stopper.replay). Ground truth: a run
diverged when |mean Q| on the probe crossed the bound within the budget (service.crossed_at).

Grid (full): `experiments.service.demo_base` (plain offline TD3 on PointMaze, critic lr 3e-5,
tau 1), 4,000 steps, no evaluation, seed 0, critic.norm {none, layer} x data.max_transitions
{2000, 10000} x algo.gamma {0.9, 0.99}: 8 runs, 3.5 minutes on 2 processes (measured).
Quick: no norm and LN on 2,000 transitions, gamma 0.99, 200 steps.

    python -m experiments.stopper_value [--quick] [--replot]
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.bench_stopper import replay
from experiments.common import (
    SummaryRow,
    experiment_main,
    fmt,
    num,
)
from experiments.report import section, table
from experiments.service import (
    RunRecord,
    crossed_at,
    demo_base,
    run_grid,
    series,
)
from seem_ray import metrics as M
from seem_ray.config import RunConfig, StopperConfig, to_dict
from seem_ray.stopper import DivergenceStopper
from seem_ray.train import Q_BOUND_KEY

NAME = "stopper_value"
FIGURE = "stopper_value.png"
KINDS = ("seem", "q_bound")

# Quoted from docs/benchmarks.md ("Stopper on a mixed sweep"): the same replay on a Ray Tune
# sweep (tune_configs/mixed.yaml). Not re-run here.
TUNE_BENCHMARK = (
    "The Ray Tune measurement in docs/benchmarks.md (section 'Stopper on a mixed sweep', "
    "`benchmarks/bench_stopper.py` on `tune_configs/mixed.yaml`: plain offline TD3 on 1,000 / "
    "5,000 PointMaze transitions, critics with and without LN, gamma 0.99 / 0.995 / 0.999, "
    "8,000 steps, seed 1, 12 trials recorded by Ray Tune with no stopper, then replayed with the "
    "out-of-sample defaults of docs/calibration.md): the SEEM stopper stopped all six no-LN "
    "trials at step 200-400 and no LN trial; all six crossed the bound within the budget (lead "
    "over the Q-bound stopper 7.5-9.0x, median 8.6x), so 0 false kills; it saved 48.3% of the "
    "no-stopper steps (96.7% of the 50% a half-diverging sweep allows) against 35.8% saved by "
    "the Q-bound stopper."
)


log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StopperSettings:
    """Grid of the experiment; every field is reported in results.md."""

    norms: tuple[str, ...] = ("none", "layer")
    transitions: tuple[int, ...] = (2000, 10000)
    gammas: tuple[float, ...] = (0.9, 0.99)
    seed: int = 0
    steps: int = 4000


QUICK = StopperSettings(norms=("none", "layer"), transitions=(2000,), gammas=(0.99,), steps=200)


def run_name(norm: str, transitions: int, gamma: float) -> str:
    return f"{norm}_n{transitions}_g{gamma:g}"


def grid(s: StopperSettings) -> dict[str, RunConfig]:
    """Run name -> demo_base config, stopper off, no evaluation."""
    return {
        run_name(norm, n, gamma): demo_base(
            {
                "critic.norm": norm,
                "data.max_transitions": n,
                "algo.gamma": gamma,
                "train.steps": s.steps,
                "train.seed": s.seed,
                "train.eval_episodes": 0,
            }
        )
        for norm in s.norms
        for n in s.transitions
        for gamma in s.gammas
    }


# ----------------------------------------------------------------------------- analysis


def tune_stream(rec: RunRecord) -> list[dict[str, Any]]:
    """The run's reports as Tune results: every record carries the run's q_bound (train.py)."""
    return [{**r, Q_BOUND_KEY: rec.q_bound} for r in rec.history]


def stop_reasons(
    kind: str, streams: Mapping[str, list[dict[str, Any]]], stops: Mapping[str, int | None]
) -> dict[str, str | None]:
    """Why each stopped run was stopped: the verdict of a fresh stopper fed up to its stop step."""
    stopper = DivergenceStopper(StopperConfig(kind=kind))
    out: dict[str, str | None] = {}
    for name, stop in stops.items():
        out[name] = None
        if stop is None:
            continue
        for result in streams[name]:
            if int(result[M.STEP]) <= stop:
                stopper(name, result)
        out[name] = stopper.verdicts[name].reason
    return out


def score_stopper(
    stops: Mapping[str, int | None],
    truth: Mapping[str, int | None],
    budgets: Mapping[str, int],
) -> dict[str, Any]:
    """Compute and detection numbers of one stopper kind against the ground truth.

    Args:
        stops: run -> step the stopper stopped it (None = ran to its budget).
        truth: run -> step |mean Q| crossed the bound (None = never).
        budgets: run -> steps the run trains without a stopper.
    """
    used = sum(
        min(stop, budgets[n]) if stop is not None else budgets[n] for n, stop in stops.items()
    )
    total = sum(budgets[n] for n in stops)
    divergers = [n for n in stops if truth[n] is not None]
    leads = {
        n: truth[n] / stops[n]  # type: ignore[operator]
        for n in divergers
        if stops[n] is not None and stops[n] > 0  # type: ignore[operator]
    }
    lead_values = sorted(leads.values())
    return {
        "steps_used": used,
        "steps_budget": total,
        "saved_fraction": 1.0 - used / total if total else math.nan,
        "stopped": sorted(n for n, s in stops.items() if s is not None),
        "detections": {n: stops[n] for n in divergers},
        "leads": leads,
        "median_lead": float(np.median(lead_values)) if lead_values else math.nan,
        "min_lead": lead_values[0] if lead_values else math.nan,
        "early": sorted(n for n, x in leads.items() if x > 1.0),
        "false_kills": sorted(n for n, s in stops.items() if s is not None and truth[n] is None),
        "missed": sorted(n for n in divergers if stops[n] is None),
    }


def analyse(records: Mapping[str, RunRecord]) -> dict[str, Any]:
    """Replay every run through each stopper kind and score the kinds against the truth."""
    streams = {name: tune_stream(rec) for name, rec in records.items()}
    truth = {name: crossed_at(rec) for name, rec in records.items()}
    budgets = {name: rec.steps for name, rec in records.items()}
    stops = {kind: replay(kind, streams) for kind in KINDS}
    reasons = {kind: stop_reasons(kind, streams, stops[kind]) for kind in KINDS}
    runs = []
    for name, rec in records.items():
        q_steps, q_mean = series(rec, M.Q_MEAN)
        seem_steps, seem = series(rec, M.SEEM)
        finite = seem[np.isfinite(seem)]
        runs.append(
            {
                "name": name,
                "norm": rec.config["critic"]["norm"],
                "transitions": rec.config["data"]["max_transitions"],
                "gamma": rec.config["algo"]["gamma"],
                "q_bound": rec.q_bound,
                "budget": rec.steps,
                "wall_seconds": rec.wall_seconds,
                "crossed_at": truth[name],
                "stops": {k: stops[k][name] for k in KINDS},
                "reasons": {k: reasons[k][name] for k in KINDS},
                "max_seem": float(finite.max()) if finite.size else math.nan,
                "final_q_ratio": float(abs(q_mean[-1]) / rec.q_bound) if q_mean.size else math.nan,
                "peak_q_ratio": float(np.max(np.abs(q_mean)) / rec.q_bound)
                if q_mean.size
                else math.nan,
                "curve_steps": q_steps.tolist(),
                "curve_q_ratio": (np.abs(q_mean) / rec.q_bound).tolist(),
                "curve_seem_steps": seem_steps.tolist(),
                "curve_seem": seem.tolist(),
            }
        )
    kinds = {kind: score_stopper(stops[kind], truth, budgets) for kind in KINDS}
    return {
        "runs": runs,
        "kinds": kinds,
        "divergers": sorted(n for n, t in truth.items() if t is not None),
        "healthy": sorted(n for n, t in truth.items() if t is None),
    }


# ----------------------------------------------------------------------------- verdicts


def verdict_compute(result: dict[str, Any]) -> str:
    """Saves compute without killing healthy runs?

    inconclusive: the grid has no diverger or no healthy run; reproduced: the SEEM stopper saved
    more steps than the Q-bound stopper with no false kill and no missed diverger; partly: it
    saved more but with a false kill or miss; not reproduced: it saved no more than Q-bound.
    """
    if not result["divergers"] or not result["healthy"]:
        return "inconclusive"
    seem, bound = result["kinds"]["seem"], result["kinds"]["q_bound"]
    if seem["saved_fraction"] <= bound["saved_fraction"]:
        return "not reproduced"
    if seem["false_kills"] or seem["missed"]:
        return "partly"
    return "reproduced"


def verdict_lead(result: dict[str, Any]) -> str:
    """Detects divergence earlier than the Q bound?

    inconclusive: no diverger; reproduced: every diverger stopped strictly before it crossed
    (lead > 1); partly: some; not reproduced: none.
    """
    divergers = result["divergers"]
    if not divergers:
        return "inconclusive"
    early = len(result["kinds"]["seem"]["early"])
    if early == len(divergers):
        return "reproduced"
    return "partly" if early else "not reproduced"


# ----------------------------------------------------------------------------- figure


def make_figure(result: dict[str, Any], path: Path) -> Path:
    """Per-run timelines (where each stopper stops, where Q crosses) and |Q|/bound curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = result["runs"]
    threshold = StopperConfig().seem_threshold
    fig, axes = plt.subplots(1, 2, figsize=(16, 0.55 * len(runs) + 3.2))
    ax = axes[0]
    for y, r in enumerate(runs):
        ax.barh(y, r["budget"], color="0.9", edgecolor="0.6", height=0.6)
        positive = [
            s
            for s, v in zip(r["curve_seem_steps"], r["curve_seem"], strict=True)
            if v is not None and num(v) > threshold
        ]
        ax.scatter(positive, [y] * len(positive), s=6, color="C2", zorder=2)
        if r["crossed_at"] is not None:
            ax.scatter(r["crossed_at"], y, marker="*", s=220, color="red", zorder=4)
        for kind, marker, color, dy in (("seem", "v", "C0", 0.22), ("q_bound", "s", "C1", -0.22)):
            stop = r["stops"][kind]
            if stop is not None:
                ax.scatter(stop, y + dy, marker=marker, s=70, color=color, zorder=5)
    ax.scatter([], [], marker="v", color="C0", label="SEEM stopper stops")
    ax.scatter([], [], marker="s", color="C1", label="Q-bound stopper stops")
    ax.scatter([], [], marker="*", s=120, color="red", label="|Q| crosses the bound")
    ax.scatter([], [], s=6, color="C2", label=f"SEEM probe > {threshold}")
    ax.set_yticks(range(len(runs)))
    ax.set_yticklabels([r["name"] for r in runs], fontsize=8)
    ax.invert_yaxis()
    ax.set(xlabel="step (grey bar = no-stopper budget)", title="where each stopper stops")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.09), ncol=4)
    ax = axes[1]
    for i, r in enumerate(runs):
        c = f"C{i % 10}"
        ratio = np.asarray([num(v) for v in r["curve_q_ratio"]])
        steps = np.asarray(r["curve_steps"])
        ax.semilogy(steps, np.where(np.isfinite(ratio), ratio, np.nan), color=c, label=r["name"])
        stop = r["stops"]["seem"]
        if stop is not None and stop in r["curve_steps"]:
            ax.scatter(stop, ratio[r["curve_steps"].index(stop)], marker="v", s=70, color=c)
    ax.axhline(1, color="red", ls=":", lw=1, label="return bound")
    ax.set(
        xlabel="step",
        ylabel="|mean Q| on probe / bound",
        title="|Q| / bound (triangles: SEEM stopper stops)",
    )
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- report


def _names(names: Sequence[str]) -> str:
    return ", ".join(names) if names else "none"


def _x(x: Any) -> str:
    """A lead ratio as '2.50x' ('n/a' without one)."""
    text = fmt(x, ".2f")
    return f"{text}x" if text != "n/a" else text


def _pct(x: Any) -> str:
    return f"{fmt(100 * num(x), '.1f')}%"


def summary_rows(result: dict[str, Any]) -> list[SummaryRow]:
    """Rows of the results.md summary table for this experiment."""
    seem, bound = result["kinds"]["seem"], result["kinds"]["q_bound"]
    n_div, n_ok = len(result["divergers"]), len(result["healthy"])
    return [
        SummaryRow(
            "7",
            "Stopping predicted divergers early saves compute without killing trials that "
            "would not have diverged",
            f"{n_div} divergers, {n_ok} healthy runs: SEEM stopper saved "
            f"{_pct(seem['saved_fraction'])} of steps (Q-bound stopper "
            f"{_pct(bound['saved_fraction'])}), false kills {len(seem['false_kills'])}, missed "
            f"{len(seem['missed'])}",
            verdict_compute(result),
        ),
        SummaryRow(
            "7",
            "The SEEM stopper detects divergence earlier than a Q-bound stopper",
            f"stopped {len(seem['early'])}/{n_div} divergers before they crossed; median lead "
            f"{_x(seem['median_lead'])}, min {_x(seem['min_lead'])}",
            verdict_lead(result),
        ),
    ]


def settings_text(result: dict[str, Any]) -> str:
    """The run settings paragraph, read from the stored config of the grid's first run."""
    s, c = result["settings"], result["base_config"]
    a, st = c["algo"], StopperConfig()
    return (
        f"**Settings**: `experiments.service.demo_base`: {c['data']['dataset']}, "
        f"critic.norm {list(s['norms'])} x data.max_transitions {list(s['transitions'])} "
        f"({c['data']['subsample']} subsample) x algo.gamma {list(s['gammas'])}, seed "
        f"{s['seed']}, {s['steps']} steps, no evaluation, stopper off during training. Plain "
        f"offline TD3 ({a['name']} with bc_weight {a['td3bc']['bc_weight']}), critic "
        f"{c['critic']['hidden']}, {a['critic_optimizer']} critic lr {a['critic_lr']:g}, actor lr "
        f"{a['actor_lr']:g}, batch {a['batch_size']}, tau {a['tau']}; Q statistics every "
        f"{c['train']['log_every']} steps, SEEM every {c['seem']['every']} steps on a fixed "
        f"{c['seem']['probe_size']}-transition probe. Replay: each run's report stream (with its "
        "q_bound, as Tune sees it) fed in step order to a fresh `DivergenceStopper` per kind "
        "(`benchmarks.bench_stopper.replay`), default `StopperConfig`: 'seem' = the calibrated "
        f"composite (NaN or Q bound; SEEM > {st.seem_threshold} on {st.patience} consecutive "
        f"probes confirmed by |Q| growing at least like t^{st.confirm_order}; or |Q| growth "
        f"order >= {st.growth_order} projected to cross within {st.growth_horizon:g}x the "
        "elapsed steps; soft verdicts only once |Q| >= 1% of the bound), 'q_bound' = |mean Q| "
        "beyond r_max/(1-gamma). A run is a true diverger when |mean Q| on the probe crossed "
        "r_max/(1-gamma) within the budget; lead = crossing step / stop step. Training: "
        f"{len(result['runs'])} runs, {fmt(result.get('train_seconds'), '.0f')} s of run wall "
        "time in all (2 processes, shared machine)."
    )


DEFAULTS_NOTE = (
    "**Defaults.** These figures were recorded with the stopper defaults named in Settings "
    "(in-sample at the time); the shipped defaults, chosen on the calibration split (one SEEM "
    "probe > 0.3 confirmed by t^0.5 growth of max \\|Q\\|, probes every 25 steps to step 400), "
    "are scored on held-out environments in "
    "docs/calibration.md and on a fresh Tune sweep in docs/benchmarks.md."
)


def report_section(result: dict[str, Any], figures_rel: str) -> str:
    """Markdown section for docs/results.md."""
    return section(
        "7. The stopper's value",
        "(project design, seem.md section 9): stopping predicted divergers early saves "
        "compute without killing trials that would not have diverged; the SEEM stopper detects "
        "divergence earlier than a Q-bound stopper.",
        settings_text(result),
        f"![Stopper timelines]({figures_rel}/{FIGURE})",
        table(
            [
                "stopper",
                "steps used / no-stopper budget",
                "compute saved",
                "trials stopped",
                "divergers stopped before crossing",
                "median (min) lead",
                "false kills",
                "missed divergers",
            ],
            (_stopper_cells(result, kind) for kind in KINDS),
        ),
        "Per run:",
        table(
            [
                "run",
                "bound",
                "\\|Q\\| crossed bound at",
                "SEEM stopper stops at (reason)",
                "Q-bound stopper stops at",
                "lead",
                "max SEEM",
                "final \\|Q\\|/bound",
            ],
            (_run_cells(r) for r in result["runs"]),
        ),
        reading=reading(result),
        notes=[
            "**Ray Tune benchmark (quoted, not re-run here).** " + TUNE_BENCHMARK,
            DEFAULTS_NOTE,
        ],
    )


def _stopper_cells(result: dict[str, Any], kind: str) -> list[str]:
    """One stopper kind's row: compute used and saved, who it stopped, how early."""
    k = result["kinds"][kind]
    return [
        kind,
        f"{k['steps_used']:,} / {k['steps_budget']:,}",
        _pct(k["saved_fraction"]),
        f"{len(k['stopped'])}/{len(result['runs'])}",
        f"{len(k['early'])}/{len(result['divergers'])}",
        f"{_x(k['median_lead'])} ({_x(k['min_lead'])})",
        _names(k["false_kills"]),
        _names(k["missed"]),
    ]


def _run_cells(r: dict[str, Any]) -> list[Any]:
    """One run's row: where it crossed, where each stopper stopped it, the lead."""
    s_seem, s_bound = r["stops"]["seem"], r["stops"]["q_bound"]
    crossed = r["crossed_at"]
    return [
        r["name"],
        fmt(r["q_bound"], ".3g"),
        crossed if crossed is not None else "-",
        f"{s_seem} ({r['reasons']['seem']})" if s_seem is not None else "-",
        s_bound if s_bound is not None else "-",
        f"{crossed / s_seem:.2f}x" if crossed is not None and s_seem else "-",
        fmt(r["max_seem"], ".3f"),
        fmt(r["final_q_ratio"], ".3g"),
    ]


def reading(result: dict[str, Any]) -> list[str]:
    """The interpretation, with the measured numbers filled in (and the verdict rules)."""
    seem, bound = result["kinds"]["seem"], result["kinds"]["q_bound"]
    n_div, n_ok = len(result["divergers"]), len(result["healthy"])
    out = [
        f"- The grid gave {n_div} true divergers ({_names(result['divergers'])}) and {n_ok} "
        f"runs that stayed under the bound ({_names(result['healthy'])}).",
        f"- Compute: the SEEM stopper used {seem['steps_used']:,} of {seem['steps_budget']:,} "
        f"steps (saved {_pct(seem['saved_fraction'])}); the Q-bound stopper saved "
        f"{_pct(bound['saved_fraction'])}. False kills: {_names(seem['false_kills'])}; missed "
        f"divergers: {_names(seem['missed'])}. Verdict **{verdict_compute(result)}** "
        "(reproduced when SEEM saves more than Q-bound with no false kill and no miss; partly "
        "when it saves more with a false kill or miss; inconclusive without both divergers and "
        "healthy runs).",
        f"- Detection: {len(seem['early'])}/{n_div} divergers stopped before they crossed the "
        f"bound; median lead {_x(seem['median_lead'])} (min "
        f"{_x(seem['min_lead'])}). Verdict **{verdict_lead(result)}** (reproduced when "
        "every diverger is stopped strictly before it crosses). A diverger that crosses within "
        "the first few reports leaves no room for any predictor (the composite's soft verdicts "
        "need 3 consecutive records and |Q| >= 1% of the bound), as in docs/calibration.md.",
    ]
    runs = {r["name"]: r for r in result["runs"]}
    div = [runs[n] for n in result["divergers"]]
    if div:
        extra = bound["steps_used"] - seem["steps_used"]
        out.append(
            "- Where the saving comes from: the divergers crossed at step "
            + ", ".join(str(r["crossed_at"]) for r in div)
            + f" of {div[0]['budget']}, so the Q-bound stopper already saves most of their "
            f"budget; the SEEM stopper's extra saving is {extra:,} steps "
            f"({_pct(extra / seem['steps_budget'])} of the grid), the steps between its stop and "
            "the crossing. The share saved depends on how many divergers a sweep holds and how "
            "late they cross."
        )
        recovered = [r for r in div if num(r["final_q_ratio"]) < 1.0]
        if recovered:
            out.append(
                "- "
                + "; ".join(
                    f"{r['name']} peaked at {fmt(r['peak_q_ratio'], '.2f')}x the bound and "
                    f"ended at {fmt(r['final_q_ratio'], '.2f')}x"
                    for r in recovered
                )
                + ": at this size (critic lr 3e-5, a few thousand steps) a crossing can be an "
                "overshoot the critic partly corrects rather than the unbounded blow-up of the "
                "paper's 1M-step runs. It counts as a diverger by the ground-truth rule (|Q| "
                "beyond any achievable return), so stopping it is scored as correct."
            )
    threshold = StopperConfig().seem_threshold
    healthy = [runs[n] for n in result["healthy"]]
    hot = [r for r in healthy if num(r["max_seem"]) > threshold]
    if healthy and not hot:
        out.append(
            f"- Every healthy run kept SEEM <= {threshold} on every probe (max "
            f"{fmt(max(num(r['max_seem']) for r in healthy), '.3f')}), so none gave the SEEM "
            "rule a single positive probe: 0 false kills here tests the stopper only on easy "
            "healthy runs, not on a run with high SEEM that stays just under the bound (the "
            "case the Ray Tune benchmark below needed a confirmation run for)."
        )
    elif hot:
        out.append(
            f"- Healthy runs with SEEM probes above {threshold}: "
            + ", ".join(f"{r['name']} (max {fmt(r['max_seem'], '.2f')})" for r in hot)
            + "; the composite only stops on them when |Q| also grows at least like "
            f"t^{StopperConfig().confirm_order} (docs/calibration.md)."
        )
    if seem["false_kills"]:
        ratios = {
            r["name"]: r["final_q_ratio"]
            for r in result["runs"]
            if r["name"] in seem["false_kills"]
        }
        txt = ", ".join(f"{n} (final |Q|/bound {fmt(v, '.2f')})" for n, v in ratios.items())
        out.append(
            f"- False kills: {txt}. 'Healthy' means 'did not cross within this budget'; the "
            "predictor was calibrated out of sample on 40 runs (docs/calibration.md), where some "
            "runs were still climbing at twice their budget, so a kill of a run whose |Q| is "
            "still rising is an unconfirmed divergence rather than a proven mistake."
        )
    return out


def run(settings: StopperSettings, experiment: str) -> dict[str, Any]:
    """Train the grid (cached), replay both stoppers over every run's metric stream."""
    configs = grid(settings)
    records = run_grid(experiment, configs)
    return {
        "settings": asdict(settings),
        "base_config": to_dict(next(iter(configs.values()))),
        "train_seconds": sum(rec.wall_seconds for rec in records.values()),
        **analyse(records),
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """CLI entry: train the grid (or the quick one), replay the stoppers, write JSON and figure."""
    return experiment_main(
        argv,
        name=NAME,
        doc=__doc__,
        figure=FIGURE,
        run=lambda quick: run(
            QUICK if quick else StopperSettings(), f"{NAME}-quick" if quick else NAME
        ),
        make_figure=make_figure,
    )


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main()
