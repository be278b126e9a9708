"""Evaluation rollouts and the normalized score, plus the one end-to-end dataset test.

The end-to-end test generates a tiny PointMaze dataset, reads it back through Minari itself
(load_dataset, recover_environment, get_normalized_score) and through load_transitions, and
evaluates the maze planner on it deterministically.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from seem_ray.data.batches import DataError
from seem_ray.data.generate import MazePlanner, make_dataset
from seem_ray.data.minari import flatten_observation, load_transitions
from seem_ray.evaluate import EvalResult, episode_returns, eval_env_spec, evaluate_policy


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "datasets"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(path))
    return path


def _pendulum_dataset(
    dataset_id: str, *, env: str | None = "Pendulum-v1", refs: bool = True
) -> None:
    import minari
    from minari.data_collector import EpisodeBuffer

    rng = np.random.default_rng(0)
    buf = EpisodeBuffer(
        id=0,
        observations=rng.normal(size=(4, 3)).astype(np.float32),
        actions=rng.uniform(-2, 2, size=(3, 1)).astype(np.float32),
        rewards=[-1.0, -2.0, -3.0],
        terminations=[False, False, False],
        truncations=[False, False, True],
    )
    kwargs: dict = {"ref_min_score": -1200.0, "ref_max_score": -150.0} if refs else {}
    if env is None:
        kwargs |= {
            "observation_space": gym.spaces.Box(-np.inf, np.inf, (3,), np.float32),
            "action_space": gym.spaces.Box(-2, 2, (1,), np.float32),
        }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        minari.create_dataset_from_buffers(
            dataset_id, [buf], env=env, data_format="arrow", **kwargs
        )


def _swing(obs: np.ndarray) -> np.ndarray:
    """A deterministic Pendulum policy: torque against angular velocity."""
    return np.clip(-0.5 * obs[:, 2:3], -2.0, 2.0)


def test_batched_returns_match_sequential_rollouts() -> None:
    spec = gym.spec("Pendulum-v1")
    got = episode_returns(spec, _swing, episodes=3, seed=11)
    for i in range(3):  # naive reference: one env, one episode at a time
        env = gym.make(spec)
        obs, _ = env.reset(seed=11 + i)
        total, done = 0.0, False
        while not done:
            obs, r, term, trunc, _ = env.step(_swing(obs[None])[0])
            total += float(r)
            done = term or trunc
        env.close()
        assert got[i] == pytest.approx(total, rel=1e-6)


def test_normalized_score_and_determinism(root: Path) -> None:
    _pendulum_dataset("test/pend-v0")
    a = evaluate_policy("test/pend-v0", _swing, episodes=3, seed=5)
    b = evaluate_policy("test/pend-v0", _swing, episodes=3, seed=5)
    c = evaluate_policy("test/pend-v0", _swing, episodes=3, seed=6)
    assert isinstance(a, EvalResult) and a == b and a.returns != c.returns
    assert a.episodes == 3 and a.lengths == (200, 200, 200)
    mean = sum(a.returns) / 3
    assert a.return_mean == pytest.approx(mean)
    assert a.return_std == pytest.approx(float(np.std(a.returns)))
    assert a.normalized_score == pytest.approx(100 * (mean + 1200.0) / (-150.0 + 1200.0))


def test_max_steps_and_no_reference_scores(root: Path) -> None:
    _pendulum_dataset("test/norefs-v0", refs=False)
    res = evaluate_policy("test/norefs-v0", _swing, episodes=2, seed=0, max_steps=25)
    assert res.lengths == (25, 25) and res.normalized_score is None
    full = episode_returns(gym.spec("Pendulum-v1"), _swing, episodes=2, seed=0, max_steps=25)
    np.testing.assert_allclose(res.returns, full)


def test_bad_policy_and_missing_env(root: Path) -> None:
    _pendulum_dataset("test/pend-v0")
    with pytest.raises(ValueError, match="shape"):
        evaluate_policy("test/pend-v0", lambda o: np.zeros((len(o), 3)), episodes=2, seed=0)
    with pytest.raises(ValueError, match="NaN"):
        evaluate_policy("test/pend-v0", lambda o: np.full((len(o), 1), np.nan), episodes=2, seed=0)
    _pendulum_dataset("test/noenv-v0", env=None)
    with pytest.raises(DataError, match="cannot recover an environment"):
        evaluate_policy("test/noenv-v0", _swing, episodes=1, seed=0)
    with pytest.raises(DataError, match="not found"):
        evaluate_policy("test/absent-v0", _swing, episodes=1, seed=0)


def test_end_to_end_generate_read_evaluate(root: Path) -> None:
    import minari

    dataset_id = make_dataset(
        "pointmaze-umaze-dense", episodes=2, episode_steps=150, ref_episodes=2, seed=4
    )

    # Minari itself reads it: episodes, env recovery, reference scores.
    ds = minari.load_dataset(dataset_id)
    assert ds.total_episodes == 2 and ds.total_steps == 300
    ep = ds[0]
    assert ep.observations["observation"].shape == (151, 4) and ep.actions.shape == (150, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        env = ds.recover_environment()
        eval_env = ds.recover_environment(eval_env=True)
    assert env.spec.id == eval_env.spec.id == "PointMaze_UMazeDense-v3"
    assert env.spec.max_episode_steps == 150 and eval_env.spec.max_episode_steps == 300
    env.close()
    eval_env.close()
    meta = ds.storage.metadata
    lo, hi = meta["ref_min_score"], meta["ref_max_score"]
    assert hi > lo
    np.testing.assert_allclose(minari.get_normalized_score(ds, np.array([lo, hi])), [0.0, 1.0])

    # Our loader agrees with Minari's episodes.
    data, info = load_transitions(dataset_id)
    flat = flatten_observation(ep.observations)
    np.testing.assert_allclose(data.observations[:150], flat[:-1], rtol=1e-6)
    np.testing.assert_allclose(data.next_observations[:150], flat[1:], rtol=1e-6)
    np.testing.assert_allclose(data.rewards[:150], ep.rewards, rtol=1e-6)
    assert (info.ref_min_score, info.ref_max_score) == (lo, hi)

    # The noise-free planner scores near 100, a random policy near 0; same seed, same result.
    spec = eval_env_spec(dataset_id)
    maze = gym.make(spec).unwrapped.maze
    first = evaluate_policy(dataset_id, MazePlanner(maze), episodes=3, seed=1)
    again = evaluate_policy(dataset_id, MazePlanner(maze), episodes=3, seed=1)
    assert first == again
    assert first.normalized_score == pytest.approx(
        100 * float(minari.get_normalized_score(ds, np.float64(first.return_mean)))
    )
    rng = np.random.default_rng(0)
    rand = evaluate_policy(
        dataset_id, lambda o: rng.uniform(-1, 1, (len(o), 2)), episodes=3, seed=1
    )
    assert first.normalized_score is not None and rand.normalized_score is not None
    assert first.normalized_score > 50 > rand.normalized_score
