"""Checkpoints: atomic, weights_only, clear errors on corruption or a different config."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from seem_ray.checkpoint import CheckpointError, load_checkpoint, load_latest_good, save_checkpoint


def test_round_trip(tmp_path: Path) -> None:
    state = {"w": torch.arange(5.0), "step": 7, "nested": {"x": [1, 2]}}
    save_checkpoint(tmp_path, state, "abc")
    got = load_checkpoint(tmp_path, "abc")
    assert torch.equal(got["w"], state["w"]) and got["step"] == 7 and got["nested"] == {"x": [1, 2]}
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]  # no temp files left
    save_checkpoint(tmp_path, {"step": 8}, "abc")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.prev.pt", "state.pt"]


def test_corrupt_latest_falls_back_to_previous(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, {"step": 1, "w": torch.randn(100)}, "abc")
    path = save_checkpoint(tmp_path, {"step": 2, "w": torch.randn(100)}, "abc")
    path.write_bytes(path.read_bytes()[:100])
    assert load_latest_good(tmp_path, "abc")["step"] == 1
    (tmp_path / "state.prev.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_latest_good(tmp_path, "abc")


def test_truncated_file_is_a_clear_error(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path, {"w": torch.randn(1000)}, "abc")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(tmp_path)


def test_fingerprint_mismatch_and_missing(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, {"step": 1}, "abc")
    with pytest.raises(CheckpointError, match="different configuration"):
        load_checkpoint(tmp_path, "xyz")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope")


def test_failed_write_keeps_the_previous_checkpoint(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, {"step": 1}, "abc")

    class Boom:
        def __reduce__(self):  # torch.save pickles: make it fail mid-write
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint(tmp_path, {"step": 2, "bad": Boom()}, "abc")
    assert load_checkpoint(tmp_path, "abc")["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]  # no temp file, no rotation


def test_pickled_code_is_refused(tmp_path: Path) -> None:
    import pickle

    (tmp_path / "state.pt").write_bytes(pickle.dumps({"format_version": 1, "state": {"f": print}}))
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path)
