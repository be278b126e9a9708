"""Offline RL algorithms (TD3+BC, IQL, CQL-SAC) behind one contract, :class:`Algorithm`.

Flow position: nets -> ``build_algorithm`` -> the loop calls ``update(batch)`` every step and
reads the returned metric tensors every K steps; SEEM probes ``critic.head_module(i)``.
"""

from __future__ import annotations

from typing import Any

import torch

from seem_ray.algos.base import Algorithm, OfflineAlgorithm
from seem_ray.algos.cqlsac import CQLSAC
from seem_ray.algos.iql import IQL
from seem_ray.algos.td3bc import TD3BC
from seem_ray.config import AlgoConfig, ConfigError, NetConfig

__all__ = ["CQLSAC", "IQL", "TD3BC", "Algorithm", "OfflineAlgorithm", "build_algorithm"]

_REGISTRY: dict[str, type[OfflineAlgorithm]] = {"td3bc": TD3BC, "iql": IQL, "cql": CQLSAC}


def build_algorithm(
    algo: AlgoConfig,
    critic: NetConfig,
    actor: NetConfig,
    obs_dim: int,
    act_dim: int,
    max_action: float,
    device: torch.device,
) -> Algorithm:
    """The algorithm named by ``algo.name``, its nets initialised from the global torch RNG.

    Args:
        algo: algorithm choice and hyper-parameters.
        critic: critic (and IQL value net) architecture.
        actor: actor architecture.
        obs_dim: observation features.
        act_dim: action features.
        max_action: actions lie in [-max_action, max_action].
        device: where nets, optimizer state and noise live.

    Returns:
        An object satisfying :class:`Algorithm`.
    """
    if algo.name not in _REGISTRY:
        raise ConfigError("algo.name", f"got {algo.name!r}; expected one of {', '.join(_REGISTRY)}")
    if not (max_action > 0 and obs_dim >= 1 and act_dim >= 1):
        raise ValueError(
            f"need obs_dim >= 1, act_dim >= 1, max_action > 0; got {obs_dim}, {act_dim}, {max_action}"
        )
    cls: Any = _REGISTRY[algo.name]
    return cls(algo, critic, actor, obs_dim, act_dim, max_action, device)
