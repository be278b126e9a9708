"""Local dataset generation: recipes, the maze planner, atomic creation, the CLI subcommand.

Every test points MINARI_DATASETS_PATH at a tmp dir; generated datasets are tiny.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from seem_ray.config import ConfigError
from seem_ray.data import generate
from seem_ray.data.batches import DataError
from seem_ray.data.commands import register
from seem_ray.data.generate import MazePlanner, make_dataset
from seem_ray.data.minari import dataset_summary, list_local_datasets, load_transitions
from seem_ray.data.recipes import (
    D4RL_EXPERT_RETURN,
    RECIPES,
    dataset_id_for,
    find_recipe,
    recipe_of_id,
)
from seem_ray.data.rollouts import make_env

TINY_MAZE = {"episodes": 2, "episode_steps": 60, "ref_episodes": 2}


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "datasets"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(path))
    return path


def _leftovers(root: Path) -> list[str]:
    """Everything under root except Minari's namespace metadata files."""
    if not root.exists():
        return []
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and p.name != "namespace_metadata.json"
    )


def test_recipe_registry() -> None:
    expected = {
        f"pointmaze-{m}-{r}" for m in ("umaze", "medium", "large") for r in ("dense", "sparse")
    }
    expected |= {
        f"{t}-{k}"
        for t in ("hopper", "halfcheetah", "walker2d")
        for k in ("random", "medium-replay")
    }
    assert set(RECIPES) == expected
    assert dataset_id_for("hopper-random") == "seem_ray/hopper-random-v0"
    assert RECIPES["walker2d-medium-replay"].ref_max_score == D4RL_EXPERT_RETURN["walker2d"]
    assert RECIPES["pointmaze-umaze-dense"].env_id == "PointMaze_UMazeDense-v3"
    assert RECIPES["pointmaze-large-sparse"].env_id == "PointMaze_Large-v3"


def test_recipe_found_by_short_name_or_dataset_id() -> None:
    """One registry answers both the generator (name or id) and the loader (id -> recipe)."""
    assert find_recipe("hopper-random") is find_recipe("seem_ray/hopper-random-v0")
    assert recipe_of_id("seem_ray/hopper-random-v0") is RECIPES["hopper-random"]
    assert recipe_of_id("other/hopper-random-v0") is None
    assert recipe_of_id("seem_ray/no-such-recipe-v0") is None
    with pytest.raises(DataError, match="known: pointmaze-umaze-dense"):
        find_recipe("no-such-recipe")


# --------------------------------------------------------------------------------------------
# planner
# --------------------------------------------------------------------------------------------


def _naive_distances(grid: np.ndarray, goal: tuple[int, int]) -> np.ndarray:
    """Bellman-Ford style relaxation until nothing changes (independent of the BFS)."""
    dist = np.full(grid.shape, np.inf)
    dist[goal] = 0
    changed = True
    while changed:
        changed = False
        for r in range(grid.shape[0]):
            for c in range(grid.shape[1]):
                if grid[r, c]:
                    continue
                for nr, nc in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
                    inside = 0 <= nr < grid.shape[0] and 0 <= nc < grid.shape[1]
                    if inside and not grid[nr, nc] and dist[nr, nc] + 1 < dist[r, c]:
                        dist[r, c] = dist[nr, nc] + 1
                        changed = True
    return dist


@pytest.mark.parametrize("maze", ["UMaze", "Medium"])
def test_planner_distances_and_waypoints(maze: str) -> None:
    env = make_env(f"PointMaze_{maze}-v3")
    planner = MazePlanner(env.unwrapped.maze)
    free = [tuple(x) for x in np.argwhere(~planner.grid)]
    goal = free[-1]
    dist = planner._distances(goal)
    np.testing.assert_array_equal(dist, _naive_distances(planner.grid, goal))
    goal_xy = env.unwrapped.maze.cell_rowcol_to_xy(np.array(goal))
    for cell in free:
        pos = env.unwrapped.maze.cell_rowcol_to_xy(np.array(cell))
        nxt = planner._cell(planner.waypoint(pos, goal_xy))
        if cell == goal:
            assert nxt == goal
        else:  # one step closer along a shortest path, to an adjacent free cell
            assert abs(nxt[0] - cell[0]) + abs(nxt[1] - cell[1]) == 1
            assert dist[nxt] == dist[cell] - 1
    env.close()


def test_planner_acts_on_flat_batches() -> None:
    env = make_env("PointMaze_UMaze-v3")
    planner = MazePlanner(env.unwrapped.maze)
    obs = np.zeros((3, 8), np.float32)
    obs[:, 6:8] = env.unwrapped.maze.cell_rowcol_to_xy(np.array([1, 1]))
    act = planner(obs)
    assert act.shape == (3, 2) and act.dtype == np.float32 and np.all(np.abs(act) <= 1)
    assert planner(obs[0]).shape == (2,)
    env.close()


# --------------------------------------------------------------------------------------------
# make_dataset
# --------------------------------------------------------------------------------------------


