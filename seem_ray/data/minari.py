"""Minari dataset -> validated flat transitions: the first stage of a trial's data flow.

Flow position: **Minari dataset** -> Transitions -> subsample -> normalize -> ReplaySampler.
Episodes become D4RL-style flat arrays: ``next_observations`` come from the episode's own
observation array (length T+1), ``terminals`` from ``terminations`` (no bootstrap) and
``timeouts`` from ``truncations`` (bootstrap as usual). Every way a dataset can be bad
(unknown id, NaN, wrong shapes, empty, unreadable files) ends in one :class:`DataError` line.

Dict observations (goal-conditioned PointMaze) are flattened by :func:`flatten_observation`,
which evaluation uses too, so a policy sees the same layout in training and in rollouts.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from seem_ray.data.batches import DataError, Transitions
from seem_ray.data.recipes import RECIPES
from seem_ray.runtime import datasets_dir

__all__ = [
    "OBS_KEY_ORDER",
    "DatasetInfo",
    "dataset_path",
    "dataset_summary",
    "flat_obs_dim",
    "flatten_observation",
    "list_local_datasets",
    "load_transitions",
    "open_dataset",
    "q_bound",
]

log = logging.getLogger(__name__)

OBS_KEY_ORDER = ("observation", "achieved_goal", "desired_goal")
"""Order in which Dict observation keys are concatenated; keys not listed follow, sorted."""


def _ordered_keys(keys: list[str]) -> list[str]:
    known = [k for k in OBS_KEY_ORDER if k in keys]
    return known + sorted(k for k in keys if k not in OBS_KEY_ORDER)


def flatten_observation(obs: Any) -> np.ndarray:
    """Concatenate a (possibly Dict) observation into one float32 array along the last axis.

    Dict observations are joined as ``observation, achieved_goal, desired_goal`` (then any
    other keys, sorted), which is the goal-conditioned layout D4RL's maze2d policies saw.
    Works for one observation ``[d]``, a batch from a vector env ``[B, d]`` and an episode's
    observation array ``[T+1, d]`` alike.

    Args:
        obs: an array, or a mapping of key -> array with matching leading dims.

    Returns:
        float32 array ``[..., obs_dim]``.
    """
    if isinstance(obs, Mapping):
        parts = [np.asarray(obs[k], dtype=np.float32) for k in _ordered_keys(list(obs.keys()))]
        parts = [p[..., None] if p.ndim == 0 else p for p in parts]
        return np.concatenate(parts, axis=-1)
    return np.asarray(obs, dtype=np.float32)


def flat_obs_dim(space: gym.Space) -> int:
    """Width of :func:`flatten_observation`'s output for observations from `space`."""
    if isinstance(space, gym.spaces.Dict):
        return sum(flat_obs_dim(s) for s in space.spaces.values())
    if isinstance(space, gym.spaces.Box):
        return int(np.prod(space.shape)) if space.shape else 1
    raise DataError(
        f"observation space {space} is not supported: only Box and Dict-of-Box observations"
    )


@dataclass(frozen=True)
class DatasetInfo:
    """What the rest of a trial needs to know about a dataset (dims, bounds, reference scores)."""

    dataset_id: str
    obs_dim: int
    act_dim: int
    max_action: float
    """Actions live in [-max_action, max_action] (symmetric Box, one bound for all dims)."""
    reward_min: float
    reward_max: float
    n_episodes: int
    n_transitions: int
    ref_min_score: float | None
    """Mean return of a random policy (normalized score 0), None if the dataset has none."""
    ref_max_score: float | None
    """Mean return of the reference expert (normalized score 100), None if absent."""
    env_id: str | None
    """Gymnasium id of the collecting env, None if the dataset stores no env spec."""
    can_recover_env: bool
    """True when `MinariDataset.recover_environment()` can rebuild an env for evaluation."""


def dataset_path(dataset_id: str) -> Path:
    """Folder of `dataset_id` under :func:`seem_ray.runtime.datasets_dir` (may not exist)."""
    return datasets_dir() / dataset_id


def _check_id(dataset_id: str) -> None:
    from minari.dataset.minari_dataset import parse_dataset_id

    try:
        parse_dataset_id(dataset_id)
    except (ValueError, TypeError):
        raise DataError(
            f"malformed dataset id {dataset_id!r}: expected namespace/name-vN, "
            "e.g. seem_ray/pointmaze-umaze-dense-v0"
        ) from None


def list_local_datasets() -> list[str]:
    """Ids of the readable Minari datasets under ``datasets_dir()``, sorted."""
    datasets_dir()
    import minari

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Minari warns per misconfigured folder; we just skip
        return sorted(minari.list_local_datasets().keys())


