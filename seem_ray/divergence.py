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

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from seem_ray import metrics as M

__all__ = [
    "CompositePredictor",
    "GrowthPredictor",
    "NanPredictor",
    "Predictor",
    "QBoundPredictor",
    "SeemPredictor",
    "Verdict",
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

    Keeps the last ``window`` probe values of |mean Q|. The trend is "growing" when they rise
    monotonically by at least ``min_ratio`` overall. The local log-log slope s of the last points
    projects the crossing step t_x = t * (bound/|Q|)^(1/s); the predictor flags when t_x falls within
    ``horizon`` times the current step.
    """

    def __init__(
        self, q_bound: float, *, window: int = 5, min_ratio: float = 2.0, horizon: float = 4.0
    ) -> None:
        super().__init__()
        if not q_bound > 0:
            raise ValueError(f"q_bound must be > 0, got {q_bound!r}")
        if window < 3:
            raise ValueError(f"window must be >= 3, got {window!r}")
        if not min_ratio > 1:
            raise ValueError(f"min_ratio must be > 1, got {min_ratio!r}")
        if not horizon > 1:
            raise ValueError(f"horizon must be > 1, got {horizon!r}")
        self.q_bound = q_bound
        self.window = window
        self.min_ratio = min_ratio
        self.horizon = horizon
        self.history: deque[tuple[int, float]] = deque(maxlen=window)
        self.predicted_step: int | None = None

    def observe(self, step: int, metrics: Mapping[str, float]) -> None:
        """Record |mean Q| of a record (records at or before the last step are ignored)."""
        q = metrics.get(M.Q_MEAN)
        if _finite(q) and step > 0 and (not self.history or step > self.history[-1][0]):
            self.history.append((step, abs(q)))  # type: ignore[arg-type]

    def growing(self, min_ratio: float | None = None) -> bool:
        """Monotone rise over the window by at least ``min_ratio``."""
        pts = list(self.history)
        if len(pts) < self.window:
            return False
        ratio = self.min_ratio if min_ratio is None else min_ratio
        rising = all(b[1] > a[1] for a, b in zip(pts, pts[1:], strict=False))
        return rising and pts[0][1] > 0 and pts[-1][1] >= ratio * pts[0][1]

    def project(self) -> int | None:
        """Projected step where |Q| reaches the bound from the local log-log slope, or None."""
        pts = list(self.history)
        if len(pts) < 3 or not math.isfinite(self.q_bound):
            return None
        (t0, q0), (t1, q1) = pts[-3], pts[-1]
        if q0 <= 0 or q1 <= q0 or t1 <= t0:
            return None
        slope = math.log(q1 / q0) / math.log(t1 / t0)
        if slope <= 0:
            return None
        if q1 >= self.q_bound:
            return t1
        return int(t1 * (self.q_bound / q1) ** (1.0 / slope))

    def update(self, step: int, metrics: Mapping[str, float]) -> Verdict:
        self.observe(step, metrics)
        self.predicted_step = self.project()
        if self.growing() and self.predicted_step is not None:
            if self.predicted_step <= self.horizon * step:
                return self._flag(step, M.REASON_GROWTH, self.history[0][0], self.predicted_step)
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
        confirm_ratio: |Q| rise over the growth window that confirms a SEEM streak.
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
        confirm_ratio: float = 1.3,
        use_growth: bool = True,
    ) -> None:
        super().__init__()
        self.bound = QBoundPredictor(q_bound, q_bound_factor)
        self.seem = SeemPredictor(seem_threshold, patience)
        self.growth = GrowthPredictor(q_bound * q_bound_factor, window=max(3, patience + 1), horizon=growth_horizon)
        self.grace_steps = grace_steps
        self.confirm_ratio = confirm_ratio
        self.use_growth = use_growth

    def update(self, step: int, metrics: Mapping[str, float]) -> Verdict:
        hard = self.bound.update(step, metrics)
        if hard.diverging:
            return self._flag(step, hard.reason or M.REASON_Q_BOUND, hard.since or step)
        self.seem.update(step, metrics)
        self.growth.observe(step, metrics)
        predicted = self.growth.project()
        if step < self.grace_steps:
            return self.verdict
        if self.seem.persistent and self.growth.growing(self.confirm_ratio):
            return self._flag(step, M.REASON_SEEM, self.seem.streak_start or step, predicted)
        if self.use_growth:
            g = self.growth.update(step, {})  # history already observed
            if g.diverging:
                return self._flag(step, M.REASON_GROWTH, g.since or step, g.predicted_step)
        return self.verdict


def default_predictor(q_bound: float) -> CompositePredictor:
    """A fresh calibrated predictor for one trial (defaults from docs/calibration.md)."""
    return CompositePredictor(q_bound)


def build_predictor(kind: str, q_bound: float, **kwargs: float) -> Predictor | None:
    """Predictor by stopper kind: 'seem' (composite), 'q_bound' (baseline) or 'none' (None)."""
    if kind == "none":
        return None
    if kind == "q_bound":
        return QBoundPredictor(q_bound, float(kwargs.get("q_bound_factor", 1.0)))
    if kind == "seem":
        return CompositePredictor(
            q_bound,
            seem_threshold=float(kwargs.get("seem_threshold", 0.05)),
            patience=int(kwargs.get("patience", 3)),
            q_bound_factor=float(kwargs.get("q_bound_factor", 1.0)),
            growth_horizon=float(kwargs.get("growth_horizon", 4.0)),
            grace_steps=int(kwargs.get("grace_steps", 0)),
        )
    raise ValueError(f"unknown predictor kind {kind!r}; expected seem, q_bound or none")
