"""The d3rlpy callback on real d3rlpy runs (skipped when the optional peer is absent)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

d3rlpy = pytest.importorskip("d3rlpy", reason="d3rlpy not installed (make bench-deps)")

from seem_ray.config import SeemConfig  # noqa: E402
from seem_ray.external import FirstHead  # noqa: E402
from seem_ray.integrations.d3rlpy_callback import (  # noqa: E402
    SeemCallback,
    d3rlpy_critic,
    d3rlpy_policy,
    fit_with_seem,
    probe_from_d3rlpy,
)
from seem_ray.seem import compute_seem  # noqa: E402

pytestmark = pytest.mark.slow


def _dataset(n: int = 600, seed: int = 0):
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n, 4)).astype(np.float32)
    act = rng.uniform(-1, 1, (n, 2)).astype(np.float32)
    rew = rng.random(n).astype(np.float32)
    term = np.zeros(n)
    term[149::150] = 1.0
    return d3rlpy.dataset.MDPDataset(obs, act, rew, term)


def _small(config_cls, **kw):
    enc = d3rlpy.models.VectorEncoderFactory(hidden_units=[32, 32])
    return config_cls(
        batch_size=32, actor_encoder_factory=enc, critic_encoder_factory=enc, **kw
    ).create(device="cpu:0")


@pytest.fixture
def quiet():
    return {"show_progress": False, "logger_adapter": d3rlpy.logging.NoopAdapterFactory()}


def test_probe_pairs_steps_within_episodes() -> None:
    ds = _dataset()
    probe = probe_from_d3rlpy(ds, size=None)
    assert len(probe) == 4 * 149  # one (s, s') pair lost at the end of each episode
    ep = ds.episodes[0]
    assert np.allclose(probe.next_obs[0].numpy(), ep.observations[1])


def test_callback_logs_seem_to_mlflow_and_matches_compute_seem(tmp_path, quiet) -> None:
    import mlflow

    ds = _dataset()
    algo = _small(
        d3rlpy.algos.TD3PlusBCConfig,
        observation_scaler=d3rlpy.preprocessing.StandardObservationScaler(),
    )
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    callback = SeemCallback(probe_from_d3rlpy(ds, size=128))
    with mlflow.start_run() as run:
        checks, stopped = fit_with_seem(algo, ds, 200, callback=callback, **quiet)
    assert callback.monitor is not None
    due = [s for s in range(1, 201) if callback.monitor.due(s)]  # the shipped cadence
    assert due[0] == SeemConfig().startup_every and due[-1] == 200
    assert stopped is None and [c.step for c in checks] == due
    history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "seem/seem")
    assert [m.step for m in history] == due
    assert history[-1].value == pytest.approx(checks[-1].seem)
    # The same SEEM, computed directly on d3rlpy's first Q head and policy after training.
    probe = callback.probe
    with torch.no_grad():
        next_act = d3rlpy_policy(algo)(probe.next_obs)
    direct = compute_seem(
        FirstHead(d3rlpy_critic(algo)), probe.obs, probe.act, probe.next_obs, next_act, 0.99
    )
    assert checks[-1].seem == pytest.approx(direct.seem, rel=1e-6, abs=1e-9)


def test_verdict_ends_fit_early(quiet) -> None:
    ds = _dataset()
    algo = _small(d3rlpy.algos.IQLConfig)
    callback = SeemCallback(probe_from_d3rlpy(ds, size=64), q_bound=1e-4, log_to_mlflow=False)
    checks, stopped = fit_with_seem(algo, ds, 1000, callback=callback, **quiet)
    first = SeemConfig().startup_every  # the first probe of the shipped cadence
    assert stopped is not None and stopped.step == first and stopped.verdict.reason == "q_bound"
    assert len(checks) == 1


def test_unbuilt_algorithm_is_one_clear_error() -> None:
    algo = _small(d3rlpy.algos.TD3PlusBCConfig)
    with pytest.raises(ValueError, match="not built"):
        d3rlpy_critic(algo)


def test_seem_ray_transitions_become_d3rlpy_episodes() -> None:
    from seem_ray.data.batches import Transitions
    from seem_ray.integrations.d3rlpy_callback import to_d3rlpy_dataset

    # Two trajectories of 3 and 2 steps: the first ends in a timeout, the second in a terminal.
    obs = np.arange(6, dtype=np.float32).reshape(6, 1)  # s_0..s_2 | s_3 unused | s_4, s_5
    rows = [0, 1, 2, 4, 5]
    nxt = np.array([[1], [2], [3], [5], [9]], dtype=np.float32)
    t = Transitions(
        observations=obs[rows],
        actions=np.zeros((5, 1), np.float32),
        rewards=np.arange(5, dtype=np.float32),
        next_observations=nxt,
        terminals=np.array([0, 0, 0, 0, 1], np.float32),
        timeouts=np.array([0, 0, 1, 0, 0], np.float32),
    )
    ds = to_d3rlpy_dataset(t)
    assert [len(ep.rewards) for ep in ds.episodes] == [3, 2]
    assert [bool(ep.terminated) for ep in ds.episodes] == [False, True]
    assert np.allclose(ds.episodes[1].rewards.ravel(), [3, 4])


def test_readme_example_stops_on_its_verdict(isolated_env) -> None:
    """examples/seem_d3rlpy.py as the README runs it, on the tiny local Minari dataset."""
    import subprocess
    import sys
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / "examples" / "seem_d3rlpy.py"
    cmd = [sys.executable, str(example), "--steps", "300", "--q-bound", "1e-4"]
    cmd += ["--mlflow", f"sqlite:///{isolated_env / 'mlflow.db'}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"stopped at step {SeemConfig().startup_every}: q_bound" in out.stdout
    assert (isolated_env / "mlflow.db").exists()
    bad = subprocess.run(
        [sys.executable, str(example), "--dataset", "nope/none-v0"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert bad.returncode == 2 and "not found" in bad.stderr.splitlines()[-1]
