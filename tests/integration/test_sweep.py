"""The main job end to end: a Tune sweep of Ray Train trials with the stopper and MLflow, the CLI,
and the MLflow UI in headless Chromium."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from seem_ray import metrics as M
from seem_ray.config import SeemConfig, load_sweep_config

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def sweep_env(shared_datasets: Path, tmp_path_factory: pytest.TempPathFactory):
    import ray

    from seem_ray.tune import init_ray

    runs = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINARI_DATASETS_PATH", str(shared_datasets))
        mp.setenv("SEEM_RAY_RUNS", str(runs))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        init_ray("local")
        try:
            yield runs
        finally:
            ray.shutdown()


@pytest.fixture(scope="module")
def smoke_result(sweep_env: Path):
    from seem_ray.tune import run_sweep

    sweep = load_sweep_config(
        ROOT / "tune_configs" / "smoke.yaml",
        {
            "space": {
                "critic.norm": {"grid": ["none"]},
                # plain SGD at learning rate 50 blows the unnormalised critic up within a few reports
                "algo.critic_lr": {"grid": [3e-4, 50.0]},
            },
            "base.algo.critic_optimizer": "sgd",
            "base.train.steps": 300,
        },
    )
    return run_sweep(sweep, quiet=True), sweep_env


def test_sweep_summary_and_stopper(smoke_result) -> None:
    summary, _ = smoke_result
    assert len(summary.rows) == 2
    by_lr = {r["overrides"]["algo.critic_lr"]: r for r in summary.rows}
    assert by_lr[3e-4]["stop_reason"] == M.REASON_BUDGET and by_lr[3e-4]["steps"] == 300
    exploded = by_lr[50.0]
    assert exploded["stop_reason"] in (
        M.REASON_Q_BOUND,
        M.REASON_NAN,
        M.REASON_SEEM,
        M.REASON_GROWTH,
    )
    assert exploded["steps"] < 300
    assert summary.steps_saved > 0
    assert (Path(summary.path) / "summary.json").is_file()
    assert "stopped as diverging" in summary.table()


def test_stopped_trials_release_their_train_workers(smoke_result) -> None:
    """A trial Tune stops must give back its Train workers' placement group (else later trials
    of the sweep wait forever for CPUs that nobody uses)."""
    import ray

    # Removal is asynchronous: the groups go first, their CPUs return to the pool a moment later.
    deadline = time.time() + 20
    while True:
        held = [
            pg["bundles"]
            for pg in ray.util.placement_group_table().values()
            if pg["state"] != "REMOVED"
        ]
        free = ray.available_resources().get("CPU")
        if (not held and free == ray.cluster_resources()["CPU"]) or time.time() > deadline:
            break
        time.sleep(0.5)
    assert held == []
    assert free == ray.cluster_resources()["CPU"]


def test_mlflow_parent_and_child_runs(smoke_result) -> None:
    from mlflow.tracking import MlflowClient

    _, runs = smoke_result
    client = MlflowClient(f"sqlite:///{runs / 'mlflow.db'}")
    exp = client.get_experiment_by_name("seem_ray_smoke")
    all_runs = client.search_runs([exp.experiment_id])
    parents = [r for r in all_runs if r.data.tags.get("seem_ray.kind") == "sweep"]
    children = [r for r in all_runs if r.data.tags.get("seem_ray.kind") == "trial"]
    assert len(parents) == 1 and len(children) == 2
    assert parents[0].info.status == "FINISHED"
    reasons = set()
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert child.info.status == "FINISHED"
        reasons.add(child.data.tags[M.STOP_REASON])
        assert "critic.hidden" in child.data.params
        history = client.get_metric_history(child.info.run_id, M.STEPS_PER_S)
        assert len(history) >= 1 and all(m.step > 0 for m in history)
        if child.data.tags[M.STOP_REASON] == M.REASON_BUDGET:
            q_steps = [m.step for m in client.get_metric_history(child.info.run_id, M.Q_MEAN)]
            cadence = SeemConfig(every=50)  # smoke.yaml's, with the shipped dense phases
            expected = [s for s in range(1, 301) if s % 50 == 0 or cadence.dense_due(s)]
            assert sorted(q_steps) == expected
            assert child.data.tags.get(
                "checkpoint_path"
            )  # the final checkpoint of a finished trial
        names = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {"seem_q.png", "config.yaml"} <= names
    assert M.REASON_BUDGET in reasons and len(reasons) == 2


def test_cli_bad_sweep_config_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nspace: {critic.nrom: {grid: [none]}}\n")
    out = subprocess.run(
        [sys.executable, "-m", "seem_ray.cli", "sweep", str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    err = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "space.critic.nrom" in err[0] and "did you mean 'norm'" in err[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(
    shutil.which("chromedriver") is None, reason="chromium-driver not installed (make system-deps)"
)
def test_mlflow_ui_shows_sweep_runs_and_plot(smoke_result, tmp_path: Path) -> None:
    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    _, runs = smoke_result
    port = _free_port()
    env = dict(os.environ, SEEM_RAY_RUNS=str(runs))
    ui = subprocess.Popen(
        [sys.executable, "-m", "seem_ray.cli", "ui", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        opts = webdriver.ChromeOptions()
        for flag in (
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1400,900",
            f"--user-data-dir={tmp_path / 'chrome'}",
        ):
            opts.add_argument(flag)
        opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
        driver = webdriver.Chrome(
            service=webdriver.ChromeService(executable_path=shutil.which("chromedriver")),
            options=opts,
        )
        try:
            from mlflow.tracking import MlflowClient

            client = MlflowClient(f"sqlite:///{runs / 'mlflow.db'}")
            exp = client.get_experiment_by_name("seem_ray_smoke")
            child = next(
                r
                for r in client.search_runs([exp.experiment_id])
                if r.data.tags.get("seem_ray.kind") == "trial"
            )
            body = lambda d: d.find_element(By.TAG_NAME, "body").text  # noqa: E731
            driver.get(f"http://127.0.0.1:{port}/#/experiments/{exp.experiment_id}/runs")
            WebDriverWait(driver, 180).until(
                lambda d: "matching runs" in body(d) and "smoke" in body(d)
            )
            driver.get(
                f"http://127.0.0.1:{port}/#/experiments/{exp.experiment_id}/runs/{child.info.run_id}/artifacts"
            )
            WebDriverWait(driver, 180).until(
                lambda d: "seem_q.png" in body(d) and "config.yaml" in body(d)
            )
            # The plot itself, as the UI serves it to the artifact viewer.
            driver.get(
                f"http://127.0.0.1:{port}/get-artifact?path=seem_q.png&run_uuid={child.info.run_id}"
            )
            WebDriverWait(driver, 30).until(
                lambda d: any(
                    d.execute_script("return arguments[0].naturalWidth", img) > 100
                    for img in d.find_elements(By.TAG_NAME, "img")
                )
            )
            driver.save_screenshot(str(tmp_path / "mlflow_ui.png"))
            assert (tmp_path / "mlflow_ui.png").stat().st_size > 1000
        except Exception:
            driver.save_screenshot(str(tmp_path / "failure.png"))  # kept by pytest for diagnosis
            raise
        finally:
            driver.quit()
    finally:
        os.killpg(ui.pid, 15)
        ui.wait(timeout=20)
