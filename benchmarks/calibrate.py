"""Calibrate the divergence predictor out of sample, on real runs split by environment.

Protocol (docs/calibration.md): a fractional design over what users run -- Hopper, HalfCheetah,
Walker2d and PointMaze; random and medium-replay data (PointMaze: umaze and medium); 1k, 10k
and all transitions; critic norm none / LayerNorm / RMSNorm; gamma 0.95 / 0.99; target tau
0.005 / 1; plain offline TD3 (TD3+BC, bc 0), TD3+BC, IQL and CQL; seeds 0-2 -- each run trained
with no soft stopper to the budget, or until |mean Q| crosses the return bound r_max/(1-gamma)
(the ground truth, ``divergence.bound_crossing``). Runs recorded densely (Q every 250 steps,
SEEM every 500, both every 100 up to step 2000) are replayed at the shipped cadence
(``SeemConfig``/``TrainConfig`` defaults) through each candidate predictor. A run that did not
cross but whose |Q| is still climbing at the end is trained to twice the budget once; if still
climbing it is *ambiguous*: reported, never counted as a false alarm or a miss.

The split is fixed before any rule is chosen: the defaults are chosen on ``CALIBRATION_ENVS``
and scored once on ``HELD_OUT_ENVS``; a leave-one-environment-out table shows the spread.

Usage: python benchmarks/calibrate.py [--quick] [--jobs 2] [--per-env 10] [--no-extend] [--json]
Finished runs are cached (runs/calibration/<name>/) and their compact histories committed
(docs/calibration_histories.json.gz): a rerun without the raw runs only scores.
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import logging
import math
import os
import random
import statistics
import sys
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from seem_ray import metrics as M  # noqa: E402
from seem_ray.config import SeemConfig, StopperConfig, TrainConfig  # noqa: E402
from seem_ray.divergence import (  # noqa: E402
    Predictor,
    bound_crossing,
    build_predictor,
    still_climbing,
)

log = logging.getLogger("calibrate")

# environment -> its two datasets (recipes of seem_ray.data.generate) and generation settings
ENVS: dict[str, tuple[str, str]] = {
    "hopper": ("hopper-random", "hopper-medium-replay"),
    "pointmaze": ("pointmaze-umaze-dense", "pointmaze-medium-dense"),
    "halfcheetah": ("halfcheetah-random", "halfcheetah-medium-replay"),
    "walker2d": ("walker2d-random", "walker2d-medium-replay"),
}
GENERATE: dict[str, dict[str, Any]] = {
    f"{task}-medium-replay": {"steps": 20000} for task in ("hopper", "halfcheetah", "walker2d")
}
CALIBRATION_ENVS = ("hopper", "pointmaze")
"""Defaults are chosen looking at these runs only..."""
HELD_OUT_ENVS = ("halfcheetah", "walker2d")
"""...and scored once on these."""

ALGOS: dict[str, dict[str, Any]] = {
    "td3": {"algo.name": "td3bc", "algo.td3bc.bc_weight": 0.0},  # plain offline TD3
    "td3bc": {"algo.name": "td3bc"},
    "iql": {"algo.name": "iql"},
    # CQL's step is ~10x TD3's here (sampled-action critic passes): fewer samples, shorter budget
    "cql": {"algo.name": "cql", "algo.cql.n_action_samples": 2},
}
ALGO_SHARE = ("td3",) * 5 + ("td3bc",) * 2 + ("iql",) * 2 + ("cql",)
"""Per 10 runs of an environment: the divergence-prone setting gets half."""
CQL_STEPS = 5000
FACTORS: dict[str, tuple[Any, ...]] = {
    "data": (0, 1),
    "size": (1000, 10000, None),  # None = the whole dataset
    "norm": ("none", "none", "layer", "rms"),
    "gamma": (0.95, 0.99),
    "tau": (0.005, 1.0),
    "seed": (0, 1, 2),
}

# Recording cadence of the calibration runs (denser than shipped; replays filter it down).
RECORD = {
    "seem": {"every": 500, "early_every": 100, "early_until": 2000, "probe_size": 512},
    "train": {"log_every": 250, "eval_episodes": 0, "checkpoint_every": 0, "threads": 1},
    "stopper": {"kind": "q_bound"},  # ground truth only needs the run up to the crossing
}
KEEP = (M.STEP, M.Q_MEAN, M.Q_MAX, M.Q_ABS_MAX, M.CRITIC_WEIGHT_NORM, M.SEEM, M.CRITIC_LOSS)


def _balanced(levels: tuple[Any, ...], n: int, rng: random.Random) -> list[Any]:
    """n draws covering every level equally often (up to n % len), in shuffled order."""
    out = [levels[i % len(levels)] for i in range(n)]
    rng.shuffle(out)
    return out


def _run_name(dataset: str, algo: str, f: Mapping[str, Any]) -> str:
    size = f["size"] or "all"
    return f"{dataset}_{algo}_n{size}_{f['norm']}_g{f['gamma']}_tau{f['tau']}_s{f['seed']}"


def grid(per_env: int, steps: int, quick: bool = False) -> list[dict[str, Any]]:
    """The fractional design: per environment, each factor's levels balanced over its runs and
    combined at random (fixed seed), so every level meets many others without the full
    factorial (4 x 2 x 3 x 4 x 2 x 2 x 4 x 3 = 9,216 runs)."""
    if quick:
        envs, per_env = ("pointmaze",), 2
    else:
        envs = CALIBRATION_ENVS + HELD_OUT_ENVS
    runs: list[dict[str, Any]] = []
    taken: set[str] = set()
    for env in envs:
        rng = random.Random(f"calibration-{env}")
        algos = _balanced(ALGO_SHARE, per_env, rng) if not quick else ["td3", "td3"]
        cols = {f: _balanced(levels, per_env, rng) for f, levels in FACTORS.items()}
        for i in range(per_env):
            f = {name: col[i] for name, col in cols.items()}
            if quick:
                f.update(size=1000, norm=("none", "layer")[i], tau=1.0, gamma=0.99)
            algo = algos[i]
            dataset = ENVS[env][f["data"]]
            name = _run_name(dataset, algo, f)
            while name in taken:  # a repeated combination: another seed of it instead
                f["seed"] += 3
                name = _run_name(dataset, algo, f)
            taken.add(name)
            overrides = {
                **ALGOS[algo],
                "data.dataset": f"seem_ray/{dataset}-v0",
                "critic.norm": f["norm"],
                "algo.gamma": f["gamma"],
                "algo.tau": f["tau"],
                "train.seed": f["seed"],
                "train.steps": min(steps, CQL_STEPS) if algo == "cql" else steps,
            }
            if f["size"]:
                overrides["data.max_transitions"] = f["size"]
            split = "calibration" if env in CALIBRATION_ENVS else "held_out"
            runs.append(
                {"name": name, "env": env, "split": split, "algo": algo, "overrides": overrides}
            )
    # calibration runs first: the rule is designed on them while the held-out runs train
    return sorted(runs, key=lambda r: (r["split"] != "calibration", runs.index(r)))


# ------------------------------------------------------------------------------ running
def load_history(run_dir: Path) -> tuple[list[dict[str, float]], float]:
    summary = json.loads((run_dir / "summary.json").read_text())
    hist = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        hist.append({k: float(v) for k, v in rec.items() if k in KEEP})
    return hist, float(summary["q_bound"])


def run_one(spec: dict[str, Any], out_root: str, steps: int | None = None) -> str:
    """Train one calibration run (or extend a cached one to ``steps``); returns its name."""
    import torch

    torch.set_num_threads(1)
    from seem_ray.config import parse_run_config
    from seem_ray.runner import run_local

    run_dir = Path(out_root) / spec["name"]
    overrides = dict(spec["overrides"])
    if steps is not None:
        overrides["train.steps"] = steps
    cfg = parse_run_config(RECORD, overrides)
    resume = False
    if (run_dir / "summary.json").exists():
        history, bound = load_history(run_dir)
        if bound_crossing(history, bound) is not None or history[-1][M.STEP] >= cfg.train.steps:
            return spec["name"]
        resume = True
    elif run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)  # an interrupted first attempt: start it again
    run_local(cfg, run_dir, resume=resume)
    return spec["name"]


def outcome(hist: list[Mapping[str, float]], bound: float) -> tuple[str, int | None]:
    """("diverged", crossing step) | ("ambiguous", None) | ("stable", None)."""
    crossing = bound_crossing(hist, bound)
    if crossing is not None:
        return "diverged", crossing
    return ("ambiguous" if still_climbing(hist) else "stable"), None


def _collect(spec: Mapping[str, Any], out_root: Path) -> dict[str, Any]:
    hist, bound = load_history(out_root / spec["name"])
    return {**spec, "q_bound": bound, "records": hist}


def _needs_extension(run: Mapping[str, Any]) -> bool:
    """Still climbing at its budget and not yet lengthened."""
    label, _ = outcome(run["records"], run["q_bound"])
    return label == "ambiguous" and run["records"][-1][M.STEP] <= run["overrides"]["train.steps"]


def train_grid(
    specs: list[dict[str, Any]],
    runs: dict[str, dict[str, Any]],
    out_root: Path,
    jobs: int,
    extend: bool,
    save: Callable[[], None],
) -> None:
    """Train every run missing from ``runs`` (name -> run with records), then train the
    still-climbing ones once more to 2x their budget; ``save`` is called after every run so an
    interrupted grid resumes where it stopped."""
    todo = [s for s in specs if s["name"] not in runs]
    log.info(
        "%d runs, %d recorded, %d to train on %d processes",
        len(specs),
        len(specs) - len(todo),
        len(todo),
        jobs,
    )
    by_name = {s["name"]: s for s in specs}
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        for i, name in enumerate(pool.map(run_one, todo, itertools.repeat(str(out_root))), 1):
            runs[name] = _collect(by_name[name], out_root)
            save()
            log.info(
                "[%d/%d] %s: %s",
                i,
                len(todo),
                name,
                outcome(runs[name]["records"], runs[name]["q_bound"])[0],
            )
        if not extend:
            return
        longer = [s for s in specs if _needs_extension(runs[s["name"]])]
        log.info("extending %d still-climbing runs to 2x their budget", len(longer))
        doubled = [2 * s["overrides"]["train.steps"] for s in longer]
        for name in pool.map(run_one, longer, itertools.repeat(str(out_root)), doubled):
            runs[name] = _collect(by_name[name], out_root)
            save()
            log.info(
                "extended %s: %s", name, outcome(runs[name]["records"], runs[name]["q_bound"])[0]
            )


def write_histories(path: Path, runs: Mapping[str, Mapping[str, Any]]) -> None:
    """The compact histories (the KEEP keys of every record, all runs) that scoring needs."""
    blob = json.dumps(runs, separators=(",", ":"), allow_nan=True).encode()
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(gzip.compress(blob, mtime=0))
    tmp.replace(path)


def read_histories(path: Path) -> dict[str, dict[str, Any]]:
    return json.loads(gzip.decompress(path.read_bytes()))


# ------------------------------------------------------------------------------ scoring
def shipped_cadence(records: list[Mapping[str, float]]) -> list[dict[str, float]]:
    """The records a run at the shipped cadence would have produced (SeemConfig/TrainConfig
    defaults), cut from the dense recording; the last record (the bound crossing of a diverger)
    is always kept, so the Q-bound baseline is seen as early as the recording saw it."""
    sc, log_every = SeemConfig(), TrainConfig().log_every
    out = []
    for i, r in enumerate(records):
        step = int(r[M.STEP])
        early = bool(sc.early_every) and step <= sc.early_until and step % sc.early_every == 0
        last = i == len(records) - 1
        if not (early or step % log_every == 0 or last):
            continue
        rec = dict(r)
        if not (early or step % sc.every == 0 or last):
            rec.pop(M.SEEM, None)
        out.append(rec)
    return out


def first_flag(
    make: Callable[[float], Predictor | None], records: Iterable[Mapping[str, float]], bound: float
) -> tuple[int | None, str | None]:
    """(step, reason) of a fresh predictor's first positive verdict on a record stream."""
    pred = make(bound)
    if pred is None:
        return None, None
    for r in records:
        v = pred.update(int(r[M.STEP]), r)
        if v.diverging:
            return int(r[M.STEP]), v.reason
    return None, None


