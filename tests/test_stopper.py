"""Tune stopper on fake result streams: per-trial state, delegation, kinds, pickle round trip."""

from __future__ import annotations

import pickle

import pytest

from seem_ray import metrics as M
from seem_ray.config import StopperConfig
from seem_ray.stopper import DivergenceStopper


def results(q_values, seem=0.0, bound=100.0):
    for i, q in enumerate(q_values, start=1):
        yield {M.STEP: 500 * i, M.Q_MEAN: q, M.Q_MAX: q, M.SEEM: seem, "q_bound": bound}


def test_stops_only_the_diverging_trial_and_keeps_state_per_trial() -> None:
    stopper = DivergenceStopper(StopperConfig(kind="q_bound"))
    healthy = [stopper("ok", r) for r in results([1.0] * 10)]
    bad = [stopper("bad", r) for r in results([1, 10, 1000, 5000])]
    assert not any(healthy)
    assert bad == [False, False, True, True]
    assert stopper.stop_reason("bad", 5000) == M.REASON_Q_BOUND
    assert stopper.stop_reason("ok", 5000) == M.REASON_BUDGET
    assert stopper.verdicts["bad"].since == 1500
    assert not stopper.stop_all()


def test_seem_kind_stops_before_the_bound() -> None:
    stopper = DivergenceStopper(StopperConfig(kind="seem"))
    qs = [0.05 * (t / 1000.0) ** 3 for t in range(500, 20001, 500)]
    flags = [stopper("t", r) for r in results(qs, seem=0.3)]
    first = flags.index(True)
    crossing = next(i for i, q in enumerate(qs) if q > 100.0)
    assert first < crossing
    assert stopper.stop_reason("t", 20000) in (M.REASON_SEEM, M.REASON_GROWTH)


def test_none_kind_never_stops() -> None:
    stopper = DivergenceStopper(StopperConfig(kind="none"))
    assert not any(stopper("t", r) for r in results([1, 1e9, float("nan")]))
    assert stopper.stop_reason("t", 100) == M.REASON_BUDGET


def test_grace_period_and_results_without_step() -> None:
    stopper = DivergenceStopper(StopperConfig(kind="seem", grace_steps=10**6))
    assert stopper("t", {"done": False}) is False
    qs = [0.05 * (t / 1000.0) ** 3 for t in range(500, 5001, 500)]
    flags = [stopper("t", r) for r in results(qs, seem=0.5)]
    assert not any(flags)  # SEEM/growth verdicts held back, bound not reached


def test_pickle_round_trip_keeps_verdicts_and_progress() -> None:
    stopper = DivergenceStopper(StopperConfig(kind="q_bound"))
    for r in results([1, 2, 3]):
        stopper("a", r)
    clone = pickle.loads(pickle.dumps(stopper))
    assert clone.last_step == {"a": 1500}
    assert clone("a", {M.STEP: 2000, M.Q_MEAN: 1e6, "q_bound": 100.0}) is True


def test_rejects_non_config() -> None:
    with pytest.raises(ValueError, match="StopperConfig"):
        DivergenceStopper({"kind": "seem"})  # type: ignore[arg-type]
