"""Loading Minari datasets, flattening, validation errors, subsampling and normalisation.

Datasets here are small synthetic Minari datasets written straight from episode buffers
(Pendulum-v1 spaces), under a per-test MINARI_DATASETS_PATH so nothing touches user data.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from seem_ray.config import SUBSAMPLE_MODES, ConfigError
from seem_ray.data.batches import DataError, Transitions
from seem_ray.data.minari import (
    DatasetInfo,
    dataset_summary,
    flat_obs_dim,
    flatten_observation,
    list_local_datasets,
    load_transitions,
    q_bound,
)
from seem_ray.data.normalize import StateNormalizer
from seem_ray.data.subsample import subsample, subsample_index

# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "datasets"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(path))
    return path


def _episodes(
    lengths: list[int], obs_dim: int = 3, act_dim: int = 1, seed: int = 0, bound: float = 2.0
) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    eps = []
    for i, n in enumerate(lengths):
        term = np.zeros(n, dtype=bool)
        trunc = np.zeros(n, dtype=bool)
        if i % 2 == 0:
            term[-1] = True
        else:
            trunc[-1] = True
        eps.append(
            {
                "observations": rng.normal(size=(n + 1, obs_dim)).astype(np.float32),
                "actions": rng.uniform(-bound, bound, size=(n, act_dim)).astype(np.float32),
                "rewards": rng.normal(size=n),
                "terminations": term,
                "truncations": trunc,
            }
        )
    return eps


def _write(
    dataset_id: str,
    eps: list[dict[str, np.ndarray]],
    *,
    env: str | None = "Pendulum-v1",
    obs_space: gym.Space | None = None,
    act_space: gym.Space | None = None,
    refs: tuple[float, float] | None = (-1000.0, 0.0),
) -> None:
    import minari
    from minari.data_collector import EpisodeBuffer

    buffers = [
        EpisodeBuffer(
            id=i,
            observations=e["observations"],
            actions=e["actions"],
            rewards=list(e["rewards"]),
            terminations=list(e["terminations"]),
            truncations=list(e["truncations"]),
        )
        for i, e in enumerate(eps)
    ]
    kwargs = {} if refs is None else {"ref_min_score": refs[0], "ref_max_score": refs[1]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        minari.create_dataset_from_buffers(
            dataset_id,
            buffers,
            env=env,
            observation_space=obs_space,
            action_space=act_space,
            data_format="arrow",
            **kwargs,
        )


def _naive(eps: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Independent flattening: one transition at a time."""
    rows: dict[str, list] = {k: [] for k in ("o", "a", "r", "n", "t", "u")}
    for e in eps:
        for t in range(len(e["rewards"])):
            rows["o"].append(e["observations"][t])
            rows["n"].append(e["observations"][t + 1])
            rows["a"].append(e["actions"][t])
            rows["r"].append(e["rewards"][t])
            rows["t"].append(float(e["terminations"][t]))
            rows["u"].append(float(e["truncations"][t]))
    return {k: np.array(v) for k, v in rows.items()}


def _transitions(n: int, obs_dim: int = 4, seed: int = 0) -> Transitions:
    rng = np.random.default_rng(seed)
    return Transitions(
        observations=rng.normal(size=(n, obs_dim)).astype(np.float32),
        actions=rng.uniform(-1, 1, size=(n, 2)).astype(np.float32),
        rewards=np.arange(n, dtype=np.float32),  # row id, to see which rows were kept
        next_observations=rng.normal(size=(n, obs_dim)).astype(np.float32),
        terminals=np.zeros(n, np.float32),
        timeouts=np.zeros(n, np.float32),
    )


# --------------------------------------------------------------------------------------------
# flattening
# --------------------------------------------------------------------------------------------


def test_flatten_dict_order_is_observation_achieved_desired() -> None:
    obs = {
        "desired_goal": np.array([7.0, 8.0]),
        "observation": np.array([1.0, 2.0, 3.0, 4.0]),
        "achieved_goal": np.array([5.0, 6.0]),
    }
    np.testing.assert_array_equal(flatten_observation(obs), np.arange(1, 9, dtype=np.float32))


