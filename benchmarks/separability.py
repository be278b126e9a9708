"""How early the recorded runs let any threshold rule flag a diverger, and what of it transfers.

The calibration tables score concrete rules. This asks the question behind the held-out
shortfall (issue 19: median lead >= 4x): is the evidence there at all, and does it carry over
from one set of environments to another? The rule family is as permissive as a per-step rule
can be: for each sign-free, scale-free feature of a record (SEEM; max |Q| on the probe and the
drift of mean Q from its first report, both over the return bound; the critic's weight norm
over its first report), a threshold that may rise with the step, set to the running maximum
the *stable* runs of a reference set showed up to that step (times a margin). A run is flagged
at the first record where any feature exceeds its threshold; its lead is crossing / flag, with
the Q bound as the fallback (so a run no feature separates scores 1.0x).

- **In-sample** (the envelope fit on the very set it scores): zero false alarms by
  construction, so its median lead is an upper bound for this family on that set, not a result.
- **Transfer** (fit on the calibration split's stable runs, scored on each held-out set): what a
  rule learned from one set of environments does on another.

Records are replayed at the shipped cadence (``calibrate.replay``), as the stopper sees them.

Usage: python benchmarks/separability.py [--doc docs/separability.md] [--json]
Reads the committed histories only (docs/calibration_histories.json.gz and the fresh grid's).
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import statistics
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import calibrate as C

from seem_ray import metrics as M
from seem_ray.config import SeemConfig

Features = list[tuple[int, dict[str, float]]]
"""One run's records as (step, {feature: value}), in step order."""

FEATURES = ("seem", "q_abs_max/bound", "q_drift/bound", "weight_norm/first")
NEUTRAL = {"weight_norm/first": 1.0}
"""A feature's value when nothing happens (0 unless listed): the margin scales the distance."""
MARGINS = (1.0, 1.5, 2.0, 3.0)


def features(records: Iterable[Mapping[str, float]], bound: float) -> Features:
    """Each record's features; a value the record lacks (no SEEM on a Q-only record) is absent.
    Q enters relative to the return bound and to its own first report, so neither the reward
    scale nor a sign change of mean Q reads as divergence."""
    out: Features = []
    q0 = w0 = None
    for r in records:
        f: dict[str, float] = {}
        q, w = r.get(M.Q_MEAN), r.get(M.CRITIC_WEIGHT_NORM)
        if q0 is None and C._num(q):
            q0 = q
        if w0 is None and C._num(w) and w:
            w0 = w
        if C._num(r.get(M.SEEM)):
            f["seem"] = r[M.SEEM]
        if C._num(r.get(M.Q_ABS_MAX)):
            f["q_abs_max/bound"] = r[M.Q_ABS_MAX] / bound
        if C._num(q) and q0 is not None:
            f["q_drift/bound"] = abs(q - q0) / bound
        if C._num(w) and w0:
            f["weight_norm/first"] = w / w0
        out.append((int(r[M.STEP]), f))
    return out


Envelope = dict[str, tuple[list[int], list[float]]]
"""feature -> (steps, running maximum of the stable runs' values up to each step)."""


def envelope(stable: Iterable[Features], keys: Iterable[str] = FEATURES) -> Envelope:
    """The highest value any stable run showed up to each step, per feature."""
    runs = list(stable)
    env: Envelope = {}
    for k in keys:
        points = sorted((s, f[k]) for feats in runs for s, f in feats if k in f)
        steps, peaks, peak = [], [], -math.inf
        for s, v in points:
            peak = max(peak, v)
            steps.append(s)
            peaks.append(peak)
        env[k] = (steps, peaks)
    return env


def threshold(env: Envelope, key: str, step: int) -> float:
    """The envelope at ``step``; before the stable runs' first report, its value there; +inf
    for a feature no stable run reported (it cannot separate anything)."""
    steps, peaks = env.get(key, ([], []))
    if not steps:
        return math.inf
    return peaks[bisect.bisect_right(steps, max(step, steps[0])) - 1]


def first_exceed(
    feats: Features, env: Envelope, keys: Iterable[str], margin: float = 1.0
) -> tuple[int, str] | None:
    """(step, feature) of the first record where a feature lies above margin x the envelope
    (margin scales the distance from the feature's NEUTRAL value)."""
    keys = list(keys)
    for step, f in feats:
        for k in keys:
            if k not in f:
                continue
            base = NEUTRAL.get(k, 0.0)
            t = threshold(env, k, step)
            if f[k] > base + margin * (t - base):
                return step, k
    return None


