"""The framework-free training loop: batches -> update -> (every K steps) probe, SEEM, report.

Flow position: prepared data -> **loop** -> report callback. The same loop runs in a unit test,
in ``seem-ray train`` (seem_ray.runner) and inside every Ray Train worker (seem_ray.train): only
the callback and the DDP wrapping differ. No Ray, MLflow or Optuna here.

Between reports nothing leaves the device: update metrics are summed as tensors and read once
per ``train.log_every`` steps, so the step itself never waits on a host sync.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from seem_ray import metrics as M
from seem_ray.algos import build_algorithm
from seem_ray.algos.base import eval_mode
from seem_ray.config import RunConfig, to_dict
from seem_ray.data.batches import Batch, ReplaySampler, Transitions
from seem_ray.data.minari import DatasetInfo, load_transitions, q_bound
from seem_ray.data.normalize import StateNormalizer
from seem_ray.data.subsample import subsample
from seem_ray.seem import compute_seem, probe_critic

__all__ = ["PreparedData", "Report", "TrainingRun", "make_probe_index", "prepare_data"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreparedData:
    """Training-ready data of one run: subsampled, state-normalised, reward-scaled."""

    transitions: Transitions
    info: DatasetInfo
    normalizer: StateNormalizer
    q_bound: float


def prepare_data(cfg: RunConfig) -> PreparedData:
    """Load the dataset, subsample it, normalise states, scale rewards; compute the Q bound."""
    raw, info = load_transitions(cfg.data.dataset)
    kept = subsample(
        raw,
        fraction=cfg.data.fraction,
        max_transitions=cfg.data.max_transitions,
        mode=cfg.data.subsample,
        seed=cfg.data.subsample_seed,
    )
    normalizer = (
        StateNormalizer.from_transitions(kept)
        if cfg.data.normalize_states
        else StateNormalizer.identity(kept.obs_dim)
    )
    data = normalizer.apply(kept)
    if cfg.data.reward_scale != 1.0:
        data = Transitions(
            observations=data.observations,
            actions=data.actions,
            rewards=(data.rewards * cfg.data.reward_scale).astype(np.float32),
            next_observations=data.next_observations,
            terminals=data.terminals,
            timeouts=data.timeouts,
        )
    bound = q_bound(info, cfg.algo.gamma, cfg.data.reward_scale)
    return PreparedData(transitions=data, info=info, normalizer=normalizer, q_bound=bound)


def make_probe_index(n_data: int, size: int, seed: int) -> np.ndarray:
    """The fixed SEEM probe: `size` rows drawn once, uniformly with replacement (paper protocol)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, n_data, size=size)


@dataclass(frozen=True)
class Report:
    """What the loop hands its callback every ``log_every`` steps."""

    step: int
    metrics: dict[str, float]
    checkpoint_due: bool
    final: bool


ReportFn = Callable[["TrainingRun", Report], bool]
"""Callback: gets the run and the report, returns True to stop training now."""


