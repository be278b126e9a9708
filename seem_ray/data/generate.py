"""Local Minari datasets made from env rollouts (no downloads): the source of every trial's data.

Flow position: **env rollouts -> Minari dataset (arrow, with reference scores)** -> load_transitions.

How each recipe of :mod:`seem_ray.data.recipes` (short name -> id ``seem_ray/<name>-v0``) is made:

* ``pointmaze-{umaze,medium,large}-{dense,sparse}``: made the way D4RL made maze2d. A
  waypoint planner (BFS shortest path over the maze grid from the ball's cell to the goal
  cell) drives a PD controller with Gaussian action noise through long episodes; the env is
  a continuing task whose goal jumps to a new random cell when reached, so the data covers
  the whole maze. Episodes end by timeout (``truncations``). Evaluation uses the standard
  ``PointMaze_*-v3`` env (fixed goal, its own episode length). Reference scores are
  *measured* on that env: min = uniform random policy, max = the noise-free planner.
* ``{hopper,halfcheetah,walker2d}-random``: a uniform random policy on the gymnasium v5 env.
* ``{hopper,halfcheetah,walker2d}-medium-replay``: the whole replay buffer of a short online
  TD3 run of our own (the project's TD3+BC with bc_weight=0, i.e. plain TD3), D4RL's
  "medium-replay" idea at CPU scale.

MuJoCo reference scores: min = measured random-policy return; max = D4RL's expert reference
return constant (hopper 3234.3, halfcheetah 12135.0, walker2d 4592.3), not measured here.

Creation is atomic: the dataset is written under a hidden staging folder in ``datasets_dir()``
and renamed into place only when complete, so a crash never leaves a half-written dataset.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import os
import shutil
import time
import uuid
import warnings
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from seem_ray.config import ConfigError
from seem_ray.data.batches import DataError
from seem_ray.data.minari import flatten_observation
from seem_ray.data.recipes import (
    NAMESPACE,
    Recipe,
    dataset_id_for,
    find_recipe,
    recipe_of_id,
)
from seem_ray.data.rollouts import Policy, episode_returns, make_env
from seem_ray.runtime import datasets_dir

__all__ = ["MazePlanner", "ensure_dataset", "make_dataset"]

log = logging.getLogger(__name__)


def _maze_of(env: gym.Env) -> Any:
    """The PointMaze env's maze (grid + cell/xy conversions)."""
    return env.unwrapped.maze  # type: ignore[attr-defined]  # PointMazeEnv attr; gym.Env lacks it


# ---------------------------------------------------------------------------------------------
# The maze planner (D4RL maze2d-style expert)
# ---------------------------------------------------------------------------------------------


