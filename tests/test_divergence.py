"""Divergence predictors on synthetic metric streams: bounded vs power-law vs exponential Q."""

from __future__ import annotations

import math
import pickle

import pytest

from seem_ray import metrics as M
from seem_ray.config import ConfigError, StopperConfig, parse_run_config
from seem_ray.divergence import (
    CompositePredictor,
    GrowthPredictor,
    QBoundPredictor,
    RunningScale,
    SeemPredictor,
    bound_crossing,
    build_predictor,
    default_predictor,
)

BOUND = 100.0


def stream(q_of_t, seem_of_t, steps=range(500, 40_001, 500), probe_every=1000):
    for t in steps:
        rec = {M.STEP: float(t), M.Q_MEAN: q_of_t(t), M.Q_MAX: 2 * q_of_t(t)}
        if t % probe_every == 0:
            rec[M.SEEM] = seem_of_t(t)
        yield t, rec


def first_flag(pred, records):
    for t, rec in records:
        v = pred.update(t, rec)
        if v.diverging:
            return t, v
    return None, pred.update(t, rec)


def test_bounded_q_with_noisy_seem_is_never_flagged() -> None:
    # LayerNorm-like: SEEM hovers 0.05-0.2 (above threshold) but Q stays bounded and flat.
    pred = default_predictor(BOUND)
    t, v = first_flag(pred, stream(lambda t: 20.0 + math.sin(t / 700.0), lambda t: 0.12))
    assert t is None and not v.diverging and v.reason is None


def test_transient_seem_blip_is_not_a_divergence() -> None:
    pred = default_predictor(BOUND)
    t, _ = first_flag(pred, stream(lambda t: 10.0, lambda t: 0.7 if 3000 <= t <= 5000 else 0.0))
    assert t is None


def test_power_law_growth_flagged_long_before_the_bound() -> None:
    # Adam law: |Q| ~ (t/1000)^3 with SEEM persistently positive: crosses BOUND at t ~ 4.6k..
    q = lambda t: 0.05 * (t / 1000.0) ** 3  # noqa: E731
    crossing = next(t for t, _ in stream(q, lambda t: 0.3) if q(t) > BOUND)
    seem_t, v = first_flag(default_predictor(BOUND), stream(q, lambda t: 0.3))
    bound_t, vb = first_flag(QBoundPredictor(BOUND), stream(q, lambda t: 0.3))
    assert bound_t == crossing and vb.reason == M.REASON_Q_BOUND
    assert seem_t is not None and seem_t < bound_t
    assert v.reason in (M.REASON_SEEM, M.REASON_GROWTH)
    assert v.since is not None and v.since <= seem_t


def test_seem_quiet_diverger_caught_by_growth() -> None:
    q = lambda t: 1e-3 * (t / 100.0) ** 2  # noqa: E731  crosses 100 at t = 31.6k
    t, v = first_flag(default_predictor(BOUND), stream(q, lambda t: 0.02))
    assert t is not None and t < 31_600 and v.reason == M.REASON_GROWTH
    assert v.predicted_step is not None and v.predicted_step > t


def test_nan_is_flagged_immediately() -> None:
    pred = default_predictor(BOUND)
    pred.update(500, {M.Q_MEAN: 1.0})
    v = pred.update(1000, {M.Q_MEAN: float("nan")})
    assert v.diverging and v.reason == M.REASON_NAN and v.since == 1000


def test_seem_predictor_needs_consecutive_probes_and_ignores_records_without_seem() -> None:
    p = SeemPredictor(threshold=0.05, patience=3)
    assert not p.update(1, {M.SEEM: 0.1}).diverging
    assert not p.update(2, {M.Q_MEAN: 1.0}).diverging  # no probe: streak unchanged
    assert not p.update(3, {M.SEEM: 0.0}).diverging  # streak broken
    for s in (4, 5):
        assert not p.update(s, {M.SEEM: 0.2}).diverging
    v = p.update(6, {M.SEEM: 0.2})
    assert v.diverging and v.since == 4 and v.flagged_at == 6
    assert p.update(7, {M.SEEM: -0.5}).diverging  # latched


def test_growth_projection_matches_power_law() -> None:
    g = GrowthPredictor(1e6, horizon=100.0)
    for t in (1000, 2000, 3000, 4000):
        g.observe(t, {M.Q_MEAN: (t / 1000.0) ** 2})
    # |Q| = (t/1000)^2 reaches 1e6 at t = 1e6
    assert g.order() == pytest.approx(2.0)
    assert g.project() == pytest.approx(1_000_000, rel=1e-6)


def test_saturating_healthy_curve_has_low_order_and_is_not_flagged() -> None:
    q = lambda t: 50.0 * (1 - math.exp(-t / 2000.0))  # noqa: E731  settles at half the bound
    t, _ = first_flag(default_predictor(BOUND), stream(q, lambda t: 0.1))
    assert t is None


def test_grace_steps_hold_back_soft_verdicts() -> None:
    pred = CompositePredictor(BOUND, grace_steps=100_000)
    q = lambda t: 0.05 * (t / 1000.0) ** 3  # noqa: E731
    t, v = first_flag(pred, stream(q, lambda t: 0.3))
    assert v.reason == M.REASON_Q_BOUND  # only the hard bound fires inside the grace period


