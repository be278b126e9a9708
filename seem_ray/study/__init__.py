"""Persistent Optuna studies over critic architectures: `seem-ray study CONFIG | report | compare`.

Flow position: study YAML (a SweepConfig with an ``optuna`` section) -> :class:`StudySpace`, a
define-by-run space (depth -> widths -> norm kind -> which layers get it -> position, activation,
dropout, ensemble, training choices) -> ``StudySearch`` (Ray's ``OptunaSearch`` on a durable
RDB storage) -> :func:`seem_ray.tune.run_sweep` (Ray Train trials, the SEEM stopper, MLflow) ->
each finished trial is told to Optuna with values from :func:`trial_outcome` (divergence is never
rewarded) and user attrs (stop_reason, diverged_since, steps, max_seem) -> :func:`write_report`
(best trials, importances, PNG plots, logged to the sweep's MLflow parent run) and
:func:`compare_studies`.

One module per reason to change: ``space`` (what is searched), ``outcome`` (what a trial is
worth), ``search`` (the Tune searcher), ``storage`` (where studies live, resuming after a
kill), ``run`` (plan and run a budget), ``report`` (read studies back), ``commands`` (the CLI).
This package re-exports their public names, so ``from seem_ray.study import X`` keeps working.
"""

from __future__ import annotations

from typing import Any

from seem_ray.study.commands import register
from seem_ray.study.outcome import (
    DIVERGED_REASONS,
    ERROR,
    INCOMPLETE,
    KILLED,
    OBJECTIVES,
    WORST,
    TrialOutcome,
    TrialStats,
    check_objectives,
    trial_outcome,
    worst_value,
)
from seem_ray.study.report import (
    StudyReport,
    best_trials_table,
    compare_studies,
    dashboard_hint,
    write_report,
)
from seem_ray.study.run import StudyPlan, StudyRun, prepare_study, run_study
from seem_ray.study.space import (
    ARCH_FIELDS,
    FEATURE_NORMS,
    StudySpace,
    build_space,
    suggest_overrides,
)
from seem_ray.study.storage import (
    default_storage_url,
    fail_unfinished,
    load_study,
    open_storage,
    redact,
    resolve_storage_url,
    study_dir,
)

__all__ = [
    "ARCH_FIELDS",
    "DIVERGED_REASONS",
    "ERROR",
    "FEATURE_NORMS",
    "INCOMPLETE",
    "KILLED",
    "OBJECTIVES",
    "WORST",
    "StudyPlan",
    "StudyReport",
    "StudyRun",
    "StudySearch",
    "StudySpace",
    "TrialOutcome",
    "TrialStats",
    "best_trials_table",
    "build_space",
    "check_objectives",
    "compare_studies",
    "dashboard_hint",
    "default_storage_url",
    "fail_unfinished",
    "load_study",
    "open_storage",
    "prepare_study",
    "redact",
    "register",
    "resolve_storage_url",
    "run_study",
    "study_dir",
    "suggest_overrides",
    "trial_outcome",
    "worst_value",
    "write_report",
]


def __getattr__(name: str) -> Any:
    # StudySearch subclasses Ray's OptunaSearch: built on first access, not on import.
    if name == "StudySearch":
        from seem_ray.study.search import searcher_class

        return searcher_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