class MazePlanner:
    """Waypoint planner + PD controller for PointMaze, acting on flattened observations.

    The flat layout is :func:`seem_ray.data.minari.flatten_observation`'s: ball x, y, vx, vy,
    achieved goal (2), desired goal (2). The waypoint is the centre of the next cell on a BFS
    shortest path to the goal's cell (the goal itself once in that cell).

    Args:
        maze: the env's ``unwrapped.maze`` (grid map and cell <-> xy conversions).
        kp: proportional gain on (waypoint - position).
        kd: derivative gain on velocity (damping).
        noise: std of Gaussian action noise (0 = the noise-free expert).
        seed: seed of the noise.
    """

    def __init__(
        self, maze: Any, kp: float = 10.0, kd: float = 1.0, noise: float = 0.0, seed: int = 0
    ) -> None:
        self.maze = maze
        self.grid = np.array([[c == 1 for c in row] for row in maze.maze_map], dtype=bool)
        self.kp, self.kd, self.noise = kp, kd, noise
        self.rng = np.random.default_rng(seed)
        self._dist: dict[tuple[int, int], np.ndarray] = {}

    def _distances(self, goal: tuple[int, int]) -> np.ndarray:
        """BFS steps from every free cell to `goal` (cached per goal cell)."""
        if goal not in self._dist:
            dist = np.full(self.grid.shape, np.inf)
            dist[goal] = 0
            queue = deque([goal])
            while queue:
                r, c = queue.popleft()
                for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                    nr, nc = r + dr, c + dc
                    if (
                        0 <= nr < self.grid.shape[0]
                        and 0 <= nc < self.grid.shape[1]
                        and not self.grid[nr, nc]
                        and dist[nr, nc] == np.inf
                    ):
                        dist[nr, nc] = dist[r, c] + 1
                        queue.append((nr, nc))
            self._dist[goal] = dist
        return self._dist[goal]

    def _cell(self, xy: np.ndarray) -> tuple[int, int]:
        r, c = self.maze.cell_xy_to_rowcol(xy)
        r = int(np.clip(r, 0, self.grid.shape[0] - 1))
        c = int(np.clip(c, 0, self.grid.shape[1] - 1))
        return r, c

    def waypoint(self, pos: np.ndarray, goal: np.ndarray) -> np.ndarray:
        """Next target position on the shortest path from `pos` to `goal`."""
        goal_cell = self._cell(goal)
        cell = self._cell(pos)
        dist = self._distances(goal_cell)
        if cell == goal_cell or not np.isfinite(dist[cell]):
            return goal
        best, best_d = cell, dist[cell]
        for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            nb = (cell[0] + dr, cell[1] + dc)
            if 0 <= nb[0] < dist.shape[0] and 0 <= nb[1] < dist.shape[1] and dist[nb] < best_d:
                best, best_d = nb, dist[nb]
        if best == goal_cell:
            return goal
        return np.asarray(self.maze.cell_rowcol_to_xy(np.array(best)), dtype=np.float64)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        """Actions [B, 2] for flat observations [B, 8] (or one [8] -> [2])."""
        flat = np.atleast_2d(np.asarray(obs, dtype=np.float64))
        out = np.empty((flat.shape[0], 2))
        for i, row in enumerate(flat):
            pos, vel, goal = row[0:2], row[2:4], row[6:8]
            target = self.waypoint(pos, goal)
            out[i] = self.kp * (target - pos) - self.kd * vel
        if self.noise > 0:
            out += self.rng.normal(0.0, self.noise, size=out.shape)
        out = np.clip(out, -1.0, 1.0).astype(np.float32)
        return out if np.ndim(obs) == 2 else out[0]


def _random_policy(space: gym.Space, seed: int) -> Policy:
    """Uniform actions over a Box, seeded (the reference-min policy and the random datasets)."""
    assert isinstance(space, gym.spaces.Box)
    rng = np.random.default_rng(seed)
    low, high = space.low.astype(np.float32), space.high.astype(np.float32)

    def act(obs: np.ndarray) -> np.ndarray:
        batch = np.shape(obs)[:-1]
        return rng.uniform(low, high, size=(*batch, *space.shape)).astype(np.float32)

    return act


# ---------------------------------------------------------------------------------------------
# Rollouts into Minari episode buffers
# ---------------------------------------------------------------------------------------------


class _EpisodeRecorder:
    """Accumulates one episode (observations T+1, actions/rewards/flags T) for a buffer."""

    def __init__(self, obs: Any) -> None:
        self.obs: list[Any] = [obs]
        self.act: list[np.ndarray] = []
        self.rew: list[float] = []
        self.term: list[bool] = []
        self.trunc: list[bool] = []

    def add(self, action: np.ndarray, obs: Any, reward: float, term: bool, trunc: bool) -> None:
        self.act.append(np.asarray(action, dtype=np.float32))
        self.obs.append(obs)
        self.rew.append(float(reward))
        self.term.append(bool(term))
        self.trunc.append(bool(trunc))

    def __len__(self) -> int:
        return len(self.rew)

    def buffer(self, episode_id: int, seed: int | None) -> Any:
        from minari.data_collector import EpisodeBuffer

        if isinstance(self.obs[0], dict):
            observations: Any = {k: np.stack([o[k] for o in self.obs]) for k in self.obs[0]}
        else:
            observations = np.stack(self.obs)
        return EpisodeBuffer(
            id=episode_id,
            seed=seed,
            observations=observations,
            actions=np.stack(self.act),
            rewards=list(self.rew),
            terminations=list(self.term),
            truncations=list(self.trunc),
        )


