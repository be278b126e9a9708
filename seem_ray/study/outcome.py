"""What Optuna is told about a finished trial: objectives, stop reason, and the value policy.

Flow position: a trial's Tune results -> **TrialStats -> stop reason -> TrialOutcome** -> the
searcher tells Optuna. Divergence is never rewarded: a diverged trial is COMPLETE with a value
no better than :data:`WORST`, so the sampler learns to avoid its region. Pure, no Optuna import.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from seem_ray import metrics as M
from seem_ray.config import ConfigError, SweepConfig

__all__ = [
    "DIVERGED_REASONS",
    "ERROR",
    "INCOMPLETE",
    "KILLED",
    "OBJECTIVES",
    "WORST",
    "TrialOutcome",
    "TrialStats",
    "check_objectives",
    "trial_stop_reason",
    "trial_outcome",
    "worst_value",
]

OBJECTIVES: dict[str, tuple[str, str]] = {
    "normalized_score": ("maximize", M.NORMALIZED_SCORE),
    "final_td_error": ("minimize", M.CRITIC_LOSS),
    "max_seem": ("minimize", M.SEEM),
}
"""Objective name -> (its only sensible direction, the reported metric it is read from)."""

WORST: dict[str, float] = {"normalized_score": -100.0, "final_td_error": 1e6, "max_seem": 1.0}
"""Value a diverged trial gets at best (finite so importances and plots keep working)."""

KILLED = "killed"
"""stop_reason of trials left RUNNING by a killed driver (set on --resume)."""
ERROR = "error"
INCOMPLETE = "incomplete"
DIVERGED_REASONS = (M.REASON_SEEM, M.REASON_Q_BOUND, M.REASON_NAN, M.REASON_GROWTH)


@dataclass(frozen=True)
class TrialStats:
    """What a trial has reported so far, reduced to what the objectives need."""

    steps: int = 0
    max_seem: float | None = None
    last: Mapping[str, float] = field(default_factory=dict)
    nonfinite: bool = False

    def add(self, result: Mapping[str, Any]) -> TrialStats:
        """Fold in one Tune result; a repeat of an already seen step changes nothing."""
        if M.STEP not in result:
            return self
        step = int(result[M.STEP])
        if step <= self.steps:
            return self
        last = dict(self.last)
        nonfinite = self.nonfinite
        max_seem = self.max_seem
        for _, key in OBJECTIVES.values():
            value = result.get(key)
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if not math.isfinite(value):
                nonfinite = True
                continue
            last[key] = float(value)
            if key == M.SEEM:
                max_seem = float(value) if max_seem is None else max(max_seem, float(value))
        q = result.get(M.Q_MEAN)
        if isinstance(q, float) and not math.isfinite(q):
            nonfinite = True
        return TrialStats(steps=step, max_seem=max_seem, last=last, nonfinite=nonfinite)

    def raw(self, objective: str) -> float | None:
        """The objective's measured value (None when never reported)."""
        if objective == "max_seem":
            return self.max_seem
        return self.last.get(OBJECTIVES[objective][1])


@dataclass(frozen=True)
class TrialOutcome:
    """What Optuna is told about a finished trial."""

    state: str
    """COMPLETE or FAIL."""
    values: tuple[float, ...] | None
    attrs: dict[str, Any]


def worst_value(objective: str, direction: str, observed: float | None) -> float:
    """A diverged trial's value: the configured worst, or its own value if that is even worse."""
    worst = WORST[objective]
    if observed is None or not math.isfinite(observed):
        return worst
    return min(observed, worst) if direction == "maximize" else max(observed, worst)


def trial_outcome(
    stats: TrialStats,
    stop_reason: str,
    objectives: Sequence[str],
    directions: Sequence[str],
    *,
    diverged_since: int | None = None,
) -> TrialOutcome:
    """Value policy: finished trials get their measured values, diverged ones the worst value.

    A trial stopped for divergence is COMPLETE (so the sampler learns to avoid its region) with
    values no better than :data:`WORST`; an errored, incomplete or unmeasured trial is FAIL.
    """
    attrs: dict[str, Any] = {M.STOP_REASON: stop_reason, "steps": stats.steps}
    if stats.max_seem is not None:
        attrs["max_seem"] = stats.max_seem
    for obj in objectives:
        raw = stats.raw(obj)
        if raw is not None:
            attrs[f"raw_{obj}"] = raw
    if diverged_since is not None:
        attrs[M.DIVERGED_SINCE] = int(diverged_since)
    if stop_reason in DIVERGED_REASONS:
        attrs[M.DIVERGED] = True
        values = tuple(
            worst_value(o, d, stats.raw(o)) for o, d in zip(objectives, directions, strict=True)
        )
        return TrialOutcome("COMPLETE", values, attrs)
    attrs[M.DIVERGED] = False
    if stop_reason != M.REASON_BUDGET:
        return TrialOutcome("FAIL", None, attrs)
    raw_values = [stats.raw(o) for o in objectives]
    if any(v is None for v in raw_values):
        attrs["missing"] = [o for o, v in zip(objectives, raw_values, strict=True) if v is None]
        return TrialOutcome("FAIL", None, attrs)
    return TrialOutcome("COMPLETE", tuple(float(v) for v in raw_values if v is not None), attrs)


def check_objectives(sweep: SweepConfig) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Objectives and directions of a study, checked against what the base run reports."""
    opt = sweep.optuna
    for obj, direction in zip(opt.objectives, opt.directions, strict=True):
        if obj not in OBJECTIVES:
            raise ConfigError(
                "optuna.objectives", f"got {obj!r}; expected one of {', '.join(OBJECTIVES)}"
            )
        if direction != OBJECTIVES[obj][0]:
            raise ConfigError(
                "optuna.directions", f"{obj} must be {OBJECTIVES[obj][0]}d, got {direction!r}"
            )
    if len(set(opt.objectives)) != len(opt.objectives):
        raise ConfigError("optuna.objectives", f"got {list(opt.objectives)}; each objective once")
    if "normalized_score" in opt.objectives and sweep.base.train.eval_episodes < 1:
        raise ConfigError(
            "base.train.eval_episodes", "must be >= 1 for the normalized_score objective"
        )
    if "max_seem" in opt.objectives and not sweep.base.seem.enabled:
        raise ConfigError("base.seem.enabled", "must be true for the max_seem objective")
    return opt.objectives, opt.directions


def trial_stop_reason(stats: TrialStats, verdict: Any, error: bool, budget: int) -> str:
    """Why a trial ended: error, the predictor's reason, nan, budget or incomplete."""
    if error:
        return ERROR
    if verdict is not None and verdict.diverging and verdict.reason:
        return str(verdict.reason)
    if stats.nonfinite:
        return M.REASON_NAN
    return M.REASON_BUDGET if stats.steps >= budget else INCOMPLETE
