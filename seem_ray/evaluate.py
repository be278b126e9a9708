"""Policy evaluation: batched rollouts in the dataset's own env, and the normalized score.

Flow position: the end of a trial (and every ``train.eval_every`` steps):
trained actor -> **rollouts in the recovered env -> return, normalized score** -> tracking.

The env is whatever the Minari dataset says (``recover_environment(eval_env=True)``: the
evaluation env when the dataset names one, else the collecting env). Observations reach the
policy flattened exactly as in training (:func:`seem_ray.data.minari.flatten_observation`).
The rollouts themselves live in :mod:`seem_ray.data.rollouts`, which dataset generation uses
too; this module adds only what scoring needs (the dataset's env and reference scores).

Scale of ``normalized_score``: D4RL's 0-100 scale, i.e. ``100 * minari.get_normalized_score``
= ``100 * (R - ref_min) / (ref_max - ref_min)`` (0 = random policy, 100 = reference expert).
"""

from __future__ import annotations

import functools
import logging
import warnings
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from seem_ray.data.batches import DataError
from seem_ray.data.minari import dataset_path, open_dataset
from seem_ray.data.rollouts import Policy, episode_returns, rollouts

__all__ = ["EvalResult", "episode_returns", "eval_env_spec", "evaluate_policy"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalResult:
    """Outcome of `episodes` evaluation episodes."""

    return_mean: float
    return_std: float
    normalized_score: float | None
    """Mean return on D4RL's 0-100 scale (100 * minari.get_normalized_score); None without refs."""
    episodes: int
    returns: tuple[float, ...]
    """Per-episode undiscounted returns, in seed order."""
    lengths: tuple[int, ...]
    """Per-episode lengths (steps)."""


@functools.lru_cache(maxsize=32)
def _cached_spec(key: tuple[str, str, float]) -> tuple[gym.envs.registration.EnvSpec, Any]:
    dataset = open_dataset(key[0])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            env = dataset.recover_environment(eval_env=True)
    except ValueError as err:
        raise DataError(
            f"dataset {key[0]!r} cannot recover an environment for evaluation: {err}"
        ) from None
    spec = env.spec
    env.close()
    return spec, dataset


def eval_env_spec(dataset_id: str) -> gym.envs.registration.EnvSpec:
    """The evaluation env's spec of a dataset (cached per id and dataset version on disk)."""
    return _spec_and_dataset(dataset_id)[0]


def _spec_and_dataset(dataset_id: str) -> tuple[gym.envs.registration.EnvSpec, Any]:
    meta = dataset_path(dataset_id) / "data" / "metadata.json"
    mtime = meta.stat().st_mtime if meta.exists() else -1.0
    return _cached_spec((dataset_id, str(dataset_path(dataset_id)), mtime))


def evaluate_policy(
    dataset_id: str,
    policy: Policy,
    *,
    episodes: int,
    seed: int,
    max_steps: int | None = None,
) -> EvalResult:
    """Evaluate `policy` in the env of `dataset_id`; deterministic given (seed, policy).

    Args:
        dataset_id: Minari id whose recovered (evaluation) env is used.
        policy: flat raw observations [B, obs_dim] -> actions [B, act_dim]; it must apply any
            state normalisation itself. Actions are clipped to the action space.
        episodes: episodes, all run at once in one SyncVectorEnv.
        seed: episode i resets with seed + i.
        max_steps: optional per-episode step cap.

    Returns:
        EvalResult with mean/std return and the normalized score (0-100 scale) when the
        dataset has reference scores.
    """
    import minari

    spec, dataset = _spec_and_dataset(dataset_id)
    returns, lengths = rollouts(spec, policy, episodes=episodes, seed=seed, max_steps=max_steps)
    score: float | None = None
    meta = dataset.storage.metadata
    if meta.get("ref_min_score") is not None and meta.get("ref_max_score") is not None:
        score = float(100.0 * minari.get_normalized_score(dataset, np.float64(returns.mean())))
    result = EvalResult(
        return_mean=float(returns.mean()),
        return_std=float(returns.std()),
        normalized_score=score,
        episodes=episodes,
        returns=tuple(float(r) for r in returns),
        lengths=tuple(int(n) for n in lengths),
    )
    log.info(
        "eval %s: return %.2f +- %.2f over %d episodes, normalized %s",
        dataset_id,
        result.return_mean,
        result.return_std,
        episodes,
        "n/a" if score is None else f"{score:.1f}",
    )
    return result
