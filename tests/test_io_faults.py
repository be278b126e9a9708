"""A run folder that cannot be written, or a disk that fills up mid-run: one clear error, no damage.

The faults are real OS failures where the OS can produce them on any machine (a run folder
under a regular file, ``/dev/full`` for an append). A full disk during an atomic write is
simulated at the OS boundary only: ``os`` as seen by the module that writes the file is
replaced by a view of it whose files accept a few hundred bytes and then fail with ENOSPC,
exactly as a filling disk does (a short write, then the error). Our own code is never patched.
"""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import stat
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from tiny_run import TINY_RUN

import seem_ray.checkpoint
import seem_ray.runtime
from seem_ray import cli
from seem_ray.checkpoint import CHECKPOINT_FILE, PREVIOUS_FILE, load_checkpoint, load_latest_good
from seem_ray.config import RunConfig, load_run_config, parse_set_expressions
from seem_ray.runner import run_local

pytestmark = pytest.mark.faults  # `make test-faults` runs these with the kill tests

TINY = [*TINY_RUN, "train.steps=80", "train.checkpoint_every=20"]
STEPS = [20.0, 40.0, 60.0, 80.0]
ENOSPC_TEXT = os.strerror(errno.ENOSPC)
needs_proc_fd = pytest.mark.skipif(
    not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd to name an open file"
)


def tiny_config() -> RunConfig:
    return load_run_config(None, parse_set_expressions(TINY))


def cli_args(run_dir: Path, *extra: str) -> list[str]:
    sets = [arg for expr in TINY for arg in ("--set", expr)]
    return ["train", *sets, "--run-dir", str(run_dir), *extra]


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def steps_in(metrics: Path) -> list[float]:
    return [json.loads(line)["step"] for line in metrics.read_text().splitlines()]


def leftovers(folder: Path) -> list[str]:
    """Temporary files of atomic writes still lying in ``folder``."""
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def enospc() -> OSError:
    return OSError(errno.ENOSPC, ENOSPC_TEXT)


# --------------------------------------------------------------------------------------------
# a disk that fills up, seen through one module's `os`
# --------------------------------------------------------------------------------------------


class _FillingRaw(io.RawIOBase):
    """A file on a disk with `room` bytes left: short write at the edge, then ENOSPC."""

    def __init__(self, fd: int, room: int) -> None:
        super().__init__()
        self._file = io.FileIO(fd, "w")
        self.room = room

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._file.fileno()

    def write(self, data: Any) -> int:
        if self.room <= 0:
            raise enospc()
        written = self._file.write(bytes(memoryview(data)[: self.room]))
        self.room -= written
        return written

    def close(self) -> None:
        if not self.closed:
            self._file.close()
        super().close()


class FullDisk(ModuleType):
    """``os`` for one module: the `nth` file whose name starts with `prefix` hits a full disk.

    Args:
        prefix: temp-file prefix of the atomic write to break (".state." for checkpoints).
        nth: which such file fails (1 = the first).
        where: "write" (short write, then ENOSPC), "fsync" (the data is flushed but the
            filesystem reports ENOSPC, as delayed allocation does) or "rename" (the final
            ``os.replace`` of the temp file fails).
        room: bytes the failing file accepts before "write" fails.
    """

    def __init__(self, prefix: str, nth: int, where: str, room: int = 300) -> None:
        super().__init__("os")
        self.prefix, self.nth, self.where, self.room = prefix, nth, where, room
        self.seen = 0
        self.failed_fds: set[int] = set()
        self.bytes_before_failure = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def _armed(self, fd: int) -> bool:
        name = Path(os.readlink(f"/proc/self/fd/{fd}")).name
        if not name.startswith(self.prefix):
            return False
        self.seen += 1
        return self.seen == self.nth

    def fdopen(self, fd: int, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if not self._armed(fd):
            return os.fdopen(fd, mode, *args, **kwargs)
        self.failed_fds.add(fd)
        if self.where != "write":
            return os.fdopen(fd, mode, *args, **kwargs)
        raw = _FillingRaw(fd, room=self.room)
        self.bytes_before_failure = self.room
        buffered = io.BufferedWriter(raw)
        return buffered if "b" in mode else io.TextIOWrapper(buffered, encoding="utf-8")

    def fsync(self, fd: int) -> None:
        os.fsync(fd)
        if self.where == "fsync" and fd in self.failed_fds:
            raise enospc()

    def replace(self, src: Any, dst: Any) -> None:
        if self.where == "rename" and self.failed_fds and Path(src).name.startswith(self.prefix):
            raise enospc()
        os.replace(src, dst)


# --------------------------------------------------------------------------------------------
# (a) a run folder that cannot be created
# --------------------------------------------------------------------------------------------


def _blocked_run_dir(tmp: Path, kind: str) -> tuple[Path, Path]:
    """(run dir, the path that blocks it) for each way a run folder can be unusable."""
    if kind == "under_a_file":
        blocker = tmp / "somefile"
        blocker.write_text("not a folder\n")
        return blocker / "run", blocker
    if kind == "is_a_file":
        blocker = tmp / "run"
        blocker.write_text("not a folder\n")
        return blocker, blocker
    locked = tmp / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP)  # 0o550
    if os.access(locked, os.W_OK):
        locked.chmod(0o755)
        pytest.skip("chmod cannot make a folder read-only for this user (root)")
    return locked / "run", locked


