"""SEEM, MLflow logging and the divergence stop for a d3rlpy ``fit(...)``.

d3rlpy (>= 2.x) calls ``callback(algo, epoch, total_step)`` after every update step; a
:class:`SeemCallback` probes the algorithm's first Q function at the shipped cadence
(``CriticMonitor.due``), logs SEEM and the probe's Q statistics to the active MLflow run, and
ends training on a diverging verdict by raising :class:`DivergenceStop` (d3rlpy's loop has no
other way out), which :func:`fit_with_seem` catches::

    checks, stopped = fit_with_seem(algo, dataset, n_steps=100_000)

d3rlpy is an optional peer (``pip install d3rlpy --no-deps``: its wheel pins gymnasium 1.0,
seem_ray runs gymnasium 1.4; see README "d3rlpy").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from seem_ray.data.batches import Transitions
from seem_ray.external import Check, CriticMonitor, Probe

__all__ = [
    "DivergenceStop",
    "SeemCallback",
    "d3rlpy_critic",
    "d3rlpy_policy",
    "fit_with_seem",
    "probe_from_d3rlpy",
    "to_d3rlpy_dataset",
]


class DivergenceStop(RuntimeError):
    """Raised from the callback to end ``fit``: the critic is predicted to diverge."""

    def __init__(self, check: Check) -> None:
        super().__init__(
            f"step {check.step}: critic diverging ({check.verdict.reason}); SEEM {check.seem:.3f}"
        )
        self.check = check


def _modules(algo: Any) -> Any:
    impl = getattr(algo, "impl", None)
    if impl is None:
        raise ValueError(
            "the d3rlpy algorithm is not built yet: call algo.build_with_dataset(dataset) "
            "or create the callback's monitor after fit has started"
        )
    return impl.modules


def _scale_obs(algo: Any, obs: torch.Tensor) -> torch.Tensor:
    scaler = getattr(algo.config, "observation_scaler", None)
    return scaler.transform(obs) if scaler is not None and scaler.built else obs


class _D3rlpyCritic(nn.Module):
    """critic(obs, act) -> Q [n] for d3rlpy's first continuous Q function (scalers applied)."""

    def __init__(self, algo: Any) -> None:
        super().__init__()
        q_funcs = getattr(_modules(algo), "q_funcs", None)
        if q_funcs is None or len(q_funcs) == 0:
            raise ValueError(f"{type(algo).__name__} has no continuous Q functions to probe")
        self.q_func = q_funcs[0]
        self._algo = algo

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        action_scaler = getattr(self._algo.config, "action_scaler", None)
        if action_scaler is not None and action_scaler.built:
            act = action_scaler.transform(act)
        return self.q_func(_scale_obs(self._algo, obs), act).q_value.reshape(-1)


def d3rlpy_critic(algo: Any) -> nn.Module:
    """The algorithm's first Q head as a seem_ray critic (the paper probes the first)."""
    return _D3rlpyCritic(algo)