def _unknown_id_error(dataset_id: str) -> DataError:
    local = list_local_datasets()
    have = ", ".join(local) if local else "none"
    return DataError(
        f"dataset {dataset_id!r} not found under {datasets_dir()} (local datasets: {have}); "
        f"make one with `seem-ray datasets make NAME` (NAME one of {', '.join(RECIPES)})"
    )


def _unreadable(dataset_id: str, err: BaseException) -> DataError:
    detail = " ".join(str(err).split())[:200]
    return DataError(
        f"dataset {dataset_id!r} at {dataset_path(dataset_id)} is unreadable "
        f"({type(err).__name__}: {detail}); delete the folder and regenerate it "
        "(`seem-ray datasets make NAME --overwrite`)"
    )


def open_dataset(dataset_id: str, *, download: bool = False) -> Any:
    """Open a Minari dataset by id with clear errors (local, or downloaded if `download`).

    Returns:
        the `minari.MinariDataset`.
    """
    _check_id(dataset_id)
    datasets_dir()  # exports MINARI_DATASETS_PATH before minari reads it
    import minari

    if not (dataset_path(dataset_id) / "data").is_dir():
        if not download:
            raise _unknown_id_error(dataset_id)
        log.info("downloading %s from the Minari server", dataset_id)
        try:
            minari.download_dataset(dataset_id)
        except Exception as err:  # network, auth, unknown remote id: all one line for the user
            raise DataError(f"could not download dataset {dataset_id!r}: {err}") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return minari.load_dataset(dataset_id)
    except (OSError, ValueError, KeyError, TypeError, AssertionError, json.JSONDecodeError) as err:
        raise _unreadable(dataset_id, err) from None


def _max_action(dataset_id: str, space: gym.Space) -> float:
    if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1 or space.shape[0] == 0:
        raise DataError(
            f"dataset {dataset_id!r}: action space {space} is not a non-empty 1-D Box; "
            "only continuous vector actions are supported"
        )
    low = np.asarray(space.low, dtype=np.float64)
    high = np.asarray(space.high, dtype=np.float64)
    if not (np.all(np.isfinite(high)) and np.allclose(low, -high) and np.allclose(high, high[0])):
        raise DataError(
            f"dataset {dataset_id!r}: action space bounds low={low.tolist()} high={high.tolist()} "
            "are not a symmetric box [-m, m] with one m for all dims"
        )
    if high[0] <= 0:
        raise DataError(f"dataset {dataset_id!r}: action bound {high[0]} must be > 0")
    return float(high[0])


