"""End to end through the cluster entry point: a real multi-node Ray cluster started by
cluster/start_local.sh (head + one worker node on this machine), and seem_ray/tune.py run the
way `ray submit` runs it (the script alone, in an empty folder, absolute imports only) against
that cluster's address with the smoke sweep. The cluster is always stopped, and only it
(stop_local.sh --temp-dir), so other Ray users of the machine are left alone.

Where it sits: the outermost layer (cluster -> tune.py -> Tune/Train trials -> summary.json).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
RAY = Path(sys.executable).parent / "ray"


def free_port() -> int:
    """A port nothing listens on now (GCS binds every interface, so probe them all)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


def cluster_pids(temp_dir: str) -> list[int]:
    """Live processes whose command line names this cluster's session folder."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if f"{temp_dir}/session_" in cmd and state != "Z":
            pids.append(int(proc.name))
    return pids


def alive_nodes(address: str, env: dict[str, str], want: int, timeout: float = 40.0) -> int:
    """Active node count from `ray status` (its snapshot lags the join by a few seconds)."""
    deadline = time.monotonic() + timeout
    count = 0
    while time.monotonic() < deadline:
        res = subprocess.run(
            [str(RAY), "status", f"--address={address}"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        active = res.stdout.split("Active:", 1)[-1].split("Pending:", 1)[0]
        count = len(re.findall(r"^\s*\d+\s+node_[0-9a-f]+", active, flags=re.M))
        if count >= want:
            break
        time.sleep(2)
    return count


def test_sweep_through_the_submit_entry_point_on_a_two_node_cluster(
    tmp_path: Path, shared_datasets: Path
) -> None:
    # Short root: Ray's Unix socket paths under it must stay below 108 bytes.
    temp_dir = os.path.realpath(tempfile.mkdtemp(prefix="sre", dir="/tmp"))
    port = free_port()
    address = f"127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    # One auth mode for every process of this private loopback cluster: Ray 2.60 otherwise picks
    # token auth for some processes (when ~/.ray/auth_token exists) and none for others.
    env["RAY_AUTH_MODE"] = "disabled"
    env.update(
        RAY=str(RAY),
        MINARI_DATASETS_PATH=str(shared_datasets),
        SEEM_RAY_RUNS=str(tmp_path / "runs"),
        RAY_USAGE_STATS_ENABLED="0",
        RAY_TRAIN_HEALTH_CHECK_INTERVAL_S="0.2",
    )
    start = [
        "bash", str(REPO / "cluster" / "start_local.sh"),
        "--port", str(port), "--head-cpus", "1", "--workers", "1", "--worker-cpus", "2",
        "--temp-dir", temp_dir,
    ]  # fmt: skip
    try:
        res = subprocess.run(start, env=env, capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "head: started" in res.stdout and "worker 1: joined" in res.stdout, res.stdout
        assert alive_nodes(address, env, want=2) == 2

        again = subprocess.run(start, env=env, capture_output=True, text=True, timeout=120)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "already" in again.stdout and "joined" not in again.stdout, again.stdout

        # What `ray submit` does: the script alone, elsewhere, run as `python tune.py ARGS`.
        submit_dir = tmp_path / "head_home"
        submit_dir.mkdir()
        shutil.copy(REPO / "seem_ray" / "tune.py", submit_dir / "tune.py")
        name = f"cluster_e2e_{uuid.uuid4().hex[:8]}"
        cmd = [
            sys.executable, "tune.py", "--address", address,
            "--config", str(REPO / "tune_configs" / "smoke.yaml"), "--quiet", "--set", f"name={name}",
        ]  # fmt: skip
        run = subprocess.run(
            cmd, cwd=submit_dir, env=env, capture_output=True, text=True, timeout=300
        )
        assert run.returncode == 0, f"tune.py failed:\n{run.stdout[-3000:]}\n{run.stderr[-6000:]}"

        summary = tmp_path / "runs" / "sweeps" / name / "summary.json"
        assert summary.is_file(), run.stdout[-2000:]
        body = json.loads(summary.read_text())
        assert body["name"] == name
        assert len(body["trials"]) == 2  # smoke.yaml: critic.norm grid [none, layer]
        norms = sorted(t["overrides"]["critic.norm"] for t in body["trials"])
        assert norms == ["layer", "none"]
        assert all(t["stop_reason"] != "error" for t in body["trials"]), body["trials"]
        assert all(0 < t["steps"] <= t["budget"] for t in body["trials"]), body["trials"]
        assert f"summary: {summary.parent}" in run.stdout
    finally:
        stop = subprocess.run(
            [
                "bash",
                str(REPO / "cluster" / "stop_local.sh"),
                "--temp-dir",
                temp_dir,
                "--grace",
                "5",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        left = cluster_pids(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert left == [], f"cluster processes still alive after stop_local.sh: {left}"