def test_bound_crossing_is_the_first_step_beyond_the_bound_or_non_finite() -> None:
    def rec(step: int, q: float | None) -> dict[str, float]:
        return {M.STEP: step} if q is None else {M.STEP: step, M.Q_MEAN: q}

    assert bound_crossing([rec(1, 5.0), rec(2, 9.9), rec(3, -10.0)], 10.0) is None  # not beyond
    assert bound_crossing([rec(1, 5.0), rec(2, None), rec(3, -10.5), rec(4, 20.0)], 10.0) == 3
    assert bound_crossing([rec(1, 5.0), rec(2, math.nan), rec(3, 20.0)], 10.0) == 2
    assert bound_crossing([rec(1, math.inf)], math.inf) == 1  # non-finite Q is divergence
    assert bound_crossing([], 1.0) is None


def test_constructor_checks_name_the_argument() -> None:
    with pytest.raises(ValueError, match="patience"):
        SeemPredictor(patience=0)
    with pytest.raises(ValueError, match="q_bound"):
        QBoundPredictor(0.0)
    with pytest.raises(ConfigError, match="stopper.kind"):
        parse_run_config({"stopper": {"kind": "bogus"}})
    assert build_predictor(StopperConfig(kind="none"), 1.0) is None
    assert isinstance(build_predictor(StopperConfig(kind="q_bound"), 1.0), QBoundPredictor)


def test_predictors_pickle_with_their_state() -> None:
    pred = default_predictor(BOUND)
    for t, rec in stream(lambda t: 5.0, lambda t: 0.3, steps=range(500, 2001, 500)):
        pred.update(t, rec)
    clone = pickle.loads(pickle.dumps(pred))
    assert (
        clone.seem.streak == pred.seem.streak
        and clone.growth.scale.values == pred.growth.scale.values
    )


# --- sign-free, scale-free evidence (issue 19): each part on its own synthetic curve ----------


def test_running_scale_reads_a_zero_crossing_as_no_growth() -> None:
    """Negative rewards: mean Q starts below zero, crosses it and settles. |mean Q| over a
    doubling of steps reads the crossing as explosive growth; the running max |Q| does not."""
    q = lambda t: -6.0 + 16.0 * (1 - math.exp(-t / 5000.0))  # noqa: E731  crosses 0 near 2.3k
    naive = GrowthPredictor(BOUND)  # fed |mean Q| the way the old predictor read it
    scale = RunningScale(key=M.Q_MEAN)
    naive_orders, orders = [], []
    for t, rec in stream(q, lambda t: 0.1):
        naive.scale.steps.append(t)
        naive.scale.values.append(max(abs(rec[M.Q_MEAN]), 1e-12))
        naive_orders.append(naive.scale.order() or 0.0)
        scale.observe(t, rec)
        orders.append(scale.order() or 0.0)
    assert max(naive_orders) > 2.0  # the trap is real for a sign-blind ratio
    assert max(orders) < 1.0  # the running max moves once, from ~5 to 10, never explosively
    t, _ = first_flag(default_predictor(BOUND), stream(q, lambda t: 0.1))
    assert t is None


def test_running_scale_order_matches_a_naive_power_law_fit() -> None:
    """|Q| = c t^3: the order over the last doubling equals log(Q_t/Q_t/2)/log 2 = 3."""
    scale = RunningScale()
    for t in range(500, 8001, 500):
        scale.observe(t, {M.Q_ABS_MAX: 2e-9 * t**3, M.Q_MEAN: -1e-9 * t**3})
    naive = math.log((2e-9 * 8000**3) / (2e-9 * 4000**3)) / math.log(8000 / 4000)
    assert scale.order() == pytest.approx(naive) == pytest.approx(3.0)
    assert scale.order(since=1000) == pytest.approx(3.0)
    assert scale.value == pytest.approx(2e-9 * 8000**3)


def test_linear_climb_that_saturates_is_not_flagged() -> None:
    """Healthy slow learning (tau 0.005): |Q| climbs linearly to 60% of the bound, then holds,
    while SEEM sits a little above the threshold."""
    q = lambda t: min(t / 250.0, 60.0)  # noqa: E731
    t, _ = first_flag(default_predictor(BOUND), stream(q, lambda t: 0.08))
    assert t is None


def test_weight_norm_order_separates_linear_drift_from_settling() -> None:
    """The Adam signature: a diverging critic's weight norm grows linearly in t (order -> 1),
    a settling one's barely moves (order -> 0)."""
    drift, settle = (
        RunningScale(M.CRITIC_WEIGHT_NORM, None),
        RunningScale(M.CRITIC_WEIGHT_NORM, None),
    )
    for t in range(500, 40_001, 500):
        drift.observe(t, {M.CRITIC_WEIGHT_NORM: 20.0 + 0.05 * t})
        settle.observe(t, {M.CRITIC_WEIGHT_NORM: 20.0 + 5.0 * (1 - math.exp(-t / 3000.0))})
    w = lambda t: 20.0 + 0.05 * t  # noqa: E731
    assert drift.order() == pytest.approx(math.log(w(40_000) / w(20_000)) / math.log(2))
    assert drift.order() > 0.9 and settle.order() < 0.01  # type: ignore[operator]
