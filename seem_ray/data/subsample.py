"""Subsampling: keep X% / N transitions of a dataset (the paper's small-data experiments).

Flow position: Minari dataset -> Transitions -> **subsample** -> normalize -> ReplaySampler.
Pure and deterministic: the same (data, arguments, seed) always keeps the same rows, so
trials that share `data.subsample_seed` train on identical data whatever their training seed.
"""

from __future__ import annotations

import numpy as np

from seem_ray.config import SUBSAMPLE_MODES, ConfigError
from seem_ray.data.batches import Transitions

__all__ = ["subsample", "subsample_index"]


def subsample_index(
    n: int,
    *,
    fraction: float = 1.0,
    max_transitions: int | None = None,
    mode: str = "random",
    seed: int = 0,
) -> np.ndarray:
    """Row indices (ascending) kept out of `n`: round(fraction * n) rows (at least 1),
    then at most `max_transitions`.

    Args:
        n: dataset size.
        fraction: 0 < fraction <= 1.
        max_transitions: optional cap (>= 1) applied after `fraction`.
        mode: 'random' (uniform without replacement, seeded) or 'first' (dataset order).
        seed: seed of the 'random' choice.

    Returns:
        int64 array of kept row indices, sorted.
    """
    if not 0.0 < fraction <= 1.0:
        raise ConfigError("data.fraction", f"got {fraction!r}; expected 0 < fraction <= 1")
    if max_transitions is not None and max_transitions < 1:
        raise ConfigError("data.max_transitions", f"got {max_transitions!r}; expected >= 1")
    if mode not in SUBSAMPLE_MODES:
        raise ConfigError(
            "data.subsample", f"got {mode!r}; expected one of {', '.join(SUBSAMPLE_MODES)}"
        )
    keep = max(1, int(round(fraction * n)))
    if max_transitions is not None:
        keep = min(keep, max_transitions)
    keep = min(keep, n)
    if keep == n:
        return np.arange(n, dtype=np.int64)
    if mode == "first":
        return np.arange(keep, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=keep, replace=False)).astype(np.int64)


def subsample(
    t: Transitions,
    *,
    fraction: float = 1.0,
    max_transitions: int | None = None,
    mode: str = "random",
    seed: int = 0,
) -> Transitions:
    """Keep a seeded subset of `t` (see :func:`subsample_index`); `t` itself is untouched.

    Rows keep their relative dataset order. With nothing to drop, `t` is returned as is.
    """
    index = subsample_index(
        len(t), fraction=fraction, max_transitions=max_transitions, mode=mode, seed=seed
    )
    if len(index) == len(t):
        return t
    return t.select(index)
