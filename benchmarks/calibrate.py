"""Calibrate the divergence predictors on real runs of plain offline TD3.

Runs a grid of small offline runs (TD3+BC with bc_weight 0 and hard target updates, with and
without LayerNorm, several dataset sizes, gammas and seeds) to the full budget with no stopper,
recording SEEM and probe-Q histories. Then replays every history through each candidate
predictor and reports, per predictor: detections of runs whose |mean Q| crossed the return
bound r_max/(1-gamma) (true divergers), the lead over the Q-bound step, false alarms (flagged runs
that never crossed) and misses. Writes docs/calibration.md and runs/calibration/table.json.

Usage: python benchmarks/calibrate.py [--quick] [--jobs 2] [--steps 30000] [--rerun]
Runs are cached (runs/calibration/<name>/summary.json): rerunning only redoes the analysis.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from seem_ray import metrics as M  # noqa: E402
from seem_ray.divergence import (  # noqa: E402
    CompositePredictor,
    GrowthPredictor,
    Predictor,
    QBoundPredictor,
    SeemPredictor,
    bound_crossing,
    default_predictor,
)

log = logging.getLogger("calibrate")

DATASETS = {
    # recipe -> generation kwargs (small and fast; terminal-heavy hopper vs no-terminal maze)
    "hopper-random": {"steps": 20000},
    "pointmaze-umaze-dense": {"steps": 20000},
}


def grid(quick: bool, steps: int) -> list[dict[str, Any]]:
    """Plain offline TD3 over datasets x sizes x LayerNorm x target-update rate (x seeds)."""
    sizes = [1000, 10000] if not quick else [1000]
    norms = ["none", "layer"]
    taus = [1.0, 0.005] if not quick else [1.0]
    seeds = [0] if not quick else [0]
    datasets = list(DATASETS) if not quick else ["pointmaze-umaze-dense"]
    runs = []
    for ds, n, norm, tau, seed in itertools.product(datasets, sizes, norms, taus, seeds):
        name = f"{ds}_n{n}_{norm}_tau{tau}_s{seed}"
        runs.append(
            {
                "name": name,
                "overrides": {
                    "data.dataset": f"seem_ray/{ds}-v0",
                    "data.max_transitions": n,
                    "critic.norm": norm,
                    "algo.tau": tau,
                    "train.seed": seed,
                    "train.steps": steps,
                },
            }
        )
    return runs


BASE = {
    "algo": {"name": "td3bc", "td3bc": {"bc_weight": 0.0}},
    "seem": {"every": 500, "probe_size": 512},
    "train": {"log_every": 250, "eval_episodes": 0, "checkpoint_every": 0, "threads": 1},
    "stopper": {"kind": "none"},
}


def run_one(spec: dict[str, Any], out_root: str) -> str:
    """Train one calibration run; a cached run that never crossed the bound is extended (resumed)."""
    import torch

    torch.set_num_threads(1)
    from seem_ray.config import parse_run_config
    from seem_ray.runner import run_local

    run_dir = Path(out_root) / spec["name"]
    cfg = parse_run_config(BASE, spec["overrides"])
    resume = False
    if (run_dir / "summary.json").exists():
        history, bound = load_history(run_dir)
        if (
            bound_crossing(history, bound) is not None
            or int(history[-1][M.STEP]) >= cfg.train.steps
        ):
            return spec["name"]
        resume = True
    elif run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)
    run_local(cfg, run_dir, resume=resume)
    return spec["name"]


def load_history(run_dir: Path) -> tuple[list[dict[str, float]], float]:
    summary = json.loads((run_dir / "summary.json").read_text())
    hist = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        hist.append({k: (float(v) if not isinstance(v, str) else float(v)) for k, v in rec.items()})
    return hist, float(summary["q_bound"])


DEFAULT_NAME = "default (SEEM>0.05 x3, |Q| order>=1.5; growth order>=2)"


def candidates(bound: float) -> dict[str, Predictor]:
    out: dict[str, Predictor] = {"q_bound (baseline)": QBoundPredictor(bound)}
    for tau in (0.0, 0.05, 0.1):
        for patience in (1, 3):
            out[f"SEEM>{tau} x{patience}"] = SeemPredictor(tau, patience)
    out["growth only (order>=2)"] = GrowthPredictor(bound, min_order=2.0)
    out[DEFAULT_NAME] = default_predictor(bound)
    out["composite, confirm order>=1.0"] = CompositePredictor(bound, confirm_order=1.0)
    out["composite SEEM>0.1 x2"] = CompositePredictor(bound, seem_threshold=0.1, patience=2)
    out["composite, no growth"] = CompositePredictor(bound, use_growth=False)
    return out


def analyse(out_root: Path, names: list[str]) -> dict[str, Any]:
    rows = []
    per_pred: dict[str, dict[str, Any]] = {}
    for name in names:
        hist, bound = load_history(out_root / name)
        crossing = bound_crossing(hist, bound)
        seems = [r[M.SEEM] for r in hist if M.SEEM in r and math.isfinite(r[M.SEEM])]
        row: dict[str, Any] = {
            "run": name,
            "q_bound": bound,
            "diverged_at": crossing,
            "max_seem": max(seems) if seems else None,
            "final_q": hist[-1].get(M.Q_MEAN) if hist else None,
            "steps": int(hist[-1][M.STEP]) if hist else 0,
        }
        for pname, pred in candidates(bound).items():
            flagged = None
            for r in hist:
                v = pred.update(int(r[M.STEP]), r)
                if v.diverging:
                    flagged = int(r[M.STEP])
                    break
            row[pname] = flagged
            stats = per_pred.setdefault(
                pname, {"detected": 0, "false_alarms": 0, "misses": 0, "leads": [], "late": 0}
            )
            if crossing is None:
                stats["false_alarms"] += flagged is not None
            elif flagged is None:
                stats["misses"] += 1
            else:
                stats["detected"] += 1
                if flagged <= crossing:
                    stats["leads"].append(crossing / max(flagged, 1))
                else:
                    stats["late"] += 1
        rows.append(row)
    n_div = sum(r["diverged_at"] is not None for r in rows)
    summary = {}
    for pname, s in per_pred.items():
        leads = sorted(s["leads"])
        summary[pname] = {
            "detected": s["detected"],
            "of_divergers": n_div,
            "false_alarms": s["false_alarms"],
            "of_healthy": len(rows) - n_div,
            "misses": s["misses"],
            "late": s["late"],
            "median_lead_x": leads[len(leads) // 2] if leads else None,
            "min_lead_x": leads[0] if leads else None,
        }
    return {"runs": rows, "predictors": summary}


def write_markdown(result: dict[str, Any], path: Path, meta: dict[str, Any]) -> None:
    lines = [
        "# Divergence predictor calibration",
        "",
        "Generated by `benchmarks/calibrate.py` (rerun: `make calibrate`). Setting: plain offline TD3",
        "(TD3+BC with bc_weight 0, Adam 3e-4, batch 256, 256-256 critic, target update tau 1.0 (the",
        f"paper's setting) or 0.005), {meta['steps']} steps, SEEM probe of 512 transitions every 500",
        "steps, Q statistics every 250 steps, no stopper. A run",
        "*diverged* when |mean Q| on the probe crossed r_max/(1-gamma) within the budget. Lead = Q-bound",
        "step / detection step (higher is earlier).",
        "",
        "## Predictors",
        "",
        "| predictor | divergers detected | false alarms (healthy runs flagged) | misses | late | median lead | min lead |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, s in result["predictors"].items():
        med = f"{s['median_lead_x']:.1f}x" if s["median_lead_x"] else "-"
        mn = f"{s['min_lead_x']:.1f}x" if s["min_lead_x"] else "-"
        lines.append(
            f"| {name} | {s['detected']}/{s['of_divergers']} | {s['false_alarms']}/{s['of_healthy']} | {s['misses']} | {s['late']} | {med} | {mn} |"
        )
    lines += [
        "",
        "## Runs",
        "",
        "| run | Q bound | diverged at | max SEEM | final mean Q | default flags at | SEEM>0 x1 flags at |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["runs"]:
        ms = f"{r['max_seem']:.3f}" if r["max_seem"] is not None else "-"
        fq = f"{r['final_q']:.3g}" if r["final_q"] is not None else "-"
        lines.append(
            f"| {r['run']} | {r['q_bound']:.3g} | {r['diverged_at'] or '-'} | {ms} | {fq} | "
            f"{r[DEFAULT_NAME] or '-'} | {r['SEEM>0.0 x1'] or '-'} |"
        )
    lines += ["", "## Reading", ""]
    first_report = min((r["diverged_at"] for r in result["runs"] if r["diverged_at"]), default=None)
    slow = [r for r in result["runs"] if r["diverged_at"] and r["diverged_at"] != first_report]
    for r in slow:
        flag = r[DEFAULT_NAME]
        lead = f"{r['diverged_at'] / flag:.1f}x earlier" if flag else "not flagged"
        lines.append(
            f"- slow diverger {r['run']}: Q crossed the bound at step {r['diverged_at']}, the default "
            f"predictor flagged it at step {flag} ({lead})."
        )
    d = result["predictors"][DEFAULT_NAME]
    bare = result["predictors"]["SEEM>0.0 x1"]
    lines += [
        f"- runs that crossed the bound at the first report (step {first_report}) leave no room for any "
        "predictor: every one flags them there (they dominate the median lead of 1.0x).",
        f"- a bare SEEM > 0 test flags {bare['false_alarms']}/{bare['of_healthy']} healthy runs: SEEM is "
        "positive early in nearly every run, and LayerNorm critics on terminal-heavy Hopper data hold "
        "SEEM 0.1-0.5 while Q stays bounded. Persistence alone (SEEM>0.05 x3) still false-alarms.",
        f"- the default (SEEM > 0.05 on 3 consecutive probes, confirmed by |Q| growing at least like "
        f"t^1.5 over the last doubling of steps; or |Q| growth order >= 2 sustained and projected to "
        f"cross the bound within 4x the elapsed steps; soft verdicts only once |Q| >= 1% of the bound) "
        f"detected {d['detected']}/{d['of_divergers']} divergers with {d['false_alarms']}/{d['of_healthy']} "
        "false alarms. Loosening the growth confirmation to order >= 1.0 brings false alarms back: "
        "healthy critics learning from a zero start grow about linearly.",
        "- caveat: the defaults were chosen on these same 16 runs (in-sample), one seed each, and "
        "'healthy' means 'did not cross within the budget' (two no-LN runs were still growing); "
        "treat 0 false alarms as a fit, not a held-out rate.",
        "- these defaults are what `StopperConfig` ships; rerun `make calibrate` on your own runs "
        "(add them to the grid) before trusting the stopper on a new domain.",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--quick", action="store_true", help="a 2-run grid (seconds-minutes), for CI smoke"
    )
    p.add_argument("--steps", type=int, default=30000)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "runs" / "calibration"))
    p.add_argument("--doc", default=str(ROOT / "docs" / "calibration.md"))
    p.add_argument(
        "--json", action="store_true", help="print the predictor table as JSON (last line)"
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    os.environ.setdefault("MINARI_DATASETS_PATH", str(ROOT / "datasets"))
    from seem_ray.data.generate import ensure_dataset

    specs = grid(args.quick, args.steps)
    for ds in {s["overrides"]["data.dataset"] for s in specs}:
        name = ds.split("/")[1].rsplit("-v", 1)[0]
        ensure_dataset(ds, **DATASETS.get(name, {}))
    out_root = Path(args.out)
    out_root.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for i, name in enumerate(pool.map(run_one, specs, [str(out_root)] * len(specs)), 1):
            log.info("[%d/%d] %s done", i, len(specs), name)
    result = analyse(out_root, [s["name"] for s in specs])
    (out_root / "table.json").write_text(json.dumps(result, indent=2))
    write_markdown(result, Path(args.doc), {"steps": args.steps})
    log.info("wrote %s", args.doc)
    if args.json:
        print(json.dumps(result["predictors"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
