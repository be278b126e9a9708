"""Fault suite for sweeps: a killed sweep driver resumed with --resume, a trial whose critic
blows up to NaN next to a healthy one, and a Ray Train run resumed from a truncated checkpoint
(falls back to the older one; one clear line when none is good).

Where it sits: the outermost layer (CLI -> Ray Tune -> Ray Train trials -> MLflow/summary.json),
exercised the way things fail in practice. Run with ``make test-faults`` (marker ``faults``).

Process hygiene on a machine shared with other Ray users: every Ray session started here lives
under its own ``RAY_TMPDIR`` and nothing here runs ``ray stop`` (which kills every Ray process of
the user). After the driver is SIGKILLed, its Ray processes are found by (a) a command line that
names our private temp dir, (b) membership in the driver's process group (the driver ran in its
own session), and (c) descent from either; only those are terminated (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from seem_ray import metrics as M
from seem_ray.tune import saved_state_problem

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.faults]

DIVERGED = (M.REASON_SEEM, M.REASON_Q_BOUND, M.REASON_NAN, M.REASON_GROWTH)


# ----------------------------------------------------------------------------- process helpers
def _proc_table() -> dict[int, tuple[int, int, str, str]]:
    """pid -> (ppid, pgid, state, cmdline) for this user's processes."""
    uid = os.getuid()
    table = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if proc.stat().st_uid != uid:
                continue
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        table[int(proc.name)] = (int(fields[1]), int(fields[2]), fields[0], cmd)
    return table


def ray_leftovers(ray_tmp: str, pgids: set[int]) -> list[int]:
    """Live processes of the Ray sessions under `ray_tmp` or in the process groups `pgids`."""
    table = _proc_table()
    me = os.getpid()
    found = {
        pid
        for pid, (_, pgid, _, cmd) in table.items()
        if pid != me and (f"{ray_tmp}/" in cmd or pgid in pgids)
    }
    changed = True
    while changed:  # plus descendants (workers re-titled as ray::..., in their own sessions)
        changed = False
        for pid, (ppid, *_) in table.items():
            if ppid in found and pid not in found and pid != me:
                found.add(pid)
                changed = True
    return sorted(pid for pid in found if table[pid][2] != "Z")


def terminate(pids: list[int], grace: float = 8.0) -> None:
    """SIGTERM, then SIGKILL whatever is still alive after `grace` s (orphaned agents ignore TERM)."""

    def alive(pid: int) -> bool:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return False
        return state != "Z"

    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(alive(p) for p in pids):
            time.sleep(0.2)
        pids = [p for p in pids if alive(p)]
        if not pids:
            return


def stop_ray_processes(ray_tmp: str, pgids: set[int]) -> list[int]:
    """Stop our Ray processes (and only them); returns any that survived."""
    terminate(ray_leftovers(ray_tmp, pgids))
    return ray_leftovers(ray_tmp, pgids)


# ----------------------------------------------------------------------------- MLflow helpers
def _sweep_runs(db: Path, sweep: str) -> list[dict]:
    """This sweep's MLflow runs straight from the sqlite store (read-only, safe while written).

    A driver SIGKILLed inside a write leaves a hot journal, which a read-only connection cannot
    roll back (SQLITE_READONLY_ROLLBACK): then the store is read read-write, which rolls the dead
    writer's half-done transaction back exactly as MLflow's own next open of the store would."""
    if not db.exists():
        return []
    try:
        return _query_sweep_runs(db, sweep, read_only=True)
    except sqlite3.OperationalError as err:
        if getattr(err, "sqlite_errorname", "") != "SQLITE_READONLY_ROLLBACK":
            return []  # tables not created yet, or locked for a moment: the callers poll
    try:
        return _query_sweep_runs(db, sweep, read_only=False)
    except sqlite3.OperationalError:
        return []


