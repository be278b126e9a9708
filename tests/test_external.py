"""SEEM and the verdict for critics trained outside seem_ray (seem_ray.external)."""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from seem_ray.config import StopperConfig
from seem_ray.external import CriticMonitor, FirstHead, Probe
from seem_ray.seem import compute_seem

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "seem_own_critic.py"


def _example():
    spec = importlib.util.spec_from_file_location("seem_own_critic", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Twin(nn.Module):
    """A CORL-style twin critic returning (q1, q2), each [n]."""

    def __init__(self, obs_dim: int = 3, act_dim: int = 2) -> None:
        super().__init__()
        self.q1 = nn.Sequential(nn.Linear(obs_dim + act_dim, 16), nn.ReLU(), nn.Linear(16, 1))
        self.q2 = nn.Sequential(nn.Linear(obs_dim + act_dim, 16), nn.ReLU(), nn.Linear(16, 1))

    def forward(self, obs: torch.Tensor, act: torch.Tensor):
        x = torch.cat([obs, act], -1)
        return self.q1(x).squeeze(-1), self.q2(x).squeeze(-1)


def _arrays(n: int = 64, obs_dim: int = 3, act_dim: int = 2, seed: int = 0):
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n, obs_dim)).astype(np.float32)
    act = rng.uniform(-1, 1, size=(n, act_dim)).astype(np.float32)
    nxt = rng.normal(size=(n, obs_dim)).astype(np.float32)
    rew = rng.uniform(-2, 1, size=n)
    return obs, act, nxt, rew


def test_probe_draws_rows_and_sets_the_reward_bound() -> None:
    obs, act, nxt, rew = _arrays(100)
    probe = Probe.from_arrays(obs, act, nxt, rewards=rew, size=32, seed=3)
    assert len(probe) == 32
    assert probe.reward_bound == pytest.approx(np.abs(rew).max())
    rows = {tuple(r) for r in obs.round(5).tolist()}
    assert all(tuple(r) in rows for r in probe.obs.numpy().round(5).tolist())
    assert len(Probe.from_arrays(obs, act, nxt, size=None)) == 100


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda o, a, x: (o, a[:10], x), "matching"),
        (lambda o, a, x: (o, a, x[:, :2]), "columns"),
        (lambda o, a, x: (np.where(o > 1.5, np.nan, o), a, x), "NaN"),
        (lambda o, a, x: (o[None], a, x), r"\[n, d\]"),
    ],
)
def test_probe_rejects_bad_arrays_with_one_clear_line(change, message) -> None:
    obs, act, nxt, _ = _arrays()
    with pytest.raises(ValueError, match=message) as err:
        Probe.from_arrays(*change(obs, act, nxt))
    assert "\n" not in str(err.value)


def test_first_head_reads_tuples_and_stacked_ensembles() -> None:
    obs, act = torch.randn(5, 3), torch.randn(5, 2)
    twin = Twin()
    assert torch.equal(FirstHead(twin)(obs, act), twin(obs, act)[0])

    class Stacked(nn.Module):  # d3rlpy-style ensembles: [heads, n, 1]
        def __init__(self) -> None:
            super().__init__()
            self.twin = Twin()

        def forward(self, o, a):
            return torch.stack(self.twin(o, a))[..., None]

    stacked = Stacked()
    assert torch.equal(FirstHead(stacked)(obs, act), stacked.twin(obs, act)[0])


def test_monitor_seem_is_compute_seem_on_the_first_head() -> None:
    obs, act, nxt, rew = _arrays()
    torch.manual_seed(0)
    twin = Twin()
    probe = Probe.from_arrays(obs, act, nxt, rewards=rew, size=None)
    policy = nn.Sequential(nn.Linear(3, 2), nn.Tanh())
    monitor = CriticMonitor(twin, probe, 0.9, policy=policy)
    check = monitor.step(100)
    with torch.no_grad():
        next_act = policy(probe.next_obs)
    direct = compute_seem(FirstHead(twin), probe.obs, probe.act, probe.next_obs, next_act, 0.9)
    assert check.seem == pytest.approx(direct.seem, rel=1e-9, abs=1e-12)
    with torch.no_grad():
        q1 = twin(probe.obs, probe.act)[0]
    assert check.q_abs_max == pytest.approx(float(q1.abs().max()), rel=1e-6)
    norm = math.sqrt(sum(float(p.detach().pow(2).sum()) for p in twin.parameters()))
    assert check.weight_norm == pytest.approx(norm, rel=1e-6)
    assert monitor.q_bound == pytest.approx(np.abs(rew).max() / 0.1)
    assert not check.diverging


def test_monitor_flags_a_critic_past_the_bound_and_refuses_old_steps() -> None:
    obs, act, nxt, _ = _arrays()
    twin = Twin()
    with torch.no_grad():
        twin.q1[2].bias.fill_(50.0)
    monitor = CriticMonitor(twin, Probe.from_arrays(obs, act, nxt), 0.99, q_bound=10.0)
    check = monitor.step(100)
    assert check.diverging and check.verdict.reason == "q_bound"
    with pytest.raises(ValueError, match="not after"):
        monitor.step(100)


def test_monitor_bad_inputs_fail_clearly() -> None:
    obs, act, nxt, _ = _arrays()
    probe = Probe.from_arrays(obs, act, nxt)
    with pytest.raises(ValueError, match="no Q bound"):
        CriticMonitor(Twin(), probe, 0.99)
    with pytest.raises(ValueError, match="gamma"):
        CriticMonitor(Twin(), probe, 1.0, q_bound=1.0)
    with pytest.raises(ValueError, match="failed"):
        CriticMonitor(Twin(obs_dim=5), probe, 0.99, q_bound=1.0)
    monitor = CriticMonitor(Twin(), probe, 0.99, q_bound=1.0, policy=lambda s: s)
    with pytest.raises(ValueError, match="action columns"):
        monitor.step(1)


def test_due_follows_the_shipped_cadence() -> None:
    obs, act, nxt, _ = _arrays()
    monitor = CriticMonitor(Twin(), Probe.from_arrays(obs, act, nxt), 0.99, q_bound=1.0)
    due = [s for s in range(1, 5001) if monitor.due(s)]
    assert due[:3] == [25, 50, 75]  # the startup phase, then every 200 to step 2000
    assert 400 in due and 425 not in due and 600 in due and 700 not in due
    assert 2000 in due and 2200 not in due and 3000 in due and 5000 in due


def test_stopper_settings_reach_the_predictor() -> None:
    obs, act, nxt, _ = _arrays()
    probe = Probe.from_arrays(obs, act, nxt)
    strict = CriticMonitor(
        Twin(), probe, 0.99, q_bound=1.0, stopper=StopperConfig(kind="q_bound", patience=4)
    )
    assert strict.predictor.seem.patience == 4  # kind is always the composite predictor


@pytest.mark.slow
def test_plain_torch_loop_no_layernorm_stopped_layernorm_runs_on() -> None:
    example = _example()
    diverging = example.train(400, layer_norm=False)
    assert diverging[-1].diverging and diverging[-1].step <= 400
    assert diverging[-1].verdict.reason in ("seem", "growth", "q_bound")
    healthy = example.train(400, layer_norm=True)
    assert healthy[-1].step == 400 and not any(c.diverging for c in healthy)
    assert max(c.q_abs_max for c in healthy) < 100.0  # the bound r_max / (1 - gamma)


@pytest.mark.slow
def test_example_script_runs_from_the_command_line() -> None:
    out = subprocess.run(
        [sys.executable, str(EXAMPLE), "--steps", "300"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert "diverging" in out.stdout and "stopping" in out.stdout