def prepare(runs: Iterable[Mapping[str, Any]]) -> list[dict]:
    """Ground truth and features of each run at the shipped cadence."""
    return [
        {**r, "features": features(r["stream"], r["q_bound"])}
        for r in C.replay(list(runs), SeemConfig())
    ]


def assess(
    runs: list[Mapping[str, Any]], env: Envelope, keys: Iterable[str], margin: float = 1.0
) -> dict[str, Any]:
    """Flags of one envelope rule: false alarms on the stable runs, divergers separated before
    their crossing, and leads (crossing / flag, the Q bound as the fallback) over the divergers
    that cross after the first probe, as in `calibrate.score_replayed`."""
    keys = list(keys)
    first_probe = C.first_probe_step(SeemConfig())
    s: dict[str, Any] = {"false_alarms": 0, "stable": 0, "separated": 0, "diverged": 0}
    leads, per_run = [], {}
    for r in runs:
        hit = first_exceed(r["features"], env, keys, margin)
        if r["label"] == "diverged":
            crossing = r["crossing"]
            s["diverged"] += 1
            flag = hit[0] if hit and hit[0] < crossing else crossing
            s["separated"] += flag < crossing
            if crossing > first_probe:
                leads.append(crossing / max(flag, 1))
            per_run[r["name"]] = {"crossing": crossing, "flag": flag, "by": hit and hit[1]}
        elif r["label"] == "stable":
            s["stable"] += 1
            s["false_alarms"] += hit is not None
    leads.sort()
    s["median_lead_x"] = statistics.median(leads) if leads else None
    s["min_lead_x"] = leads[0] if leads else None
    s["n_leads"] = len(leads)
    return {"summary": s, "per_run": per_run}


def stable_features(runs: Iterable[Mapping[str, Any]]) -> list[Features]:
    return [r["features"] for r in runs if r["label"] == "stable"]


RULES: dict[str, tuple[str, ...]] = {"any feature": FEATURES, **{k: (k,) for k in FEATURES}}


Transfer = tuple[tuple[str, ...], str]
"""(the sets whose stable runs make the envelope, the set it is scored on)."""


def transfers(names: Iterable[str]) -> list[Transfer]:
    """Calibration to each held-out set, then calibration and the first held-out set pooled to
    the fresh one: does more reference data (the fresh set's own environments included) help?"""
    names = list(names)
    out: list[Transfer] = [(("calibration",), n) for n in names if n != "calibration"]
    if "fresh" in names and "held_out" in names:
        out.append((("calibration", "held_out"), "fresh"))
    return out


def analyse(sets: Mapping[str, list[Mapping[str, Any]]]) -> dict[str, Any]:
    """In-sample bound (any feature) on every set, and every `transfers` pair for every rule
    (one feature or any) and margin."""
    prepared = {name: prepare(runs) for name, runs in sets.items()}
    out: dict[str, Any] = {"in_sample": {}, "transfer": {}}
    for name, runs in prepared.items():
        out["in_sample"][name] = assess(runs, envelope(stable_features(runs)), FEATURES)
    for refs, target in transfers(prepared):
        env = envelope([f for ref in refs for f in stable_features(prepared[ref])])
        out["transfer"][f"{' + '.join(refs)} -> {target}"] = {
            f"{rule} x{m:g}": assess(prepared[target], env, keys, m)["summary"]
            for rule, keys in RULES.items()
            for m in MARGINS
        }
    return out


def markdown(result: Mapping[str, Any]) -> list[str]:
    lines = [
        "# What the runs allow: in-sample separability and transfer",
        "",
        "Written by `benchmarks/separability.py` from the committed calibration histories "
        "(shipped probe cadence). " + " ".join(__doc__.split("\n\n")[1].split()),
        "",
        "## In-sample bound (the envelope fit on the set it scores)",
        "",
        "| set | divergers separated before crossing | median lead | min lead | leads counted |",
        "|---|---|---|---|---|",
    ]
    for name, res in result["in_sample"].items():
        s = res["summary"]
        lines.append(
            f"| {name} | {s['separated']}/{s['diverged']} | {C._x(s['median_lead_x'])} "
            f"| {C._x(s['min_lead_x'])} | {s['n_leads']} |"
        )
    lines += ["", "Per diverger (in-sample): the first record past the envelope, and by what.", ""]
    lines += ["| set | run | crossed at | flag | by |", "|---|---|---|---|---|"]
    for name, res in result["in_sample"].items():
        for run, p in res["per_run"].items():
            lines.append(f"| {name} | {run} | {p['crossing']} | {p['flag']} | {p['by'] or '-'} |")
    lines += [
        "",
        "## Transfer (the envelope of one set's stable runs, scored on another)",
        "",
        "| envelope -> scored | rule | false alarms | separated | median lead | min lead |",
        "|---|---|---|---|---|---|",
    ]
    for name, table in result["transfer"].items():
        for rule, s in table.items():
            lines.append(
                f"| {name} | {rule} | {s['false_alarms']}/{s['stable']} "
                f"| {s['separated']}/{s['diverged']} | {C._x(s['median_lead_x'])} "
                f"| {C._x(s['min_lead_x'])} |"
            )
    return lines