def _collect(
    env: gym.Env,
    policy: Policy,
    *,
    seed: int,
    episodes: int | None,
    steps: int | None,
    label: str,
) -> list[Any]:
    """Roll `policy` (on flattened obs) for `episodes` episodes or `steps` steps in total.

    With a step budget the last episode is cut at the budget and marked truncated (a timeout:
    it bootstraps, exactly like the env's own time limit).
    """
    buffers: list[Any] = []
    total, t0, last_log = 0, time.monotonic(), time.monotonic()
    obs, _ = env.reset(seed=seed)
    rec = _EpisodeRecorder(obs)
    while True:
        action = policy(flatten_observation(obs))
        obs, reward, term, trunc, _ = env.step(action)
        total += 1
        budget_hit = steps is not None and total >= steps
        rec.add(action, obs, float(reward), term, trunc or (budget_hit and not term))
        if term or trunc or budget_hit:
            buffers.append(rec.buffer(len(buffers), seed if not buffers else None))
            if budget_hit or (episodes is not None and len(buffers) >= episodes):
                break
            obs, _ = env.reset()
            rec = _EpisodeRecorder(obs)
        if time.monotonic() - last_log > 10:
            last_log = time.monotonic()
            log.info(
                "%s: %d steps, %d episodes (%.0f steps/s)",
                label,
                total,
                len(buffers),
                total / (last_log - t0),
            )
    log.info(
        "%s: collected %d steps in %d episodes (%.1f s)",
        label,
        total,
        len(buffers),
        time.monotonic() - t0,
    )
    return buffers


def _collect_maze(
    recipe: Recipe, *, episodes: int, episode_steps: int, seed: int, noise: float
) -> tuple[list[Any], gym.Env]:
    env = make_env(
        recipe.env_id, continuing_task=True, reset_target=True, max_episode_steps=episode_steps
    )
    planner = MazePlanner(_maze_of(env), noise=noise, seed=seed)
    buffers = _collect(env, planner, seed=seed, episodes=episodes, steps=None, label=recipe.name)
    return buffers, env


