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
EARLY_UNTIL = 2000
RECORD_EARLY = {**RECORD, "seem": {**RECORD["seem"], "early_every": 25}}
"""Every run's first EARLY_UNTIL steps recorded once more, records and SEEM every 25 steps, so
startup cadences denser than the main recording's can be replayed (the same seed and data give
the same trajectory: `early_agreement` checks it on the steps both recordings hold)."""
FRESH_SEEDS = (10, 11, 12)
"""Seeds of the fresh held-out grid (``--fresh``): none of the 40 runs above uses them, so its
runs are new trajectories on the held-out environments, trained after the defaults were fixed."""
FRESH_HISTORIES = ROOT / "docs" / "calibration_fresh_histories.json.gz"
KEEP = (M.STEP, M.Q_MEAN, M.Q_MAX, M.Q_ABS_MAX, M.CRITIC_WEIGHT_NORM, M.SEEM, M.CRITIC_LOSS)


def _balanced(levels: tuple[Any, ...], n: int, rng: random.Random) -> list[Any]:
    """n draws covering every level equally often (up to n % len), in shuffled order."""
    out = [levels[i % len(levels)] for i in range(n)]
    rng.shuffle(out)
    return out


def _run_name(dataset: str, algo: str, f: Mapping[str, Any]) -> str:
    size = f["size"] or "all"
    return f"{dataset}_{algo}_n{size}_{f['norm']}_g{f['gamma']}_tau{f['tau']}_s{f['seed']}"


def grid(
    per_env: int, steps: int, quick: bool = False, fresh: bool = False
) -> list[dict[str, Any]]:
    """The fractional design: per environment, each factor's levels balanced over its runs and
    combined at random (fixed seed), so every level meets many others without the full
    factorial (4 x 2 x 3 x 4 x 2 x 2 x 4 x 3 = 9,216 runs). ``fresh``: the same design drawn
    anew (another random key, FRESH_SEEDS) on the held-out environments only, split "fresh"."""
    if quick:
        envs, per_env = ("pointmaze",), 2
    elif fresh:
        envs = HELD_OUT_ENVS
    else:
        envs = CALIBRATION_ENVS + HELD_OUT_ENVS
    factors = {**FACTORS, "seed": FRESH_SEEDS} if fresh else FACTORS
    runs: list[dict[str, Any]] = []
    taken: set[str] = set()
    for env in envs:
        rng = random.Random(f"{'fresh' if fresh else 'calibration'}-{env}")
        algos = _balanced(ALGO_SHARE, per_env, rng) if not quick else ["td3", "td3"]
        cols = {f: _balanced(levels, per_env, rng) for f, levels in factors.items()}
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
            split = "fresh" if fresh else "calibration" if env in CALIBRATION_ENVS else "held_out"
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


def run_one(
    spec: dict[str, Any],
    out_root: str,
    steps: int | None = None,
    record: Mapping[str, Any] = RECORD,
) -> str:
    """Train one calibration run at cadence ``record`` (or extend a cached one to ``steps``);
    returns its name."""
    import torch

    torch.set_num_threads(1)
    from seem_ray.config import parse_run_config
    from seem_ray.runner import run_local

    run_dir = Path(out_root) / spec["name"]
    overrides = dict(spec["overrides"])
    if steps is not None:
        overrides["train.steps"] = steps
    cfg = parse_run_config(record, overrides)
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


def record_early(spec: dict[str, Any], out_root: str) -> str:
    """Re-train one run's first EARLY_UNTIL steps (or up to its crossing) at RECORD_EARLY."""
    steps = min(EARLY_UNTIL, int(spec["overrides"]["train.steps"]))
    return run_one(spec, out_root, steps, RECORD_EARLY)


def merged_records(run: Mapping[str, Any]) -> list[dict[str, float]]:
    """The run's records with its first steps taken from the denser early re-recording (when
    there is one): the early records up to their end, then the main recording's later ones."""
    early = run.get("early_records")
    if not early:
        return list(run["records"])
    if bound_crossing(early, run["q_bound"]) is not None:
        return list(early)
    cut = early[-1][M.STEP]
    return list(early) + [r for r in run["records"] if r[M.STEP] > cut]