def _query_sweep_runs(db: Path, sweep: str, read_only: bool) -> list[dict]:
    uri = f"file:{db}?mode=ro" if read_only else f"file:{db}"
    con = sqlite3.connect(uri, uri=True, timeout=5)
    try:
        rows = con.execute(
            "SELECT r.run_uuid, r.status, r.start_time, r.end_time FROM runs r "
            "JOIN tags t ON t.run_uuid = r.run_uuid "
            "WHERE t.key = 'seem_ray.sweep' AND t.value = ?",
            (sweep,),
        ).fetchall()
        out = []
        for run_id, status, start, end in rows:
            tags = dict(con.execute("SELECT key, value FROM tags WHERE run_uuid = ?", (run_id,)))
            lo, hi = con.execute(
                "SELECT MIN(step), MAX(step) FROM metrics WHERE run_uuid = ?", (run_id,)
            ).fetchone()
            out.append(
                {
                    "id": run_id,
                    "status": status,
                    "start": start,
                    "end": end,
                    "tags": tags,
                    "min_step": lo,
                    "max_step": hi,
                }
            )
        return out
    finally:
        con.close()


def _children(runs: list[dict]) -> list[dict]:
    return [r for r in runs if r["tags"].get("seem_ray.kind") == "trial"]


def _parents(runs: list[dict]) -> list[dict]:
    return [r for r in runs if r["tags"].get("seem_ray.kind") == "sweep"]


# ----------------------------------------------------------------------------- 1. killed driver
def _sweep_cmd(name: str, *extra: str) -> list[str]:
    # SGD on plain critics: learning rate 50 diverges within a few reports (the stopper ends it),
    # the two small rates train to the budget. 2 at a time, 600 steps, a checkpoint every 100:
    # long enough to kill mid-way, short enough for a loaded 2-core machine.
    return [
        sys.executable, "-m", "seem_ray.cli", "sweep", str(ROOT / "tune_configs" / "smoke.yaml"),
        "--quiet", "--name", name, "--address", "local",
        "--set", "base.train.steps=600",
        "--set", "base.train.checkpoint_every=100",
        "--set", "base.algo.critic_optimizer=sgd",
        "--set", "space={critic.norm: {grid: [none]}, algo.critic_lr: {grid: [50.0, 3.0e-4, 1.0e-3]}}",
        "--set", "max_concurrent=2",
        *extra,
    ]  # fmt: skip


def _experiment_saved_at(exp: Path) -> float:
    """When Tune last wrote the experiment state (trials + callback/stopper state), 0 if never."""
    return max((f.stat().st_mtime for f in exp.glob("experiment_state-*.json")), default=0.0)