class TrainingRun:
    """One run's state: algorithm, sampler, fixed probe, step counter.

    Args:
        cfg: the validated run config.
        data: prepared data (see :func:`prepare_data`).
        device: training device.
        rank: this worker's rank (0 = chief: probes SEEM and evaluates).
        world_size: number of data-parallel workers; each samples its own stream.
    """

    def __init__(
        self,
        cfg: RunConfig,
        data: PreparedData,
        device: torch.device,
        *,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.cfg = cfg
        self.data = data
        self.device = device
        self.rank = rank
        self.world_size = world_size
        self.is_chief = rank == 0
        torch.manual_seed(cfg.train.seed)  # same init on every worker (DDP also broadcasts it)
        t = data.transitions
        self.algo = build_algorithm(
            cfg.algo, cfg.critic, cfg.actor, t.obs_dim, t.act_dim, data.info.max_action, device
        )
        # Independent stream per worker: every worker sees the whole dataset (small offline
        # datasets make sharding an accuracy cost, not a memory win), seeded apart by rank.
        self.sampler = ReplaySampler(
            t, cfg.algo.batch_size, device, seed=cfg.train.seed * 100_003 + rank
        )
        self.probe_index = make_probe_index(
            len(t), min(cfg.seem.probe_size, max(len(t), 2)), cfg.train.seed
        )
        self.probe = Batch.from_transitions(t.select(self.probe_index), device)
        self.step = 0
        self.seem_seconds = 0.0
        self.train_seconds = 0.0
        # bf16 autocast covers the training updates only; SEEM (fp32 forward, fp64 Gram), the
        # probe Q statistics and evaluation stay in full precision.
        self._precision: Callable[[], AbstractContextManager[Any]] = (
            (lambda: torch.autocast(device.type, dtype=torch.bfloat16))
            if cfg.train.bf16
            else contextlib.nullcontext
        )

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        return {
            "algo": self.algo.state_dict(),
            "sampler_rng": self.sampler.get_state(),
            "step": self.step,
            "probe_index": torch.as_tensor(self.probe_index),
            "normalizer": self.data.normalizer.to_dict(),
            "torch_rng": torch.get_rng_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.algo.load_state_dict(state["algo"])
        self.sampler.set_state(state["sampler_rng"])
        self.step = int(state["step"])
        self.probe_index = state["probe_index"].numpy()
        self.probe = Batch.from_transitions(
            self.data.transitions.select(self.probe_index), self.device
        )
        torch.set_rng_state(state["torch_rng"])

    def fingerprint_parts(self) -> dict[str, Any]:
        """Config parts a checkpoint must match (everything but the step budget, cadences and
        ``algo.compile``, which changes how the same maths runs, not what it computes)."""
        d = to_dict(self.cfg)
        d["algo"].pop("compile", None)
        return {k: d[k] for k in ("data", "algo", "critic", "actor")} | {
            "seed": self.cfg.train.seed
        }

    # ---------------------------------------------------------------- measurements
    @torch.no_grad()
    def probe_q_metrics(self) -> dict[str, float]:
        """Q statistics of the probed head on the fixed probe batch, and weight norms."""
        with eval_mode(self.algo.critic):  # no BN-stat updates, power steps or dropout on the probe
            q = self.algo.critic(self.probe.obs, self.probe.act)[self.cfg.seem.head].double()
        out = {
            M.Q_MEAN: float(q.mean()),
            M.Q_MAX: float(q.max()),
            M.Q_ABS_MAX: float(q.abs().max()),
            M.Q_STD: float(q.std()) if q.numel() > 1 else 0.0,
        }
        norms = [float(n) for n in self.algo.critic.layer_weight_norms()]
        for i, n in enumerate(norms):
            out[f"{M.WEIGHT_NORM_LAYER_PREFIX}{i}"] = n
        out[M.CRITIC_WEIGHT_NORM] = math.sqrt(sum(n * n for n in norms))
        return out

    def seem_metrics(self) -> dict[str, float]:
        """SEEM of the probed head on the fixed probe (X* actions from the online actor)."""
        started = time.perf_counter()
        critic = probe_critic(self.algo.critic, self.cfg.seem.head)
        with torch.no_grad():
            next_act = self.algo.next_actions(self.probe.next_obs)
        result = compute_seem(
            critic,
            self.probe.obs,
            self.probe.act,
            self.probe.next_obs,
            next_act,
            gamma=self.cfg.algo.gamma,
            done=self.probe.done,
            mask_terminals=self.cfg.seem.mask_terminals,
            eig=self.cfg.seem.eig,
        )
        self.seem_seconds += time.perf_counter() - started
        return {
            M.SEEM: float(result.seem),
            M.SEEM_MAX_EIG: float(result.max_eig),
            M.SEEM_FROB: float(result.frob),
            M.SEEM_SECONDS: float(result.seconds),
        }

    def evaluate(self) -> dict[str, float]:
        """Policy rollouts in the dataset's environment (chief only)."""
        from seem_ray.evaluate import evaluate_policy  # gymnasium import is slow: only when used

        normalizer = self.data.normalizer

        def policy(obs: np.ndarray) -> np.ndarray:
            x = torch.as_tensor(normalizer.apply_obs(obs), dtype=torch.float32, device=self.device)
            return self.algo.act(x).cpu().numpy()

        result = evaluate_policy(
            self.cfg.data.dataset,
            policy,
            episodes=self.cfg.train.eval_episodes,
            seed=self.cfg.train.seed + 10_000,
        )
        out = {M.RETURN_MEAN: float(result.return_mean)}
        if result.normalized_score is not None:
            out[M.NORMALIZED_SCORE] = float(result.normalized_score)
        return out

    # ---------------------------------------------------------------- the loop
    def _in_early_phase(self, step: int) -> bool:
        """A dense early report + SEEM probe is due (``SeemConfig.dense_due``: the startup and
        early phases): fast divergers cross the Q bound within the first few hundred steps,
        before the first regular probe."""
        return self.cfg.seem.dense_due(step)

    def _due(self, every: int, *, regular: bool, final: bool) -> bool:
        """A cadence of ``every`` steps (0 = only at the end) falls on this report; cadences
        count in regular reports only, so the dense early phase adds no checkpoints or evals."""
        log_every = self.cfg.train.log_every
        return regular and (final or bool(every and self.step % every < log_every))

    def run(self, report: ReportFn) -> int:
        """Train until ``train.steps`` (or until ``report`` returns True); returns the last step."""
        tc, sc = self.cfg.train, self.cfg.seem
        sums: dict[str, torch.Tensor] = {}
        count = 0
        window_start = time.perf_counter()
        window_steps = 0
        while self.step < tc.steps:
            started = time.perf_counter()
            with self._precision():
                out = self.algo.update(self.sampler.sample())
            for key, value in out.items():
                sums[key] = sums[key] + value if key in sums else value.clone()
            count += 1
            window_steps += 1
            self.step += 1
            self.train_seconds += time.perf_counter() - started
            final = self.step >= tc.steps
            regular = final or self.step % tc.log_every == 0
            early = self._in_early_phase(self.step)
            if not (regular or early):
                continue
            metrics = {
                key: float(total) / count for key, total in sums.items()
            }  # the one host sync
            elapsed = time.perf_counter() - window_start
            metrics[M.STEPS_PER_S] = window_steps / elapsed if elapsed > 0 else 0.0
            metrics[M.STEP] = float(self.step)
            due = functools.partial(self._due, regular=regular, final=final)
            if self.is_chief:
                metrics.update(self.probe_q_metrics())
                if sc.enabled and (early or due(sc.every)):
                    metrics.update(self.seem_metrics())
                if tc.eval_episodes > 0 and due(tc.eval_every):
                    metrics.update(self.evaluate())
            checkpoint_due = due(tc.checkpoint_every)
            stop = report(self, Report(self.step, metrics, checkpoint_due, final))
            sums, count = {}, 0
            window_start, window_steps = time.perf_counter(), 0
            if stop:
                break
        return self.step