def score(
    runs: list[Mapping[str, Any]], make: Callable[[float], Predictor | None]
) -> dict[str, Any]:
    """One predictor over runs: caught/diverged, false alarms/stable, ambiguous flagged, leads."""
    first_probe = SeemConfig().early_every or SeemConfig().every
    first_regular = SeemConfig().every  # after the dense early phase's cadence
    s: dict[str, Any] = {
        "caught": 0,
        "diverged": 0,
        "false_alarms": 0,
        "stable": 0,
        "ambiguous": 0,
        "ambiguous_flagged": 0,
        "late": 0,
        "leads": [],
        "slow_leads": [],
    }
    per_run = {}
    for run in runs:
        label, crossing = outcome(run["records"], run["q_bound"])
        flag, reason = first_flag(make, shipped_cadence(run["records"]), run["q_bound"])
        per_run[run["name"]] = (flag, reason)
        if label == "diverged":
            s["diverged"] += 1
            if flag is not None and crossing is not None:
                s["caught"] += 1
                s["late"] += flag > crossing
                if crossing > first_probe:
                    s["leads"].append(crossing / max(flag, 1))
                if crossing > first_regular:
                    s["slow_leads"].append(crossing / max(flag, 1))
        elif label == "stable":
            s["stable"] += 1
            s["false_alarms"] += flag is not None
        else:
            s["ambiguous"] += 1
            s["ambiguous_flagged"] += flag is not None
    leads = sorted(s.pop("leads"))
    s["median_lead_x"] = statistics.median(leads) if leads else None
    s["min_lead_x"] = leads[0] if leads else None
    s["n_leads"] = len(leads)
    slow = sorted(s.pop("slow_leads"))
    s["median_lead_slow_x"] = statistics.median(slow) if slow else None
    s["n_slow"] = len(slow)
    return {"summary": s, "per_run": per_run}