def _wait_until_mid_sweep(
    proc: subprocess.Popen, db: Path, exp: Path, name: str, timeout: float
) -> list[dict]:
    """Until the diverging trial has been stopped and Tune has saved that in its experiment
    state, and another trial has reported past its first checkpoint (step >= 150)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the sweep driver exited before it could be killed"
        children = _children(_sweep_runs(db, name))
        # A stopped trial's MLflow run gets its stop_reason tag a moment before its end time.
        stopped = [
            c for c in children if c["tags"].get(M.STOP_REASON) in DIVERGED and c["end"] is not None
        ]
        running = [c for c in children if c["status"] == "RUNNING" and (c["max_step"] or 0) >= 150]
        saved = _experiment_saved_at(exp) > stopped[0]["end"] / 1000 + 0.5 if stopped else False
        # Kill between Tune's saves, not during one: a driver killed while Tune copies its state
        # leaves a cut-off file, which --resume refuses with one line (test_io_faults covers it).
        if running and saved and saved_state_problem(exp) is None:
            return children
        time.sleep(0.5)
    pytest.fail(f"the sweep did not reach the kill point within {timeout:.0f} s")


@pytest.fixture()
def ray_tmp() -> Iterator[str]:
    """A private RAY_TMPDIR (short: Ray's Unix socket paths under it must stay below 108 bytes)."""
    path = os.path.realpath(tempfile.mkdtemp(prefix="srf", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_killed_sweep_driver_resumes_to_a_complete_consistent_sweep(
    tmp_path: Path, shared_datasets: Path, ray_tmp: str
) -> None:
    name = f"faults_kill_{uuid.uuid4().hex[:8]}"
    runs = tmp_path / "runs"
    db = runs / "mlflow.db"
    exp = runs / "sweeps" / name
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env.update(
        MINARI_DATASETS_PATH=str(shared_datasets),
        SEEM_RAY_RUNS=str(runs),
        RAY_TMPDIR=ray_tmp,
        RAY_USAGE_STATS_ENABLED="0",
        RAY_TRAIN_HEALTH_CHECK_INTERVAL_S="0.2",
        # Tune saves its experiment state every 10+ s by default; sooner keeps the wait for a
        # saved verdict short (and reachable on a fast machine where trials take seconds).
        TUNE_GLOBAL_CHECKPOINT_S="2",
    )
    work = tmp_path / "cwd"  # whatever a driver drops in its working folder stays in tmp
    work.mkdir()
    pgids: set[int] = set()

    def start(*extra: str, log: str) -> subprocess.Popen:
        with open(tmp_path / log, "w") as fh:
            proc = subprocess.Popen(
                _sweep_cmd(name, *extra),
                cwd=work,
                env=env,
                stdout=fh,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: found again for the cleanup
            )
        pgids.add(proc.pid)
        return proc

    try:
        first = start(log="first.log")
        before = _wait_until_mid_sweep(first, db, exp, name, timeout=240)
        os.kill(first.pid, signal.SIGKILL)  # the driver alone, as a crash would
        assert first.wait(timeout=30) == -signal.SIGKILL
        assert not (exp / "summary.json").exists(), "the sweep ended before the kill"
        cut = {c["tags"]["seem_ray.trial_id"]: c for c in before if c["status"] == "RUNNING"}
        # Its Ray processes outlive it as orphans (agents, a worker): stop those, and only those.
        assert stop_ray_processes(ray_tmp, pgids) == []
        assert [p["status"] for p in _parents(_sweep_runs(db, name))] == ["RUNNING"]

        second = start("--resume", log="resume.log")
        try:
            rc = second.wait(timeout=360)
        except subprocess.TimeoutExpired:
            second.kill()
            rc = None
        out = (tmp_path / "resume.log").read_text()
        assert rc == 0, f"resume failed (rc={rc}):\n{out[-6000:]}"
    finally:
        left = stop_ray_processes(ray_tmp, pgids)
    assert left == [], f"Ray processes of this test still alive: {left}"

    # --- the sweep's own record: every grid point once, at its budget or stopped for a reason
    body = json.loads((exp / "summary.json").read_text())
    trials = body["trials"]
    ids = [t["trial_id"] for t in trials]
    assert len(ids) == 3 and len(set(ids)) == 3, ids
    by_lr = {t["overrides"]["algo.critic_lr"]: t for t in trials}
    assert sorted(by_lr) == [3e-4, 1e-3, 50.0]
    for t in trials:
        assert t["stop_reason"] != "error", t
        if t["stop_reason"] == M.REASON_BUDGET:
            assert t["steps"] == t["budget"] == 600, t
        else:
            assert t["stop_reason"] in DIVERGED and 0 < t["steps"] < 600, t
    # The verdict on the trial stopped before the kill survived the restart (restored stopper).
    assert by_lr[50.0]["stop_reason"] in DIVERGED and by_lr[50.0]["diverged_since"] is not None
    assert len(list(exp.glob("run_trial_*"))) == 3  # Tune made no second trial for a grid point

    # --- MLflow: nothing RUNNING, one FINISHED parent, exactly one FINISHED child per trial
    after = _sweep_runs(db, name)
    assert [r["id"] for r in after if r["status"] == "RUNNING"] == []
    parents = _parents(after)
    assert [p["status"] for p in parents] == ["FINISHED"]
    children = _children(after)
    assert {c["tags"]["mlflow.parentRunId"] for c in children} == {parents[0]["id"]}
    by_trial: dict[str, list[dict]] = {}
    for c in children:
        by_trial.setdefault(c["tags"]["seem_ray.trial_id"], []).append(c)
    assert set(by_trial) == set(ids)
    reasons = {t["trial_id"]: t["stop_reason"] for t in trials}
    for trial_id, group in by_trial.items():
        finished = [c for c in group if c["status"] == "FINISHED"]
        assert len(finished) == 1, (trial_id, [c["status"] for c in group])
        assert finished[0]["tags"][M.STOP_REASON] == reasons[trial_id]
        others = [c["status"] for c in group if c is not finished[0]]
        if trial_id in cut:  # the run cut by the kill is closed, its rerun is a fresh child
            assert [c["id"] for c in group if c["status"] == "KILLED"] == [cut[trial_id]["id"]]
            assert finished[0]["id"] != cut[trial_id]["id"]
            if (cut[trial_id]["max_step"] or 0) >= 150:  # its step-100 checkpoint was written
                # so Ray Train resumed the trial from a checkpoint, not from step 0.
                assert finished[0]["min_step"] > 100, (trial_id, finished[0])
        else:
            assert others == [], (trial_id, others)


# ----------------------------------------------------------------------------- in-process Ray
@pytest.fixture(scope="module")
def ray_session(shared_datasets: Path, tmp_path_factory: pytest.TempPathFactory):
    """One local Ray session (private RAY_TMPDIR) for the in-process tests; runs in tmp."""
    import ray

    ray_tmp_dir = os.path.realpath(tempfile.mkdtemp(prefix="srf", dir="/tmp"))
    runs = tmp_path_factory.mktemp("fault_runs")
    # Callbacks defined in this module travel to Ray by value (tests/ is not importable there).
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    from seem_ray.tune import init_ray

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINARI_DATASETS_PATH", str(shared_datasets))
        mp.setenv("SEEM_RAY_RUNS", str(runs))
        mp.setenv("RAY_TMPDIR", ray_tmp_dir)
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        try:
            init_ray("local")
            yield runs
        finally:
            ray.shutdown()
            left = stop_ray_processes(ray_tmp_dir, set())
            shutil.rmtree(ray_tmp_dir, ignore_errors=True)
    assert left == [], f"Ray processes of this session still alive: {left}"


# ----------------------------------------------------------------------------- 2. NaN trial
def test_nan_trial_is_stopped_and_the_sweep_goes_on_to_the_healthy_one(ray_session: Path) -> None:
    from seem_ray.config import load_sweep_config
    from seem_ray.tune import run_sweep

    name = f"faults_nan_{uuid.uuid4().hex[:8]}"
    sweep = load_sweep_config(
        ROOT / "tune_configs" / "smoke.yaml",
        {
            "name": name,
            # Grid order puts the exploding trial first; one at a time, so the healthy trial can
            # only run if the sweep carries on after the NaN.
            "space": {"critic.norm": {"grid": ["none"]}, "algo.critic_lr": {"grid": [50.0, 3e-4]}},
            "base.algo.critic_optimizer": "sgd",  # plain SGD at lr 50: Q overflows to inf/NaN
            "base.train.steps": 300,
            # Only non-finite values stop a trial: the Q-bound check stays out of the way.
            "base.stopper.kind": "q_bound",
            "base.stopper.q_bound_factor": 1e300,
            "max_concurrent": 1,
        },
    )
    summary = run_sweep(sweep, quiet=True)

    body = json.loads((Path(summary.path) / "summary.json").read_text())
    by_lr = {t["overrides"]["algo.critic_lr"]: t for t in body["trials"]}
    assert sorted(by_lr) == [3e-4, 50.0]
    nan, healthy = by_lr[50.0], by_lr[3e-4]
    assert nan["stop_reason"] == M.REASON_NAN, nan
    assert 0 < nan["steps"] < 300 and nan["diverged_since"] is not None, nan
    assert healthy["stop_reason"] == M.REASON_BUDGET and healthy["steps"] == 300, healthy
    assert body["steps_used"] == nan["steps"] + 300

    runs = _sweep_runs(ray_session / "mlflow.db", name)
    assert [p["status"] for p in _parents(runs)] == ["FINISHED"]
    children = {c["tags"]["seem_ray.trial_id"]: c for c in _children(runs)}
    assert len(children) == 2
    nan_run, ok_run = children[nan["trial_id"]], children[healthy["trial_id"]]
    assert nan_run["status"] == "FINISHED" and nan_run["tags"][M.STOP_REASON] == M.REASON_NAN
    assert ok_run["status"] == "FINISHED" and ok_run["tags"][M.STOP_REASON] == M.REASON_BUDGET
    assert ok_run["max_step"] == 300
    # The sweep went on: the healthy trial started only after the NaN trial had ended.
    assert ok_run["start"] >= nan_run["end"], (nan_run, ok_run)


# ----------------------------------------------------------------------------- 3. corrupt ckpt
TRAIN_RUN = {
    "data": {"dataset": "seem_ray/pointmaze-umaze-dense-v0", "max_transitions": 500},
    "algo": {"name": "td3bc", "batch_size": 32},
    "critic": {"hidden": [32, 32]},
    "actor": {"hidden": [32, 32]},
    "seem": {"every": 50, "probe_size": 32},
    "train": {
        "steps": 200,
        "log_every": 50,
        "checkpoint_every": 50,
        "eval_episodes": 0,
        "threads": 1,
    },
    "scaling": {"num_workers": 1, "cpus_per_worker": 0.5, "max_failures": 0},
}


class StepRecorder:
    """Ray Train callback appending every reported step to a file (read back by the test)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def after_report(self, run_context: object, metrics: list, checkpoint: object) -> None:
        with open(self.path, "a") as fh:
            fh.write(f"{int(metrics[0]['step'])}\n")


def _recorder(path: Path):
    from ray.train import UserCallback

    return type("Recorder", (StepRecorder, UserCallback), {})(path)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _checkpoints(run: Path) -> list[Path]:
    """The run's kept checkpoints, oldest first (Ray names them by time)."""
    return sorted(p for p in run.glob("checkpoint_*") if p.is_dir())


def test_truncated_latest_checkpoint_falls_back_then_fails_clearly_when_none_is_good(
    ray_session: Path, tmp_path: Path
) -> None:
    from seem_ray.checkpoint import load_checkpoint
    from seem_ray.config import parse_run_config
    from seem_ray.train import TrainFailure, fit, make_trainer
    from seem_ray.tune import _finished_run_metrics

    cfg = parse_run_config(TRAIN_RUN)
    assert int(fit(cfg, name="trunc", storage_path=tmp_path)["step"]) == 200
    # (What a restored sweep replays for a trial whose Train run had already finished.)
    done = _finished_run_metrics(tmp_path / "trunc", 200)
    assert done is not None and int(done["step"]) == 200 and "checkpoint_path" in done
    assert _finished_run_metrics(tmp_path / "trunc", 300) is None
    assert _finished_run_metrics(tmp_path / "missing", 200) is None
    kept = _checkpoints(tmp_path / "trunc")
    assert len(kept) == 2  # num_to_keep=2
    older_step = int(load_checkpoint(kept[0] / "state.pt")["step"])
    assert int(load_checkpoint(kept[1] / "state.pt")["step"]) == 200 > older_step

    # A crash mid-write on a filesystem without atomic rename, a bad disk: the newest is cut short.
    _truncate(kept[1] / "state.pt")
    # Same name + storage path: Ray Train resumes from its latest checkpoint, which is corrupt;
    # the worker falls back to the older one and carries on from there.
    steps_file = tmp_path / "steps.txt"
    longer = parse_run_config(TRAIN_RUN, {"train.steps": 300})
    trainer = make_trainer(
        longer, name="trunc", storage_path=tmp_path, callbacks=[_recorder(steps_file)]
    )
    result = trainer.fit()
    steps = [int(s) for s in steps_file.read_text().split()]
    reported = [s for s in range(older_step + 1, 301) if s % 50 == 0 or longer.seem.dense_due(s)]
    assert steps == reported, steps  # every report after the fallback checkpoint, none before
    assert int(result.metrics["step"]) == 300

    # No good checkpoint left: one clear line naming the corrupt checkpoint, no traceback.
    for ckpt in _checkpoints(tmp_path / "trunc"):
        _truncate(ckpt / "state.pt")
    with pytest.raises(TrainFailure) as err:
        fit(parse_run_config(TRAIN_RUN, {"train.steps": 400}), name="trunc", storage_path=tmp_path)
    message = str(err.value)
    assert "corrupt" in message and "state.pt" in message, message
    assert "\n" not in message and "Traceback" not in message, message
