"""Runtime plumbing with one home each: seeding, device choice, logging, project paths.

Sits under every stage of the flow; imports nothing from Ray/MLflow/Optuna.
"""

from __future__ import annotations

import errno
import logging
import os
import random
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "PROJECT_ROOT",
    "RunFolderError",
    "StorageError",
    "storage_fix",
    "datasets_dir",
    "pick_device",
    "runs_dir",
    "seed_everything",
    "set_threads",
    "setup_logging",
    "atomic_write_text",
]

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class StorageError(OSError):
    """A run's file could not be written (full disk, read-only or blocked folder).

    ``str()`` is one line: the path, the OS's reason and what to do; ``errno`` is the OS's code,
    so callers can still tell a full disk (ENOSPC) from a permission problem.
    """

    def __init__(self, message: str, os_errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = os_errno


class RunFolderError(StorageError):
    """The run folder cannot be created or written before training starts: a bad --run-dir."""


_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}
_NOT_WRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS}


def storage_fix(err: OSError, folder: Path) -> str:
    """What the user can do about a failed write into `folder`, judged by the OS's errno."""
    if err.errno in _DISK_FULL:
        return f"free disk space where {folder} lives"
    if err.errno in _NOT_WRITABLE:
        return f"make {folder} writable"
    return f"check the disk holding {folder}"


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return a torch Generator for samplers."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


def set_threads(threads: int) -> None:
    """Set torch's intra-op threads when asked (0 keeps torch's default)."""
    if threads > 0:
        torch.set_num_threads(threads)


def pick_device(name: str = "auto") -> torch.device:
    """'auto' -> cuda when available else cpu; 'cuda' without a GPU is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "train.device is 'cuda' but no CUDA device is visible; use 'auto' or 'cpu'"
        )
    return torch.device(name)


def runs_dir() -> Path:
    """Where runs, MLflow's sqlite store and Optuna studies live ($SEEM_RAY_RUNS or ./runs)."""
    path = Path(os.environ.get("SEEM_RAY_RUNS", PROJECT_ROOT / "runs")).expanduser().resolve()
    return path


def datasets_dir() -> Path:
    """Minari's dataset root: $MINARI_DATASETS_PATH, else <project>/datasets (set for workers too).

    Absolute, because Ray workers change directory. Exported into the environment so that
    Minari itself and any Ray worker started afterwards agree on it.
    """
    raw = os.environ.get("MINARI_DATASETS_PATH")
    path = Path(raw).expanduser().resolve() if raw else (PROJECT_ROOT / "datasets").resolve()
    os.environ["MINARI_DATASETS_PATH"] = str(path)
    return path


def setup_logging(level: int = logging.INFO) -> None:
    """One-line log format for the CLI and scripts (library code only uses `logging`)."""
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write `text` to `path` via a temporary file + rename: readers never see half a file."""
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