def test_flatten_batched_and_plain() -> None:
    batch = {
        "achieved_goal": np.full((3, 2), 2.0),
        "observation": np.full((3, 4), 1.0),
        "desired_goal": np.full((3, 2), 3.0),
        "extra": np.full((3, 1), 4.0),
    }
    flat = flatten_observation(batch)
    assert flat.shape == (3, 9) and flat.dtype == np.float32
    np.testing.assert_array_equal(flat[1], [1, 1, 1, 1, 2, 2, 3, 3, 4])
    plain = np.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(flatten_observation(plain), plain)


def test_flat_obs_dim_matches_flatten() -> None:
    space = gym.spaces.Dict(
        {
            "observation": gym.spaces.Box(-1, 1, (4,)),
            "achieved_goal": gym.spaces.Box(-1, 1, (2,)),
            "desired_goal": gym.spaces.Box(-1, 1, (2,)),
        }
    )
    assert flat_obs_dim(space) == flatten_observation(space.sample()).shape[-1] == 8


# --------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------


def test_load_matches_naive_flattening(root: Path) -> None:
    eps = _episodes([5, 7, 3])
    _write("test/pend-v0", eps)
    data, info = load_transitions("test/pend-v0")
    ref = _naive(eps)
    np.testing.assert_allclose(data.observations, ref["o"], rtol=1e-6)
    np.testing.assert_allclose(data.next_observations, ref["n"], rtol=1e-6)
    np.testing.assert_allclose(data.actions, ref["a"], rtol=1e-6)
    np.testing.assert_allclose(data.rewards, ref["r"], rtol=1e-6)
    np.testing.assert_array_equal(data.terminals, ref["t"])
    np.testing.assert_array_equal(data.timeouts, ref["u"])
    assert info == DatasetInfo(
        dataset_id="test/pend-v0",
        obs_dim=3,
        act_dim=1,
        max_action=2.0,
        reward_min=float(data.rewards.min()),
        reward_max=float(data.rewards.max()),
        n_episodes=3,
        n_transitions=15,
        ref_min_score=-1000.0,
        ref_max_score=0.0,
        env_id="Pendulum-v1",
        can_recover_env=True,
    )
    assert math.isclose(info.reward_max, float(ref["r"].max()), rel_tol=1e-6)


def test_load_dict_observations_flattened_in_order(root: Path) -> None:
    rng = np.random.default_rng(1)
    space = gym.spaces.Dict(
        {
            "achieved_goal": gym.spaces.Box(-np.inf, np.inf, (2,), np.float64),
            "desired_goal": gym.spaces.Box(-np.inf, np.inf, (2,), np.float64),
            "observation": gym.spaces.Box(-np.inf, np.inf, (4,), np.float64),
        }
    )
    n = 6
    obs = {k: rng.normal(size=(n + 1, s.shape[0])) for k, s in space.spaces.items()}
    ep = _episodes([n], act_dim=2, bound=1.0)[0]
    ep["observations"] = obs
    _write(
        "test/goal-v0",
        [ep],
        env=None,
        obs_space=space,
        act_space=gym.spaces.Box(-1, 1, (2,), np.float32),
        refs=None,
    )
    data, info = load_transitions("test/goal-v0")
    expected = np.concatenate([obs["observation"], obs["achieved_goal"], obs["desired_goal"]], 1)
    np.testing.assert_allclose(data.observations, expected[:-1], rtol=1e-6)
    np.testing.assert_allclose(data.next_observations, expected[1:], rtol=1e-6)
    assert info.obs_dim == 8 and info.env_id is None and not info.can_recover_env
    assert info.ref_min_score is None and info.ref_max_score is None


def test_list_and_summary(root: Path) -> None:
    _write("test/a-v0", _episodes([4, 4]))
    _write("test/b-v1", _episodes([2]))
    assert list_local_datasets() == ["test/a-v0", "test/b-v1"]
    s = dataset_summary("test/a-v0")
    assert (s["episodes"], s["transitions"], s["obs_dim"], s["act_dim"]) == (2, 8, 3, 1)
    assert (s["ref_min_score"], s["ref_max_score"]) == (-1000.0, 0.0)
    assert s["size_bytes"] > 0 and s["env_id"] == "Pendulum-v1"


