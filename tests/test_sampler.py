"""ReplaySampler: batches are whole dataset rows, reproducible by seed, sharded by stride."""

from __future__ import annotations

import numpy as np
import pytest

from seem_ray.data.batches import Batch, DataError, ReplaySampler, Transitions

OBS, ACT = 3, 2


def numbered(n: int) -> Transitions:
    """Row i holds values derived from i in every field, so a row identifies itself."""
    i = np.arange(n, dtype=np.float32)
    return Transitions(
        observations=np.stack([i, i + 0.25, i + 0.5], 1),
        actions=np.stack([-i, -i - 0.5], 1),
        rewards=i * 10,
        next_observations=np.stack([i + 1, i + 1.25, i + 1.5], 1),
        terminals=(i % 7 == 0).astype(np.float32),
        timeouts=np.zeros(n, dtype=np.float32),
    )


def row_ids(batch: Batch) -> np.ndarray:
    return batch.obs[:, 0].numpy().astype(int)


def test_every_field_of_a_sampled_row_comes_from_the_same_transition() -> None:
    data = numbered(50)
    batch = ReplaySampler(data, 64, seed=3).sample()
    ids = row_ids(batch)
    assert batch.obs.shape == (64, OBS) and batch.act.shape == (64, ACT)
    assert batch.rew.shape == batch.done.shape == (64,)
    np.testing.assert_array_equal(batch.obs.numpy(), data.observations[ids])
    np.testing.assert_array_equal(batch.act.numpy(), data.actions[ids])
    np.testing.assert_array_equal(batch.rew.numpy(), data.rewards[ids])
    np.testing.assert_array_equal(batch.next_obs.numpy(), data.next_observations[ids])
    np.testing.assert_array_equal(batch.done.numpy(), data.terminals[ids])


def test_same_seed_same_batches_and_the_state_replays_them() -> None:
    data = numbered(200)
    a, b = ReplaySampler(data, 16, seed=5), ReplaySampler(data, 16, seed=5)
    other = ReplaySampler(data, 16, seed=6)
    first = [row_ids(a.sample()) for _ in range(3)]
    assert all(np.array_equal(x, row_ids(b.sample())) for x in first)
    assert not np.array_equal(first[0], row_ids(other.sample()))
    state = a.get_state()
    nxt = row_ids(a.sample())
    a.set_state(state)
    np.testing.assert_array_equal(row_ids(a.sample()), nxt)


def test_batches_cover_the_dataset_uniformly() -> None:
    sampler = ReplaySampler(numbered(10), 1000, seed=0)
    counts = np.bincount(
        np.concatenate([row_ids(sampler.sample()) for _ in range(20)]), minlength=10
    )
    assert counts.min() > 1600 and counts.max() < 2400  # 2000 expected per row


def test_a_shard_samples_only_its_stride_of_rows() -> None:
    data = numbered(30)
    rank, world = 1, 4
    sampler = ReplaySampler(data, 256, seed=0, shard=(rank, world))
    assert len(sampler) == len(range(rank, 30, world))
    ids = np.concatenate([row_ids(sampler.sample()) for _ in range(4)])
    assert set(ids) == set(range(rank, 30, world))


def test_an_empty_shard_is_a_clear_error() -> None:
    with pytest.raises(DataError, match="shard 3/4 is empty: the dataset has only 2"):
        ReplaySampler(numbered(2), 4, shard=(3, 4))