def load_sets(histories: Path, fresh: Path) -> dict[str, list[dict[str, Any]]]:
    main = C.read_histories(histories)
    sets = {
        "calibration": [r for r in main.values() if r["env"] in C.CALIBRATION_ENVS],
        "held_out": [r for r in main.values() if r["env"] in C.HELD_OUT_ENVS],
    }
    if fresh.exists():
        sets["fresh"] = list(C.read_histories(fresh).values())
    return sets


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--histories", default=str(C.ROOT / "docs" / "calibration_histories.json.gz"))
    p.add_argument("--fresh-histories", default=str(C.FRESH_HISTORIES))
    p.add_argument("--doc", default=str(C.ROOT / "docs" / "separability.md"))
    p.add_argument("--json", action="store_true", help="print the result as JSON (last line)")
    args = p.parse_args(argv)
    histories = Path(args.histories)
    if not histories.exists():
        print(f"separability: {histories} not found; run benchmarks/calibrate.py", file=sys.stderr)
        return 2
    result = analyse(load_sets(histories, Path(args.fresh_histories)))
    doc = Path(args.doc)
    doc.write_text("\n".join([*markdown(result), *READING]) + "\n")
    for name, res in result["in_sample"].items():
        s = res["summary"]
        print(f"in-sample {name}: median lead {C._x(s['median_lead_x'])}", file=sys.stderr)
    if args.json:
        print(json.dumps(result))
    return 0


READING: list[str] = [
    "",
    "## Reading (written by hand after the tables were first produced, session 13)",
    "",
    "- **The evidence is there in sample, barely on the first held-out set.** An envelope fit "
    "on the very runs it scores (zero false alarms by construction) reaches a median lead of "
    "10.5x on the calibration split, 20.5x on the fresh grid, but only 4.8x on the first held-out "
    "set: there two Walker2d divergers cross at step 150 and no feature separates them from "
    "that set's own stable runs before step 50 (3.0x), and two slow ones (HalfCheetah, crossing "
    "at 1,675 and 18,000) stay inside the envelope until 1,000 and 10,500. So issue 19's "
    "median >= 4x is at the ceiling of this whole rule family there, even for a rule that "
    "knows the stable runs it is scored on.",
    "- **What separates early does not transfer.** Every envelope built on SEEM false-alarms "
    "out of sample, at any margin tried: 2/9 held-out stable runs flagged with the calibration "
    "split's envelope (a Walker2d IQL critic without norm at step 75, a Walker2d RMSNorm TD3 "
    "critic at 325; at margin 3: 100 and 1,200), 3/12 fresh ones (a Walker2d TD3 critic "
    "without norm at 125, a Walker2d TD3+BC LayerNorm critic at 1,400, a Walker2d IQL "
    "LayerNorm critic at 15,000). Healthy critics' SEEM has excursions that the 11 calibration "
    "stable runs never show. Pooling the first held-out set's 9 stable runs (Walker2d "
    "included) into the envelope still false-alarms on 3/12 fresh runs at margin 1 and reaches "
    "zero only at margin 3, where the median lead is 2.2x.",
    "- **The sign- and scale-free Q and weight features transfer, but late.** max |Q| and the "
    "drift of mean Q (over the bound) and the weight norm (over its first report) raise no "
    "false alarm out of sample at any margin; their leads are 1.2-1.4x (Q) and 2.1x / 2.2x "
    "(weight norm) on the held-out / fresh sets, no better than the shipped rule (2.5x / 2.2x), "
    "which already combines SEEM with a Q-growth confirmation.",
    "- **So, on these runs:** a median lead >= 4x with zero false alarms out of sample is not "
    "reachable with per-step thresholds on SEEM, Q or the weight norm at the shipped cadence. "
    "Closing the gap needs other evidence (a feature of the SEEM trajectory rather than its "
    "level, or probes denser than every 25 steps before step 100, which would need the early "
    "grid re-recorded), or many more stable reference runs per environment than the 9-12 here; "
    "or a criterion that counts only divergers a user could act on (those crossing after the "
    "first few hundred steps). That is a research or product decision, not a retuning.",
]
"""The reading of the tables, written by hand after they were first produced."""

if __name__ == "__main__":
    sys.exit(main())
