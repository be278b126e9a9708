"""Random transition batches for the algorithm tests (tiny sizes; seeded, so reproducible)."""

from __future__ import annotations

import torch

from seem_ray.data.batches import Batch

OBS, ACT = 5, 3


def random_batch(seed: int = 0, b: int = 16) -> Batch:
    """b transitions with Gaussian observations and rewards, actions in [-1, 1], 25% terminals."""
    g = torch.Generator().manual_seed(seed)
    return Batch(
        obs=torch.randn(b, OBS, generator=g),
        act=torch.rand(b, ACT, generator=g) * 2 - 1,
        rew=torch.randn(b, generator=g),
        next_obs=torch.randn(b, OBS, generator=g),
        done=(torch.rand(b, generator=g) < 0.25).float(),
    )