def early_agreement(run: Mapping[str, Any]) -> float | None:
    """Largest relative difference of mean Q between the two recordings on the steps both hold
    (0 when training is deterministic, as it should be: same seed, data and sampler)."""
    early = {r[M.STEP]: r.get(M.Q_MEAN) for r in run.get("early_records") or []}
    diffs = [
        abs(early[r[M.STEP]] - r[M.Q_MEAN]) / max(1.0, abs(r[M.Q_MEAN]))
        for r in run["records"]
        if r[M.STEP] in early and _num(early[r[M.STEP]]) and _num(r.get(M.Q_MEAN))
    ]
    return max(diffs) if diffs else None


def _num(x: Any) -> bool:
    return isinstance(x, float) and math.isfinite(x)


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
    record: Mapping[str, Any] = RECORD,
) -> None:
    """Train every run missing from ``runs`` (name -> run with records) at cadence ``record``,
    then train the still-climbing ones once more to 2x their budget; ``save`` is called after
    every run so an interrupted grid resumes where it stopped."""
    todo = [s for s in specs if s["name"] not in runs]
    log.info(
        "%d runs, %d recorded, %d to train on %d processes",
        len(specs),
        len(specs) - len(todo),
        len(todo),
        jobs,
    )
    by_name = {s["name"]: s for s in specs}
    where, cadence = itertools.repeat(str(out_root)), itertools.repeat(record)
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        trained = pool.map(run_one, todo, where, itertools.repeat(None), cadence)
        for i, name in enumerate(trained, 1):
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
        for name in pool.map(run_one, longer, where, doubled, cadence):
            runs[name] = {**runs[name], **_collect(by_name[name], out_root)}
            save()
            log.info(
                "extended %s: %s", name, outcome(runs[name]["records"], runs[name]["q_bound"])[0]
            )


def record_early_grid(
    specs: list[dict[str, Any]],
    runs: dict[str, dict[str, Any]],
    out_root: Path,
    jobs: int,
    save: Callable[[], None],
) -> None:
    """The 25-step re-recording of every run's first steps that lacks one (see RECORD_EARLY)."""
    todo = [s for s in specs if not runs[s["name"]].get("early_records")]
    log.info("%d runs to re-record at a 25-step cadence up to step %d", len(todo), EARLY_UNTIL)
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        for i, name in enumerate(pool.map(record_early, todo, itertools.repeat(str(out_root))), 1):
            runs[name]["early_records"] = load_history(out_root / name)[0]
            save()
            agree = early_agreement(runs[name])
            log.info(
                "[%d/%d] early %s: mean-Q agreement with the main recording %s",
                i,
                len(todo),
                name,
                "n/a" if agree is None else f"{agree:.2g}",
            )


def _ensure_datasets(specs: Iterable[Mapping[str, Any]]) -> None:
    """Generate (once) every local dataset the runs train on."""
    from seem_ray.data.generate import ensure_dataset

    for ds in sorted({s["overrides"]["data.dataset"] for s in specs}):
        ensure_dataset(ds, **GENERATE.get(ds.split("/")[1].rsplit("-v", 1)[0], {}))


def write_histories(path: Path, runs: Mapping[str, Mapping[str, Any]]) -> None:
    """The compact histories (the KEEP keys of every record, all runs) that scoring needs."""
    blob = json.dumps(runs, separators=(",", ":"), allow_nan=True).encode()
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(gzip.compress(blob, mtime=0))
    tmp.replace(path)


def read_histories(path: Path) -> dict[str, dict[str, Any]]:
    return json.loads(gzip.decompress(path.read_bytes()))


# ------------------------------------------------------------------------------ scoring
def shipped_cadence(
    records: list[Mapping[str, float]], sc: SeemConfig | None = None
) -> list[dict[str, float]]:
    """The records a run at the shipped cadence (``sc``, default the SeemConfig/TrainConfig
    defaults) would have produced, cut from the dense recording; the last record (the bound
    crossing of a diverger) is always kept, so the Q-bound baseline is seen as early as the
    recording saw it."""
    sc, log_every = sc or SeemConfig(), TrainConfig().log_every
    out = []
    for i, r in enumerate(records):
        step = int(r[M.STEP])
        early = sc.dense_due(step)
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


