"""State normalisation with dataset statistics (TD3+BC's z-scoring of observations).

Flow position: Transitions -> subsample -> **normalize** -> ReplaySampler; the same
normaliser is saved in checkpoints and applied to raw observations at evaluation time, so
a policy trained on normalised states sees normalised states in the env too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from seem_ray.data.batches import DataError, Transitions

__all__ = ["StateNormalizer"]


@dataclass(frozen=True)
class StateNormalizer:
    """obs -> (obs - mean) / std, per dimension. Arrays are float32 [obs_dim]."""

    mean: np.ndarray
    std: np.ndarray

    def __post_init__(self) -> None:
        mean = np.asarray(self.mean, dtype=np.float32).reshape(-1)
        std = np.asarray(self.std, dtype=np.float32).reshape(-1)
        if mean.shape != std.shape:
            raise DataError(f"normalizer mean has {mean.size} dims but std has {std.size}")
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std)) and np.all(std > 0)):
            raise DataError("normalizer mean/std must be finite with std > 0")
        mean.setflags(write=False)
        std.setflags(write=False)
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    @property
    def dim(self) -> int:
        return int(self.mean.size)

    @staticmethod
    def from_transitions(t: Transitions, eps: float = 1e-3) -> StateNormalizer:
        """Mean and std (+ eps, so constant dims don't blow up) of the dataset's observations."""
        obs = t.observations.astype(np.float64)
        return StateNormalizer(mean=obs.mean(axis=0), std=obs.std(axis=0) + eps)

    @staticmethod
    def identity(dim: int) -> StateNormalizer:
        """A no-op normaliser (mean 0, std 1), for runs with normalize_states off."""
        return StateNormalizer(mean=np.zeros(dim, np.float32), std=np.ones(dim, np.float32))

    def apply_obs(self, obs: np.ndarray) -> np.ndarray:
        """Normalise observations [..., obs_dim] (one or a batch) -> float32."""
        obs = np.asarray(obs, dtype=np.float32)
        if obs.shape[-1:] != (self.dim,):
            raise DataError(
                f"observation has {obs.shape[-1:]} trailing dims; the normalizer expects {self.dim}"
            )
        return (obs - self.mean) / self.std

    def apply(self, t: Transitions) -> Transitions:
        """`t` with observations and next_observations normalised (other arrays shared)."""
        return Transitions(
            observations=self.apply_obs(t.observations),
            actions=t.actions,
            rewards=t.rewards,
            next_observations=self.apply_obs(t.next_observations),
            terminals=t.terminals,
            timeouts=t.timeouts,
        )

    def to_dict(self) -> dict[str, list[float]]:
        """Plain lists, for checkpoints and JSON."""
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @staticmethod
    def from_dict(data: dict[str, Any]) -> StateNormalizer:
        """Inverse of :meth:`to_dict`; a DataError if keys are missing."""
        try:
            return StateNormalizer(mean=np.asarray(data["mean"]), std=np.asarray(data["std"]))
        except (KeyError, TypeError):
            raise DataError(
                f"bad normalizer state {data!r}: expected {{'mean': [...], 'std': [...]}}"
            ) from None