@pytest.fixture()
def restore_modes(tmp_path: Path) -> Any:
    yield
    for path in tmp_path.rglob("*"):
        if path.is_dir():
            path.chmod(0o755)


@pytest.mark.parametrize("kind", ["under_a_file", "is_a_file", "read_only_parent"])
def test_unusable_run_folder_is_one_line_exit_2(
    isolated_env: Path, restore_modes: None, kind: str
) -> None:
    run_dir, blocker = _blocked_run_dir(isolated_env, kind)
    before = sorted(p.name for p in blocker.parent.iterdir())
    out = subprocess.run(
        [sys.executable, "-m", "seem_ray.cli", *cli_args(run_dir)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    (line,) = error_lines(out.stderr)
    assert str(blocker) in line and "--run-dir" in line
    assert sorted(p.name for p in blocker.parent.iterdir()) == before  # nothing written


def test_run_local_refuses_a_run_folder_under_a_file(isolated_env: Path) -> None:
    run_dir, blocker = _blocked_run_dir(isolated_env, "under_a_file")
    with pytest.raises(OSError, match="somefile") as caught:
        run_local(tiny_config(), run_dir)
    assert "\n" not in str(caught.value)
    assert blocker.read_text() == "not a folder\n"


# --------------------------------------------------------------------------------------------
# (b) disk full while writing a checkpoint
# --------------------------------------------------------------------------------------------


@needs_proc_fd
@pytest.mark.parametrize("room", [0, 1, 64, 300, 1000, 4000, 20000])
def test_save_checkpoint_reports_enospc_wherever_the_disk_fills(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, room: int
) -> None:
    """torch.save turns a failed write into a RuntimeError on close; the caller must see ENOSPC."""
    import torch

    from seem_ray.checkpoint import save_checkpoint

    state = {"step": 1, "w": torch.randn(8192)}  # 32 kB of tensor data plus the zip structure
    save_checkpoint(tmp_path, state, "abc")
    monkeypatch.setattr(seem_ray.checkpoint, "os", FullDisk(".state.", 1, "write", room=room))
    with pytest.raises(OSError) as caught:
        save_checkpoint(tmp_path, {"step": 2, "w": torch.randn(8192)}, "abc")
    assert type(caught.value) is OSError and caught.value.errno == errno.ENOSPC
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT_FILE]
    assert torch.equal(load_checkpoint(tmp_path, "abc")["w"], state["w"])


@needs_proc_fd
@pytest.mark.parametrize("where", ["write", "fsync", "rename"])
def test_disk_full_during_a_checkpoint_keeps_the_last_good_one_and_resumes(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    run_dir = isolated_env / "run"
    ckpt_dir = run_dir / "checkpoint"
    disk = FullDisk(".state.", nth=3, where=where)  # checkpoints at 20, 40, then 60 fails
    monkeypatch.setattr(seem_ray.checkpoint, "os", disk)
    with pytest.raises(OSError) as caught:
        run_local(tiny_config(), run_dir)
    message = str(caught.value)
    assert caught.value.errno == errno.ENOSPC
    assert "\n" not in message and ENOSPC_TEXT in message
    assert str(ckpt_dir) in message and "--resume" in message and "step 40" in message
    if where == "write":
        assert disk.bytes_before_failure > 0  # a partial temp file really was on disk

    # Nothing half-written is left, and what is there is loadable.
    assert leftovers(ckpt_dir) == [] and leftovers(run_dir) == []
    present = sorted(p.name for p in ckpt_dir.iterdir())
    assert set(present) <= {CHECKPOINT_FILE, PREVIOUS_FILE} and present
    for name in present:
        assert load_checkpoint(ckpt_dir / name)["step"] in (20, 40)
    assert load_latest_good(ckpt_dir)["step"] == 40
    assert not (run_dir / "summary.json").exists()

    # Space freed: --resume continues from step 40 and finishes the budget.
    monkeypatch.setattr(seem_ray.checkpoint, "os", os)
    summary = run_local(tiny_config(), run_dir, resume=True)
    assert summary.steps == 80
    assert steps_in(run_dir / "metrics.jsonl") == STEPS
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 80
    assert load_checkpoint(ckpt_dir)["step"] == 80 and leftovers(ckpt_dir) == []


@needs_proc_fd
def test_cli_reports_a_full_disk_in_one_line(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = isolated_env / "run"
    monkeypatch.setattr(seem_ray.checkpoint, "os", FullDisk(".state.", nth=2, where="write"))
    code = cli.main(cli_args(run_dir))  # an escaping exception would fail the test here
    assert code == 1
    (line,) = error_lines(capsys.readouterr().err)
    assert ENOSPC_TEXT in line and "--resume" in line and str(run_dir) in line
    assert load_latest_good(run_dir / "checkpoint")["step"] == 20


# --------------------------------------------------------------------------------------------
# (c) metrics.jsonl and summary.json
# --------------------------------------------------------------------------------------------


class _DiskFillsAfterFirstCheckpoint(logging.Handler):
    """On the first runner log line after a checkpoint exists, metrics.jsonl moves to /dev/full."""

    def __init__(self, run_dir: Path) -> None:
        super().__init__()
        self.run_dir = run_dir
        self.kept: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        metrics = self.run_dir / "metrics.jsonl"
        if self.kept is None and (self.run_dir / "checkpoint" / CHECKPOINT_FILE).exists():
            self.kept = metrics.read_text()
            metrics.unlink()
            metrics.symlink_to("/dev/full")


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_metrics_append_on_a_full_disk_is_clear_and_resumable(
    isolated_env: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run_dir = isolated_env / "run"
    metrics = run_dir / "metrics.jsonl"
    caplog.set_level(logging.INFO, logger="seem_ray.runner")
    hook = _DiskFillsAfterFirstCheckpoint(run_dir)
    logging.getLogger("seem_ray.runner").addHandler(hook)
    try:
        with pytest.raises(OSError) as caught:
            run_local(tiny_config(), run_dir)
    finally:
        logging.getLogger("seem_ray.runner").removeHandler(hook)
    message = str(caught.value)
    assert hook.kept is not None and caught.value.errno == errno.ENOSPC
    assert "\n" not in message and ENOSPC_TEXT in message
    assert str(metrics) in message and "--resume" in message and "step 20" in message
    assert load_latest_good(run_dir / "checkpoint")["step"] == 20

    # Space freed; the file keeps the half line a disk that filled mid-record leaves behind.
    metrics.unlink()
    metrics.write_text(hook.kept + '{"step": 40.0, "critic_lo')
    summary = run_local(tiny_config(), run_dir, resume=True)
    assert summary.steps == 80 and steps_in(metrics) == STEPS


@needs_proc_fd
def test_summary_on_a_full_disk_is_clear_and_resume_rewrites_it(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = isolated_env / "run"
    monkeypatch.setattr(seem_ray.runtime, "os", FullDisk(".summary.json.", nth=1, where="write"))
    with pytest.raises(OSError) as caught:
        run_local(tiny_config(), run_dir)
    message = str(caught.value)
    assert caught.value.errno == errno.ENOSPC
    assert "\n" not in message and ENOSPC_TEXT in message
    assert str(run_dir / "summary.json") in message and "--resume" in message
    assert not (run_dir / "summary.json").exists() and leftovers(run_dir) == []
    assert load_checkpoint(run_dir / "checkpoint")["step"] == 80

    monkeypatch.setattr(seem_ray.runtime, "os", os)
    summary = run_local(tiny_config(), run_dir, resume=True)
    assert summary.steps == 80 and steps_in(run_dir / "metrics.jsonl") == STEPS  # no retraining
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 80


def test_resume_refuses_tune_state_cut_off_by_a_killed_driver(tmp_path: Path) -> None:
    """A driver killed while Tune copies its state leaves an empty or cut-off file; resuming
    from it would make Tune restart the sweep with empty trial configs, so it is refused."""
    import ray.cloudpickle as cloudpickle

    from seem_ray.tune import saved_state_problem

    (tmp_path / "experiment_state-2026-01-01_00-00-00.json").write_text(json.dumps({"trials": []}))
    state = cloudpickle.dumps({"grid": [1, 2, 3]})
    (tmp_path / "basic-variant-state-2026-01-01_00-00-00.json").write_bytes(state)
    assert saved_state_problem(tmp_path) is None

    newest = tmp_path / "basic-variant-state-2026-01-01_00-00-09.json"
    for cut in (b"", state[: len(state) // 2]):  # empty, then cut off mid-pickle
        newest.write_bytes(cut)
        problem = saved_state_problem(tmp_path)
        assert problem is not None and str(newest) in problem and "new name" in problem
    newest.unlink()
    (tmp_path / "experiment_state-2026-01-01_00-00-09.json").write_text('{"trials": [')
    assert "experiment_state-2026-01-01_00-00-09.json is truncated" in str(
        saved_state_problem(tmp_path)
    )
