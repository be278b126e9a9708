"""What the SEEM stopper saves on a mixed sweep, against the Q-bound stopper and no stopper.

Runs the mixed sweep (tune_configs/mixed.yaml) once through Ray Tune with no stopper, so every
trial's full metric stream is recorded, then feeds each trial's stream to a fresh
DivergenceStopper of each kind (the same object Tune calls, in the same order) to find where it
would have stopped. Per stopper: steps used (compute), trials stopped, detection step of each
true diverger (|mean Q| crossed r_max/(1-gamma) within the budget), lead over the Q-bound
stopper, and false kills (stopped trials that never crossed the bound).
With --live, the sweep is also run for real with the SEEM stopper to confirm the replay.

Usage: python benchmarks/bench_stopper.py [--config tune_configs/mixed.yaml] [--json]
Last stdout line (--json): {"steps_saved_vs_none": ..., "median_lead_x": ..., "false_kills": ...}
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from seem_ray import metrics as M  # noqa: E402
from seem_ray.config import StopperConfig, apply_overrides, load_sweep_config  # noqa: E402
from seem_ray.stopper import DivergenceStopper  # noqa: E402


def replay(kind: str, trials: dict[str, list[dict[str, Any]]]) -> dict[str, int | None]:
    """Step at which a stopper of `kind` stops each trial (None = ran to the budget)."""
    stopper = DivergenceStopper(StopperConfig(kind=kind))
    out: dict[str, int | None] = {}
    for trial_id, records in trials.items():
        out[trial_id] = None
        for rec in records:
            if stopper(trial_id, rec):
                out[trial_id] = int(rec[M.STEP])
                break
    return out


def trial_streams(exp_path: Path) -> dict[str, list[dict[str, Any]]]:
    """Each trial's reported results, in order, from Tune's result.json files."""
    streams = {}
    for result_file in sorted(exp_path.glob("*/result.json")):
        records = [
            json.loads(line) for line in result_file.read_text().splitlines() if line.strip()
        ]
        records = [r for r in records if M.STEP in r]
        if records:
            streams[str(records[0].get("trial_id", result_file.parent.name))] = records
    return streams


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(ROOT / "tune_configs" / "mixed.yaml"))
    p.add_argument("--steps", type=int, default=0, help="override the per-trial budget")
    p.add_argument("--live", action="store_true", help="also run the sweep with the SEEM stopper")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    from seem_ray.tune import init_ray, run_sweep

    stamp = time.strftime("%Y%m%d-%H%M%S")
    overrides: dict[str, Any] = {"name": f"bench_stopper_{stamp}", "base.stopper.kind": "none"}
    if args.steps:
        overrides["base.train.steps"] = args.steps
    sweep = load_sweep_config(args.config, overrides)
    init_ray(None)
    started = time.time()
    summary = run_sweep(sweep, quiet=True)
    wall_none = time.time() - started
    streams = trial_streams(Path(summary.path))
    budget = sweep.base.train.steps
    truth: dict[str, int | None] = {}
    for trial_id, records in streams.items():
        bound = float(records[0].get("q_bound", math.inf))
        truth[trial_id] = next(
            (
                int(r[M.STEP])
                for r in records
                if not math.isfinite(r.get(M.Q_MEAN, 0.0)) or abs(r[M.Q_MEAN]) > bound
            ),
            None,
        )
    stops = {kind: replay(kind, streams) for kind in ("seem", "q_bound")}
    used = {
        kind: sum(s if s is not None else budget for s in stops[kind].values()) for kind in stops
    }
    used["none"] = budget * len(streams)
    divergers = [t for t, step in truth.items() if step is not None]
    leads = []
    for t in divergers:
        s_seem, s_bound = stops["seem"][t], stops["q_bound"][t]
        if s_seem is not None and s_bound is not None:
            leads.append(s_bound / s_seem)
    false_kills = [t for t, s in stops["seem"].items() if s is not None and truth[t] is None]
    rows = []
    for t, records in streams.items():
        overrides_t = records[-1].get("config", {}).get("overrides", {})
        rows.append(
            {
                "trial": t,
                "overrides": overrides_t,
                "crossed_bound_at": truth[t],
                "seem_stop": stops["seem"][t],
                "q_bound_stop": stops["q_bound"][t],
                "max_seem": max(
                    (r[M.SEEM] for r in records if isinstance(r.get(M.SEEM), float)), default=None
                ),
            }
        )
    result: dict[str, Any] = {
        "budget_steps_per_trial": budget,
        "trials": len(streams),
        "divergers": len(divergers),
        "steps_used": used,
        "steps_saved_vs_none": 1.0 - used["seem"] / used["none"] if used["none"] else 0.0,
        "q_bound_saved_vs_none": 1.0 - used["q_bound"] / used["none"] if used["none"] else 0.0,
        "median_lead_x": sorted(leads)[len(leads) // 2] if leads else None,
        "min_lead_x": min(leads) if leads else None,
        "false_kills": len(false_kills),
        "wall_seconds_no_stopper_sweep": round(wall_none, 1),
        "rows": rows,
    }
    if args.live:
        live = apply_overrides(sweep, {"name": f"{sweep.name}_live", "base.stopper.kind": "seem"})
        live_summary = run_sweep(live, quiet=True)
        result["live_steps_used"] = live_summary.steps_used
    print(json.dumps(result, indent=2, default=str), file=sys.stderr)
    out = {
        k: result[k]
        for k in (
            "steps_saved_vs_none",
            "median_lead_x",
            "min_lead_x",
            "false_kills",
            "divergers",
            "trials",
        )
    }
    print(json.dumps(out) if args.json else json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