def test_make_tiny_maze_then_existing_id_needs_overwrite(root: Path) -> None:
    dataset_id = make_dataset("pointmaze-umaze-sparse", seed=1, **TINY_MAZE)
    assert dataset_id == "seem_ray/pointmaze-umaze-sparse-v0"
    data, info = load_transitions(dataset_id)
    assert (info.n_episodes, info.n_transitions, info.obs_dim, info.act_dim) == (2, 120, 8, 2)
    assert data.timeouts.sum() == 2 and data.terminals.sum() == 0  # continuing task, timeouts only
    assert set(np.unique(data.rewards)) <= {0.0, 1.0}
    assert info.ref_max_score is not None and info.ref_min_score is not None
    assert info.ref_max_score > info.ref_min_score  # the planner beats a random policy
    with pytest.raises(DataError, match="already exists.*--overwrite"):
        make_dataset("pointmaze-umaze-sparse", **TINY_MAZE)
    make_dataset(
        "seem_ray/pointmaze-umaze-sparse-v0", overwrite=True, seed=2, **{**TINY_MAZE, "episodes": 3}
    )
    assert load_transitions(dataset_id)[1].n_episodes == 3
    assert not [p for p in root.iterdir() if p.name.startswith(".staging")]


def test_failure_mid_generation_leaves_nothing(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from minari.dataset._storages.arrow_storage import ArrowStorage

    real = ArrowStorage.update_episodes

    def crash_after_one(self: ArrowStorage, episodes: list) -> None:
        real(self, list(episodes)[:1])  # half the dataset is on disk...
        raise RuntimeError("simulated crash")  # ...when the process dies

    monkeypatch.setattr(ArrowStorage, "update_episodes", crash_after_one)
    with pytest.raises(RuntimeError, match="simulated crash"):
        make_dataset("pointmaze-umaze-dense", **TINY_MAZE)
    assert _leftovers(root) == []
    assert list_local_datasets() == []


def test_failed_overwrite_keeps_old_dataset(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dataset_id = make_dataset("pointmaze-umaze-dense", **TINY_MAZE)
    before = _leftovers(root)

    def boom(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(generate, "_write_dataset", boom)
    with pytest.raises(KeyboardInterrupt):
        make_dataset("pointmaze-umaze-dense", overwrite=True, **{**TINY_MAZE, "episodes": 3})
    assert _leftovers(root) == before
    assert load_transitions(dataset_id)[1].n_episodes == 2


@pytest.mark.parametrize(
    ("name", "kwargs", "error", "match"),
    [
        ("nope", {}, DataError, "unknown dataset recipe 'nope'; known: pointmaze"),
        ("pointmaze-umaze-dense", {"episodes": 0}, ConfigError, "episodes"),
        ("hopper-medium-replay", {"episodes": 3}, ConfigError, "--steps"),
        ("hopper-random", {"episode_steps": 10}, ConfigError, "only maze recipes"),
        ("pointmaze-umaze-dense", {"noise": -0.1}, ConfigError, "noise"),
    ],
)
def test_bad_options(root: Path, name: str, kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        make_dataset(name, **kwargs)
    assert _leftovers(root) == []


def test_random_recipe_tiny(root: Path) -> None:
    dataset_id = make_dataset("hopper-random", steps=150, ref_episodes=2)
    data, info = load_transitions(dataset_id)
    assert info.n_transitions == 150 and (info.obs_dim, info.act_dim) == (11, 3)
    assert info.ref_max_score == D4RL_EXPERT_RETURN["hopper"]
    assert info.ref_min_score is not None and info.ref_min_score < 200  # random hopper falls fast
    assert data.terminals.sum() >= 1  # random hopper episodes end by falling over
    assert data.terminals[-1] + data.timeouts[-1] == 1  # the budget cut is a timeout
    assert np.all(np.abs(data.actions) <= 1.0)


def _has_algorithms() -> bool:
    try:
        from seem_ray.algos import build_algorithm  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.skipif(not _has_algorithms(), reason="seem_ray.algos.build_algorithm not available")
def test_medium_replay_online_td3(root: Path) -> None:
    dataset_id = make_dataset("hopper-medium-replay", steps=1000, start_steps=700, ref_episodes=2)
    data, info = load_transitions(dataset_id)
    assert info.n_transitions == 1000
    assert data.terminals[-1] + data.timeouts[-1] == 1
    s = dataset_summary(dataset_id)
    assert "online TD3" in s["algorithm"]
    assert info.ref_max_score == D4RL_EXPERT_RETURN["hopper"]


# --------------------------------------------------------------------------------------------
# seem-ray datasets ...
# --------------------------------------------------------------------------------------------


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="seem-ray")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_datasets_subcommand(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["datasets", "list"]) == 0
    out = capsys.readouterr().out
    assert "(none)" in out and "hopper-medium-replay" in out
    argv = [
        "datasets",
        "make",
        "pointmaze-umaze-dense",
        "--episodes",
        "1",
        "--episode-steps",
        "40",
        "--seed",
        "3",
    ]
    assert _run(argv) == 0
    assert (
        "seem_ray/pointmaze-umaze-dense-v0: 1 episodes, 40 transitions" in capsys.readouterr().out
    )
    assert _run(["datasets", "list"]) == 0
    assert (
        "seem_ray/pointmaze-umaze-dense-v0: 1 episodes, 40 transitions, obs 8, act 2"
        in capsys.readouterr().out
    )
    assert _run(["datasets", "info", "seem_ray/pointmaze-umaze-dense-v0"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["transitions"] == 40 and info["eval_env_id"] == "PointMaze_UMazeDense-v3"
    with pytest.raises(DataError, match="already exists"):
        _run(argv)
