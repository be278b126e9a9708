"""What the SEEM stopper saves on a mixed sweep, against the Q-bound stopper and no stopper.

Runs the mixed sweep (tune_configs/mixed.yaml) once through Ray Tune with no stopper, so every
trial's full metric stream is recorded, then feeds each trial's stream to a fresh
DivergenceStopper of each kind (the same object Tune calls, in the same order) to find where it
would have stopped. Per stopper: steps used (compute), trials stopped, detection step of each
true diverger (|mean Q| crossed r_max/(1-gamma) within the budget), lead over the Q-bound
stopper (per trial, and in total: the steps each stopper let all divergers run), and false
kills (stopped trials that never crossed the bound).
With --live, the sweep is also run for real with the SEEM stopper to confirm the replay.

A trial the SEEM stopper stopped whose Q had not crossed the bound by the budget is neither a
confirmed divergence nor a false kill yet: its config (base + the trial's overrides, same seed)
is retrained on its own, stopper off, for --confirm-steps (default 2x the budget; where that run
is still climbing at its end, again to 4x), and the kill counts as false only if Q stays within
the bound and settles over that longer horizon; a run still climbing at 4x is reported as an
*unclear* kill.

Usage: python benchmarks/bench_stopper.py [--config tune_configs/mixed.yaml] [--json]
       python benchmarks/bench_stopper.py --from-sweep runs/sweeps/<name>   (replay a recorded
           no-stopper sweep instead of running one; --config must be the config it ran)
Last stdout line (--json): {"steps_saved_vs_none": ..., "median_lead_x": ..., "false_kills": ...}
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from seem_ray import metrics as M  # noqa: E402
from seem_ray.config import (  # noqa: E402
    StopperConfig,
    SweepConfig,
    apply_overrides,
    load_sweep_config,
)
from seem_ray.divergence import bound_crossing, still_climbing  # noqa: E402
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


def seem_share(records: list[dict[str, Any]]) -> float | None:
    """SEEM's share of a trial's wall time: summed probe seconds over Tune's time_total_s."""
    total = float(records[-1].get("time_total_s", 0.0))
    seem_s = sum(float(r.get(M.SEEM_SECONDS, 0.0)) for r in records)
    return seem_s / total if total > 0 else None


