"""`seem-ray` without Ray: exit codes, one-line errors, nothing half-written, resume after corruption."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

TINY = [
    "--set", "data.max_transitions=300",
    "--set", "algo.batch_size=32",
    "--set", "critic.hidden=[16, 16]",
    "--set", "actor.hidden=[16, 16]",
    "--set", "seem.every=20",
    "--set", "seem.probe_size=16",
    "--set", "seem.startup_every=0",
    "--set", "train.steps=60",
    "--set", "train.log_every=20",
    "--set", "train.checkpoint_every=20",
    "--set", "train.eval_episodes=0",
]  # fmt: skip


def seem_ray(*args: str, env_root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "seem_ray.cli", *args], capture_output=True, text=True, timeout=300
    )


def one_error_line(out: subprocess.CompletedProcess[str]) -> str:
    lines = [ln for ln in out.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, out.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--set", "algo.gamma"], "KEY=VALUE"),
        (["--set", "algo.gama=0.9"], "did you mean 'gamma'"),
        (["--set", "algo.critic_lr=-1"], "algo.critic_lr"),
        (["--set", "algo.gamma=1.5"], "allow_gamma_above_one"),
        (["--set", "seem.probe_size=0"], "seem.probe_size"),
        (["--set", "data.dataset=nobody/nothing-v0"], "seem-ray datasets make"),
        (["missing.yaml"], "not found"),
        (["--resume"], "nothing to resume"),
        (["--resume", "--workers", "2"], "--resume"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(
    isolated_env: Path, args: list[str], needle: str
) -> None:
    run_dir = isolated_env / "run"
    out = seem_ray("train", *args, "--run-dir", str(run_dir), env_root=isolated_env)
    assert out.returncode == 2, out.stderr
    assert needle in one_error_line(out)
    assert not run_dir.exists()


def test_malformed_yaml_config(isolated_env: Path) -> None:
    cfg = isolated_env / "bad.yaml"
    cfg.write_text("algo: {gamma: [0.9\n")
    out = seem_ray("train", str(cfg), "--run-dir", str(isolated_env / "run"), env_root=isolated_env)
    assert out.returncode == 2 and "malformed YAML" in one_error_line(out)


@pytest.mark.faults
def test_train_then_resume_after_a_truncated_checkpoint(isolated_env: Path) -> None:
    run_dir = isolated_env / "run"
    first = seem_ray("train", *TINY, "--run-dir", str(run_dir), env_root=isolated_env)
    assert first.returncode == 0, first.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 60 and summary["stop_reason"] in (
        "budget",
        "seem",
        "growth",
        "q_bound",
        "nan",
    )
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [20.0, 40.0, 60.0]
    assert all("seem" in r for r in records)
    # A second run into the same folder is refused: nothing is overwritten.
    again = seem_ray("train", *TINY, "--run-dir", str(run_dir), env_root=isolated_env)
    assert again.returncode == 2 and "not empty" in one_error_line(again)
    # Corrupt the latest checkpoint: resume falls back to the previous one (step 40) and finishes.
    latest = run_dir / "checkpoint" / "state.pt"
    latest.write_bytes(latest.read_bytes()[:64])
    resumed = seem_ray(
        "train",
        *TINY,
        "--set",
        "train.steps=80",
        "--run-dir",
        str(run_dir),
        "--resume",
        env_root=isolated_env,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "falling back to the previous checkpoint" in resumed.stderr
    steps = [
        json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps == [20.0, 40.0, 60.0, 80.0]
    # SEEM of the final checkpoint, from the CLI
    seem = seem_ray("seem", str(run_dir), "--top-k", "3", env_root=isolated_env)
    assert seem.returncode == 0, seem.stderr
    body = json.loads(seem.stdout)
    assert body["step"] == 80 and -1.0 <= body["seem"] <= 1.0 and len(body["top_eigs"]) == 3


def test_resume_with_other_config_is_refused(isolated_env: Path) -> None:
    run_dir = isolated_env / "run"
    assert (
        seem_ray("train", *TINY, "--run-dir", str(run_dir), env_root=isolated_env).returncode == 0
    )
    other = seem_ray(
        "train",
        *TINY,
        "--set",
        "algo.gamma=0.5",
        "--run-dir",
        str(run_dir),
        "--resume",
        env_root=isolated_env,
    )
    assert other.returncode == 2 and "different configuration" in one_error_line(other)
