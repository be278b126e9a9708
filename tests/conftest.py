"""Shared fixtures: isolated dataset/run folders, a tiny local Minari dataset."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MPLBACKEND", "Agg")

TINY_DATASET = "seem_ray/pointmaze-umaze-dense-v0"


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Tiny nets: one torch thread avoids OpenMP stalls on a shared 2-core machine.
    Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def shared_datasets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A session-wide dataset root holding one tiny PointMaze dataset (made once)."""
    root = tmp_path_factory.mktemp("datasets")
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        from seem_ray.data.generate import make_dataset

        make_dataset("pointmaze-umaze-dense", steps=3000, seed=0, ref_episodes=1)
    finally:
        if old is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = old
    return root


@pytest.fixture()
def isolated_env(
    tmp_path: Path, shared_datasets: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """Point datasets at the shared tiny root and runs/MLflow at a fresh tmp folder."""
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(shared_datasets))
    monkeypatch.setenv("SEEM_RAY_RUNS", str(tmp_path / "runs"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    yield tmp_path