def first_probe_step(sc: SeemConfig) -> int:
    """The first step a run at cadence ``sc`` reports Q and SEEM."""
    return next(s for s in range(1, sc.every + 1) if sc.probe_due(s))


Candidate = tuple[Callable[[float], Predictor | None], SeemConfig]
"""A predictor factory (q_bound -> predictor) and the probe cadence it is replayed at."""


def replay(runs: list[Mapping[str, Any]], sc: SeemConfig) -> list[dict[str, Any]]:
    """Each run's ground truth and the records a run at cadence ``sc`` would have produced:
    worked out once per cadence, so scoring one more rule only replays its predictor."""
    out = []
    for run in runs:
        records = merged_records(run)
        label, crossing = outcome(records, run["q_bound"])
        out.append(
            {
                "name": run["name"],
                "q_bound": run["q_bound"],
                "label": label,
                "crossing": crossing,
                "stream": shipped_cadence(records, sc),
            }
        )
    return out


def score(runs: list[Mapping[str, Any]], candidate: Candidate) -> dict[str, Any]:
    """One predictor over runs: caught/diverged, false alarms/stable, ambiguous flagged, leads."""
    make, cadence = candidate
    return score_replayed(replay(runs, cadence), make, cadence.probes_in(10_000))


def score_replayed(
    replayed: list[Mapping[str, Any]], make: Callable[[float], Predictor | None], probes_10k: int
) -> dict[str, Any]:
    """`score` on runs already replayed at the candidate's cadence (``probes_10k``: its cost)."""
    first_probe = first_probe_step(SeemConfig())  # the shipped one: the same runs for every cadence
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
    for run in replayed:
        label, crossing = run["label"], run["crossing"]
        flag, reason = first_flag(make, run["stream"], run["q_bound"])
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
    s["probes_10k"] = probes_10k
    return {"summary": s, "per_run": per_run}


