"""SEEM and the divergence verdict for a critic trained outside seem_ray.

A user of another library (CORL's single-file scripts, a hand-written torch loop) keeps their
training loop and calls a :class:`CriticMonitor` every few steps::

    probe = Probe.from_arrays(obs, act, next_obs, rewards=rewards)   # a fixed batch of theirs
    monitor = CriticMonitor(critic, probe, gamma=0.99, policy=actor)
    for step in range(1, steps + 1):
        ...  # their update
        if monitor.due(step):
            check = monitor.step(step)
            if check.diverging:
                break

The critic is any ``torch.nn.Module`` called as ``critic(obs, act)`` returning Q of shape
[n] or [n, 1] (a twin critic returning a tuple is probed on its first head, as the paper
does). The verdict is the calibrated predictor the Tune stopper uses
(``divergence.build_predictor`` with ``StopperConfig`` defaults), so a user outside seem_ray
gets the same rule, with the same out-of-sample figures (docs/calibration.md).

No Ray, MLflow or Optuna here: this sits in the numerical core.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from seem_ray import metrics as M
from seem_ray.algos.base import eval_mode
from seem_ray.config import SeemConfig, StopperConfig
from seem_ray.divergence import Predictor, Verdict, build_predictor
from seem_ray.seem import compute_seem

__all__ = ["Check", "CriticMonitor", "FirstHead", "Probe"]

Policy = Callable[[torch.Tensor], torch.Tensor]


def _as_2d(name: str, arr: Any) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(arr, dtype=np.float32) if not torch.is_tensor(arr) else arr)
    t = t.detach().to(torch.float32)
    if t.ndim == 1:
        t = t.reshape(-1, 1)
    if t.ndim != 2:
        raise ValueError(f"probe {name} must be [n, d]; got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"probe {name} has NaN or inf entries; clean the batch before probing")
    return t


@dataclass(frozen=True)
class Probe:
    """A fixed batch of transitions SEEM is measured on (fixed, so successive values compare)."""

    obs: torch.Tensor
    act: torch.Tensor
    next_obs: torch.Tensor
    reward_bound: float | None = None
    """max |r| over the data the critic learns from, for the Q bound r_max / (1 - gamma)."""

    @classmethod
    def from_arrays(
        cls,
        obs: Any,
        act: Any,
        next_obs: Any,
        *,
        rewards: Any | None = None,
        size: int | None = 512,
        seed: int = 0,
    ) -> Probe:
        """A probe from numpy arrays or tensors; `size` rows drawn without replacement
        (None keeps all); `rewards` (all of the dataset's, ideally) set the Q bound."""
        o, a, o2 = _as_2d("obs", obs), _as_2d("act", act), _as_2d("next_obs", next_obs)
        n = o.shape[0]
        if n < 2 or a.shape[0] != n or o2.shape[0] != n:
            raise ValueError(
                f"probe needs >= 2 rows and matching obs/act/next_obs; got "
                f"{o.shape[0]}/{a.shape[0]}/{o2.shape[0]}"
            )
        if o2.shape[1] != o.shape[1]:
            raise ValueError(f"next_obs has {o2.shape[1]} columns; obs has {o.shape[1]}")
        if size is not None and size < n:
            if size < 2:
                raise ValueError(f"probe size must be >= 2; got {size}")
            rows = np.random.default_rng(seed).choice(n, size=size, replace=False)
            idx = torch.as_tensor(np.sort(rows))
            o, a, o2 = o[idx], a[idx], o2[idx]
        bound = None
        if rewards is not None:
            r = np.asarray(rewards, dtype=np.float64).reshape(-1)
            if r.size == 0 or not np.isfinite(r).all():
                raise ValueError("rewards must be a non-empty array of finite numbers")
            bound = float(np.abs(r).max())
        return cls(o, a, o2, bound)

    def __len__(self) -> int:
        return int(self.obs.shape[0])


class FirstHead(nn.Module):
    """A twin/ensemble critic seen through its first head: SEEM needs one Q per row."""

    def __init__(self, critic: nn.Module) -> None:
        super().__init__()
        self.critic = critic

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        n = obs.shape[0]
        q = self.critic(obs, act)
        if isinstance(q, (tuple, list)):  # twin critics returning (q1, q2)
            q = q[0]
        if q.ndim == 3:  # stacked ensembles: [heads, n, 1]
            q = q[0]
        if q.ndim == 2 and q.shape != (n, 1):
            if q.shape[0] == n:  # [n, heads]
                q = q[:, 0]
            elif q.shape[1] == n:  # [heads, n]
                q = q[0]
        if q.numel() != n:
            raise ValueError(f"critic returned shape {tuple(q.shape)} for {n} rows; expected [n]")
        return q.reshape(n)


@dataclass(frozen=True)
class Check:
    """One probe of a user's critic: the measurements and the predictor's verdict."""

    step: int
    seem: float
    q_mean: float
    q_abs_max: float
    weight_norm: float
    verdict: Verdict
    seconds: float
    metrics: Mapping[str, float] = field(default_factory=dict)
    """The record fed to the predictor, keyed as seem_ray's own reports (seem_ray.metrics)."""

    @property
    def diverging(self) -> bool:
        return self.verdict.diverging


class CriticMonitor:
    """SEEM + calibrated divergence verdict for a critic in someone else's training loop."""

    def __init__(
        self,
        critic: nn.Module,
        probe: Probe,
        gamma: float,
        policy: Policy | None = None,
        *,
        q_bound: float | None = None,
        stopper: StopperConfig | None = None,
        cadence: SeemConfig | None = None,
    ) -> None:
        """Args:
        critic: called as critic(obs, act); twin critics are probed on their first head.
        probe: the fixed batch; next actions are pi(next_obs) at each check.
        gamma: the discount the critic trains with.
        policy: next_obs -> next_act (the actor; deterministic or its mean). None means the
            probe's own actions stand in (a fitted-Q / SARSA-style evaluation).
        q_bound: |Q| no policy can exceed; default probe.reward_bound / (1 - gamma).
        stopper: predictor settings (default: the calibrated StopperConfig()).
        cadence: when `due(step)` is True (default: the shipped SeemConfig cadence).
        """
        if not 0.0 <= gamma < 1.0:
            raise ValueError(f"gamma must be in [0, 1); got {gamma}")
        if q_bound is None:
            if probe.reward_bound is None:
                raise ValueError(
                    "no Q bound: pass q_bound=..., or build the probe with rewards=... "
                    "(the bound is max |r| / (1 - gamma))"
                )
            q_bound = probe.reward_bound / (1.0 - gamma) if probe.reward_bound > 0 else math.inf
        if not q_bound > 0:
            raise ValueError(f"q_bound must be > 0; got {q_bound}")
        if policy is None and probe.act.shape[0] != probe.next_obs.shape[0]:
            raise ValueError("probe act/next_obs rows differ")
        self.critic = FirstHead(critic)
        self.probe, self.gamma, self.policy = probe, float(gamma), policy
        self.q_bound = float(q_bound)
        self.stopper = stopper or StopperConfig()
        self.cadence = cadence or SeemConfig()
        predictor = build_predictor(dataclasses.replace(self.stopper, kind="seem"), q_bound)
        assert predictor is not None
        self.predictor: Predictor = predictor
        self.history: list[Check] = []
        self._check_shapes()

    def _device(self) -> torch.device:
        p = next(iter(self.critic.parameters()), None)
        return p.device if p is not None else torch.device("cpu")

    def _check_shapes(self) -> None:
        with torch.no_grad():
            dev = self._device()
            try:
                q = self.critic(self.probe.obs[:2].to(dev), self.probe.act[:2].to(dev))
            except Exception as err:  # the user's module: say what we called it with
                raise ValueError(
                    f"critic(obs[2, {self.probe.obs.shape[1]}], act[2, {self.probe.act.shape[1]}])"
                    f" failed: {err}"
                ) from err
        if q.shape != (2,):
            raise ValueError(f"critic returned shape {tuple(q.shape)} for 2 rows; expected [2]")

    def due(self, step: int) -> bool:
        """Whether `step` is a probe step at the shipped cadence (dense early, then every)."""
        return self.cadence.probe_due(step)

    def _next_act(self, dev: torch.device) -> torch.Tensor:
        if self.policy is None:
            return self.probe.act.to(dev)
        with torch.no_grad():
            out = self.policy(self.probe.next_obs.to(dev))
        if isinstance(out, (tuple, list)):
            out = out[0]
        out = out.detach().reshape(len(self.probe), -1)
        if out.shape[1] != self.probe.act.shape[1]:
            raise ValueError(
                f"policy returned {out.shape[1]} action columns; the probe has "
                f"{self.probe.act.shape[1]}"
            )
        return out

    def step(self, step: int) -> Check:
        """Measure SEEM and Q on the probe now, feed the predictor, return the verdict."""
        if self.history and step <= self.history[-1].step:
            raise ValueError(f"step {step} is not after the last check ({self.history[-1].step})")
        dev = self._device()
        obs, act = self.probe.obs.to(dev), self.probe.act.to(dev)
        res = compute_seem(
            self.critic, obs, act, self.probe.next_obs.to(dev), self._next_act(dev), self.gamma
        )
        with torch.no_grad(), eval_mode(self.critic):
            q = self.critic(obs, act).double()
            sq = sum(float(p.detach().double().pow(2).sum()) for p in self.critic.parameters())
        record = {
            M.STEP: float(step),
            M.SEEM: res.seem,
            M.Q_MEAN: float(q.mean()),
            M.Q_ABS_MAX: float(q.abs().max()),
            M.Q_STD: float(q.std()),
            M.CRITIC_WEIGHT_NORM: math.sqrt(sq),
        }
        verdict = self.predictor.update(step, record)
        check = Check(
            step=step,
            seem=res.seem,
            q_mean=record[M.Q_MEAN],
            q_abs_max=record[M.Q_ABS_MAX],
            weight_norm=record[M.CRITIC_WEIGHT_NORM],
            verdict=verdict,
            seconds=res.seconds,
            metrics=record,
        )
        self.history.append(check)
        return check