def test_q_bound_matches_formula() -> None:
    info = DatasetInfo("x/y-v0", 3, 1, 1.0, -5.0, 2.0, 1, 10, None, None, None, False)
    assert q_bound(info, 0.99) == pytest.approx(5.0 / 0.01)
    assert q_bound(info, 0.9, reward_scale=10.0) == pytest.approx(50.0 / 0.1)
    assert q_bound(info, 1.0) == math.inf
    assert q_bound(info, 1.2) == math.inf


# --------------------------------------------------------------------------------------------
# bad input: one clear DataError each
# --------------------------------------------------------------------------------------------


def test_unknown_id_lists_local_and_how_to_make(root: Path) -> None:
    _write("test/there-v0", _episodes([3]))
    with pytest.raises(DataError) as exc:
        load_transitions("test/missing-v0")
    msg = str(exc.value)
    assert "test/missing-v0" in msg and "test/there-v0" in msg
    assert "seem-ray datasets make" in msg and "pointmaze-umaze-dense" in msg
    assert "\n" not in msg


def test_malformed_id(root: Path) -> None:
    with pytest.raises(DataError, match="malformed dataset id"):
        load_transitions("no version here!")


def test_nan_in_data(root: Path) -> None:
    eps = _episodes([4, 4])
    eps[1]["rewards"][2] = np.nan
    _write("test/nan-v0", eps)
    with pytest.raises(DataError, match="test/nan-v0.*NaN"):
        load_transitions("test/nan-v0")


def test_nan_in_observations(root: Path) -> None:
    eps = _episodes([4])
    eps[0]["observations"][4, 1] = np.inf
    _write("test/inf-v0", eps)
    with pytest.raises(DataError, match="next_observations contains NaN/inf"):
        load_transitions("test/inf-v0")


def _set_metadata(root: Path, dataset_id: str, **changes: object) -> None:
    path = root / dataset_id / "data" / "metadata.json"
    meta = json.loads(path.read_text())
    meta.update(changes)
    path.write_text(json.dumps(meta))


def test_wrong_observation_dims_vs_space(root: Path) -> None:
    from minari.serialization import serialize_space

    _write("test/dims-v0", _episodes([4]))  # 5 stored rows x 3 = 15 values
    _set_metadata(
        root, "test/dims-v0", observation_space=serialize_space(gym.spaces.Box(-1, 1, (5,)))
    )
    with pytest.raises(DataError, match=r"observations have shape \(3, 5\), expected \(5, 5\)"):
        load_transitions("test/dims-v0")


def test_wrong_action_dims_vs_space(root: Path) -> None:
    from minari.serialization import serialize_space

    _write("test/adims-v0", _episodes([5]))  # 6 stored action rows (one pad) x 1
    _set_metadata(root, "test/adims-v0", action_space=serialize_space(gym.spaces.Box(-2, 2, (4,))))
    with pytest.raises(DataError, match="do not fit|actions have shape"):
        load_transitions("test/adims-v0")


def test_asymmetric_action_space(root: Path) -> None:
    eps = _episodes([3], bound=0.5)
    for e in eps:
        e["actions"] = np.abs(e["actions"])
    _write(
        "test/asym-v0",
        eps,
        env=None,
        obs_space=gym.spaces.Box(-np.inf, np.inf, (3,), np.float32),
        act_space=gym.spaces.Box(0.0, 1.0, (1,), np.float32),
        refs=None,
    )
    with pytest.raises(DataError, match="not a symmetric box"):
        load_transitions("test/asym-v0")


def test_actions_outside_space(root: Path) -> None:
    eps = _episodes([3], bound=2.0)
    eps[0]["actions"][1, 0] = 7.0
    _write("test/out-v0", eps)
    with pytest.raises(DataError, match="outside the action space"):
        load_transitions("test/out-v0")


def test_empty_dataset(root: Path) -> None:
    _write("test/empty-v0", [])
    with pytest.raises(DataError, match="empty"):
        load_transitions("test/empty-v0")