BASELINE = "q_bound (baseline)"
DEFAULT = "default"
CANDIDATES: dict[str, dict[str, Any]] = {
    BASELINE: {"kind": "q_bound"},
    DEFAULT: {},
    "patience 2": {"patience": 2},
    "patience 2, SEEM > 0.05": {"patience": 2, "seem_threshold": 0.05},
    "previous default (SEEM > 0.05 x3, t^1.5 confirm, t^2 growth)": {
        "seem_threshold": 0.05,
        "patience": 3,
        "confirm_order": 1.5,
        "growth_order": 2.0,
    },
    "confirm at t^1": {"confirm_order": 1.0},
    "growth order 2": {"growth_order": 2.0},
    "+ weight-norm confirmation (t^1)": {"weight_order": 1.0},
    "no scale guard (min_scale_fraction 0)": {"min_scale_fraction": 0.0},
    "bare SEEM > 0.2 (no growth test)": {
        "confirm_order": 1e-6,
        "growth_order": 50.0,
        "min_scale_fraction": 0.0,
    },
    "bare SEEM > 0.05 x3 (no growth test)": {
        "seem_threshold": 0.05,
        "patience": 3,
        "confirm_order": 1e-6,
        "growth_order": 50.0,
        "min_scale_fraction": 0.0,
    },
}
"""Each a set of StopperConfig overrides of the shipped defaults."""


