"""The Tune stopper: a thin wrapper that feeds each trial's results to its own divergence predictor.

Flow position: Train worker reports -> Tune result -> **DivergenceStopper** -> stop/continue.
Every decision is made by seem_ray.divergence; this class only keeps per-trial state (keyed by
trial id), builds each trial's predictor from the ``q_bound`` its first result carries, and
remembers the verdicts so tracking can tag *why* a trial stopped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ray import tune

from seem_ray import metrics as M
from seem_ray.config import StopperConfig
from seem_ray.divergence import Predictor, Verdict, build_predictor
from seem_ray.train import Q_BOUND_KEY

__all__ = ["DivergenceStopper"]


class DivergenceStopper(tune.Stopper):
    """Stops a trial as soon as its predictor says it diverges.

    Args:
        settings: the sweep's stopper settings; ``kind`` 'seem' (calibrated default predictor),
            'q_bound' (baseline) or 'none' (never stops, still records verdicts as healthy).

    Example:
        >>> stopper = DivergenceStopper(StopperConfig(kind="q_bound"))
        >>> stopper("t1", {"step": 100, "q_bound": 10.0, "q_mean": 50.0})
        True
    """

    def __init__(self, settings: StopperConfig) -> None:
        if not isinstance(settings, StopperConfig):
            raise ValueError(f"settings must be a StopperConfig, got {type(settings).__name__}")
        self.settings = settings
        self._predictors: dict[str, Predictor | None] = {}
        self.verdicts: dict[str, Verdict] = {}
        self.last_step: dict[str, int] = {}

    def _predictor(self, trial_id: str, result: Mapping[str, Any]) -> Predictor | None:
        if trial_id not in self._predictors:
            bound = float(result.get(Q_BOUND_KEY, float("inf")))
            self._predictors[trial_id] = build_predictor(
                self.settings, bound if bound > 0 else float("inf")
            )
        return self._predictors[trial_id]

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        if M.STEP not in result:
            return False
        step = int(result[M.STEP])
        self.last_step[trial_id] = step
        predictor = self._predictor(trial_id, result)
        if predictor is None:
            self.verdicts.setdefault(trial_id, Verdict())
            return False
        verdict = predictor.update(
            step, {k: v for k, v in result.items() if isinstance(v, int | float)}
        )
        self.verdicts[trial_id] = verdict
        return verdict.diverging

    def stop_all(self) -> bool:
        return False

    def stop_reason(self, trial_id: str, budget_steps: int) -> str:
        """Why a finished trial ended: the verdict's reason, or 'budget'."""
        verdict = self.verdicts.get(trial_id)
        if verdict is not None and verdict.diverging and verdict.reason:
            return verdict.reason
        return M.REASON_BUDGET
