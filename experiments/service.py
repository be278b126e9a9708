"""Shared pieces of the experiments that train real critics with the service (sections 1, 4-7).

Flow position: outside the service, on top of it. An experiment names a grid of RunConfigs
(`demo_base` + overrides), `run_grid` trains each with `seem_ray.runner.run_local` (the same loop
`seem-ray train` runs: SEEM probe, Q on the probe batch, weight norms, evaluation) in up to
`jobs` processes, and the experiment reads the per-run metric histories it returns.

Runs are cached by config: a finished run folder whose config.yaml matches is read back, not
retrained, so an interrupted `make results` continues where it stopped.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import multiprocessing as mp
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from seem_ray import metrics as M
from seem_ray.config import RunConfig, apply_overrides, parse_run_config, to_dict
from seem_ray.divergence import bound_crossing
from seem_ray.runner import read_history
from seem_ray.runtime import runs_dir

__all__ = [
    "RunRecord",
    "crossed_at",
    "demo_base",
    "diverged",
    "first_step",
    "mean_std",
    "run_grid",
    "series",
]

log = logging.getLogger(__name__)


def _divergence_setting() -> dict[str, Any]:
    """The README demo's base run (seem_ray.tune.DEFAULT_SWEEP: plain offline TD3, bc_weight 0,
    hard target updates, small critic lr, 2,000 PointMaze transitions, so a critic without
    LayerNorm diverges within ~1k steps) with the stopper off, so experiments watch whole runs,
    an evaluation every 1,000 steps, and no checkpoints or tracking."""
    from seem_ray.tune import DEFAULT_SWEEP

    base = copy.deepcopy(DEFAULT_SWEEP["base"])
    for key in ("scaling", "tracking"):
        base.pop(key, None)
    base["train"].update(eval_every=1000, checkpoint_every=0)
    base["stopper"] = {"kind": "none"}
    return base


DEMO_BASE: dict[str, Any] = _divergence_setting()


def demo_base(overrides: Mapping[str, Any] | None = None) -> RunConfig:
    """The divergence-setting RunConfig with dotted-key overrides applied (validated)."""
    cfg = parse_run_config(DEMO_BASE)
    return apply_overrides(cfg, dict(overrides or {})) if overrides else cfg


@dataclass(frozen=True)
class RunRecord:
    """What an experiment reads back from one run."""

    name: str
    config: dict[str, Any]
    history: list[dict[str, float]]
    q_bound: float
    steps: int
    wall_seconds: float
    seem_share: float


def _history(path: Path) -> list[dict[str, float]]:
    """The run's metric records with non-finite values (written as strings) back as floats."""
    return [
        {k: float(v) if isinstance(v, int | float | str) else v for k, v in rec.items()}
        for rec in read_history(path)
    ]


def _load(name: str, run_dir: Path, cfg: RunConfig) -> RunRecord | None:
    """A finished run of exactly this config, or None."""
    summary, conf = run_dir / "summary.json", run_dir / "config.yaml"
    if not (summary.is_file() and conf.is_file()):
        return None
    if yaml.safe_load(conf.read_text()) != yaml.safe_load(yaml.safe_dump(to_dict(cfg))):
        return None
    body = json.loads(summary.read_text())
    return RunRecord(
        name=name,
        config=to_dict(cfg),
        history=_history(run_dir / "metrics.jsonl"),
        q_bound=float(body["q_bound"]),
        steps=int(body["steps"]),
        wall_seconds=float(body["wall_seconds"]),
        seem_share=float(body.get("seem_share", 0.0)),
    )


def _train(job: tuple[str, dict[str, Any], str]) -> str:
    """Worker body: one run_local in a fresh folder (quiet logs)."""
    from seem_ray.config import parse_run_config as parse
    from seem_ray.runner import run_local

    logging.getLogger("seem_ray").setLevel(logging.WARNING)
    name, cfg_dict, run_dir = job
    path = Path(run_dir)
    if path.exists():  # an unfinished or stale attempt: start it over
        shutil.rmtree(path)
    run_local(parse(cfg_dict), path)
    return name


def run_grid(
    experiment: str,
    configs: Mapping[str, RunConfig],
    *,
    root: Path | None = None,
    jobs: int = 2,
) -> dict[str, RunRecord]:
    """Train every named config (cached by config) and return their records by name.

    Args:
        experiment: folder name under `root` (default <runs>/experiments/<experiment>/).
        configs: run name -> validated RunConfig; names become folder names.
        root: parent folder of the experiment's run folders.
        jobs: processes training at once (each uses cfg.train.threads threads).
    """
    base = (root or runs_dir() / "experiments") / experiment
    base.mkdir(parents=True, exist_ok=True)
    cached = {name: _load(name, base / name, cfg) for name, cfg in configs.items()}
    todo = [
        (name, to_dict(cfg), str(base / name))
        for name, cfg in configs.items()
        if cached[name] is None
    ]
    if todo:
        log.info(
            "%s: training %d of %d runs (%d at a time)", experiment, len(todo), len(configs), jobs
        )
        if jobs <= 1 or len(todo) == 1:
            for i, job in enumerate(todo, 1):
                _train(job)
                log.info("%s: %d/%d runs done (%s)", experiment, i, len(todo), job[0])
        else:
            ctx = mp.get_context("spawn")  # torch and fork do not mix
            with ctx.Pool(min(jobs, len(todo)), maxtasksperchild=1) as pool:
                for i, name in enumerate(pool.imap_unordered(_train, todo), 1):
                    log.info("%s: %d/%d runs done (%s)", experiment, i, len(todo), name)
    out = {}
    for name, cfg in configs.items():
        rec = cached[name] or _load(name, base / name, cfg)  # read back only what was trained
        if rec is None:
            raise RuntimeError(f"{experiment}/{name}: the run left no summary in {base / name}")
        out[name] = rec
    return out


def series(rec: RunRecord, key: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of one metric over a run, skipping reports that lack it."""
    pts = [
        (r[M.STEP], float(r[key]))
        for r in rec.history
        if key in r and isinstance(r[key], int | float)
    ]
    if not pts:
        return np.zeros(0), np.zeros(0)
    a = np.asarray(pts, dtype=np.float64)
    return a[:, 0], a[:, 1]


def first_step(rec: RunRecord, key: str, predicate: Any) -> int | None:
    """First reported step where predicate(value) holds (non-finite values count as True)."""
    for step, value in zip(*series(rec, key), strict=True):
        if not math.isfinite(value) or predicate(value):
            return int(step)
    return None


def crossed_at(rec: RunRecord) -> int | None:
    """Ground truth used by every section: first step |mean Q| on the probe crossed
    r_max/(1-gamma) or went non-finite (None: never), as seem_ray.divergence.bound_crossing."""
    return bound_crossing(rec.history, rec.q_bound)


def diverged(rec: RunRecord) -> bool:
    """Whether the run crossed the bound within its budget (see :func:`crossed_at`)."""
    return crossed_at(rec) is not None


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and (population) std of the finite values; nan when there are none."""
    a = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if a.size == 0:
        return math.nan, math.nan
    return float(a.mean()), float(a.std())