BASELINE = "q_bound (baseline)"
DEFAULT = "default"
CANDIDATES: dict[str, dict[str, Any]] = {
    BASELINE: {"kind": "q_bound"},
    DEFAULT: {},
    "previous default (SEEM > 0.2, probes every 100 steps to step 2000)": {
        "seem_threshold": 0.2,
        "seem": {"startup_every": 0, "early_every": 100},
    },
    "SEEM > 0.2": {"seem_threshold": 0.2},
    "patience 2": {"patience": 2},
    "patience 2, SEEM > 0.05": {"patience": 2, "seem_threshold": 0.05},
    "in-sample default (SEEM > 0.05 x3, t^1.5 confirm, t^2 growth)": {
        "seem_threshold": 0.05,
        "patience": 3,
        "confirm_order": 1.5,
        "growth_order": 2.0,
    },
    "confirm at t^1": {"confirm_order": 1.0},
    "growth order 2": {"growth_order": 2.0},
    "+ weight-norm confirmation (t^1)": {"weight_order": 1.0},
    "no scale guard (min_scale_fraction 0)": {"min_scale_fraction": 0.0},
    "no startup phase (every 200 steps to step 2000)": {"seem": {"startup_every": 0}},
    "startup, then every 100 steps to step 2000 (40 probes in 10k)": {"seem": {"early_every": 100}},
    "startup, then every 100 steps to step 1000": {
        "seem": {"early_every": 100, "early_until": 1000}
    },
    "every 50 steps to step 1000, then every 200": {
        "seem": {"startup_every": 50, "startup_until": 1000}
    },
    "bare SEEM > 0.3 (no growth test)": {
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
"""Each a set of StopperConfig overrides of the shipped defaults; a "seem" entry holds
SeemConfig (cadence) overrides."""


def candidates() -> dict[str, Candidate]:
    """The default and the alternatives scored beside it (each a StopperConfig + SeemConfig)."""

    def of(seem: Mapping[str, Any] | None = None, **kw: Any) -> Candidate:
        settings = StopperConfig(**kw)
        return (lambda bound: build_predictor(settings, bound)), SeemConfig(**(seem or {}))

    return {name: of(**kw) for name, kw in CANDIDATES.items()}


SEARCH: dict[str, tuple[Any, ...]] = {
    "seem_threshold": (0.05, 0.1, 0.2, 0.3),
    "patience": (1, 2, 3),
    "confirm_order": (0.5, 1.0, 1.5),
    "growth_order": (1.5, 2.0, 3.0),
    "min_scale_fraction": (0.0, 0.01, 0.05),
}
"""The rule settings searched on the calibration split (StopperConfig fields)..."""
CADENCES: dict[str, dict[str, int]] = {
    name: dict(
        zip(("startup_every", "startup_until", "early_every", "early_until"), v, strict=True)
    )
    for name, v in {
        "every 100 steps to step 2000": (0, 0, 100, 2000),
        "every 25 to step 400, then every 100 to step 2000": (25, 400, 100, 2000),
        "every 25 to step 400, then every 200 to step 2000": (25, 400, 200, 2000),
        "every 25 to step 400, then every 100 to step 1000": (25, 400, 100, 1000),
        "every 50 to step 1000, then every 100 to step 2000": (50, 1000, 100, 2000),
    }.items()
}
"""...crossed with these probe cadences (SeemConfig fields)."""
MAX_PROBES_10K = 32
"""Cost cap: SEEM probes in a 10,000-step run (the default length). At ~0.06 s a probe (probe
512, 256-256 critic, this CPU, benchmarks/bench_seem_share.py) and ~5 ms a step, 32 probes are
~3.8% of an idle machine's wall time; under load the share rises (the seed-1 mixed sweep measured
up to 5.3% with 26 probes in 8k steps), so the cap keeps a margin below the 5% budget."""


def search(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every rule x cadence of SEARCH x CADENCES on ``runs`` (the calibration split only),
    ranked by the criterion fixed before the held-out split is scored: no missed diverger and no
    false alarm; at most MAX_PROBES_10K probes in a 10k-step run; then the largest geometric-mean
    lead over the divergers (with a SEEM threshold above every calibration stable run's SEEM);
    then the fewest ambiguous runs flagged; then the fewest probes;
    then the fewest changed settings from the shipped StopperConfig (stay unless the data says
    otherwise). Returns the admissible settings, best first."""
    shipped = StopperConfig()
    keys = list(SEARCH)
    # Two safeguards, each clean on its own: the SEEM threshold must lie above every SEEM value
    # a calibration stable run ever showed, so no healthy run relies on the growth test alone
    # (11 stable runs cannot separate settings on false alarms: nearly all have none).
    merged = {run["name"]: merged_records(run) for run in runs}
    truth = {run["name"]: outcome(merged[run["name"]], run["q_bound"]) for run in runs}
    stable_seem = max(
        (
            r[M.SEEM]
            for name, (label, _) in truth.items()
            if label == "stable"
            for r in merged[name]
            if _num(r.get(M.SEEM))
        ),
        default=-math.inf,
    )
    ranked = []
    for cadence_name, cadence in CADENCES.items():
        sc = SeemConfig(**cadence)
        probes = sc.probes_in(10_000)
        if probes > MAX_PROBES_10K:
            continue
        replayed = replay(runs, sc)
        for values in itertools.product(*(SEARCH[k] for k in keys)):
            rule = dict(zip(keys, values, strict=True))
            if rule["seem_threshold"] <= stable_seem:
                continue
            settings = StopperConfig(**rule)
            result = score_replayed(
                replayed, (lambda b, st=settings: build_predictor(st, b)), probes
            )
            s, per_run = result["summary"], result["per_run"]
            if s["caught"] < s["diverged"] or s["false_alarms"]:
                continue
            leads = []
            for name, (label, crossing) in truth.items():
                flag = per_run[name][0]
                if label == "diverged" and crossing and flag:
                    leads.append(crossing / flag)
            geo = math.exp(statistics.fmean(math.log(x) for x in leads)) if leads else 0.0
            changed = sum(getattr(shipped, k) != v for k, v in rule.items())
            ranked.append(
                {
                    "rule": rule,
                    "cadence": cadence_name,
                    "seem": cadence,
                    "geo_lead_x": geo,
                    "median_lead_x": s["median_lead_x"],
                    "ambiguous_flagged": s["ambiguous_flagged"],
                    "probes_10k": s["probes_10k"],
                    "changed": changed,
                }
            )
    ranked.sort(
        key=lambda r: (
            -round(r["geo_lead_x"], 6),
            r["ambiguous_flagged"],
            r["probes_10k"],
            r["changed"],
        )
    )
    return ranked


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
    ranked = search(splits["calibration"])
    out["search"] = {"admissible": len(ranked), "top": ranked[:6]}
    best = ranked[0] if ranked else None
    shipped_rule = {k: getattr(StopperConfig(), k) for k in SEARCH}
    shipped_seem = SeemConfig()
    out["search"]["shipped_is_best"] = bool(
        best and best["rule"] == shipped_rule and SeemConfig(**best["seem"]) == shipped_seem
    )
    if not out["search"]["shipped_is_best"]:
        log.warning("the shipped defaults are not the search's best setting: %s", best)
    out["per_env"] = {
        env: score([r for r in runs if r["env"] == env], preds[DEFAULT])["summary"] for env in ENVS
    }
    out["runs"] = _rows(runs, preds)
    return out


def analyse_fresh(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Every candidate on the fresh held-out runs: scored only, nothing is chosen on them."""
    preds = candidates()
    return {
        "table": {name: score(runs, make)["summary"] for name, make in preds.items()},
        "runs": _rows(runs, preds),
    }


def _rows(runs: list[dict[str, Any]], preds: Mapping[str, Candidate]) -> list[dict[str, Any]]:
    """The per-run table: ground truth, SEEM's range, and where the default and the bound flag."""
    default_flags = score(runs, preds[DEFAULT])["per_run"]
    bound_flags = score(runs, preds[BASELINE])["per_run"]
    rows = []
    for r in runs:
        records = merged_records(r)
        label, crossing = outcome(records, r["q_bound"])
        seems = [x[M.SEEM] for x in records if math.isfinite(x.get(M.SEEM, math.nan))]
        rows.append(
            {
                "run": r["name"],
                "env": r["env"],
                "split": r["split"],
                "algo": r["algo"],
                "q_bound": r["q_bound"],
                "outcome": label,
                "crossed_at": crossing,
                "steps": int(records[-1][M.STEP]),
                "max_seem": max(seems) if seems else None,
                "final_q": records[-1].get(M.Q_MEAN),
                "default_flag": default_flags[r["name"]][0],
                "default_reason": default_flags[r["name"]][1],
                "q_bound_flag": bound_flags[r["name"]][0],
            }
        )
    return rows


def _x(v: float | None) -> str:
    return f"{v:.1f}x" if v else "-"


def _table(stats: Mapping[str, Mapping[str, Any]]) -> list[str]:
    lines = [
        "| predictor | caught / diverged | false alarms / stable | ambiguous (flagged / all) "
        "| late | median lead | min lead | median lead, crossed after step "
        f"{SeemConfig().every} | SEEM probes in 10k steps |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in stats.items():
        lines.append(
            f"| {name} | {s['caught']}/{s['diverged']} | {s['false_alarms']}/{s['stable']} | "
            f"{s['ambiguous_flagged']}/{s['ambiguous']} | {s['late']} | "
            f"{_x(s['median_lead_x'])} | {_x(s['min_lead_x'])} | "
            f"{_x(s['median_lead_slow_x'])} (of {s['n_slow']}) | {s['probes_10k']} |"
        )
    return lines


def _search_lines(found: Mapping[str, Any]) -> list[str]:
    n = math.prod(len(v) for v in SEARCH.values()) * len(CADENCES)
    grid = "; ".join(f"{k} {'/'.join(f'{v:g}' for v in vs)}" for k, vs in SEARCH.items())
    lines = [
        f"{n} settings ({grid}; cadences: {'; '.join(CADENCES)}), ranked by the criterion in "
        f"`search`'s docstring; {found['admissible']} admissible (no miss, no false alarm, at "
        f"most {MAX_PROBES_10K} probes in 10k steps, SEEM threshold above every calibration "
        "stable run's SEEM). The best six:",
        "",
        "| SEEM > | patience | confirm order | growth order | scale guard | cadence "
        "| geometric-mean lead | median lead | ambiguous flagged | probes in 10k |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in found["top"]:
        rule = r["rule"]
        lines.append(
            f"| {rule['seem_threshold']:g} | {rule['patience']} | {rule['confirm_order']:g} | "
            f"{rule['growth_order']:g} | {rule['min_scale_fraction']:g} | {r['cadence']} | "
            f"{r['geo_lead_x']:.2f}x | {_x(r['median_lead_x'])} | {r['ambiguous_flagged']} | "
            f"{r['probes_10k']} |"
        )
    lines += [
        "",
        "The shipped defaults "
        + ("are" if found["shipped_is_best"] else "are NOT")
        + " the first row.",
    ]
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
        "# Divergence predictor calibration (split by environment)",
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
        f"step 2000), every run's first {EARLY_UNTIL} steps recorded once more with both every "
        "25 steps (same seed and data: mean Q agrees exactly on every step both recordings hold, "
        "all 40 runs), and replayed at the shipped cadence: Q every "
        f"{TrainConfig().log_every} steps, SEEM every {sc.every}, both every {sc.startup_every} "
        f"up to step {sc.startup_until} and every {sc.early_every} up to step "
        f"{sc.early_until}. The crossing record is always kept, so the Q-bound baseline is seen "
        "as early as the recording saw it (conservative for every lead).",
        "- **Split, fixed before any rule was tried**: the defaults were chosen looking only at "
        f"{', '.join(CALIBRATION_ENVS)} ({counts['calibration']['diverged']} diverged, "
        f"{counts['calibration']['stable']} stable, {counts['calibration']['ambiguous']} "
        "ambiguous) and scored on the held-out "
        f"{', '.join(HELD_OUT_ENVS)} ({counts['held_out']['diverged']} diverged, "
        f"{counts['held_out']['stable']} stable, {counts['held_out']['ambiguous']} ambiguous); "
        "the reading below says when the held-out split was looked at.",
        "- **Lead** = Q-bound step / flag step, over divergers that crossed after the first "
        f"probe (step {first_probe_step(sc)}); *late* = flagged only after the crossing.",
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
        *_fresh_lines(result.get("fresh")),
        f"## Calibration environments ({', '.join(CALIBRATION_ENVS)}), where the rule was chosen",
        "",
        *_table(result["calibration"]),
        "",
        "## The default per environment (leave-one-environment-out view)",
        "",
        *_table({env: s for env, s in result["per_env"].items()}),
        "",
        "## How the default was chosen (`calibrate.search`, calibration split only)",
        "",
        *_search_lines(result["search"]),
        "",
        "## Runs",
        "",
        "| run | split | outcome | steps | Q bound | crossed at | max SEEM | final mean Q "
        "| default flags at (reason) | Q-bound flags at |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in [*runs, *(result.get("fresh") or {}).get("runs", [])]:
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


def _fresh_lines(fresh: Mapping[str, Any] | None) -> list[str]:
    """The fresh held-out section (``--fresh``), when its grid has been trained."""
    if not fresh:
        return []
    n = {
        lab: sum(r["outcome"] == lab for r in fresh["runs"])
        for lab in ("diverged", "stable", "ambiguous")
    }
    return [
        f"## Fresh held-out runs ({', '.join(HELD_OUT_ENVS)}, seeds "
        f"{'/'.join(map(str, FRESH_SEEDS))}): out of sample",
        "",
        f"{len(fresh['runs'])} runs of the same design drawn anew (another random key, seeds no "
        "run above uses), trained and scored once after the defaults were fixed "
        f"(`calibrate.py --fresh`, histories in `docs/{FRESH_HISTORIES.name}`): "
        f"{n['diverged']} diverged, {n['stable']} stable, {n['ambiguous']} ambiguous. Recorded "
        f"from the start at the dense early cadence (both every 25 steps up to step {EARLY_UNTIL}),"
        " then as the main grid. No setting was chosen, changed or re-ranked after this table.",
        "",
        *_table(fresh["table"]),
        "",
    ]


NOTES: list[str] = [
    "## Reading (written by hand after the held-out scoring)",
    "",
    "- **What changed in session 11.** Every run's first 2,000 steps were recorded once more "
    "with Q and SEEM every 25 steps (`RECORD_EARLY`; the trajectories are identical to the main "
    "recording: mean Q agrees exactly on all shared steps of all 40 runs), so probe cadences "
    "denser than the main recording's can be replayed, and the ground-truth crossing step is "
    "now resolved to 25 steps early on (the fast divergers cross at 150-425 rather than the "
    "200-500 the coarser recording showed: every lead below is measured against that sharper "
    "baseline). The cadence became part of the search (`CADENCES`), with a cost cap "
    "(`MAX_PROBES_10K`: `benchmarks/bench_seem_share.py` measured 5.2% of an 8k-step run's "
    "wall time for 38 probes, 3.9% for 26), and the search itself is now code "
    "(`calibrate.search`) instead of a one-off script.",
    "- **How the default was chosen.** The criterion (fixed before the first held-out scoring, "
    "in session 10): on the calibration split, zero missed divergers and zero false alarms, then "
    "the largest geometric-mean lead, then the fewest ambiguous runs flagged, then cost, then "
    "the fewest changes. The calibration split cannot separate settings on false alarms (1,611 of "
    "1,620 settings have none on its 11 stable runs), so the lead alone decided and pushed to "
    "the most eager rule, SEEM > 0.05 on one probe. A second safeguard was added: the SEEM "
    "threshold must lie above every SEEM value any calibration stable run showed (0.213, a "
    "Hopper IQL RMSNorm critic at step 1,575), so no healthy run relies on the growth test "
    "alone. That leaves threshold 0.3; the search then picks one probe above 0.3 confirmed by "
    "t^0.5 growth, growth order 1.5, and probes every 25 steps to step 400, then every 200 to "
    "step 2,000 (32 probes in 10k steps).",
    "- **The held-out split is no longer untouched, and says so.** Before the final choice it was "
    "scored twice this session: once with the previous rule at a cadence picked before the cost "
    "cap (every 25 to step 400, then every 100: median lead 3.0x, 0 false alarms), and the "
    "threshold safeguard above was added after the unconstrained search chose SEEM > 0.05, a "
    "threshold that the earlier held-out tables had shown false-alarming (patience 2 at 0.05: "
    "1/9). The held-out figures are therefore a check, not a clean out-of-sample result; the "
    "clean one is the fresh seed-2 Tune sweep in docs/benchmarks.md, which no choice saw.",
    "- **Held out: 8/8 divergers caught, 0/9 false alarms, 0/3 ambiguous runs flagged, never "
    "later than the Q bound; median lead 2.5x (min 1.2x), against 1.5x for the previous default "
    "on the same sharper crossings.** The issue's median >= 4x over all divergers is not met. "
    "Four of the eight cross at step 150-325 (random-policy data with hard target updates, or "
    "CQL) and are flagged at step 75-100: 2.0-3.25x. Before about step 75 a fast diverger looks "
    "like a healthy critic (its |Q| grows from zero like every critic's; SEEM blips of 0.1-0.3 "
    "come and go, e.g. a Hopper diverger's 0.26, 0.10, 0.04, 0.19 at steps 25-100), so a 4x "
    "lead on a crossing at step 150 would need a flag at step 37 on a single probe. On the four "
    "that cross after step 1,000 the median lead is 11.4x (1.2x, 2.0x, 20.8x, 49x); the "
    "HalfCheetah run at 1,675 (max SEEM 0.216, below the new threshold) is now flagged by "
    "growth at 1,400 (1.2x; 1.4x with SEEM > 0.2).",
    "- **What the threshold costs.** SEEM > 0.2 at the same cadence scores 3.0x on the held-out "
    "split but flags one of its three ambiguous runs; the bare thresholds show why SEEM alone is "
    "not the rule: SEEM > 0.05 on 3 probes without the growth test false-alarms on 2 of the 9 "
    "held-out stable runs (a Walker2d IQL critic with SEEM 0.11 at step 100 and an RMSNorm TD3 "
    "critic with SEEM up to 0.15, both bounded).",
    "- Ambiguous runs (still climbing at twice the budget) are where the rule is least sure: it "
    "flags two of the three calibration ones (TD3, gamma 0.99, tau 0.005: a Hopper RMSNorm "
    "critic with SEEM up to 0.44 and mean Q at 0.63 of the bound at 60k steps, and a PointMaze "
    "critic without norm, SEEM up to 0.23, at 0.74 of the bound, both still rising) and none "
    "of the three held-out ones. One calibration run and one held-out run that were ambiguous "
    "at 30k crossed the bound in their extension (at 46,250 and 39,250): both are flagged at "
    "step 800.",
    "- **Fresh held-out grid (session 12, out of sample).** 20 new runs on HalfCheetah and "
    "Walker2d (seeds 10-12, a new draw of the design), trained after the defaults were fixed and "
    "scored once: 7/7 divergers caught, 0/12 false alarms, 0/1 ambiguous flagged, none late; "
    "median lead 2.2x (min 1.0x), 2.9x on the four crossing after step 1,000. So the held-out "
    "figures above carry over (no false alarm on either held-out set), and so does the shortfall: "
    "the >= 4x median is not met out of sample either. Three of the seven cross at step 150-225 "
    "and are flagged at 50-100; one (HalfCheetah random, 1k transitions, gamma 0.95, hard target "
    "updates) never shows SEEM above 0.09 and is caught only by the Q bound at 1,625. Two fresh "
    "stable critics reached SEEM 0.28 and 0.47 (a Walker2d TD3 without norm, a Walker2d IQL "
    "LayerNorm critic) with bounded values: the growth confirmation is what keeps them running "
    "(bare SEEM > 0.3 false-alarms on 1 of the 12, bare SEEM > 0.05 x3 on 3).",
    "- **Is 4x reachable at all?** docs/separability.md (`benchmarks/separability.py`, session "
    "13) asks it of the whole family of per-step thresholds on SEEM, Q and the weight norm: fit "
    "on a set's own stable runs they reach a median lead of 4.8x on the first held-out set (the "
    "ceiling there), and every SEEM envelope learned on the calibration split false-alarms on 2/9 "
    "held-out and 3/12 fresh stable runs, at margins up to 3x (pooling the held-out set's stable "
    "runs in, only margin 3 clears the fresh set, at 2.2x); the sign- and scale-free Q and weight "
    "features transfer without false alarms but lead by 1.2-2.2x.",
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
    p.add_argument(
        "--fresh",
        action="store_true",
        help="also train the fresh held-out grid (new seeds; scored, never used to choose)",
    )
    p.add_argument("--fresh-histories", default=str(FRESH_HISTORIES))
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
        if s["name"] not in cached
        or (extend and _needs_extension(cached[s["name"]]))
        or not cached[s["name"]].get("early_records")
    ]
    if pending:
        _ensure_datasets(pending)
        out_root.mkdir(parents=True, exist_ok=True)

        def save() -> None:
            if not args.quick:
                write_histories(
                    histories, {n: cached[n] for n in [s["name"] for s in specs] if n in cached}
                )

        train_grid(specs, cached, out_root, args.jobs, extend, save)
        record_early_grid(
            specs, cached, out_root.with_name(out_root.name + "_early"), args.jobs, save
        )
    fresh_specs = [] if args.quick else grid(args.per_env, args.steps, fresh=True)
    fresh_path = Path(args.fresh_histories)
    fresh = read_histories(fresh_path) if fresh_path.exists() and fresh_specs else {}
    if args.fresh and fresh_specs:
        _ensure_datasets(fresh_specs)
        train_grid(
            fresh_specs,
            fresh,
            out_root.with_name(out_root.name + "_fresh"),
            args.jobs,
            extend,
            lambda: write_histories(fresh_path, fresh),
            RECORD_EARLY,
        )
    if args.train_only:
        return 0
    runs = [cached[s["name"]] for s in specs]
    result = analyse(runs)
    done = [fresh[s["name"]] for s in fresh_specs if s["name"] in fresh]
    if done and len(done) == len(fresh_specs):
        result["fresh"] = analyse_fresh(done)
    elif done:
        log.warning("fresh grid: %d of %d runs recorded, not reported", len(done), len(fresh_specs))
    out_root.mkdir(parents=True, exist_ok=True)
    (out_root / "table.json").write_text(json.dumps(result, indent=2))
    if not args.quick:
        write_markdown(result, Path(args.doc), {"steps": args.steps, "per_env": args.per_env})
        log.info("wrote %s", args.doc)
    if args.json:
        print(
            json.dumps(
                {"held_out": result["held_out"], "fresh": result.get("fresh", {}).get("table")}
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