def _env_id(dataset: Any) -> str | None:
    spec = dataset.env_spec
    return None if spec is None else str(spec.id)


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def load_transitions(dataset_id: str, *, download: bool = False) -> tuple[Transitions, DatasetInfo]:
    """Load a Minari dataset as validated flat transitions plus its :class:`DatasetInfo`.

    Args:
        dataset_id: Minari id (``namespace/name-vN``), e.g. ``seem_ray/hopper-random-v0``.
        download: fetch it from the Minari server when not local (needs internet).

    Returns:
        (transitions, info). Observations are flattened with :func:`flatten_observation`.

    Raises:
        DataError: unknown/malformed id, unreadable files, empty dataset, NaN/inf values,
            shapes that disagree with the dataset's spaces, non-symmetric action box.
    """
    dataset = open_dataset(dataset_id, download=download)
    obs_space, act_space = dataset.observation_space, dataset.action_space
    obs_dim = flat_obs_dim(obs_space)
    max_action = _max_action(dataset_id, act_space)
    act_dim = int(act_space.shape[0])
    if dataset.total_episodes == 0:
        raise DataError(
            f"dataset {dataset_id!r} is empty (0 episodes); regenerate it "
            "(`seem-ray datasets make NAME --overwrite`) or pick another id"
        )

    obs, nxt, act, rew, term, trunc = [], [], [], [], [], []
    try:
        for ep in dataset.iterate_episodes():
            o = flatten_observation(ep.observations)
            a = np.asarray(ep.actions, dtype=np.float32)
            n = len(ep.rewards)
            if o.ndim != 2 or o.shape != (n + 1, obs_dim):
                raise DataError(
                    f"dataset {dataset_id!r} episode {ep.id}: observations have shape {o.shape}, "
                    f"expected ({n + 1}, {obs_dim}) from the dataset's observation space; "
                    "the files do not match their metadata: regenerate the dataset"
                )
            if a.ndim == 1 and act_dim == 1:
                a = a[:, None]
            if a.shape != (n, act_dim):
                raise DataError(
                    f"dataset {dataset_id!r} episode {ep.id}: actions have shape {a.shape}, "
                    f"expected ({n}, {act_dim}) from the dataset's action space; "
                    "the files do not match their metadata: regenerate the dataset"
                )
            if n == 0:
                continue
            obs.append(o[:-1])
            nxt.append(o[1:])
            act.append(a)
            rew.append(np.asarray(ep.rewards, dtype=np.float32).reshape(n))
            term.append(np.asarray(ep.terminations, dtype=np.float32).reshape(n))
            trunc.append(np.asarray(ep.truncations, dtype=np.float32).reshape(n))
    except DataError:
        raise
    except Exception as err:  # pyarrow.ArrowInvalid, OSError, decode errors: corrupt files
        if "reshape" in str(err):
            raise DataError(
                f"dataset {dataset_id!r}: stored arrays do not fit the dataset's observation/"
                f"action spaces ({err}); the files do not match their metadata: regenerate it"
            ) from None
        raise _unreadable(dataset_id, err) from None
    if not rew:
        raise DataError(
            f"dataset {dataset_id!r} has 0 transitions; regenerate it or pick another id"
        )
    try:
        data = Transitions(
            observations=np.concatenate(obs),
            actions=np.concatenate(act),
            rewards=np.concatenate(rew),
            next_observations=np.concatenate(nxt),
            terminals=np.concatenate(term),
            timeouts=np.concatenate(trunc),
        )
    except DataError as err:
        raise DataError(f"dataset {dataset_id!r}: {err}") from None
    if np.any(np.abs(data.actions) > max_action * (1 + 1e-4)):
        worst = float(np.abs(data.actions).max())
        raise DataError(
            f"dataset {dataset_id!r}: actions reach |a|={worst:.4g} outside the action space "
            f"bound {max_action}; the data does not match its action space"
        )
    metadata = dataset.storage.metadata
    info = DatasetInfo(
        dataset_id=dataset_id,
        obs_dim=obs_dim,
        act_dim=act_dim,
        max_action=max_action,
        reward_min=float(data.rewards.min()),
        reward_max=float(data.rewards.max()),
        n_episodes=int(dataset.total_episodes),
        n_transitions=len(data),
        ref_min_score=_optional_float(metadata.get("ref_min_score")),
        ref_max_score=_optional_float(metadata.get("ref_max_score")),
        env_id=_env_id(dataset),
        can_recover_env=dataset.env_spec is not None or metadata.get("eval_env_spec") is not None,
    )
    log.info(
        "loaded %s: %d episodes, %d transitions, obs %d, act %d",
        dataset_id,
        info.n_episodes,
        info.n_transitions,
        obs_dim,
        act_dim,
    )
    return data, info


def _folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def dataset_summary(dataset_id: str) -> dict[str, Any]:
    """Metadata-only summary (no episode data read): counts, dims, reference scores, size.

    Returns:
        dict with keys dataset_id, episodes, transitions, obs_dim, act_dim, ref_min_score,
        ref_max_score, env_id, eval_env_id, size_bytes, size_mb, algorithm, description.
    """
    dataset = open_dataset(dataset_id)
    metadata = dataset.storage.metadata
    eval_spec = metadata.get("eval_env_spec")
    eval_env_id = json.loads(eval_spec).get("id") if isinstance(eval_spec, str) else None
    act_space = dataset.action_space
    size = _folder_bytes(dataset_path(dataset_id))
    return {
        "dataset_id": dataset_id,
        "episodes": int(dataset.total_episodes),
        "transitions": int(dataset.total_steps),
        "obs_dim": flat_obs_dim(dataset.observation_space),
        "act_dim": int(np.prod(act_space.shape)) if act_space.shape else 1,
        "ref_min_score": _optional_float(metadata.get("ref_min_score")),
        "ref_max_score": _optional_float(metadata.get("ref_max_score")),
        "env_id": _env_id(dataset),
        "eval_env_id": eval_env_id or _env_id(dataset),
        "size_bytes": size,
        "size_mb": round(size / 1e6, 3),
        "algorithm": metadata.get("algorithm_name"),
        "description": metadata.get("description"),
    }


def q_bound(info: DatasetInfo, gamma: float, reward_scale: float = 1.0) -> float:
    """Largest |Q| any policy can reach: max(|r_max|, |r_min|) * scale / (1 - gamma).

    The divergence predictors compare Q against it; gamma >= 1 has no finite bound (inf).
    """
    if gamma >= 1.0:
        return math.inf
    r = max(abs(info.reward_max), abs(info.reward_min)) * abs(reward_scale)
    return float(r / (1.0 - gamma))
