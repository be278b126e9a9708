"""Policy rollouts in gymnasium envs, on flattened observations: below both data and scoring.

Flow position: env spec + policy -> **batched episodes -> returns** -> generate (reference
scores of a new dataset) / evaluate (normalized score of a trained actor). It knows nothing
of datasets on disk, so generating a dataset and evaluating a policy share it without
importing each other.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from seem_ray.data.minari import flatten_observation

__all__ = ["Policy", "episode_returns", "make_env", "rollouts"]

Policy = Callable[[np.ndarray], np.ndarray]
"""Flat observations [B, obs_dim] (or one [obs_dim]) -> actions of the same leading shape."""


def make_env(env_id: str, **kwargs: Any) -> gym.Env:
    """`gym.make`, registering the gymnasium_robotics envs first for PointMaze ids."""
    if env_id.startswith("PointMaze"):
        import gymnasium_robotics

        gym.register_envs(gymnasium_robotics)
    return gym.make(env_id, **kwargs)


def _register_robotics(spec: gym.envs.registration.EnvSpec) -> None:
    """PointMaze lives in gymnasium_robotics, whose envs register only on request."""
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
    return rollouts(env_spec, policy, episodes=episodes, seed=seed, max_steps=max_steps)[0]


def rollouts(
    env_spec: gym.envs.registration.EnvSpec,
    policy: Policy,
    *,
    episodes: int,
    seed: int,
    max_steps: int | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Like :func:`episode_returns`, plus each episode's length (steps): (returns, lengths)."""
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
