"""Alternated timing: the one loop the speed benchmarks share.

Every side runs its warm-up first (untimed), then all sides take turns in chunks of ``chunk``
steps until each has run ``steps``, so load from other processes on this noisy machine hits all
sides alike and the ratios between them stay meaningful.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

Run = Callable[[int], None]
"""run(n): n training steps of one side."""


def time_alternately(
    sides: Mapping[str, Run],
    *,
    warmup: int,
    steps: int,
    chunk: int,
    on_chunk: Callable[[int], None] | None = None,
) -> tuple[dict[str, float], dict[str, float]]:
    """Warm up each side, then time them in turns; returns (warm-up seconds, steps per second).

    ``on_chunk(done)`` is called after each round of chunks (progress output).
    """
    warmup_s = {}
    for name, run in sides.items():
        t0 = time.perf_counter()
        run(warmup)
        warmup_s[name] = time.perf_counter() - t0
    seconds = dict.fromkeys(sides, 0.0)
    done = 0
    while done < steps:
        n = min(chunk, steps - done)
        for name, run in sides.items():
            t0 = time.perf_counter()
            run(n)
            seconds[name] += time.perf_counter() - t0
        done += n
        if on_chunk is not None:
            on_chunk(done)
    return warmup_s, {name: steps / s for name, s in seconds.items()}