def test_corrupted_arrow_file(root: Path) -> None:
    _write("test/bad-v0", _episodes([4, 4]))
    files = sorted((root / "test/bad-v0/data").rglob("*.arrow"))
    assert files, "expected arrow episode files"
    raw = files[-1].read_bytes()
    files[-1].write_bytes(raw[: len(raw) // 3])  # truncated write
    with pytest.raises(DataError, match="unreadable") as exc:
        load_transitions("test/bad-v0")
    assert "--overwrite" in str(exc.value)


def test_corrupted_metadata(root: Path) -> None:
    _write("test/meta-v0", _episodes([4]))
    (root / "test/meta-v0/data/metadata.json").write_text('{"dataset_id": "test/met')
    with pytest.raises(DataError, match="unreadable"):
        load_transitions("test/meta-v0")


# --------------------------------------------------------------------------------------------
# subsample
# --------------------------------------------------------------------------------------------


def test_subsample_same_seed_same_rows_different_seed_different() -> None:
    t = _transitions(1000)
    a = subsample(t, fraction=0.1, seed=3)
    b = subsample(t, fraction=0.1, seed=3)
    c = subsample(t, fraction=0.1, seed=4)
    np.testing.assert_array_equal(a.rewards, b.rewards)
    assert not np.array_equal(a.rewards, c.rewards)
    # rows are whole transitions, unique, in dataset order
    rows = a.rewards.astype(int)
    assert len(set(rows)) == len(rows) and np.all(np.diff(rows) > 0)
    np.testing.assert_array_equal(a.observations, t.observations[rows])
    np.testing.assert_array_equal(a.next_observations, t.next_observations[rows])


@pytest.mark.parametrize(
    ("n", "fraction", "cap", "expected"),
    [
        (1000, 1.0, None, 1000),
        (1000, 0.1, None, 100),
        (1000, 0.01, None, 10),
        (1000, 0.5, 7, 7),
        (1000, 0.005, 900, 5),
        (10, 0.01, None, 1),
    ],
)
def test_subsample_sizes(n: int, fraction: float, cap: int | None, expected: int) -> None:
    out = subsample(_transitions(n), fraction=fraction, max_transitions=cap)
    assert len(out) == expected


def test_subsample_first_mode_keeps_prefix() -> None:
    t = _transitions(50)
    out = subsample(t, fraction=0.2, mode="first", seed=9)
    np.testing.assert_array_equal(out.rewards, np.arange(10))
    out = subsample(t, max_transitions=3, mode="first")
    np.testing.assert_array_equal(out.rewards, np.arange(3))


def test_subsample_is_pure() -> None:
    t = _transitions(100)
    before = t.rewards.copy()
    subsample(t, fraction=0.3, seed=1)
    np.testing.assert_array_equal(t.rewards, before)
    assert subsample(t) is t


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"fraction": 0.0}, "data.fraction"),
        ({"fraction": 1.5}, "data.fraction"),
        ({"max_transitions": 0}, "data.max_transitions"),
        ({"mode": "last"}, "data.subsample"),
    ],
)
def test_subsample_bad_arguments(kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        subsample(_transitions(10), **kwargs)


# --------------------------------------------------------------------------------------------
# normalize
# --------------------------------------------------------------------------------------------


def test_normalizer_matches_naive_statistics() -> None:
    t = _transitions(200, obs_dim=3, seed=5)
    norm = StateNormalizer.from_transitions(t, eps=1e-3)
    cols = t.observations.T.astype(np.float64)
    mean = np.array([sum(c) / len(c) for c in cols])
    std = np.array(
        [math.sqrt(sum((x - m) ** 2 for x in c) / len(c)) for c, m in zip(cols, mean, strict=True)]
    )
    np.testing.assert_allclose(norm.mean, mean, rtol=1e-5)
    np.testing.assert_allclose(norm.std, std + 1e-3, rtol=1e-5)
    out = norm.apply(t)
    np.testing.assert_allclose(
        out.observations, (t.observations - mean) / (std + 1e-3), rtol=1e-4, atol=1e-5
    )
    np.testing.assert_allclose(
        out.next_observations, (t.next_observations - mean) / (std + 1e-3), rtol=1e-4, atol=1e-5
    )
    np.testing.assert_array_equal(out.actions, t.actions)
    np.testing.assert_allclose(norm.apply_obs(t.observations[0]), out.observations[0])


def test_normalizer_constant_dim_and_identity_and_roundtrip() -> None:
    t = _transitions(20, obs_dim=2)
    obs = t.observations.copy()
    obs[:, 1] = 4.0
    t = Transitions(obs, t.actions, t.rewards, obs.copy(), t.terminals, t.timeouts)
    norm = StateNormalizer.from_transitions(t)
    assert np.all(np.isfinite(norm.apply(t).observations))
    ident = StateNormalizer.identity(2)
    np.testing.assert_array_equal(ident.apply_obs(obs), obs)
    back = StateNormalizer.from_dict(json.loads(json.dumps(norm.to_dict())))
    np.testing.assert_array_equal(back.mean, norm.mean)
    np.testing.assert_array_equal(back.std, norm.std)
    with pytest.raises(DataError):
        norm.apply_obs(np.zeros((4, 3)))
    with pytest.raises(DataError):
        StateNormalizer.from_dict({"mean": [0.0]})
    with pytest.raises(DataError):
        StateNormalizer(mean=np.zeros(2), std=np.array([1.0, 0.0]))


# --------------------------------------------------------------------------------------------
# properties: whatever the arrays, consistent finite data or exactly one DataError line
# --------------------------------------------------------------------------------------------

FIELD_NDIM = {
    "observations": 2,
    "actions": 2,
    "rewards": 1,
    "next_observations": 2,
    "terminals": 1,
    "timeouts": 1,
}
POISON = (np.nan, np.inf, -np.inf)


@st.composite
def _array(draw: st.DrawFn, shape: tuple[int, ...]) -> np.ndarray:
    """A numeric array of `shape`, sometimes with one NaN/inf in it."""
    dtype = draw(st.sampled_from([np.float32, np.float64, np.int64, np.bool_]))
    if dtype is np.bool_:
        elements = st.booleans()
    elif dtype is np.int64:
        elements = st.integers(-1000, 1000)
    else:
        elements = st.floats(-1e3, 1e3, width=32 if dtype is np.float32 else 64)
    arr = draw(hnp.arrays(dtype, shape, elements=elements))
    if arr.size and arr.dtype.kind == "f" and draw(st.integers(0, 9)) == 0:
        arr.flat[draw(st.integers(0, arr.size - 1))] = draw(st.sampled_from(POISON))
    return arr


@st.composite
def _transition_arrays(draw: st.DrawFn) -> dict[str, np.ndarray]:
    """Mostly well-shaped arrays; each field now and then gets an arbitrary shape instead."""
    n = draw(st.integers(0, 5))
    width = {"observations": draw(st.integers(0, 3)), "actions": draw(st.integers(0, 3))}
    width["next_observations"] = width["observations"]
    arrays = {}
    for name, ndim in FIELD_NDIM.items():
        shape = (n,) if ndim == 1 else (n, width[name])
        if draw(st.integers(0, 9)) == 0:
            shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4))
        arrays[name] = draw(_array(shape))
    return arrays