def candidates() -> dict[str, Callable[[float], Predictor | None]]:
    """The default and the alternatives scored beside it (each a StopperConfig)."""

    def of(**kw: Any) -> Callable[[float], Predictor | None]:
        settings = StopperConfig(**kw)
        return lambda bound: build_predictor(settings, bound)

    return {name: of(**kw) for name, kw in CANDIDATES.items()}


def analyse(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Every candidate on the calibration split, the held-out split and leave-one-env-out."""
    preds = candidates()
    splits = {
        "calibration": [r for r in runs if r["env"] in CALIBRATION_ENVS],
        "held_out": [r for r in runs if r["env"] in HELD_OUT_ENVS],
    }
    out: dict[str, Any] = {}
    for split, members in splits.items():
        out[split] = {name: score(members, make)["summary"] for name, make in preds.items()}
    out["per_env"] = {
        env: score([r for r in runs if r["env"] == env], preds[DEFAULT])["summary"] for env in ENVS
    }
    default_flags = score(runs, preds[DEFAULT])["per_run"]
    bound_flags = score(runs, preds[BASELINE])["per_run"]
    rows = []
    for r in runs:
        label, crossing = outcome(r["records"], r["q_bound"])
        seems = [x[M.SEEM] for x in r["records"] if math.isfinite(x.get(M.SEEM, math.nan))]
        rows.append(
            {
                "run": r["name"],
                "env": r["env"],
                "split": r["split"],
                "algo": r["algo"],
                "q_bound": r["q_bound"],
                "outcome": label,
                "crossed_at": crossing,
                "steps": int(r["records"][-1][M.STEP]),
                "max_seem": max(seems) if seems else None,
                "final_q": r["records"][-1].get(M.Q_MEAN),
                "default_flag": default_flags[r["name"]][0],
                "default_reason": default_flags[r["name"]][1],
                "q_bound_flag": bound_flags[r["name"]][0],
            }
        )
    out["runs"] = rows
    return out


def _x(v: float | None) -> str:
    return f"{v:.1f}x" if v else "-"


def _table(stats: Mapping[str, Mapping[str, Any]]) -> list[str]:
    lines = [
        "| predictor | caught / diverged | false alarms / stable | ambiguous (flagged / all) "
        "| late | median lead | min lead | median lead, crossed after step "
        f"{SeemConfig().every} |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, s in stats.items():
        lines.append(
            f"| {name} | {s['caught']}/{s['diverged']} | {s['false_alarms']}/{s['stable']} | "
            f"{s['ambiguous_flagged']}/{s['ambiguous']} | {s['late']} | "
            f"{_x(s['median_lead_x'])} | {_x(s['min_lead_x'])} | "
            f"{_x(s['median_lead_slow_x'])} (of {s['n_slow']}) |"
        )
    return lines


def write_markdown(result: dict[str, Any], path: Path, meta: dict[str, Any]) -> None:
    """docs/calibration.md: protocol, the rule in words, held-out table first, then the rest."""
    d = StopperConfig()
    sc = SeemConfig()
    runs = result["runs"]
    counts = {
        split: {
            lab: sum(r["outcome"] == lab and r["split"] == split for r in runs)
            for lab in ("diverged", "stable", "ambiguous")
        }
        for split in ("calibration", "held_out")
    }
    lines = [
        "# Divergence predictor calibration (out of sample)",
        "",
        "Generated by `benchmarks/calibrate.py` (`make calibrate`; with the committed histories in",
        "`docs/calibration_histories.json.gz` a rerun only scores). Protocol:",
        "",
        f"- **Runs**: {len(runs)} real training runs, {meta['per_env']} per environment, a "
        "fractional design (each factor's levels balanced within an environment, combined at "
        "random with a fixed seed; the full factorial would be 9,216 runs) over Hopper, "
        "HalfCheetah, Walker2d (random and medium-replay data) and PointMaze (umaze and medium, "
        "dense); 1k, 10k or all transitions; critic norm none / LayerNorm / RMSNorm; gamma 0.95 "
        "/ 0.99; target tau 0.005 / 1; plain offline TD3 (TD3+BC with bc 0: half the runs), "
        "TD3+BC (bc 1, alpha 2.5), IQL, CQL; seeds 0-2 (a repeated combination takes seed+3). "
        f"Budget {meta['steps']} steps (CQL {CQL_STEPS}, with 2 sampled actions: its step is "
        "~10x TD3's on this CPU). Nets 256-256, batch 256, Adam 3e-4.",
        "- **Ground truth**: *diverged* = |mean Q| on the probe crossed r_max/(1-gamma) "
        "(`divergence.bound_crossing`; the run stops there). A run that did not cross but whose "
        "|mean Q| running max still rose >10% over the last quarter of its steps was trained "
        "to twice the budget; if still climbing it is *ambiguous*: reported, never counted as "
        "a false alarm or a miss. Otherwise *stable*.",
        "- **Cadence**: recorded densely (Q every 250 steps, SEEM every 500, both every 100 up to "
        "step 2000) and replayed at the shipped cadence: Q every "
        f"{TrainConfig().log_every} steps, SEEM every {sc.every}, both every {sc.early_every} "
        f"up to step {sc.early_until}. The crossing record is always kept, so the Q-bound "
        "baseline is seen as early as the recording saw it (conservative for every lead).",
        "- **Split, fixed before any rule was tried**: the defaults were chosen looking only at "
        f"{', '.join(CALIBRATION_ENVS)} ({counts['calibration']['diverged']} diverged, "
        f"{counts['calibration']['stable']} stable, {counts['calibration']['ambiguous']} "
        "ambiguous) and scored once on the held-out "
        f"{', '.join(HELD_OUT_ENVS)} ({counts['held_out']['diverged']} diverged, "
        f"{counts['held_out']['stable']} stable, {counts['held_out']['ambiguous']} ambiguous).",
        "- **Lead** = Q-bound step / flag step, over divergers that crossed after the first "
        f"probe (step {sc.early_every}); *late* = flagged only after the crossing.",
        "",
        "## The rule (`StopperConfig` defaults)",
        "",
        f"Flag a trial when its Q is non-finite or |mean Q| > {d.q_bound_factor:g} x "
        f"r_max/(1-gamma); or when SEEM > {d.seem_threshold:g} on {d.patience} consecutive "
        "probes while the critic's values are still growing -- max |Q| on the probe, taken as a "
        "running maximum (sign-free: a mean crossing zero is not growth; scale-free: an order, "
        f"not a size) grows at least like t^{d.confirm_order:g} over the last doubling of steps"
        + (
            f", or the critic's weight norm grows at least like t^{d.weight_order:g}"
            if d.weight_order
            else ""
        )
        + f"; or when that growth order is >= {d.growth_order:g} on {d.patience} consecutive "
        f"records and projects the crossing within {d.growth_horizon:g}x the elapsed steps. "
        f"Soft (SEEM, growth) verdicts wait until max |Q| reaches {d.min_scale_fraction:g} x "
        "the bound.",
        "",
        f"## Held-out environments ({', '.join(HELD_OUT_ENVS)})",
        "",
        *_table(result["held_out"]),
        "",
        f"## Calibration environments ({', '.join(CALIBRATION_ENVS)}), where the rule was chosen",
        "",
        *_table(result["calibration"]),
        "",
        "## The default per environment (leave-one-environment-out view)",
        "",
        *_table({env: s for env, s in result["per_env"].items()}),
        "",
        "## Runs",
        "",
        "| run | split | outcome | steps | Q bound | crossed at | max SEEM | final mean Q "
        "| default flags at (reason) | Q-bound flags at |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        ms = f"{r['max_seem']:.3f}" if r["max_seem"] is not None else "-"
        fq = f"{r['final_q']:.3g}" if r["final_q"] is not None else "-"
        flag = f"{r['default_flag']} ({r['default_reason']})" if r["default_flag"] else "-"
        lines.append(
            f"| {r['run']} | {r['split']} | {r['outcome']} | {r['steps']} | {r['q_bound']:.3g} "
            f"| {r['crossed_at'] or '-'} | {ms} | {fq} | {flag} | {r['q_bound_flag'] or '-'} |"
        )
    lines += ["", *NOTES]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


NOTES: list[str] = [
    "## Reading (written by hand after the one held-out scoring)",
    "",
    "- **How the default was chosen.** Before any held-out run was scored, the criterion was fixed: "
    "on the calibration split, zero missed divergers and zero false alarms, then the largest "
    "geometric-mean lead, then the fewest ambiguous runs flagged, then the middle of the region "
    "of settings that tie. A grid of 648 settings (SEEM threshold 0.02/0.05/0.1/0.2, patience "
    "1-3, confirm order 0.5/1/1.5, growth order 1.5/2/3, scale guard 0/0.01/0.05, weight-norm "
    "confirmation off/t^1) was scored on the calibration runs only: 630 had no error (the 18 "
    "that did were patience 1 at threshold 0.02), so the calibration split could not separate "
    "settings on false alarms and the lead decided: one SEEM probe above 0.2 confirmed by max "
    "|Q| growing at least like t^0.5, growth order 1.5. Thresholds 0.2-0.3 and confirm orders "
    "0.25-1 scored the same there. While the grid trained, its progress log showed every run's "
    "outcome (held-out included); no rule was scored on a held-out run before the choice.",
    "- **Held out: 8/8 divergers caught, 0/9 false alarms, 0/3 ambiguous runs flagged, never "
    "later than the Q bound.** The bare thresholds show why SEEM alone is not the rule: SEEM "
    "> 0.05 on 3 probes without the growth test false-alarms on 2 of the 9 held-out stable runs "
    "(a Walker2d IQL critic with SEEM 0.11 at step 100 and an RMSNorm TD3 critic with SEEM up "
    "to 0.15, both bounded), and patience 2 at 0.05 on one.",
    "- **Lead: the issue's median >= 4x over all held-out divergers is not met: 1.7x (min "
    "1.0x).** Four of the eight cross the bound at step 200-400 (random-policy data, hard "
    "target updates or CQL: Q explodes within a few hundred updates). The earliest the rule can "
    "flag is step 200 -- the first probe is at step 100 and the growth confirmation compares "
    "with the record at half the step -- so on those four the lead is 1.0-2.0x whatever the "
    "rule; a 4x lead on them needs probes every 25-50 steps, which at probe 512 costs more "
    "than the 5% SEEM budget (docs/benchmarks.md: 4.8-7% of wall time every 50 steps with probe "
    "256). On the four that crossed after the first regular probe (step 1,000) the median lead "
    "is 11.4x (1.4x, 2.0x, 20.8x, 56.1x): the slow tau-0.005 divergers are flagged at step "
    "600-700 by SEEM and confirmed growth, tens of thousands of steps before the bound.",
    "- Against the previous (in-sample) default -- SEEM > 0.05 on 3 probes, confirmed by "
    "t^1.5 growth -- the new default keeps 0 false alarms and raises the lead over the slow "
    "held-out divergers from 2.9x to 11.4x: the late flag on such runs is what issue 19 "
    "reported.",
    "- Ambiguous runs (still climbing at twice the budget) are where the rule is least sure: it "
    "flags two of the three calibration ones (TD3, gamma 0.99, tau 0.005: a Hopper RMSNorm "
    "critic with SEEM up to 0.44 and mean Q at 0.63 of the bound at 60k steps, and a PointMaze "
    "critic without norm, SEEM up to 0.23, at 0.74 of the bound, both still rising) and none "
    "of the three held-out ones. One calibration run and one held-out run that were ambiguous at 30k "
    "crossed the bound in their extension (at 46,250 and 39,250): both had been flagged at "
    "step 700.",
    "- Limits: 40 runs, one per factor combination (seeds 0-2 spread over the design, not "
    "repeated per setting); CQL runs are 5k steps; gamma above 0.99 and nets other than "
    "256-256 are not in the grid (the mixed Tune sweep in docs/benchmarks.md covers gamma "
    "0.995/0.999).",
]
"""Reading of the tables (written by hand after the held-out scoring; kept with the code)."""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="2 short PointMaze runs, for a smoke test")
    p.add_argument("--steps", type=int, default=30000, help=f"budget per run (CQL: {CQL_STEPS})")
    p.add_argument("--per-env", type=int, default=10, help="runs per environment")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--no-extend", action="store_true", help="do not extend still-climbing runs")
    p.add_argument("--train-only", action="store_true", help="train (and cache) without scoring")
    p.add_argument("--out", default=str(ROOT / "runs" / "calibration"))
    p.add_argument("--doc", default=str(ROOT / "docs" / "calibration.md"))
    p.add_argument("--histories", default=str(ROOT / "docs" / "calibration_histories.json.gz"))
    p.add_argument(
        "--json", action="store_true", help="print the held-out table as JSON (last line)"
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    os.environ.setdefault("MINARI_DATASETS_PATH", str(ROOT / "datasets"))
    specs = grid(args.per_env, args.steps, args.quick)
    out_root = Path(args.out)
    histories = Path(args.histories)
    cached = read_histories(histories) if histories.exists() and not args.quick else {}
    extend = not args.no_extend
    pending = [
        s
        for s in specs
        if s["name"] not in cached or (extend and _needs_extension(cached[s["name"]]))
    ]
    if pending:
        from seem_ray.data.generate import ensure_dataset

        for ds in sorted({s["overrides"]["data.dataset"] for s in pending}):
            ensure_dataset(ds, **GENERATE.get(ds.split("/")[1].rsplit("-v", 1)[0], {}))
        out_root.mkdir(parents=True, exist_ok=True)

        def save() -> None:
            if not args.quick:
                write_histories(
                    histories, {n: cached[n] for n in [s["name"] for s in specs] if n in cached}
                )

        train_grid(specs, cached, out_root, args.jobs, extend, save)
    if args.train_only:
        return 0
    runs = [cached[s["name"]] for s in specs]
    result = analyse(runs)
    out_root.mkdir(parents=True, exist_ok=True)
    (out_root / "table.json").write_text(json.dumps(result, indent=2))
    if not args.quick:
        write_markdown(result, Path(args.doc), {"steps": args.steps, "per_env": args.per_env})
        log.info("wrote %s", args.doc)
    if args.json:
        print(json.dumps(result["held_out"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