def confirm(sweep: SweepConfig, overrides: dict[str, Any], steps: int, out: Path) -> dict:
    """Retrain one trial's config alone for `steps` (stopper off): does Q cross the bound?"""
    from seem_ray.runner import read_history, run_local

    cfg = apply_overrides(
        sweep.base,
        {
            **overrides,
            "train.steps": steps,
            "stopper.kind": "none",
            "train.checkpoint_every": 0,
        },
    )
    name = "_".join(f"{k.split('.')[-1]}{v}" for k, v in overrides.items())
    run_dir = out / f"{name}_steps{steps}"
    if not (run_dir / "summary.json").exists():
        logging.info("confirming %s for %d steps in %s", overrides, steps, run_dir)
        if run_dir.exists():
            import shutil

            shutil.rmtree(run_dir)
        run_local(cfg, run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    history = read_history(run_dir / "metrics.jsonl")
    bound = float(summary["q_bound"])
    last = next((r for r in reversed(history) if M.Q_MEAN in r), {})
    return {
        "steps": steps,
        "crossed_at": bound_crossing(history, bound),
        "still_climbing": still_climbing(history),
        "q_ratio_end": abs(float(last.get(M.Q_MEAN, math.nan))) / bound,
        "run_dir": str(run_dir),
    }


def confirm_kill(sweep: SweepConfig, overrides: dict[str, Any], steps: int, out: Path) -> dict:
    """Retrain a stopped trial to ``steps``; where that run neither crossed nor settled (still
    climbing at the end), once more to 2x ``steps``. The last run's answer counts."""
    result = confirm(sweep, overrides, steps, out)
    if result["crossed_at"] is None and result["still_climbing"]:
        result = {**confirm(sweep, overrides, 2 * steps, out), "first": result}
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(ROOT / "tune_configs" / "mixed.yaml"))
    p.add_argument("--steps", type=int, default=0, help="override the per-trial budget")
    p.add_argument("--seed", type=int, default=None, help="override base train.seed (fresh trials)")
    p.add_argument("--live", action="store_true", help="also run the sweep with the SEEM stopper")
    p.add_argument(
        "--from-sweep", default=None, help="replay this recorded no-stopper sweep folder"
    )
    p.add_argument(
        "--confirm-steps",
        type=int,
        default=-1,
        help="horizon for confirming kills not yet confirmed by the budget (default 2x the "
        "budget; 0 = off)",
    )
    p.add_argument(
        "--replay-every",
        type=int,
        default=0,
        help="feed the stoppers only the records at multiples of this many steps, as if Q and "
        "SEEM had been recorded that often (a multiple of the sweep's log cadence; 0 = all)",
    )
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.replay_every < 0:
        print(
            f"bench_stopper: --replay-every must be >= 0; got {args.replay_every}", file=sys.stderr
        )
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    from seem_ray.tune import init_ray, run_sweep

    stamp = time.strftime("%Y%m%d-%H%M%S")
    overrides: dict[str, Any] = {"name": f"bench_stopper_{stamp}", "base.stopper.kind": "none"}
    if args.steps:
        overrides["base.train.steps"] = args.steps
    if args.seed is not None:
        overrides["base.train.seed"] = args.seed
    sweep = load_sweep_config(args.config, overrides)
    started = time.time()
    if args.from_sweep:
        sweep_path = Path(args.from_sweep).resolve()
        if not sweep_path.is_dir():
            print(f"bench_stopper: no sweep folder {sweep_path}", file=sys.stderr)
            return 2
        wall_none = math.nan
    else:
        init_ray(None)
        sweep_path = Path(run_sweep(sweep, quiet=True).path)
        wall_none = time.time() - started
    streams = trial_streams(sweep_path)
    if not streams:
        print(f"bench_stopper: no trial results under {sweep_path}", file=sys.stderr)
        return 2
    budget = int(max(r[M.STEP] for records in streams.values() for r in records))
    truth = {
        t: bound_crossing(records, float(records[0].get("q_bound", math.inf)))
        for t, records in streams.items()
    }
    fed = streams
    if args.replay_every:
        fed = {
            t: [r for r in records if int(r[M.STEP]) % args.replay_every == 0]
            for t, records in streams.items()
        }
    stops = {kind: replay(kind, fed) for kind in ("seem", "q_bound")}
    confirm_steps = 2 * budget if args.confirm_steps < 0 else args.confirm_steps
    confirmations: dict[str, dict] = {}
    for t, stop in stops["seem"].items():
        if stop is None or truth[t] is not None or confirm_steps <= budget:
            continue
        trial_overrides = streams[t][-1].get("config", {}).get("overrides", {})
        confirmations[t] = confirm_kill(
            sweep, trial_overrides, confirm_steps, sweep_path.parent / f"{sweep_path.name}_confirm"
        )
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
    stopped_no_cross = [t for t, s in stops["seem"].items() if s is not None and truth[t] is None]
    false_kills = [
        t
        for t in stopped_no_cross
        if t not in confirmations
        or (confirmations[t]["crossed_at"] is None and not confirmations[t]["still_climbing"])
    ]
    unclear_kills = [
        t
        for t in stopped_no_cross
        if t in confirmations
        and confirmations[t]["crossed_at"] is None
        and confirmations[t]["still_climbing"]
    ]
    confirmed_late = [
        t for t in stopped_no_cross if t not in false_kills and t not in unclear_kills
    ]
    # The same comparison summed over every diverging trial: steps each stopper let the
    # divergers run (the budget when it never stopped them). Kills confirmed only beyond the
    # budget count as divergers here, as in max_saving_for_this_mix.
    all_divergers = divergers + confirmed_late
    diverger_steps = {
        kind: sum(stops[kind][t] if stops[kind][t] is not None else budget for t in all_divergers)
        for kind in stops
    }
    diverger_steps["none"] = budget * len(all_divergers)
    steps_saved = 1.0 - used["seem"] / used["none"] if used["none"] else 0.0
    max_saving = len(all_divergers) / len(streams)
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
                "lead_x": (
                    stops["q_bound"][t] / stops["seem"][t]
                    if stops["seem"][t] and stops["q_bound"][t]
                    else None
                ),
                "q_ratio_at_budget": abs(float(records[-1].get(M.Q_MEAN, math.nan)))
                / float(records[0].get("q_bound", math.inf)),
                "confirmation": confirmations.get(t),
                "seem_share_of_wall": seem_share(records),
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
        "steps_saved_vs_none": steps_saved,
        "q_bound_saved_vs_none": 1.0 - used["q_bound"] / used["none"] if used["none"] else 0.0,
        "median_lead_x": statistics.median(leads) if leads else None,
        "min_lead_x": min(leads) if leads else None,
        "false_kills": len(false_kills),
        "unclear_kills": len(unclear_kills),
        "kills_confirmed_beyond_budget": len(confirmed_late),
        "leads_x": sorted(leads),
        "diverger_steps": diverger_steps,
        "total_lead_x": (
            diverger_steps["q_bound"] / diverger_steps["seem"] if diverger_steps["seem"] else None
        ),
        "diverger_steps_saved": (
            1.0 - diverger_steps["seem"] / diverger_steps["none"]
            if diverger_steps["none"]
            else None
        ),
        "max_saving_for_this_mix": max_saving,
        "share_of_max_saving": steps_saved / max_saving if all_divergers else None,
        "replay_every": args.replay_every or None,
        "sweep_path": str(sweep_path),
        "wall_seconds_no_stopper_sweep": round(wall_none, 1),
        "rows": rows,
    }
    if args.live:
        if args.from_sweep:
            init_ray(None)
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
            "total_lead_x",
            "diverger_steps_saved",
            "false_kills",
            "unclear_kills",
            "kills_confirmed_beyond_budget",
            "share_of_max_saving",
            "divergers",
            "trials",
        )
    }
    print(json.dumps(out) if args.json else json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
