"""Running a study: plan what is left of its budget, then run that part as one Tune sweep.

Flow position: study YAML -> **prepare_study (validate, create or reopen, plan) -> run_study**
-> :func:`seem_ray.tune.run_sweep` with the StudySearch searcher. ``--resume`` (even after
``kill -9``) needs no Tune state: it counts the finished trials in storage and runs a fresh Tune
experiment ``<name>-resume<k>`` for the rest, the sampler seeing every earlier trial.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from seem_ray import metrics as M
from seem_ray.config import ConfigError, SweepConfig
from seem_ray.study.outcome import ERROR, check_objectives
from seem_ray.study.search import searcher_class
from seem_ray.study.space import StudySpace, build_space
from seem_ray.study.storage import (
    counts_toward_budget,
    fail_unfinished,
    find_study,
    open_storage,
    redact,
    resolve_storage_url,
    study_dir,
)

__all__ = ["StudyPlan", "StudyRun", "prepare_study", "run_study"]

log = logging.getLogger("seem_ray.study")


@dataclass(frozen=True)
class StudyPlan:
    """One `seem-ray study` invocation, decided before Ray starts."""

    study_name: str
    storage_url: str
    sweep: SweepConfig
    """The Tune sweep to run now: name = this part's experiment, num_samples = what is left."""
    budget: int
    done: int
    killed: tuple[int, ...]
    objectives: tuple[str, ...]
    directions: tuple[str, ...]
    space: StudySpace
    tune_root: Path
    sampler_seed: int

    @property
    def remaining(self) -> int:
        return max(0, self.budget - self.done)


def prepare_study(
    sweep: SweepConfig, *, storage_url: str | None = None, resume: bool = False
) -> StudyPlan:
    """Validate a study, create or reopen it in storage, and plan what is left of its budget.

    Args:
        sweep: the study YAML as a SweepConfig (search must be 'optuna').
        storage_url: SQLAlchemy URL; None = `optuna.storage` from the config, else the default.
        resume: continue an existing study (after a crash or kill): unfinished trials -> FAIL.
    """
    import optuna

    if sweep.search != "optuna":
        raise ConfigError("search", f"got {sweep.search!r}; a study needs search: optuna")
    objectives, directions = check_objectives(sweep)
    space = build_space(sweep)
    name = sweep.optuna.study_name or sweep.name
    url = resolve_storage_url(storage_url or sweep.optuna.storage)
    storage = open_storage(url)
    study = find_study(storage, name)
    killed: list[int] = []
    if study is None:
        if resume:
            raise ConfigError("", f"nothing to resume: no study named {name!r} in {redact(url)}")
        dirs: list[Any] = list(directions)
        study = optuna.create_study(study_name=name, storage=storage, directions=dirs)
        study.set_user_attr("objectives", list(objectives))
        study.set_user_attr("budget", sweep.num_samples)
        study.set_user_attr("experiment", sweep.base.tracking.experiment)
        study.set_user_attr("sweeps", [])
    else:
        if not resume:
            raise ConfigError(
                "name",
                f"a study named {name!r} already exists in {redact(url)}; pass --resume or choose another name",
            )
        existing = [d.name.lower() for d in study.directions]
        if existing != list(directions) or study.user_attrs.get(
            "objectives", list(objectives)
        ) != list(objectives):
            raise ConfigError(
                "optuna.objectives",
                f"study {name!r} optimises {study.user_attrs.get('objectives')} ({existing}); the config says "
                f"{list(objectives)} ({list(directions)})",
            )
        killed = fail_unfinished(storage, name)
        if killed:
            log.warning(
                "study %s: trials %s were left unfinished by a killed run; marked FAIL (killed)",
                name,
                killed,
            )
        study.set_user_attr("budget", sweep.num_samples)
    trials = study.get_trials(deepcopy=False)
    done = sum(counts_toward_budget(t) for t in trials)
    tune_root = study_dir(name) / "tune"
    k = len(study.user_attrs.get("sweeps", []))
    part_name = name if k == 0 else f"{name}-resume{k}"
    while (tune_root / part_name).exists():  # a folder from a run killed before it was recorded
        k += 1
        part_name = f"{name}-resume{k}"
    part = replace(sweep, name=part_name, num_samples=max(1, sweep.num_samples - done))
    return StudyPlan(
        study_name=name,
        storage_url=url,
        sweep=part,
        budget=sweep.num_samples,
        done=done,
        killed=tuple(killed),
        objectives=objectives,
        directions=directions,
        space=space,
        tune_root=tune_root,
        # a restarted sampler with the old seed would replay the old random start-up points
        sampler_seed=sweep.optuna.sampler_seed + len(trials),
    )