def _should_be_valid(a: dict[str, np.ndarray]) -> bool:
    """Independent statement of a valid dataset: N >= 1 rows everywhere, the documented
    ranks, at least one observation and one action column, matching obs/next_obs widths,
    and every value finite."""
    n = a["rewards"].shape[0] if a["rewards"].ndim == 1 else 0
    return (
        n >= 1
        and all(a[k].ndim == d and a[k].shape[0] == n for k, d in FIELD_NDIM.items())
        and a["observations"].shape[1] >= 1
        and a["actions"].shape[1] >= 1
        and a["next_observations"].shape[1] == a["observations"].shape[1]
        and all(np.isfinite(v).all() for v in a.values())
    )


@settings(max_examples=100, deadline=None)
@given(arrays=_transition_arrays())
def test_transitions_are_consistent_or_one_data_error(arrays: dict[str, np.ndarray]) -> None:
    try:
        t = Transitions(**arrays)
    except DataError as err:
        message = str(err)
        assert message and "\n" not in message
        assert not _should_be_valid(arrays), f"valid data refused: {message}"
        return
    assert _should_be_valid(arrays), "invalid data accepted"
    n = len(t)
    assert all(getattr(t, k).shape[0] == n for k in FIELD_NDIM)
    assert t.obs_dim >= 1 and t.act_dim >= 1 and t.next_observations.shape[1] == t.obs_dim
    assert all(np.isfinite(getattr(t, k)).all() for k in FIELD_NDIM)