def d3rlpy_policy(algo: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    """next_obs -> the policy's deterministic (squashed mean) action, in the data's units."""
    policy = _modules(algo).policy

    def act(next_obs: torch.Tensor) -> torch.Tensor:
        out = policy(_scale_obs(algo, next_obs)).squashed_mu
        action_scaler = getattr(algo.config, "action_scaler", None)
        if action_scaler is not None and action_scaler.built:
            out = action_scaler.reverse_transform(out)
        return out

    return act


def probe_from_d3rlpy(dataset: Any, *, size: int = 512, seed: int = 0) -> Probe:
    """A fixed probe from a d3rlpy ReplayBuffer/MDPDataset: (s, a, s') within episodes."""
    obs, act, nxt, rew = [], [], [], []
    for ep in dataset.episodes:
        o = np.asarray(ep.observations, dtype=np.float32)
        if o.ndim != 2:
            raise ValueError("only flat vector observations can be probed (got a tuple/image)")
        t = len(o) - 1
        if t < 1:
            continue
        obs.append(o[:t])
        nxt.append(o[1 : t + 1])
        act.append(np.asarray(ep.actions, dtype=np.float32)[:t])
        rew.append(np.asarray(ep.rewards, dtype=np.float64).reshape(-1))
    if not obs:
        raise ValueError("the dataset has no episode with two or more steps to probe")
    return Probe.from_arrays(
        np.concatenate(obs),
        np.concatenate(act),
        np.concatenate(nxt),
        rewards=np.concatenate(rew),
        size=size,
        seed=seed,
    )


class SeemCallback:
    """A d3rlpy ``fit(callback=...)``: SEEM + Q on the probe, MLflow metrics, stop on verdict.

    Args:
        probe: the fixed batch (see :func:`probe_from_d3rlpy`).
        stop: raise :class:`DivergenceStop` on a diverging verdict (False: only record it).
        log_to_mlflow: log each check to the active MLflow run, if there is one.
        monitor_kwargs: passed to :class:`CriticMonitor` (q_bound, stopper, cadence).
    """

    def __init__(
        self,
        probe: Probe,
        *,
        stop: bool = True,
        log_to_mlflow: bool = True,
        **monitor_kwargs: Any,
    ) -> None:
        self.probe, self.stop, self.log_to_mlflow = probe, stop, log_to_mlflow
        self.monitor_kwargs = monitor_kwargs
        self.monitor: CriticMonitor | None = None

    def _monitor(self, algo: Any) -> CriticMonitor:
        if self.monitor is None:  # the impl exists only once fit has built the algorithm
            self.monitor = CriticMonitor(
                d3rlpy_critic(algo),
                self.probe,
                float(algo.config.gamma),
                policy=d3rlpy_policy(algo),
                **self.monitor_kwargs,
            )
        return self.monitor

    @property
    def history(self) -> list[Check]:
        return [] if self.monitor is None else self.monitor.history

    def __call__(self, algo: Any, epoch: int, total_step: int) -> None:
        monitor = self._monitor(algo)
        if not monitor.due(total_step):
            return
        check = monitor.step(total_step)
        if self.log_to_mlflow:
            _log_check(check)
        if check.diverging and self.stop:
            raise DivergenceStop(check)


def _log_check(check: Check) -> None:
    import mlflow  # the edge: only when a run is there to log to

    if mlflow.active_run() is None:
        return
    metrics = {f"seem/{k}": float(v) for k, v in check.metrics.items() if k != "step"}
    metrics["seem/diverging"] = float(check.diverging)
    mlflow.log_metrics(metrics, step=check.step)


def fit_with_seem(
    algo: Any,
    dataset: Any,
    n_steps: int,
    *,
    callback: SeemCallback | None = None,
    **fit_kwargs: Any,
) -> tuple[list[Check], Check | None]:
    """``algo.fit`` with a :class:`SeemCallback`; returns the checks and the stopping one."""
    callback = callback or SeemCallback(probe_from_d3rlpy(dataset))
    fit_kwargs.setdefault("n_steps_per_epoch", min(n_steps, 10_000))
    try:
        algo.fit(dataset, n_steps=n_steps, callback=callback, **fit_kwargs)
    except DivergenceStop as stop:
        return callback.history, stop.check
    return callback.history, None


def to_d3rlpy_dataset(t: Transitions) -> Any:
    """seem_ray transitions (e.g. a local Minari dataset) as a d3rlpy ``MDPDataset``.

    Episode boundaries are the terminals, the timeouts, and every row whose s' is not the next
    row's s (d3rlpy stores episodes, seem_ray flat transitions).
    """
    import d3rlpy

    ends = t.terminals.astype(bool) | t.timeouts.astype(bool)
    breaks = ~np.all(t.next_observations[:-1] == t.observations[1:], axis=1)
    timeouts = (ends | np.append(breaks, True)) & ~t.terminals.astype(bool)
    return d3rlpy.dataset.MDPDataset(
        observations=t.observations,
        actions=t.actions,
        rewards=t.rewards,
        terminals=t.terminals.astype(np.float32),
        timeouts=timeouts.astype(np.float32),
    )