def _close_killed_mlflow_runs(experiment: str, sweeps: Sequence[str]) -> None:
    """Parent/child MLflow runs of earlier parts still RUNNING (driver killed) -> KILLED."""
    if not sweeps:
        return
    try:
        from seem_ray.tracking import _client, resolve_tracking_uri

        client = _client(resolve_tracking_uri(None))
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            return
        for sweep_name in sweeps:
            runs = client.search_runs(
                [exp.experiment_id],
                filter_string=f"tags.`seem_ray.sweep` = '{sweep_name}' and attributes.status = 'RUNNING'",
            )
            for run in runs:
                client.set_terminated(run.info.run_id, status="KILLED")
    except Exception as exc:  # tracking is a convenience here, not a reason to refuse resuming
        log.warning("could not close MLflow runs of the killed study run: %s", exc)


@dataclass(frozen=True)
class StudyRun:
    """What `run_study` did."""

    study_name: str
    storage_url: str
    ran: int
    sweep_summary: Any


def run_study(plan: StudyPlan, *, quiet: bool = False) -> StudyRun:
    """Run the planned part of a study through Ray Tune (Ray must be initialised)."""
    from seem_ray.tune import run_sweep

    storage = open_storage(plan.storage_url)
    study = find_study(storage, plan.study_name)
    assert study is not None, "prepare_study creates the study"
    sweeps = list(study.user_attrs.get("sweeps", []))
    _close_killed_mlflow_runs(plan.sweep.base.tracking.experiment, sweeps)
    if plan.remaining == 0:
        log.info("study %s already has its %d trials", plan.study_name, plan.budget)
        return StudyRun(plan.study_name, plan.storage_url, 0, None)
    study.set_user_attr("sweeps", [*sweeps, plan.sweep.name])
    searcher = searcher_class()(
        plan.space,
        study_name=plan.study_name,
        storage=storage,
        objectives=plan.objectives,
        directions=plan.directions,
        seed=plan.sampler_seed,
        stopper=plan.sweep.base.stopper,
        budget_steps=plan.sweep.base.train.steps,
    )
    # The objectives are computed by StudySearch from all results, not read from each report.
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    log.info(
        "study %s: running %d of %d trials as Tune experiment %s (storage %s)",
        plan.study_name,
        plan.remaining,
        plan.budget,
        plan.sweep.name,
        redact(plan.storage_url),
    )
    summary = run_sweep(
        replace(plan.sweep, num_samples=plan.remaining),
        storage=plan.tune_root,
        searcher=searcher,
        quiet=quiet,
    )
    _check_reasons(study, summary)
    return StudyRun(plan.study_name, plan.storage_url, plan.remaining, summary)


def _check_reasons(study: Any, summary: Any) -> None:
    """Warn when the study's stop reason differs from the one the sweep's stopper recorded."""
    by_tune_id = {t.user_attrs.get("tune_trial_id"): t for t in study.get_trials(deepcopy=False)}
    for row in summary.rows:
        trial = by_tune_id.get(row["trial_id"])
        if trial is None:
            continue
        mine = trial.user_attrs.get(M.STOP_REASON)
        if mine != row["stop_reason"] and row["stop_reason"] != ERROR:
            log.warning(
                "trial %s: study says %s, sweep stopper %s",
                row["trial_id"],
                mine,
                row["stop_reason"],
            )