def _online_td3(
    recipe: Recipe,
    *,
    steps: int,
    seed: int,
    start_steps: int,
    batch_size: int = 256,
    expl_noise: float = 0.1,
    hidden: tuple[int, ...] = (256, 256),
    threads: int = 1,
) -> tuple[list[Any], gym.Env]:
    """Online TD3 (the project's TD3+BC with bc_weight=0) on the env; returns its replay buffer.

    Exploration: uniform random actions for `start_steps`, then the actor plus Gaussian noise
    of std `expl_noise * max_action`. One update per env step from the growing buffer.
    Torch runs on `threads` threads: batch-256 updates of 256-wide nets gain little from
    more, and on a shared CPU oversubscribed threads made updates ~15x slower (measured).
    """

    with _torch_threads(threads):
        return _online_td3_loop(
            recipe,
            steps=steps,
            seed=seed,
            start_steps=start_steps,
            batch_size=batch_size,
            expl_noise=expl_noise,
            hidden=hidden,
        )


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """Limit torch's intra-op threads for the duration, then restore the previous count."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(max(1, min(n, old)))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _online_td3_loop(
    recipe: Recipe,
    *,
    steps: int,
    seed: int,
    start_steps: int,
    batch_size: int,
    expl_noise: float,
    hidden: tuple[int, ...],
) -> tuple[list[Any], gym.Env]:
    import torch

    from seem_ray.algos import build_algorithm
    from seem_ray.config import AlgoConfig, NetConfig, TD3BCConfig
    from seem_ray.data.batches import Batch

    env = make_env(recipe.env_id)
    space = env.action_space
    assert isinstance(space, gym.spaces.Box)
    obs_dim = int(np.prod(env.observation_space.shape or ()))
    act_dim = int(space.shape[0])
    max_action = float(space.high[0])
    torch.manual_seed(seed)
    algo = build_algorithm(
        AlgoConfig(name="td3bc", td3bc=TD3BCConfig(bc_weight=0.0), batch_size=batch_size),
        NetConfig(hidden=hidden),
        NetConfig(hidden=hidden),
        obs_dim,
        act_dim,
        max_action,
        torch.device("cpu"),
    )
    rng = np.random.default_rng(seed)
    buf_obs = np.zeros((steps, obs_dim), np.float32)
    buf_act = np.zeros((steps, act_dim), np.float32)
    buf_rew = np.zeros(steps, np.float32)
    buf_next = np.zeros((steps, obs_dim), np.float32)
    buf_done = np.zeros(steps, np.float32)

    buffers: list[Any] = []
    ep_returns: list[float] = []
    obs, _ = env.reset(seed=seed)
    rec = _EpisodeRecorder(obs)
    t0 = last_log = time.monotonic()
    for t in range(steps):
        if t < start_steps:
            action = rng.uniform(-max_action, max_action, act_dim).astype(np.float32)
        else:
            with torch.no_grad():
                mean = algo.act(torch.as_tensor(obs, dtype=torch.float32)[None])
            noisy = mean.reshape(act_dim).cpu().numpy() + rng.normal(
                0, expl_noise * max_action, act_dim
            )
            action = np.clip(noisy, -max_action, max_action).astype(np.float32)
        next_obs, reward, term, trunc, _ = env.step(action)
        buf_obs[t], buf_act[t], buf_rew[t], buf_next[t], buf_done[t] = (
            obs,
            action,
            reward,
            next_obs,
            float(term),
        )
        last = t == steps - 1
        rec.add(action, next_obs, float(reward), term, trunc or (last and not term))
        obs = next_obs
        if term or trunc or last:
            ep_returns.append(float(np.sum(rec.rew)))
            buffers.append(rec.buffer(len(buffers), seed if not buffers else None))
            if not last:
                obs, _ = env.reset()
                rec = _EpisodeRecorder(obs)
        if t + 1 >= start_steps and t + 1 >= batch_size:
            idx = rng.integers(0, t + 1, size=batch_size)
            algo.update(
                Batch(
                    obs=torch.from_numpy(buf_obs[idx]),
                    act=torch.from_numpy(buf_act[idx]),
                    rew=torch.from_numpy(buf_rew[idx]),
                    next_obs=torch.from_numpy(buf_next[idx]),
                    done=torch.from_numpy(buf_done[idx]),
                )
            )
        if time.monotonic() - last_log > 15:
            last_log = time.monotonic()
            recent = np.mean(ep_returns[-10:]) if ep_returns else float("nan")
            log.info(
                "%s: online TD3 step %d/%d, %d episodes, recent return %.1f (%.0f steps/s)",
                recipe.name,
                t + 1,
                steps,
                len(buffers),
                recent,
                (t + 1) / (last_log - t0),
            )
    log.info(
        "%s: online TD3 done: %d steps, %d episodes, last-10 return %.1f (%.1f s)",
        recipe.name,
        steps,
        len(buffers),
        float(np.mean(ep_returns[-10:])),
        time.monotonic() - t0,
    )
    return buffers, env


# ---------------------------------------------------------------------------------------------
# Atomic dataset creation
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _minari_root(path: Path) -> Iterator[None]:
    """Point Minari at `path` for the duration (it reads MINARI_DATASETS_PATH on each call)."""
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(path)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = old


def _requirements(maze: bool) -> list[str]:
    names = ["gymnasium", "mujoco"] + (["gymnasium-robotics"] if maze else [])
    out = []
    for name in names:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out.append(f"{name}=={importlib.metadata.version(name)}")
    return out


def _write_dataset(
    staging: Path,
    dataset_id: str,
    buffers: list[Any],
    *,
    env: gym.Env,
    eval_env_id: str | None,
    ref_min: float,
    ref_max: float,
    recipe: Recipe,
    algorithm: str,
) -> None:
    """Write `buffers` as a Minari arrow dataset with id `dataset_id` under root `staging`."""
    import minari

    with _minari_root(staging), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Minari warns about every optional metadata field
        dataset = minari.create_dataset_from_buffers(
            dataset_id,
            [],
            env=env,
            eval_env=eval_env_id,
            algorithm_name=algorithm,
            author="seem_ray",
            code_permalink="seem_ray/data/generate.py",
            ref_min_score=float(ref_min),
            ref_max_score=float(ref_max),
            description=recipe.description,
            data_format="arrow",
            requirements=_requirements(recipe.kind == "maze"),
        )
        storage = dataset.storage
        # Minari re-measures the folder size after every episode (quadratic in episodes);
        # measure once at the end instead.
        storage.get_size = lambda: 0.0
        storage.update_episodes(buffers)
        del storage.get_size
        storage.update_metadata({"dataset_size": storage.get_size()})


def _ensure_namespace(root: Path) -> None:
    from minari.namespace import create_namespace, list_local_namespaces

    with _minari_root(root), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if NAMESPACE not in list_local_namespaces():
            create_namespace(NAMESPACE, description="Datasets generated locally by seem_ray")


def _install(staging: Path, root: Path, dataset_id: str, overwrite: bool) -> None:
    """Move the finished dataset from `staging` into `root`, replacing an old one if asked."""
    _ensure_namespace(root)
    target = root / dataset_id
    old = staging / ".replaced"
    if target.exists():
        if not overwrite:
            raise DataError(
                f"dataset {dataset_id!r} already exists at {target}; pass --overwrite to replace it"
            )
        os.replace(target, old)
    try:
        os.replace(staging / dataset_id, target)
    except OSError as err:
        if old.exists():
            os.replace(old, target)
        raise DataError(f"could not move dataset {dataset_id!r} into {target}: {err}") from None


def _mean_return(env_spec: Any, policy: Policy, episodes: int, seed: int) -> float:
    return float(np.mean(episode_returns(env_spec, policy, episodes=episodes, seed=seed)))


def make_dataset(
    name: str,
    *,
    episodes: int | None = None,
    steps: int | None = None,
    episode_steps: int | None = None,
    ref_episodes: int = 10,
    noise: float = 0.5,
    start_steps: int | None = None,
    seed: int = 0,
    overwrite: bool = False,
) -> str:
    """Generate a recipe's dataset under ``datasets_dir()`` and return its Minari id.

    Args:
        name: recipe short name (see ``RECIPES``) or its id ``seem_ray/<name>-v0``.
        episodes: maze: episodes to collect; random: collect this many whole episodes
            instead of a step budget. Not used by replay recipes.
        steps: maze: total steps (episodes = ceil(steps / episode_steps)); random: step
            budget; replay: env steps of the online TD3 run.
        episode_steps: maze: steps per collected episode.
        ref_episodes: episodes per measured reference score (random policy, maze planner).
        noise: maze: std of the planner's Gaussian action noise (D4RL-like exploration).
        start_steps: replay: uniform-random steps before TD3 acts (default min(5000, steps/5)).
        seed: seeds envs, policies, noise and the online learner.
        overwrite: replace an existing dataset of the same id.

    Returns:
        the dataset id, e.g. ``seem_ray/pointmaze-umaze-dense-v0``.

    Raises:
        DataError: unknown recipe, or the id exists and `overwrite` is False.
        ConfigError: a size option that is not positive or not used by this recipe.
    """
    recipe = find_recipe(name)
    dataset_id = dataset_id_for(recipe.name)
    for opt, value in (
        ("episodes", episodes),
        ("steps", steps),
        ("episode_steps", episode_steps),
        ("ref_episodes", ref_episodes),
    ):
        if value is not None and value < 1:
            raise ConfigError(opt, f"got {value!r}; expected an integer >= 1")
    if not (noise >= 0 and np.isfinite(noise)):
        raise ConfigError("noise", f"got {noise!r}; expected a finite number >= 0")
    if start_steps is not None and start_steps < 0:
        raise ConfigError("start_steps", f"got {start_steps!r}; expected an integer >= 0")
    if recipe.kind == "replay" and episodes is not None:
        raise ConfigError(
            "episodes", f"{recipe.name} is sized by --steps (env steps of online TD3), not episodes"
        )
    if recipe.kind != "maze" and episode_steps is not None:
        raise ConfigError(
            "episode_steps", f"only maze recipes take episode_steps, not {recipe.name}"
        )

    root = datasets_dir()
    if (root / dataset_id).exists() and not overwrite:
        raise DataError(
            f"dataset {dataset_id!r} already exists at {root / dataset_id}; pass --overwrite to replace it"
        )
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".staging-{uuid.uuid4().hex[:12]}"
    staging.mkdir()
    t0 = time.monotonic()
    try:
        eval_env_id: str | None = None
        if recipe.kind == "maze":
            ep_steps = episode_steps or recipe.episode_steps
            n_eps = episodes or (-(-steps // ep_steps) if steps else recipe.episodes)
            buffers, env = _collect_maze(
                recipe, episodes=n_eps, episode_steps=ep_steps, seed=seed, noise=noise
            )
            eval_env = make_env(recipe.env_id)
            eval_env_id = recipe.env_id
            ref_min = _mean_return(
                eval_env.spec,
                _random_policy(eval_env.action_space, seed + 1),
                ref_episodes,
                seed + 10_000,
            )
            ref_max = _mean_return(
                eval_env.spec, MazePlanner(_maze_of(eval_env)), ref_episodes, seed + 10_000
            )
            eval_env.close()
            algorithm = f"BFS waypoint planner + PD controller, action noise std {noise}"
        else:
            if recipe.kind == "random":
                env = make_env(recipe.env_id)
                budget = None if episodes else (steps or recipe.steps)
                buffers = _collect(
                    env,
                    _random_policy(env.action_space, seed),
                    seed=seed,
                    episodes=episodes,
                    steps=budget,
                    label=recipe.name,
                )
                algorithm = "uniform random policy"
            else:
                n_steps = steps or recipe.steps
                warm = start_steps if start_steps is not None else min(5000, max(1, n_steps // 5))
                buffers, env = _online_td3(recipe, steps=n_steps, seed=seed, start_steps=warm)
                algorithm = (
                    f"online TD3 (seem_ray td3bc, bc_weight=0), {n_steps} env steps, replay buffer"
                )
            ref_min = _mean_return(
                env.spec, _random_policy(env.action_space, seed + 1), ref_episodes, seed + 10_000
            )
            assert recipe.ref_max_score is not None
            ref_max = recipe.ref_max_score
        log.info("%s: reference scores min %.2f, max %.2f", dataset_id, ref_min, ref_max)
        _write_dataset(
            staging,
            dataset_id,
            buffers,
            env=env,
            eval_env_id=eval_env_id,
            ref_min=ref_min,
            ref_max=ref_max,
            recipe=recipe,
            algorithm=algorithm,
        )
        env.close()
        _install(staging, root, dataset_id, overwrite)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    n_steps_total = sum(len(b) for b in buffers)
    log.info(
        "made %s: %d episodes, %d transitions in %.1f s",
        dataset_id,
        len(buffers),
        n_steps_total,
        time.monotonic() - t0,
    )
    return dataset_id


def ensure_dataset(dataset_id: str, **make_kwargs: Any) -> str:
    """Make a local recipe's dataset if it is missing; any other id is left to the loader.

    Ray workers on other nodes call this too: generation is seeded, so every node builds the same
    data, and a concurrent maker on the same node losing the final rename is harmless.
    """
    root = datasets_dir()
    if (root / dataset_id).exists():
        return dataset_id
    recipe = recipe_of_id(dataset_id)
    if recipe is None:
        return dataset_id
    log.info("dataset %s not found under %s: generating it (one time)", dataset_id, root)
    try:
        make_dataset(recipe.name, **make_kwargs)
    except DataError:
        if not (root / dataset_id).exists():
            raise
    return dataset_id