class _StoredDataset:
    """What `minari.load_dataset` hands back, holding arrays chosen by the test."""

    def __init__(self, obs_space: gym.Space, act_space: gym.Space, episodes: list) -> None:
        from types import SimpleNamespace

        self.observation_space, self.action_space = obs_space, act_space
        self.episodes = episodes
        self.total_episodes = len(episodes)
        self.storage = SimpleNamespace(metadata={})
        self.env_spec = None

    def iterate_episodes(self) -> Iterator[Any]:
        yield from self.episodes


# Ways stored data can disagree with itself or its spaces; each must end in a DataError.
DAMAGED_VALUES = (
    "nan_observation",
    "inf_reward",
    "nan_action",
    "observation_beyond_float32",
    "reward_beyond_float32",
    "observation_rows",
    "observation_width",
    "action_width",
    "reward_count",
    "termination_count",
    "action_outside_bound",
)
DAMAGED_LAYOUT = (
    "no_episodes",
    "only_empty_episodes",
    "zero_width_actions",
    "zero_width_observations",
    "asymmetric_action_space",
    "matrix_action_space",
)


@st.composite
def _stored_dataset(draw: st.DrawFn) -> tuple[_StoredDataset, str | None, list[dict]]:
    """(dataset, damage or None, the episodes as plain arrays for an independent flattening)."""
    damage = draw(st.one_of(st.none(), st.sampled_from(DAMAGED_VALUES + DAMAGED_LAYOUT)))
    obs_dim = 0 if damage == "zero_width_observations" else draw(st.integers(1, 4))
    act_dim = 0 if damage == "zero_width_actions" else draw(st.integers(1, 3))
    bound = draw(st.sampled_from([0.5, 1.0, 2.0]))
    lengths = [draw(st.integers(1, 5))] + draw(st.lists(st.integers(0, 5), max_size=2))
    if damage == "only_empty_episodes":
        lengths = [0] * len(lengths)
    if damage == "no_episodes":
        lengths = []
    flat_actions = act_dim == 1 and draw(st.booleans())  # Minari may store 1-D actions
    floats = st.floats(-100, 100)
    episodes = []
    for length in lengths:
        act_shape = (length,) if flat_actions else (length, act_dim)
        episodes.append(
            {
                "observations": draw(
                    hnp.arrays(np.float64, (length + 1, obs_dim), elements=floats)
                ),
                "actions": draw(
                    hnp.arrays(np.float32, act_shape, elements=st.floats(-bound, bound, width=32))
                ),
                "rewards": draw(hnp.arrays(np.float64, length, elements=st.floats(-10, 10))),
                "terminations": draw(hnp.arrays(np.bool_, length)),
                "truncations": draw(hnp.arrays(np.bool_, length)),
            }
        )
    act_space = gym.spaces.Box(-bound, bound, (act_dim,), np.float32)
    if damage == "asymmetric_action_space":
        act_space = gym.spaces.Box(-bound, 2 * bound, (act_dim,), np.float32)
    if damage == "matrix_action_space":
        act_space = gym.spaces.Box(-bound, bound, (act_dim, 2), np.float32)
    if episodes and damage in DAMAGED_VALUES:
        ep = episodes[0]  # the first episode has at least one step
        row = draw(st.integers(0, len(ep["rewards"]) - 1))
        if damage == "nan_observation":
            ep["observations"][row, draw(st.integers(0, obs_dim - 1))] = np.nan
        elif damage == "inf_reward":
            ep["rewards"][row] = draw(st.sampled_from([np.inf, -np.inf]))
        elif damage == "nan_action":
            ep["actions"].reshape(len(ep["rewards"]), -1)[row, 0] = np.nan
        elif damage == "observation_beyond_float32":
            ep["observations"][row, 0] = 1e39
        elif damage == "reward_beyond_float32":
            ep["rewards"][row] = -1e39
        elif damage == "observation_rows":
            ep["observations"] = ep["observations"][: -draw(st.integers(1, 2))]
        elif damage == "observation_width":
            ep["observations"] = np.concatenate([ep["observations"], ep["observations"][:, :1]], 1)
        elif damage == "action_width":
            ep["actions"] = np.zeros((len(ep["rewards"]), act_dim + 1), np.float32)
        elif damage == "reward_count":
            ep["rewards"] = np.append(ep["rewards"], 0.0)
        elif damage == "termination_count":
            ep["terminations"] = ep["terminations"][1:]
        elif damage == "action_outside_bound":
            ep["actions"].reshape(len(ep["rewards"]), -1)[row, 0] = 1.5 * bound
    obs_space = gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float64)
    from minari.dataset.episode_data import EpisodeData

    stored = [EpisodeData(id=i, infos={}, **ep) for i, ep in enumerate(episodes)]
    return _StoredDataset(obs_space, act_space, stored), damage, episodes


