"""Policy evaluation: batched rollouts in the dataset's own env, and the normalized score.

Flow position: the end of a trial (and every ``train.eval_every`` steps):
trained actor -> **rollouts in the recovered env -> return, normalized score** -> tracking.

The env is whatever the Minari dataset says (``recover_environment(eval_env=True)``: the
evaluation env when the dataset names one, else the collecting env). Observations reach the
policy flattened exactly as in training (:func:`seem_ray.data.minari.flatten_observation`).

Scale of ``normalized_score``: D4RL's 0-100 scale, i.e. ``100 * minari.get_normalized_score``
= ``100 * (R - ref_min) / (ref_max - ref_min)`` (0 = random policy, 100 = reference expert).
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from seem_ray.data.batches import DataError
from seem_ray.data.minari import dataset_path, flatten_observation, open_dataset

__all__ = ["EvalResult", "episode_returns", "eval_env_spec", "evaluate_policy"]

log = logging.getLogger(__name__)

Policy = Callable[[np.ndarray], np.ndarray]


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


def _register_robotics(spec: gym.envs.registration.EnvSpec) -> None:
    if "gymnasium_robotics" in str(spec.entry_point):
        import gymnasium_robotics

        gym.register_envs(gymnasium_robotics)


def episode_returns(
    env_spec: gym.envs.registration.EnvSpec,
    policy: Policy,
    *,
    episodes: int,
    seed: int,
    max_steps: int | None = None,
) -> np.ndarray:
    """Run `episodes` episodes of `policy` at once in a vector env; return their returns.

    Episode i is reset with seed ``seed + i``, so results depend only on (seed, policy).

    Args:
        env_spec: the env to evaluate in (its own time limit applies).
        policy: flat observations [B, obs_dim] -> actions [B, act_dim].
        episodes: number of episodes (= vector env width).
        seed: base seed.
        max_steps: optional cap on steps per episode (below the env's own limit).

    Returns:
        undiscounted returns, float64 [episodes], in seed order.
    """
    return _rollouts(env_spec, policy, episodes=episodes, seed=seed, max_steps=max_steps)[0]


def _rollouts(
    env_spec: gym.envs.registration.EnvSpec,
    policy: Policy,
    *,
    episodes: int,
    seed: int,
    max_steps: int | None,
) -> tuple[np.ndarray, np.ndarray]:
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    if max_steps is not None and max_steps < 1:
        raise ValueError(f"max_steps must be >= 1 or None, got {max_steps}")
    _register_robotics(env_spec)
    envs = gym.vector.SyncVectorEnv(
        [functools.partial(gym.make, env_spec) for _ in range(episodes)]
    )
    try:
        space = envs.single_action_space
        assert isinstance(space, gym.spaces.Box)
        low, high = space.low, space.high
        obs, _ = envs.reset(seed=[seed + i for i in range(episodes)])
        returns = np.zeros(episodes)
        lengths = np.zeros(episodes, dtype=np.int64)
        active = np.ones(episodes, dtype=bool)
        while active.any():
            action = np.asarray(policy(flatten_observation(obs)), dtype=np.float32)
            if action.shape != (episodes, *space.shape):
                raise ValueError(
                    f"policy returned actions of shape {action.shape}; expected {(episodes, *space.shape)}"
                )
            if not np.all(np.isfinite(action)):
                raise ValueError("policy returned NaN/inf actions")
            obs, reward, term, trunc, _ = envs.step(np.clip(action, low, high))
            returns += np.where(active, reward, 0.0)
            lengths += active
            done = np.logical_or(term, trunc)
            if max_steps is not None:
                done |= lengths >= max_steps
            # A finished env auto-resets on the next step; its later rewards are ignored.
            active &= ~done
    finally:
        envs.close()
    return returns, lengths


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
    returns, lengths = _rollouts(spec, policy, episodes=episodes, seed=seed, max_steps=max_steps)
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
