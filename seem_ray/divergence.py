"""Divergence predictors: read one trial's metric records in step order, answer "diverging? since when?".

Flow position: loop reports -> **predictor** -> Tune stopper / MLflow tags / Optuna attrs.
Pure Python on floats: no torch, no Ray. Every predictor has the same interface::

    verdict = predictor.update(step, {"seem": 0.12, "q_mean": 40.0, "q_max": 90.0, ...})

Records may carry other keys and may lack ``seem`` between probes. Predictors:

- :class:`NanPredictor` -- any non-finite Q or loss.
- :class:`QBoundPredictor` -- the baseline: |mean Q| on the probe beyond ``factor * q_bound``
  (``q_bound = r_max / (1 - gamma)``: no honest critic can exceed it).
- :class:`SeemPredictor` -- SEEM > threshold on ``patience`` consecutive probes (the paper's sign
  test with persistence against transient blips).
- :class:`GrowthPredictor` -- the paper's Adam result: once diverging, |Q| grows like a power of
  t. It fits log|Q| against log t on recent probes and projects when |Q| crosses the bound.
- :class:`CompositePredictor` -- :func:`default_predictor`: NaN and Q-bound flag at once; SEEM
  persistence flags only when |Q| is also growing (calibration showed LayerNorm critics on
  terminal-heavy data hold SEEM 0.05-0.2 with bounded Q, and no-LN runs show early transients);
  the growth projection alone catches SEEM-quiet divergers.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol, TypeGuard

from seem_ray import metrics as M
from seem_ray.config import StopperConfig

__all__ = [
    "CompositePredictor",
    "GrowthPredictor",
    "NanPredictor",
    "Predictor",
    "QBoundPredictor",
    "RunningScale",
    "SeemPredictor",
    "Verdict",
    "bound_crossing",
    "build_predictor",
    "default_predictor",
    "still_climbing",
]


@dataclass(frozen=True)
class Verdict:
    """A predictor's answer after one record.

    Attributes:
        diverging: True once the trial is predicted (or seen) to diverge; stays True.
        reason: "nan", "q_bound", "seem" or "growth"; None while healthy.
        since: step of the first record that started the evidence (e.g. first of the SEEM streak).
        flagged_at: step at which the verdict turned True.
        predicted_step: projected step at which |Q| crosses the bound (growth fit), if any.
    """

    diverging: bool = False
    reason: str | None = None
    since: int | None = None
    flagged_at: int | None = None
    predicted_step: int | None = None


HEALTHY = Verdict()


class Predictor(Protocol):
    def update(self, step: int, metrics: Mapping[str, float]) -> Verdict: ...


def bound_crossing(records: Iterable[Mapping[str, float]], q_bound: float) -> int | None:
    """Ground truth of divergence: first record's step whose |mean Q| on the probe is beyond
    ``q_bound`` or non-finite (None: never). Records without a Q value are skipped.

    The one definition the calibration, the experiments and the stopper benchmarks share.
    """
    for r in records:
        q = r.get(M.Q_MEAN)
        if q is None:
            continue
        if not math.isfinite(q) or abs(q) > q_bound:
            return int(r[M.STEP])
    return None


def still_climbing(
    records: Iterable[Mapping[str, float]], tail: float = 0.25, rise: float = 0.1
) -> bool:
    """|mean Q|'s running maximum rose by more than ``rise`` over the last ``tail`` of the steps:
    a run that has not crossed the bound but may yet, so calling it "stable" would be a guess
    (calibration and the stopper benchmark lengthen such runs, then call them *ambiguous*)."""
    pts = [(r[M.STEP], abs(r[M.Q_MEAN])) for r in records if _finite(r.get(M.Q_MEAN))]
    if len(pts) < 4:
        return False
    cut = pts[-1][0] * (1 - tail)
    before = max(q for s, q in pts if s <= cut)
    return max(q for _, q in pts) > (1 + rise) * before


def _finite(x: float | None) -> TypeGuard[float]:
    return x is not None and math.isfinite(x)


class _Latching:
    """Once a predictor says diverging it keeps saying so (a stopped trial stays stopped)."""

    def __init__(self) -> None:
        self._verdict: Verdict = HEALTHY

    @property
    def verdict(self) -> Verdict:
        return self._verdict

    def _flag(self, step: int, reason: str, since: int, predicted: int | None = None) -> Verdict:
        if not self._verdict.diverging:
            self._verdict = Verdict(True, reason, since, step, predicted)
        return self._verdict


class NanPredictor(_Latching):
    """Flags the first record whose Q statistics or losses are NaN/inf."""

    KEYS = (M.Q_MEAN, M.Q_MAX, M.CRITIC_LOSS, M.BATCH_Q_MEAN)

    def update(self, step: int, metrics: Mapping[str, float]) -> Verdict:
        for key in self.KEYS:
            value = metrics.get(key)
            if value is not None and not math.isfinite(value):
                return self._flag(step, M.REASON_NAN, step)
        return self.verdict


class QBoundPredictor(_Latching):
    """Flags when |mean Q| on the probe exceeds ``factor * q_bound`` (or Q is non-finite)."""

    def __init__(self, q_bound: float, factor: float = 1.0) -> None:
        super().__init__()
        if not q_bound > 0:
            raise ValueError(f"q_bound must be > 0, got {q_bound!r}")
        if not factor > 0:
            raise ValueError(f"factor must be > 0, got {factor!r}")
        self.limit = q_bound * factor
        self._nan = NanPredictor()

    def update(self, step: int, metrics: Mapping[str, float]) -> Verdict:
        nan = self._nan.update(step, metrics)
        if nan.diverging:
            return self._flag(step, M.REASON_NAN, step)
        q = metrics.get(M.Q_MEAN)
        if _finite(q) and abs(q) > self.limit:
            return self._flag(step, M.REASON_Q_BOUND, step)
        return self.verdict


class SeemPredictor(_Latching):
    """SEEM above ``threshold`` on ``patience`` consecutive probes.

    ``streak_start`` is exposed so a composite can ask for confirming evidence over the streak.
    """

    def __init__(self, threshold: float = 0.05, patience: int = 3) -> None:
        super().__init__()
        if not -1.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [-1, 1], got {threshold!r}")
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience!r}")
        self.threshold = threshold
        self.patience = patience
        self.streak = 0
        self.streak_start: int | None = None

    def update(self, step: int, metrics: Mapping[str, float]) -> Verdict:
        value = metrics.get(M.SEEM)
        if value is None:  # no probe in this record
            return self.verdict
        if _finite(value) and value > self.threshold:
            if self.streak == 0:
                self.streak_start = step
            self.streak += 1
        else:
            self.streak, self.streak_start = 0, None
        if self.streak >= self.patience and self.streak_start is not None:
            return self._flag(step, M.REASON_SEEM, self.streak_start)
        return self.verdict

    @property
    def persistent(self) -> bool:
        return self.streak >= self.patience


class RunningScale:
    """A sign-free, scale-free record of how large a quantity has become: the running maximum of
    a non-negative metric (default: max |Q| on the probe, falling back to |mean Q|).

    A running maximum never reads a sign change as growth (a mean Q that starts below zero and
    crosses it dips |mean Q| to ~0, and a ratio against ~0 is "infinite growth"), and its growth
    order over a doubling of steps is ~L for |Q| ~ t^L and -> 0 for a curve that settles.
    """

    def __init__(self, key: str = M.Q_ABS_MAX, fallback: str | None = M.Q_MEAN) -> None:
        self.key, self.fallback = key, fallback
        self.steps: list[int] = []
        self.values: list[float] = []

    def observe(self, step: int, metrics: Mapping[str, float]) -> None:
        """Fold in one record (records at or before the last step, or without the metric, are skipped)."""
        value = metrics.get(self.key)
        if not _finite(value) and self.fallback is not None:
            value = metrics.get(self.fallback)
        fresh = step > 0 and not (self.steps and step <= self.steps[-1])
        if not (fresh and _finite(value)):
            return
        level = max(abs(value), self.values[-1] if self.values else 0.0)
        self.steps.append(step)
        self.values.append(level)

    @property
    def value(self) -> float | None:
        return self.values[-1] if self.values else None

    def order(self, since: int | None = None) -> float | None:
        """Growth exponent log(S_t / S_ref) / log(t / t_ref) from the last record at or before
        ``since`` (default t/2, the last doubling) to now; None without enough history."""
        if len(self.steps) < 2:
            return None
        t, v = self.steps[-1], self.values[-1]
        ref = t / 2 if since is None else since
        i = max(0, bisect.bisect_right(self.steps, ref) - 1)
        t_ref, v_ref = self.steps[i], self.values[i]
        if t_ref >= t or v_ref <= 0 or v <= 0:
            return None
        return math.log(v / v_ref) / math.log(t / t_ref)


class GrowthPredictor(_Latching):
    """Power-law growth of the critic's values (paper, Adam: Q = Theta(t^L) once diverging),
    projected to the bound.

    The growth order over the last doubling of steps of :class:`RunningScale` (max |Q| on the
    probe, a running maximum) is about L for a diverging L-layer critic and near 0 for a critic
    settling on its values. The predictor flags when the order is >= ``min_order`` on ``sustain``
    consecutive records and the projection t_x = t * (bound / S_t)^(1/order) falls within
    ``horizon`` x t.
    """

    def __init__(
        self, q_bound: float, *, min_order: float = 1.5, sustain: int = 3, horizon: float = 4.0
    ) -> None:
        super().__init__()
        if not q_bound > 0:
            raise ValueError(f"q_bound must be > 0, got {q_bound!r}")
        if not min_order > 0:
            raise ValueError(f"min_order must be > 0, got {min_order!r}")
        if sustain < 1:
            raise ValueError(f"sustain must be >= 1, got {sustain!r}")
        if not horizon > 1:
            raise ValueError(f"horizon must be > 1, got {horizon!r}")
        self.q_bound = q_bound
        self.min_order = min_order
        self.sustain = sustain
        self.horizon = horizon
        self.scale = RunningScale()
        self.sustained = 0
        self.predicted_step: int | None = None

    def observe(self, step: int, metrics: Mapping[str, float]) -> None:
        self.scale.observe(step, metrics)

    def order(self) -> float | None:
        """Growth exponent of the value scale over the last doubling of steps."""
        return self.scale.order()

    def project(self) -> int | None:
        """Projected step at which the value scale reaches the bound at the current order."""
        s = self.order()
        if s is None or s <= 0 or not math.isfinite(self.q_bound):
            return None
        t, q = self.scale.steps[-1], self.scale.values[-1]
        if q >= self.q_bound:
            return t
        log_t = math.log(t) + math.log(self.q_bound / q) / s  # in logs: tiny orders overflow
        return int(math.exp(min(log_t, 34.0)))

    def update(self, step: int, metrics: Mapping[str, float]) -> Verdict:
        before = len(self.scale.steps)
        self.observe(step, metrics)
        if len(self.scale.steps) == before:
            return self.verdict  # nothing new (no Q in this record)
        s = self.order()
        self.sustained = self.sustained + 1 if s is not None and s >= self.min_order else 0
        self.predicted_step = self.project()
        due = self.predicted_step is not None and self.predicted_step <= self.horizon * step
        if self.sustained >= self.sustain and due:
            steps = self.scale.steps
            since = steps[max(0, len(steps) - self.sustained)]
            return self._flag(step, M.REASON_GROWTH, since, self.predicted_step)
        return self.verdict


class CompositePredictor(_Latching):
    """The calibrated default: NaN | Q bound | (SEEM persistence AND values still growing) | growth.

    Evidence, all sign-free and scale-free:

    - SEEM above ``seem_threshold`` on ``patience`` consecutive probes (the paper's sign test,
      with persistence against the transients that no-LN critics show early);
    - confirmed by the value scale (running max of max |Q| on the probe) growing at least like
      t^``confirm_order`` over the last doubling of steps, or the critic's weight norm growing
      like t^``weight_order`` (0 = off; the paper's other Adam signature: the weights of a diverging
      critic grow linearly in t, those of a settling one barely move) -- calibration showed
      LayerNorm critics holding SEEM 0.05-0.2 with bounded Q, so SEEM alone false-alarms;
    - the growth projection alone (:class:`GrowthPredictor`) for SEEM-quiet divergers.

    Soft (SEEM, growth) verdicts wait for ``grace_steps`` and for the value scale to reach
    ``min_scale_fraction`` x the bound: the growth order of values still near their zero start
    is noise. The NaN and Q-bound checks always apply.
    """

    def __init__(
        self,
        q_bound: float,
        *,
        seem_threshold: float = 0.05,
        patience: int = 3,
        q_bound_factor: float = 1.0,
        growth_horizon: float = 4.0,
        grace_steps: int = 0,
        confirm_order: float = 1.5,
        weight_order: float = 0.0,
        growth_order: float = 2.0,
        use_growth: bool = True,
        min_scale_fraction: float = 0.01,
    ) -> None:
        super().__init__()
        self.min_scale = min_scale_fraction * q_bound
        self.bound = QBoundPredictor(q_bound, q_bound_factor)
        self.seem = SeemPredictor(seem_threshold, patience)
        self.growth = GrowthPredictor(
            q_bound * q_bound_factor,
            min_order=growth_order,
            sustain=patience,
            horizon=growth_horizon,
        )
        self.weights = RunningScale(M.CRITIC_WEIGHT_NORM, fallback=None)
        self.grace_steps = grace_steps
        self.confirm_order = confirm_order
        self.weight_order = weight_order
        self.use_growth = use_growth

    def confirmed(self) -> bool:
        """The values (or the weights) are still growing fast enough to back a SEEM streak."""
        order = self.growth.order()
        if order is not None and order >= self.confirm_order:
            return True
        w = self.weights.order()
        return bool(self.weight_order) and w is not None and w >= self.weight_order

    def update(self, step: int, metrics: Mapping[str, float]) -> Verdict:
        hard = self.bound.update(step, metrics)
        if hard.diverging:
            return self._flag(step, hard.reason or M.REASON_Q_BOUND, hard.since or step)
        self.seem.update(step, metrics)
        self.weights.observe(step, metrics)
        g = self.growth.update(step, metrics)
        scale = self.growth.scale.value
        if step < self.grace_steps or scale is None or scale < self.min_scale:
            return self.verdict
        if self.seem.persistent and self.confirmed():
            return self._flag(
                step, M.REASON_SEEM, self.seem.streak_start or step, self.growth.predicted_step
            )
        if self.use_growth and g.diverging:
            return self._flag(step, M.REASON_GROWTH, g.since or step, g.predicted_step)
        return self.verdict


def default_predictor(q_bound: float) -> CompositePredictor:
    """A fresh calibrated predictor for one trial (defaults from docs/calibration.md)."""
    predictor = build_predictor(StopperConfig(), q_bound)
    assert isinstance(predictor, CompositePredictor)
    return predictor


def build_predictor(settings: StopperConfig, q_bound: float) -> Predictor | None:
    """The predictor a run's ``stopper`` settings ask for: 'seem' (composite), 'q_bound' or None."""
    if settings.kind == "none":
        return None
    if settings.kind == "q_bound":
        return QBoundPredictor(q_bound, settings.q_bound_factor)
    return CompositePredictor(
        q_bound,
        seem_threshold=settings.seem_threshold,
        patience=settings.patience,
        q_bound_factor=settings.q_bound_factor,
        growth_horizon=settings.growth_horizon,
        grace_steps=settings.grace_steps,
        confirm_order=settings.confirm_order,
        weight_order=settings.weight_order,
        growth_order=settings.growth_order,
        min_scale_fraction=settings.min_scale_fraction,
    )