@pytest.fixture(scope="module")
def stored_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dataset root in which `prop/stored-v0` exists as a folder (its content comes from the test)."""
    root = tmp_path_factory.mktemp("datasets")
    (root / "prop" / "stored-v0" / "data").mkdir(parents=True)
    return root


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=_stored_dataset())
def test_load_transitions_is_consistent_or_one_data_error(
    stored_root: Path, case: tuple[_StoredDataset, str | None, list[dict]]
) -> None:
    import minari

    dataset, damage, episodes = case
    with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # float64 -> float32 overflow is the point
        mp.setenv("MINARI_DATASETS_PATH", str(stored_root))
        mp.setattr(minari, "load_dataset", lambda *args, **kwargs: dataset)
        try:
            data, info = load_transitions("prop/stored-v0")
        except DataError as err:
            message = str(err)
            assert "\n" not in message and "prop/stored-v0" in message
            assert damage is not None, f"good data refused: {message}"
            return
    assert damage is None, f"{damage} went unnoticed"
    ref = _naive(episodes)
    n = sum(len(e["rewards"]) for e in episodes)
    assert len(data) == info.n_transitions == n
    assert all(getattr(data, k).shape[0] == n for k in FIELD_NDIM)
    assert all(np.isfinite(getattr(data, k)).all() for k in FIELD_NDIM)
    np.testing.assert_array_equal(data.observations, ref["o"].astype(np.float32))
    np.testing.assert_array_equal(data.next_observations, ref["n"].astype(np.float32))
    np.testing.assert_array_equal(data.actions, ref["a"].reshape(n, -1))
    np.testing.assert_array_equal(data.rewards, ref["r"].astype(np.float32))
    np.testing.assert_array_equal(data.terminals, ref["t"])
    np.testing.assert_array_equal(data.timeouts, ref["u"])
    assert np.abs(data.actions).max() <= info.max_action


@settings(max_examples=100, deadline=None)
@given(
    n=st.integers(1, 3000),
    fraction=st.floats(0.0, 1.0, exclude_min=True),
    cap=st.one_of(st.none(), st.integers(2, 5000)),
    mode=st.sampled_from(SUBSAMPLE_MODES),
    seed=st.integers(0, 2**63 - 1),
)
def test_subsample_index_follows_its_rule(
    n: int, fraction: float, cap: int | None, mode: str, seed: int
) -> None:
    index = subsample_index(n, fraction=fraction, max_transitions=cap, mode=mode, seed=seed)
    expected = min(n, max(1, round(fraction * n)), n if cap is None else cap)
    assert index.dtype == np.int64 and index.shape == (expected,)
    assert np.all(np.diff(index) > 0)  # unique and in dataset order
    assert index[0] >= 0 and index[-1] < n
    again = subsample_index(n, fraction=fraction, max_transitions=cap, mode=mode, seed=seed)
    np.testing.assert_array_equal(index, again)
    if mode == "first" or expected == n:
        np.testing.assert_array_equal(index, np.arange(expected))
    rows = subsample(
        _transitions(n), fraction=fraction, max_transitions=cap, mode=mode, seed=seed
    ).rewards
    np.testing.assert_array_equal(rows, index.astype(np.float32))  # rewards hold row ids


@pytest.mark.parametrize("key", ["data.subsample_seed", "train.seed"])
def test_negative_seed_is_a_config_error(key: str) -> None:
    from seem_ray.config import apply_overrides, parse_run_config

    with pytest.raises(ConfigError, match=key.split(".")[1]):
        apply_overrides(parse_run_config({}), {key: -1})
