"""Tests of the reproduction experiments: fitting helpers against synthetic data, the toy's
pieces against naive references, and each script's --quick mode end to end (slow)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from experiments.common import (
    ToyCritic,
    crash_step_from_eig,
    crash_step_from_fit,
    greedy_targets,
    linear_fit,
    make_toy_maze,
    td_loss,
    write_json,
)
from seem_ray.seem import compute_seem

# ----------------------------------------------------------------------------- fits


def test_linear_fit_recovers_noisy_line() -> None:
    rng = np.random.default_rng(0)
    x = np.linspace(0, 10, 200)
    y = 3.0 * x - 2.0 + rng.normal(0, 0.1, x.size)
    fit = linear_fit(x, y)
    assert fit.slope == pytest.approx(3.0, abs=0.01)
    assert fit.intercept == pytest.approx(-2.0, abs=0.05)
    assert 0.999 < fit.r2 < 1.0


def test_linear_fit_r2_matches_correlation_and_skips_nonfinite() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=50)
    y = x + rng.normal(size=50)
    fit = linear_fit(np.append(x, [np.nan, 1.0]), np.append(y, [1.0, np.inf]))
    assert fit.r2 == pytest.approx(np.corrcoef(x, y)[0, 1] ** 2, rel=1e-12)


def test_linear_fit_rejects_degenerate_input() -> None:
    with pytest.raises(ValueError, match="distinct x"):
        linear_fit([1.0, 1.0, 1.0], [0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="equal length"):
        linear_fit([1.0, 2.0], [1.0])


@pytest.mark.parametrize("layers", [2, 3, 4])
def test_crash_fit_recovers_known_blowup(layers: int) -> None:
    # Q = C (t* - t)^(-L/(2L-2)) is exactly the solution of the homogeneous blow-up ODE.
    t_star, c = 812.5, 7.0
    t = np.arange(100, 700, dtype=float)
    q = c * (t_star - t) ** (-layers / (2 * layers - 2))
    pred, fit = crash_step_from_fit(t, q, layers)
    assert pred == pytest.approx(t_star, rel=1e-9)
    assert fit.r2 == pytest.approx(1.0, abs=1e-12)
    noisy = q * np.exp(np.random.default_rng(layers).normal(0, 0.01, t.size))
    pred_noisy, _ = crash_step_from_fit(t, noisy, layers)
    assert abs(pred_noisy - t_star) < 0.01 * (t_star - t[-1]) + 5


def test_crash_fit_no_blowup_for_decaying_q() -> None:
    t = np.arange(50, dtype=float)
    pred, fit = crash_step_from_fit(t, np.exp(-0.01 * t), 2)
    assert math.isinf(pred) and fit.slope > 0


@pytest.mark.parametrize("layers", [2, 3, 4])
def test_crash_eig_matches_ode_integration(layers: int) -> None:
    # Independent reference: integrate d rho/dt = (eta lam_hat / L) rho^(2L-1) until rho = 100
    # rho0; the time left after that is a fraction 100^-(2L-2) <= 1e-4 of the horizon.
    eta, rho0, t0 = 1e-3, 3.0, 40.0
    lam_hat = 0.37 / rho0 ** (2 * layers - 2)  # a horizon of a few thousand steps for every L
    lam0 = lam_hat * rho0 ** (2 * layers - 2)  # lam_max(A_t0) for an L-homogeneous critic

    def rhs(_: float, y: np.ndarray) -> np.ndarray:
        return (eta * lam_hat / layers) * y ** (2 * layers - 1)

    def huge(_: float, y: np.ndarray) -> float:
        return float(y[0] - 300.0)

    huge.terminal = True  # type: ignore[attr-defined]
    sol = solve_ivp(rhs, (t0, t0 + 1e5), [rho0], events=huge, rtol=1e-10, atol=1e-12)
    t_num = float(sol.t_events[0][0])
    horizon = crash_step_from_eig(t0, layers, eta, lam0) - t0
    assert horizon == pytest.approx(t_num - t0, rel=2e-4)


def test_crash_eig_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="layers >= 2"):
        crash_step_from_eig(0, 1, 1e-3, 1.0)
    with pytest.raises(ValueError, match="max_eig > 0"):
        crash_step_from_eig(0, 2, 1e-3, -1.0)


# ----------------------------------------------------------------------------- toy pieces


def test_toy_maze_is_a_seeded_random_walk() -> None:
    m = make_toy_maze(3, length=20)
    assert m.obs.shape == (19, 2) and m.act.shape == (19, 2) and m.action_set.shape == (8, 2)
    assert torch.equal(m.next_obs[:-1], m.obs[1:])  # one trajectory
    torch.testing.assert_close(m.act.norm(dim=1), torch.ones(19, dtype=torch.float64))
    drift = m.next_obs - m.obs - 0.1 * m.act
    assert bool(((drift >= 0) & (drift <= 0.02)).all())
    assert torch.equal(make_toy_maze(3, length=20).obs, m.obs)
    assert not torch.equal(make_toy_maze(4, length=20).obs, m.obs)


@pytest.mark.parametrize("layers", [2, 3, 4])
def test_toy_critic_is_homogeneous(layers: int) -> None:
    torch.manual_seed(0)
    critic = ToyCritic(4, 16, layers).double()
    m = make_toy_maze(0, length=10)
    q = critic(m.obs, m.act)
    with torch.no_grad():
        for p in critic.parameters():
            p.mul_(1.7)
    torch.testing.assert_close(critic(m.obs, m.act), q * 1.7**layers)


def test_greedy_targets_match_naive_loop() -> None:
    torch.manual_seed(1)
    critic = ToyCritic(4, 16, 2).double()
    m = make_toy_maze(1, length=12)
    best, next_act = greedy_targets(critic, m)
    for i in range(m.obs.shape[0]):
        qs = [float(critic(m.next_obs[i : i + 1], a[None]).detach()) for a in m.action_set]
        k = int(np.argmax(qs))
        assert float(best[i]) == pytest.approx(qs[k], rel=1e-12)
        assert torch.equal(next_act[i], m.action_set[k])


def test_sgd_step_moves_residual_by_eta_eff_times_a() -> None:
    # The eta_eff = 2 lr / N used by the crash experiment: one SGD step on the toy's mean-squared
    # loss changes delta = gamma Q(X*) - Q(X) by eta_eff * A delta + O(lr^2), with A built from
    # naive per-sample Jacobians; its rightmost eigenvalue must equal compute_seem's raw max_eig.
    gamma = 0.99

    def rel_error(lr: float) -> float:
        torch.manual_seed(2)
        critic = ToyCritic(4, 32, 2).double()
        m = make_toy_maze(2, length=24)
        n = m.obs.shape[0]
        params = list(critic.parameters())
        _, next_act = greedy_targets(critic, m)

        def jacobian(o: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
            rows = []
            for i in range(n):
                g = torch.autograd.grad(critic(o[i : i + 1], a[i : i + 1]).sum(), params)
                rows.append(torch.cat([x.reshape(-1) for x in g]))
            return torch.stack(rows)

        def delta() -> torch.Tensor:
            with torch.no_grad():
                return gamma * critic(m.next_obs, next_act) - critic(m.obs, m.act)

        phi, phi_s = jacobian(m.obs, m.act), jacobian(m.next_obs, next_act)
        a_mat = gamma * phi_s @ phi.T - phi @ phi.T
        res = compute_seem(
            critic, m.obs, m.act, m.next_obs, next_act, gamma, scale_by_params=False, eig="dense"
        )
        lam = float(torch.linalg.eigvals(a_mat).real.max())
        assert lam == pytest.approx(res.max_eig, rel=1e-8)
        d0 = delta()
        loss, _, na = td_loss(critic, m, gamma)
        assert torch.equal(na, next_act)
        critic.zero_grad()
        loss.backward()
        with torch.no_grad():
            for p in params:
                p -= lr * p.grad
        predicted = (2 * lr / n) * (a_mat @ d0)
        return float((delta() - d0 - predicted).norm() / predicted.norm())

    e1, e2 = rel_error(1e-3), rel_error(1e-4)
    assert e1 < 0.05
    assert e2 < e1 / 5


# ----------------------------------------------------------------------------- I/O


def test_write_json_nulls_non_finite(tmp_path: Path) -> None:
    path = write_json(tmp_path / "a" / "x.json", {"a": math.nan, "b": [1.0, math.inf], "c": 2})
    assert json.loads(path.read_text()) == {"a": None, "b": [1.0, None], "c": 2}


# ----------------------------------------------------------------------------- --quick runs


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict]]:
    from experiments import growth_order, sgd_crash

    root = tmp_path_factory.mktemp("experiments")
    out = {}
    for mod in (growth_order, sgd_crash):
        mod.main(
            ["--quick", "--figures", str(root / "figs"), "--json", str(root / f"{mod.NAME}.json")]
        )
        out[mod.NAME] = json.loads((root / f"{mod.NAME}.json").read_text())
    return root, out


def _png(path: Path) -> None:
    assert path.exists() and path.stat().st_size > 10_000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_growth_order_quick(quick_results: tuple[Path, dict[str, dict]]) -> None:
    root, res = quick_results
    _png(root / "figs" / "growth_order.png")
    g = res["growth_order"]
    assert g["quick"] and len(g["runs"]) == 2
    for r in g["runs"]:
        assert r["diverged"]
        for k in ("norm_slope", "norm_r2", "logq_lognorm_slope", "logq_logt_slope", "t_c"):
            assert math.isfinite(r[k]), k
        assert r["norm_r2"] > 0.99
        assert abs(r["logq_lognorm_slope"] - r["layers"]) < 0.3


@pytest.mark.slow
def test_sgd_crash_quick(quick_results: tuple[Path, dict[str, dict]]) -> None:
    root, res = quick_results
    _png(root / "figs" / "sgd_crash.png")
    s = res["sgd_crash"]
    assert len(s["runs"]) == 2
    for r in s["runs"]:
        assert r["crash"] is not None
        (p,) = r["predictions"]
        assert p["t0"] < r["crash"] and p["max_eig"] > 0 and 0 < p["seem"] <= 1
        for k in ("pred_eig", "pred_fit", "rel_err_eig", "rel_err_fit"):
            assert math.isfinite(p[k]), k
        assert abs(p["rel_err_eig"]) < 0.5


@pytest.mark.slow
def test_run_all_report_from_quick_json(quick_results: tuple[Path, dict[str, dict]]) -> None:
    from experiments import run_all

    root, _ = quick_results
    report = run_all.main(
        [
            "--report-only",
            "--quick",
            "--out-dir",
            str(root),
            "--figures",
            str(root / "figs"),
            "--report",
            str(root / "results.md"),
        ]
    )
    text = report.read_text()
    assert "## Summary" in text and "QUICK SMOKE RUN" in text
    for sec in ("## 2. Adam growth order", "## 3. SGD crash step"):
        assert sec in text, sec
    # The experiments without a JSON here are named as not run, not silently dropped.
    (not_run,) = [line for line in text.splitlines() if line.startswith("**Not run**")]
    assert not_run.count(",") == len(run_all.EXPERIMENTS) - 3
    assert "seem_vs_bound" in not_run and "growth_order" not in not_run
    assert "](figs/growth_order.png)" in text and "](figs/sgd_crash.png)" in text
    assert not re.search(r"\bnan\b", text, re.IGNORECASE)
