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
from typing import Protocol

from seem_ray import metrics as M
from seem_ray.config import StopperConfig

__all__ = [
    "CompositePredictor",
    "GrowthPredictor",
    "NanPredictor",
    "Predictor",
    "QBoundPredictor",
    "SeemPredictor",
    "Verdict",
    "bound_crossing",
    "build_predictor",
    "default_predictor",
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


def _finite(x: float | None) -> bool:
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
        if _finite(q) and abs(q) > self.limit:  # type: ignore[arg-type]
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


class GrowthPredictor(_Latching):
    """Power-law growth of |Q| (paper, Adam: Q = Theta(t^L) once diverging), projected to the bound.

    The growth order over the last doubling of steps, s = log(|Q_t| / |Q_t/2|) / log 2, is about
    L for a diverging L-layer critic and below 1 for a healthy critic settling on its values
    (saturating curves). The predictor flags when s >= ``min_order`` on ``sustain`` consecutive
    records and the projection t_x = t * (bound / |Q_t|)^(1/s) falls within ``horizon`` x t.
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
        self.steps: list[int] = []
        self.values: list[float] = []
        self.sustained = 0
        self.predicted_step: int | None = None

    def observe(self, step: int, metrics: Mapping[str, float]) -> None:
        """Record |mean Q| of a record (records at or before the last step are ignored)."""
        q = metrics.get(M.Q_MEAN)
        if _finite(q) and step > 0 and (not self.steps or step > self.steps[-1]):
            self.steps.append(step)
            self.values.append(abs(q))  # type: ignore[arg-type]

    def order(self) -> float | None:
        """Growth exponent of |Q| over the last doubling of steps (None without enough history)."""
        if len(self.steps) < 2:
            return None
        t, q = self.steps[-1], self.values[-1]
        i = max(0, bisect.bisect_right(self.steps, t / 2) - 1)
        t_half, q_half = self.steps[i], self.values[i]
        if t_half >= t or q_half <= 0 or q <= 0:
            return None
        return math.log(q / q_half) / math.log(t / t_half)

    def project(self) -> int | None:
        """Projected step at which |Q| reaches the bound at the current order, or None."""
        s = self.order()
        if s is None or s <= 0 or not math.isfinite(self.q_bound):
            return None
        t, q = self.steps[-1], self.values[-1]
        if q >= self.q_bound:
            return t
        log_t = math.log(t) + math.log(self.q_bound / q) / s  # in logs: tiny orders overflow
        return int(math.exp(min(log_t, 34.0)))

    def update(self, step: int, metrics: Mapping[str, float]) -> Verdict:
        self.observe(step, metrics)
        s = self.order()
        self.sustained = self.sustained + 1 if s is not None and s >= self.min_order else 0
        self.predicted_step = self.project()
        due = self.predicted_step is not None and self.predicted_step <= self.horizon * step
        if self.sustained >= self.sustain and due:
            since = self.steps[max(0, len(self.steps) - self.sustained)]
            return self._flag(step, M.REASON_GROWTH, since, self.predicted_step)
        return self.verdict


class CompositePredictor(_Latching):
    """The calibrated default: NaN | Q-bound | (SEEM persistence AND |Q| rising) | growth projection.

    Args:
        q_bound: r_max / (1 - gamma) of the dataset (reward scale included).
        seem_threshold: SEEM above this counts as a positive probe.
        patience: consecutive positive probes.
        q_bound_factor: Q-bound multiplier for the hard check.
        growth_horizon: see :class:`GrowthPredictor`.
        grace_steps: no verdict from SEEM/growth before this step (NaN/Q-bound always count).
        confirm_order: growth order of |Q| (over the last doubling of steps) that confirms a
            SEEM streak; healthy critics learning from a near-zero start grow about linearly
            and then settle.
        growth_order: growth order the growth predictor alone needs (sustained).
        min_q_fraction: soft (SEEM/growth) verdicts only once |mean Q| >= this x q_bound: the
            growth order of a |Q| still near its zero initialisation is noise.
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
        growth_order: float = 2.0,
        use_growth: bool = True,
        min_q_fraction: float = 0.01,
    ) -> None:
        super().__init__()
        self.min_q = min_q_fraction * q_bound
        self.bound = QBoundPredictor(q_bound, q_bound_factor)
        self.seem = SeemPredictor(seem_threshold, patience)
        self.growth = GrowthPredictor(
            q_bound * q_bound_factor,
            min_order=growth_order,
            sustain=patience,
            horizon=growth_horizon,
        )
        self.grace_steps = grace_steps
        self.confirm_order = confirm_order
        self.use_growth = use_growth

    def update(self, step: int, metrics: Mapping[str, float]) -> Verdict:
        hard = self.bound.update(step, metrics)
        if hard.diverging:
            return self._flag(step, hard.reason or M.REASON_Q_BOUND, hard.since or step)
        self.seem.update(step, metrics)
        g = self.growth.update(step, metrics)
        q = metrics.get(M.Q_MEAN)
        if step < self.grace_steps or not _finite(q) or abs(q) < self.min_q:  # type: ignore[arg-type]
            return self.verdict  # growth orders of a |Q| still near its zero start are noise
        order = self.growth.order()
        if self.seem.persistent and order is not None and order >= self.confirm_order:
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
        growth_order=settings.growth_order,
    )
