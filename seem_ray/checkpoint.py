"""Checkpoints: the one place that writes and reads training state on disk.

Writes are atomic (temporary file in the same folder, fsync, then ``os.replace``) so a crash or a
full disk never leaves a half-written checkpoint over a good one. Reads use
``torch.load(weights_only=True)``: a checkpoint is data, never code.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "CHECKPOINT_FILE",
    "PREVIOUS_FILE",
    "CheckpointError",
    "config_fingerprint",
    "load_checkpoint",
    "load_latest_good",
    "save_checkpoint",
]

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "state.pt"
PREVIOUS_FILE = "state.prev.pt"
"""The checkpoint before the latest, kept so a corrupted latest one costs one interval, not the run."""
FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; ``str()`` is one line saying why and what to do."""


def config_fingerprint(parts: dict[str, Any]) -> str:
    """Stable hash of the config parts that must match for a resume to be exact."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def save_checkpoint(directory: str | Path, state: dict[str, Any], fingerprint: str) -> Path:
    """Atomically write ``state`` to ``directory/state.pt``; returns the file path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / CHECKPOINT_FILE
    payload = {"format_version": FORMAT_VERSION, "fingerprint": fingerprint, "state": state}
    fd, tmp = tempfile.mkstemp(prefix=".state.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        if target.exists():
            os.replace(target, directory / PREVIOUS_FILE)
        os.replace(tmp, target)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        disk_error = _os_error_behind(err)
        if disk_error is not None and disk_error is not err:
            raise OSError(disk_error.errno, disk_error.strerror) from err
        raise
    return target


def _os_error_behind(err: BaseException) -> OSError | None:
    """The OSError that caused `err`, if any.

    A write that fails inside ``torch.save`` (ENOSPC) reaches us as a RuntimeError from
    torch's zip writer ("unexpected pos ...") raised while it closes the archive; the disk
    error is only in the exception's context, and the caller needs it to say "disk full".
    """
    chain: list[BaseException] = []
    current: BaseException | None = err
    while current is not None and current not in chain:  # a chain can loop back on itself
        if isinstance(current, OSError):
            return current
        chain.append(current)
        current = current.__cause__ or current.__context__
    return None


def load_checkpoint(path: str | Path, fingerprint: str | None = None) -> dict[str, Any]:
    """Read a checkpoint file (or a folder holding ``state.pt``) safely.

    Raises:
        CheckpointError: missing, truncated/corrupt, wrong format, or made by another config.
    """
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for truncated/garbled files
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated ({type(err).__name__}); delete it to restart "
            "from the previous one or from scratch"
        ) from None
    if (
        not isinstance(payload, dict)
        or payload.get("format_version") != FORMAT_VERSION
        or "state" not in payload
    ):
        raise CheckpointError(
            f"checkpoint {path} is not a seem_ray checkpoint (format {FORMAT_VERSION})"
        )
    if fingerprint is not None and payload.get("fingerprint") != fingerprint:
        raise CheckpointError(
            f"checkpoint {path} was written by a different configuration (fingerprint "
            f"{payload.get('fingerprint')} != {fingerprint}); use the original config or a new run folder"
        )
    return payload["state"]


def load_latest_good(directory: str | Path, fingerprint: str | None = None) -> dict[str, Any]:
    """The newest readable checkpoint in ``directory``: ``state.pt``, else ``state.prev.pt``.

    A corrupt or missing latest file falls back to the previous one with a warning; a checkpoint
    of a different configuration is never silently skipped.
    """
    directory = Path(directory)
    latest, previous = directory / CHECKPOINT_FILE, directory / PREVIOUS_FILE
    try:
        return load_checkpoint(latest, fingerprint)
    except CheckpointError as err:
        if "different configuration" in str(err) or not previous.is_file():
            raise
        log.warning("%s; falling back to the previous checkpoint %s", err, previous)
        return load_checkpoint(previous, fingerprint)
