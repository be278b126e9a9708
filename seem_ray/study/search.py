"""StudySearch: Ray's OptunaSearch on the study's durable storage, telling Optuna our values.

Flow position: :class:`~seem_ray.study.space.StudySpace` -> **StudySearch** (Tune's searcher)
-> each finished trial's :class:`~seem_ray.study.outcome.TrialOutcome` -> Optuna storage.
The class is built on first use so `seem-ray --help` does not import Ray Tune.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from seem_ray.config import StopperConfig
from seem_ray.study.outcome import TrialStats, trial_outcome, trial_stop_reason
from seem_ray.study.space import StudySpace

__all__ = ["searcher_class"]

log = logging.getLogger("seem_ray.study")


def _make_searcher_class() -> type:
    """StudySearch, built on first use so `seem-ray --help` does not import Ray Tune."""
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    from seem_ray.stopper import DivergenceStopper

    class StudySearch(OptunaSearch):
        """OptunaSearch that computes the objectives itself and records why each trial ended.

        Trials report every `log_every` steps but the score only at the end, and max SEEM is a
        running maximum: so values come from :class:`TrialStats`, the stop reason from a shadow
        DivergenceStopper fed the same results as Tune's, and :func:`trial_outcome` decides.
        """

        def __init__(
            self,
            space: StudySpace,
            *,
            study_name: str,
            storage: Any,
            objectives: Sequence[str],
            directions: Sequence[str],
            seed: int,
            stopper: StopperConfig,
            budget_steps: int,
        ) -> None:
            self.objectives = tuple(objectives)
            self.directions = tuple(directions)
            self.budget_steps = budget_steps
            self.shadow = DivergenceStopper(stopper)
            self.stats: dict[str, TrialStats] = {}
            multi = len(self.objectives) > 1
            modes = [d[:3] for d in self.directions]
            super().__init__(
                space=space,
                metric=list(self.objectives) if multi else self.objectives[0],
                mode=modes if multi else modes[0],
                sampler=optuna.samplers.TPESampler(seed=seed),
                study_name=study_name,
                storage=storage,
            )

        def suggest(self, trial_id: str) -> dict | None:
            config = super().suggest(trial_id)
            ot_trial = self._ot_trials[trial_id]
            ot_trial.set_user_attr("tune_trial_id", trial_id)
            if config and "overrides" in config:
                ot_trial.set_user_attr("overrides", config["overrides"])
            return config

        def _observe(self, trial_id: str, result: Mapping[str, Any]) -> None:
            before = self.stats.get(trial_id, TrialStats())
            after = before.add(result)
            if after is not before:  # each step once, as Tune's stopper sees it
                self.shadow(trial_id, dict(result))
            self.stats[trial_id] = after

        def on_trial_result(self, trial_id: str, result: dict) -> None:
            self._observe(trial_id, result)

        def on_trial_complete(
            self, trial_id: str, result: dict | None = None, error: bool = False
        ) -> None:
            if trial_id in self._completed_trials or trial_id not in self._ot_trials:
                return
            if result:
                self._observe(trial_id, result)
            stats = self.stats.pop(trial_id, TrialStats())
            verdict = self.shadow.verdicts.get(trial_id)
            reason = trial_stop_reason(stats, verdict, error, self.budget_steps)
            since = verdict.since if verdict is not None and verdict.diverging else None
            outcome = trial_outcome(
                stats, reason, self.objectives, self.directions, diverged_since=since
            )
            ot_trial = self._ot_trials[trial_id]
            try:
                for key, value in outcome.attrs.items():
                    ot_trial.set_user_attr(key, value)
                state = (
                    optuna.trial.TrialState.COMPLETE
                    if outcome.state == "COMPLETE"
                    else optuna.trial.TrialState.FAIL
                )
                values = list(outcome.values) if outcome.values is not None else None
                study: Any = self._ot_study
                study.tell(
                    ot_trial, values[0] if values and len(values) == 1 else values, state=state
                )
            except Exception as exc:  # a storage hiccup must not take the sweep down
                log.warning("could not record trial %s in the study: %s", trial_id, exc)
            log.info("study trial %s: %s %s", trial_id, reason, outcome.values)
            self._completed_trials.add(trial_id)

    StudySearch.__qualname__ = "StudySearch"
    StudySearch.__module__ = __name__
    return StudySearch


@functools.cache
def searcher_class() -> type:
    """The StudySearch class (Ray Tune and Optuna are imported on this first call)."""
    return _make_searcher_class()


def __getattr__(name: str) -> Any:
    # Pickle finds the searcher class by name when Tune saves/restores its state.
    if name == "StudySearch":
        return searcher_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
