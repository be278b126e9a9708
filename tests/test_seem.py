"""SEEM engine (seem_ray.seem) against a naive per-sample-gradient reference (seem.md section 8)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import parametrizations

from seem_ray import seem as S

# ----------------------------------------------------------------------------- helpers


@pytest.fixture(autouse=True)
def _one_blas_thread():
    """Tiny matrices: a second BLAS thread only fights the other jobs on a shared 2-core box."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: only speed depends on it
        yield
        return
    with threadpool_limits(1):
        yield


class Critic(nn.Module):
    """Q(s, a) = body(cat(s, a)); returns [n, 1] (or [n] with squeeze=True)."""

    def __init__(self, body: nn.Module, squeeze: bool = False) -> None:
        super().__init__()
        self.body = body
        self.squeeze = squeeze

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        q = self.body(torch.cat([obs, act], dim=-1))
        return q.squeeze(-1) if self.squeeze else q


def mlp(
    d_in: int = 5,
    hidden: tuple[int, ...] = (16, 16),
    norm: str = "none",
    bias: bool = True,
    act: type[nn.Module] = nn.ReLU,
    eps: float = 1e-5,
) -> nn.Sequential:
    layers: list[nn.Module] = []
    d = d_in
    for h in hidden:
        layers.append(nn.Linear(d, h, bias=bias))
        if norm == "layer":
            layers.append(nn.LayerNorm(h, eps=eps))
        elif norm == "rms":
            layers.append(nn.RMSNorm(h, eps=eps))
        layers.append(act())
        d = h
    layers.append(nn.Linear(d, 1, bias=bias))
    return nn.Sequential(*layers).double()


def probe(n: int, obs_dim: int = 3, act_dim: int = 2, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return tuple(
        torch.randn(n, d, generator=g, dtype=torch.float64)
        for d in (obs_dim, act_dim, obs_dim, act_dim)
    )


def naive_phi(critic: nn.Module, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
    """One backward per sample, stacked flat gradients over all trainable params [n, P]."""
    params = [p for p in critic.parameters() if p.requires_grad]
    was = critic.training
    critic.eval()
    rows = []
    for i in range(obs.shape[0]):
        q = critic(obs[i : i + 1], act[i : i + 1]).sum()
        gs = torch.autograd.grad(q, params, allow_unused=True)
        rows.append(
            torch.cat(
                [
                    (torch.zeros_like(p) if g is None else g).reshape(-1).double()
                    for g, p in zip(gs, params, strict=True)
                ]
            )
        )
    critic.train(was)
    return torch.stack(rows)


def naive_a(critic: nn.Module, x: tuple[torch.Tensor, ...], gamma: float) -> np.ndarray:
    phi = naive_phi(critic, x[0], x[1])
    phi_s = naive_phi(critic, x[2], x[3])
    return (gamma * phi_s @ phi.T - phi @ phi.T).numpy()


def naive_seem(a: np.ndarray) -> float:
    frob = np.linalg.norm(a)
    return float(np.linalg.eigvals(a).real.max() / frob) if frob > 0 else 0.0


def rel(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def n_params(critic: nn.Module) -> int:
    return sum(p.numel() for p in critic.parameters() if p.requires_grad)


# ----------------------------------------------------------------------------- 1. layer-wise == naive


@pytest.mark.parametrize(
    ("norm", "bias", "hidden"),
    [
        ("none", True, (16, 16)),
        ("none", False, (16, 16)),
        ("layer", True, (16, 16)),
        ("layer", False, (12,)),
        ("rms", True, (16, 8)),
        ("none", True, (8, 8, 8, 8)),
        ("layer", True, (1, 16)),  # width-1 hidden layer: Kronecker branch of a hidden layer
    ],
)
@pytest.mark.parametrize("gamma", [0.0, 0.99, 1.2])
def test_layerwise_gram_matches_naive(
    norm: str, bias: bool, hidden: tuple[int, ...], gamma: float
) -> None:
    torch.manual_seed(1)
    critic = Critic(mlp(5, hidden, norm, bias, nn.Tanh if norm == "rms" else nn.ReLU))
    x = probe(24)
    assert S.layerwise_eligible(critic)
    g_xx, g_sx = S.gram_matrices(critic, *x, method="layerwise")
    phi, phi_s = naive_phi(critic, x[0], x[1]), naive_phi(critic, x[2], x[3])
    assert rel(g_xx, phi @ phi.T) < 1e-10
    assert rel(g_sx, phi_s @ phi.T) < 1e-10
    a = naive_a(critic, x, gamma)
    res = S.compute_seem(critic, *x, gamma=gamma, eig="dense")
    assert res.method == "layerwise"
    assert res.num_params == n_params(critic)
    assert abs(res.seem - naive_seem(a)) < 1e-9
    assert math.isclose(res.frob, np.linalg.norm(a) / res.num_params, rel_tol=1e-10)
    lam = np.linalg.eigvals(a).real.max() / res.num_params
    assert abs(res.max_eig - lam) <= 1e-9 * res.frob


@pytest.mark.parametrize("norm", ["none", "layer"])
def test_layerwise_a_matches_naive_in_row_blocks(
    norm: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A = diag(coef) G(X*, X) - G(X, X) with per-row coefficients, over several row blocks."""
    torch.manual_seed(20)
    critic = Critic(mlp(5, (16, 1, 8), norm))  # Hadamard, Kronecker and norm factor branches
    x = probe(40, seed=20)
    coef = torch.rand(40, dtype=torch.float64)
    monkeypatch.setattr(S, "_BLOCK_BYTES", 8 * 4 * 40 * 7)  # 7 rows per block
    with torch.enable_grad():
        a = S._layerwise_a(critic, (x[0], x[1]), (x[2], x[3]), coef)
    phi, phi_s = naive_phi(critic, x[0], x[1]), naive_phi(critic, x[2], x[3])
    assert rel(a, coef[:, None] * (phi_s @ phi.T) - phi @ phi.T) < 1e-12


def test_frozen_parameters_are_excluded() -> None:
    torch.manual_seed(2)
    body = mlp(5, (8, 8), "layer")
    body[0].bias.requires_grad_(False)
    body[1].weight.requires_grad_(False)
    critic = Critic(body)
    x = probe(10)
    g_xx, _ = S.gram_matrices(critic, *x, method="layerwise")
    phi = naive_phi(critic, x[0], x[1])
    assert rel(g_xx, phi @ phi.T) < 1e-10


# ----------------------------------------------------------------------------- 2. generic == naive


class Scaled(nn.Module):
    """A custom module owning a parameter: not eligible for the layer-wise path."""

    def __init__(self) -> None:
        super().__init__()
        self.net = mlp(5, (8,))
        self.temp = nn.Parameter(torch.tensor(0.7, dtype=torch.float64))

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return self.temp * torch.tanh(self.net(torch.cat([obs, act], -1)))


def _spectral() -> nn.Module:
    body = mlp(5, (8, 8))
    body[0] = parametrizations.spectral_norm(body[0])
    return Critic(body)


def _batchnorm() -> nn.Module:
    body = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 1)).double()
    body[1].running_mean.normal_()
    body[1].running_var.uniform_(0.5, 2.0)
    return Critic(body)


def _weightnorm(frozen: str = "") -> nn.Module:
    body = mlp(5, (8, 8))
    for i in (0, 2, 4):
        body[i] = parametrizations.weight_norm(body[i])
        with torch.no_grad():  # move g off |v| so c = (g/|v|)^2 != 1
            body[i].parametrizations.weight.original0.mul_(
                1.0 + torch.rand(body[i].out_features, 1)
            )
        if frozen:
            getattr(body[i].parametrizations.weight, frozen).requires_grad_(False)
    return Critic(body)


def _spectral_all() -> nn.Module:
    body = mlp(5, (8, 8))
    for i in (0, 2, 4):
        body[i] = parametrizations.spectral_norm(body[i])
    body.train()
    with torch.no_grad():
        body(torch.randn(4, 5, dtype=torch.float64))  # a power step: u, v off their init
    return Critic(body)


def _weightnorm_dim1() -> nn.Module:
    body = mlp(5, (8,))
    body[0] = parametrizations.weight_norm(body[0], dim=1)  # per input column: not handled
    return Critic(body)


def _ensemble_head(norm: str) -> nn.Module:
    from seem_ray.config import NetConfig
    from seem_ray.nets import EnsembleCritic

    critic = EnsembleCritic(3, 2, NetConfig(hidden=(8, 8), norm=norm), 2).double()
    critic.train()
    with torch.no_grad():  # BN statistics / spectral u, v away from their init
        for _ in range(3):
            critic(torch.randn(16, 3, dtype=torch.float64), torch.randn(16, 2, dtype=torch.float64))
    return S.probe_critic(critic, 1)


@pytest.mark.parametrize(
    "make",
    [
        _spectral,
        _spectral_all,
        _batchnorm,
        _weightnorm,
        lambda: _weightnorm("original0"),
        lambda: _weightnorm("original1"),
        lambda: _ensemble_head("batch"),
        lambda: _ensemble_head("spectral"),
        lambda: _ensemble_head("weight"),
    ],
    ids=["sn1", "sn_all", "bn", "wn", "wn_g_frozen", "wn_v_frozen", "ens_bn", "ens_sn", "ens_wn"],
)
@pytest.mark.parametrize("gamma", [0.0, 0.99, 1.2])
def test_layerwise_handles_reparametrised_and_batchnorm_layers(make, gamma: float) -> None:
    """weight/spectral norm by the chain rule, BatchNorm as its eval-mode affine: == naive."""
    torch.manual_seed(5)
    critic = make()
    critic.train()
    x = probe(14)
    assert S.layerwise_eligible(critic)
    g_xx, g_sx = S.gram_matrices(critic, *x)
    phi, phi_s = naive_phi(critic, x[0], x[1]), naive_phi(critic, x[2], x[3])
    assert rel(g_xx, phi @ phi.T) < 1e-10
    assert rel(g_sx, phi_s @ phi.T) < 1e-10
    res = S.compute_seem(critic, *x, gamma=gamma)
    assert res.method == "layerwise"
    assert abs(res.seem - naive_seem(naive_a(critic, x, gamma))) < 1e-9
    assert critic.training


@pytest.mark.parametrize("make", [_weightnorm_dim1, Scaled])
def test_generic_path_matches_naive(make: type[nn.Module]) -> None:
    torch.manual_seed(3)
    critic = make()
    critic.train()  # compute_seem must still evaluate it in eval mode
    x = probe(12)
    assert not S.layerwise_eligible(critic)
    g_xx, g_sx = S.gram_matrices(critic, *x)
    phi, phi_s = naive_phi(critic, x[0], x[1]), naive_phi(critic, x[2], x[3])
    assert rel(g_xx, phi @ phi.T) < 1e-10
    assert rel(g_sx, phi_s @ phi.T) < 1e-10
    res = S.compute_seem(critic, *x, gamma=0.99)
    assert res.method == "generic"
    assert abs(res.seem - naive_seem(naive_a(critic, x, 0.99))) < 1e-9
    assert critic.training


class Shared(nn.Module):
    """The same Linear applied twice: statically eligible, caught by the hook-count check."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(5, 6)
        self.mid = nn.Linear(6, 6)
        self.out = nn.Linear(6, 1)

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.inp(torch.cat([obs, act], -1)))
        return self.out(torch.relu(self.mid(torch.relu(self.mid(h)))))


def test_runtime_check_falls_back_to_generic() -> None:
    torch.manual_seed(4)
    inplace = Critic(
        nn.Sequential(nn.Linear(5, 8), nn.ReLU(inplace=True), nn.Linear(8, 1)).double()
    )
    for critic in (Shared().double(), inplace):
        x = probe(9)
        assert S.layerwise_eligible(critic)
        res = S.compute_seem(critic, *x, gamma=0.9)
        assert res.method == "generic"
        assert abs(res.seem - naive_seem(naive_a(critic, x, 0.9))) < 1e-9
        with pytest.raises(ValueError, match="layer-wise"):
            S.compute_seem(critic, *x, gram="layerwise")


# ----------------------------------------------------------------------------- 2-6. structure


def test_gram_symmetric_psd_and_transpose() -> None:
    torch.manual_seed(5)
    critic = Critic(mlp(5, (16, 16), "layer"))
    o, a, so, sa = probe(20)
    g_xx, g_sx = S.gram_matrices(critic, o, a, so, sa)
    assert torch.allclose(g_xx, g_xx.T, rtol=0, atol=1e-12 * g_xx.abs().max())
    assert torch.linalg.eigvalsh(g_xx).min() > -1e-10 * g_xx.abs().max()
    g_ss, g_xs = S.gram_matrices(critic, so, sa, o, a)
    assert rel(g_xs, g_sx.T) < 1e-12
    assert torch.linalg.eigvalsh(g_ss).min() > -1e-10 * g_ss.abs().max()


@pytest.mark.parametrize("seed", range(4))
def test_gamma_zero_nonpositive_and_range(seed: int) -> None:
    torch.manual_seed(seed)
    critic = Critic(mlp(5, (16, 16), "layer" if seed % 2 else "none"))
    x = probe(30, seed=seed)
    assert S.compute_seem(critic, *x, gamma=0.0).seem <= 1e-12
    for gamma in (0.5, 0.99, 3.0):
        value = S.compute_seem(critic, *x, gamma=gamma).seem
        assert -1.0 <= value <= 1.0


def test_invariances() -> None:
    torch.manual_seed(6)
    critic = Critic(mlp(5, (16, 16)))
    x = probe(25)
    base = S.compute_seem(critic, *x, gamma=1.1)
    raw = S.compute_seem(critic, *x, gamma=1.1, scale_by_params=False)
    assert abs(base.seem - raw.seem) < 1e-12
    assert math.isclose(raw.frob, base.frob * base.num_params, rel_tol=1e-12)
    assert math.isclose(raw.max_eig, base.max_eig * base.num_params, rel_tol=1e-9)
    perm = torch.randperm(25)
    permuted = S.compute_seem(critic, *(t[perm] for t in x), gamma=1.1)
    assert abs(base.seem - permuted.seem) < 1e-10
    a = naive_a(critic, x, 1.1)
    frob = np.linalg.norm(a)
    for m in (a, a.T, 7.5 * a):
        lam, _ = S.rightmost_eigenvalue(m, "dense")
        assert abs(lam.real / np.linalg.norm(m) - base.seem) < 1e-10
    assert abs(S.rightmost_eigenvalue(a)[0].real / frob - base.seem) < 1e-10


def test_self_loop() -> None:
    torch.manual_seed(7)
    critic = Critic(mlp(5, (16, 16), "layer"))
    o, a, _, _ = probe(20)
    g_xx, _ = S.gram_matrices(critic, o, a, o, a)
    eig_g = torch.linalg.eigvalsh(g_xx)
    assert S.compute_seem(critic, o, a, o, a, gamma=0.9).seem <= 1e-12
    up = S.compute_seem(critic, o, a, o, a, gamma=1.3).seem
    assert up > 0
    assert abs(up - float(eig_g.max() / torch.linalg.norm(g_xx))) < 1e-10


# ----------------------------------------------------------------------------- 7-8. scaling


@pytest.mark.parametrize(("gamma", "c"), [(0.99, 1.5), (0.99, 0.7), (0.5, 3.0), (0.9, 1.0)])
def test_bias_free_relu_scaled_next_states(gamma: float, c: float) -> None:
    torch.manual_seed(8)
    critic = Critic(mlp(5, (16, 16), bias=False))
    o, a, _, _ = probe(20)
    value = S.compute_seem(critic, o, a, c * o, c * a, gamma=gamma).seem
    if gamma * c > 1:
        assert value > 1e-6
    else:
        assert value <= 1e-12


@pytest.mark.parametrize("c", [0.3, 1.0, 2.0, 10.0])
def test_layernorm_after_bias_free_linear_never_excites(c: float) -> None:
    torch.manual_seed(9)
    body = mlp(5, (16, 16), "layer", eps=1e-12)
    body[0].bias = None  # bias-free first Linear: LN(c z) == LN(z)
    critic = Critic(body)
    o, a, _, _ = probe(20)
    assert S.compute_seem(critic, o, a, c * o, c * a, gamma=0.99).seem <= 1e-9


# ----------------------------------------------------------------------------- 9-11. dynamics


def _td_residual(critic: nn.Module, x: tuple[torch.Tensor, ...], r: torch.Tensor, gamma: float):
    with torch.no_grad():
        return r + gamma * critic(x[2], x[3]).reshape(-1) - critic(x[0], x[1]).reshape(-1)


def _gd_step(
    critic: nn.Module, x: tuple[torch.Tensor, ...], r: torch.Tensor, gamma: float, eta: float
):
    """One GD step on 0.5 * sum(delta^2) with a stop-gradient target, on a copy."""
    import copy

    net = copy.deepcopy(critic)
    with torch.no_grad():
        target = r + gamma * net(x[2], x[3]).reshape(-1)
    loss = 0.5 * ((target - net(x[0], x[1]).reshape(-1)) ** 2).sum()
    grads = torch.autograd.grad(loss, list(net.parameters()))
    with torch.no_grad():
        for p, g in zip(net.parameters(), grads, strict=True):
            p -= eta * g
    return net


def test_one_gd_step_follows_linear_dynamics() -> None:
    torch.manual_seed(10)
    critic = Critic(mlp(5, (16, 16), "layer", act=nn.Tanh))  # smooth: no ReLU kinks crossed
    x = probe(15)
    r = torch.randn(15, dtype=torch.float64)
    gamma = 0.99
    g_xx, g_sx = S.gram_matrices(critic, *x)
    a = gamma * g_sx - g_xx
    delta = _td_residual(critic, x, r, gamma)
    errors = []
    for eta in (1e-4, 1e-5):
        moved = _td_residual(_gd_step(critic, x, r, gamma, eta), x, r, gamma) - delta
        predicted = eta * (a @ delta)
        errors.append(rel(moved, predicted))
    assert errors[0] < 0.1
    assert 5.0 < errors[0] / errors[1] < 20.0


def test_homogeneity_of_bias_free_relu() -> None:
    torch.manual_seed(11)
    body = mlp(5, (16, 16), bias=False)
    critic = Critic(body)
    x = probe(20)
    n_layers, c = 3, 1.7
    base = S.compute_seem(critic, *x, gamma=1.05, scale_by_params=False)
    q0 = critic(x[0], x[1])
    with torch.no_grad():
        for p in critic.parameters():
            p.mul_(c)
    scaled = S.compute_seem(critic, *x, gamma=1.05, scale_by_params=False)
    assert torch.allclose(critic(x[0], x[1]), q0 * c**n_layers, rtol=1e-10)
    assert abs(base.seem - scaled.seem) < 1e-10
    assert math.isclose(scaled.frob, base.frob * c ** (2 * n_layers - 2), rel_tol=1e-10)
    assert math.isclose(scaled.max_eig, base.max_eig * c ** (2 * n_layers - 2), rel_tol=1e-8)


def test_spectrum_matches_parameter_space_operator() -> None:
    torch.manual_seed(12)
    critic = Critic(mlp(5, (4, 4), "layer"))
    x = probe(10)
    gamma = 0.95
    res = S.compute_seem(critic, *x, gamma=gamma, top_k=10, scale_by_params=False)
    phi, phi_s = naive_phi(critic, x[0], x[1]), naive_phi(critic, x[2], x[3])
    big = (phi.T @ (gamma * phi_s - phi)).numpy()  # P x P
    eig_p = np.linalg.eigvals(big)
    scale = np.abs(eig_p).max()
    nonzero = eig_p[np.abs(eig_p) > 1e-9 * scale]
    assert len(nonzero) == 10 == len(res.top_eigs)
    for lam in res.top_eigs:
        assert np.abs(nonzero - lam).min() < 1e-9 * scale
    assert abs(res.max_eig - nonzero.real.max()) < 1e-9 * scale


# ----------------------------------------------------------------------------- contract details


def test_output_shapes_and_mask_terminals() -> None:
    torch.manual_seed(13)
    body = mlp(5, (8, 8), "layer")
    x = probe(12)
    flat = S.compute_seem(Critic(body, squeeze=True), *x, gamma=0.99)
    col = S.compute_seem(Critic(body), *x, gamma=0.99)
    assert flat.seem == pytest.approx(col.seem, abs=1e-14)
    done = torch.zeros(12)
    done[::3] = 1.0
    critic = Critic(body)
    phi, phi_s = naive_phi(critic, x[0], x[1]), naive_phi(critic, x[2], x[3])
    coef = 0.99 * (1 - done.double())
    a = (coef[:, None] * phi_s @ phi.T - phi @ phi.T).numpy()
    masked = S.compute_seem(critic, *x, gamma=0.99, done=done, mask_terminals=True)
    assert abs(masked.seem - naive_seem(a)) < 1e-10
    ignored = S.compute_seem(critic, *x, gamma=0.99, done=done)
    assert ignored.seem == pytest.approx(col.seem, abs=1e-14)
    all_done = S.compute_seem(critic, *x, gamma=0.99, done=torch.ones(12), mask_terminals=True)
    assert all_done.seem <= 1e-12


def test_modes_restored_and_no_grad_side_effects() -> None:
    torch.manual_seed(14)
    body = nn.Sequential(
        nn.Linear(5, 8), nn.LayerNorm(8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 1)
    ).double()
    critic = Critic(body)
    critic.train()
    body[3].eval()  # mixed modes must come back exactly
    x = probe(10)
    res = S.compute_seem(critic, *x, gamma=0.99)
    assert res.method == "layerwise"
    assert critic.training and body[0].training and not body[3].training
    assert all(p.grad is None for p in critic.parameters())
    critic.eval()
    assert abs(res.seem - naive_seem(naive_a(critic, x, 0.99))) < 1e-10  # dropout was off
    with torch.no_grad():  # callers inside no_grad still get gradients internally
        again = S.compute_seem(critic, *x, gamma=0.99)
    assert again.seem == pytest.approx(res.seem, abs=1e-14)


def test_float32_critic_and_degenerate_a() -> None:
    torch.manual_seed(15)
    critic = Critic(mlp(5, (8, 8), "layer").float())
    x = tuple(t.float() for t in probe(12))
    res = S.compute_seem(critic, *x, gamma=0.99)
    ref = naive_seem(naive_a(critic, x, 0.99))
    assert abs(res.seem - ref) < 1e-5
    zero = Critic(mlp(5, (8,), bias=False))
    with torch.no_grad():
        for p in zero.parameters():
            p.zero_()
    out = S.compute_seem(zero, *probe(6), gamma=0.99, top_k=2)
    assert out.seem == 0.0 and out.frob == 0.0 and out.max_eig == 0.0


def test_bad_inputs_raise_clear_errors() -> None:
    critic = Critic(mlp(5, (4,)))
    x = probe(6)
    with pytest.raises(ValueError, match="share n"):
        S.compute_seem(critic, x[0], x[1][:5], x[2], x[3])
    with pytest.raises(ValueError, match="eig"):
        S.compute_seem(critic, *x, eig="qr")
    with pytest.raises(ValueError, match="done"):
        S.compute_seem(critic, *x, mask_terminals=True)
    with pytest.raises(ValueError, match="shape"):
        S.compute_seem(Critic(nn.Linear(5, 2).double()), *x)
    with pytest.raises(ValueError, match="trainable"):
        frozen = Critic(mlp(5, (4,)).requires_grad_(False))
        S.compute_seem(frozen, *x)


def test_probe_critic_selects_head() -> None:
    class Twin(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.heads = nn.ModuleList([Critic(mlp(5, (4,))) for _ in range(2)])

        def head_module(self, i: int) -> nn.Module:
            return self.heads[i]

    twin = Twin()
    assert S.probe_critic(twin, 1) is twin.heads[1]
    single = Critic(mlp(5, (4,)))
    assert S.probe_critic(single, 0) is single


# ----------------------------------------------------------------------------- mixed == dense


def _trained(critic: nn.Module, x: tuple[torch.Tensor, ...], steps: int, lr: float) -> None:
    """A few Adam TD steps towards self-bootstrapped targets (moves the spectrum off init)."""
    opt = torch.optim.Adam(critic.parameters(), lr=lr)
    r = torch.randn(x[0].shape[0], dtype=torch.float64)
    for _ in range(steps):
        with torch.no_grad():
            target = r + 0.99 * critic(x[2], x[3]).reshape(-1)
        loss = ((critic(x[0], x[1]).reshape(-1) - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    opt.zero_grad(set_to_none=True)


@pytest.mark.parametrize("norm", ["none", "layer"])
@pytest.mark.parametrize(("gamma", "train_steps"), [(0.0, 0), (0.99, 0), (0.99, 60), (1.2, 0)])
def test_mixed_matches_dense(norm: str, gamma: float, train_steps: int) -> None:
    torch.manual_seed(16)
    critic = Critic(mlp(5, (32, 32), norm))
    x = probe(200, seed=16)
    if train_steps:
        _trained(critic, x, train_steps, 1e-2)
    dense = S.compute_seem(critic, *x, gamma=gamma, eig="dense", top_k=1)
    mixed = S.compute_seem(critic, *x, gamma=gamma, eig="mixed", top_k=1)
    assert dense.eig_method == "dense"
    assert mixed.eig_method == "mixed"
    assert abs(dense.seem - mixed.seem) < 1e-9
    assert abs(dense.top_eigs[0].real - mixed.top_eigs[0].real) < 1e-9 * dense.frob
    assert abs(dense.frob - mixed.frob) <= 1e-12 * dense.frob


def _cluster_matrix(seed: int) -> np.ndarray:
    """Shaped like -G + small coupling: a thousands-fold cluster at the right edge."""
    rng = np.random.default_rng(seed)
    n = 300
    u = rng.standard_normal((n, 40)) * np.logspace(0, -4, 40)  # decaying, rank-deficient G
    g = u @ u.T + 1e-9 * np.eye(n)
    coupling = rng.standard_normal((n, n)) * 10.0 ** rng.uniform(-7, -3)
    return coupling @ g - g  # like gamma * G(X*, X) - G(X, X)


def _rightmost_complex_matrix(seed: int) -> np.ndarray:
    """A real matrix whose rightmost eigenvalues are a well-separated complex pair."""
    rng = np.random.default_rng(seed)
    n = 250
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    t = np.diag(-rng.uniform(0.1, 1.0, n)) + np.triu(0.05 * rng.standard_normal((n, n)), 1)
    t[:2, :2] = [[0.2, 0.5], [-0.3, 0.2]]  # eigenvalues 0.2 +- 0.387i
    return q @ t @ q.T


def _exact_zero_cluster(seed: int) -> np.ndarray:
    """Rank 30 at n=200: 170 exact zero eigenvalues, rightmost a tiny negative or zero."""
    rng = np.random.default_rng(seed)
    phi = rng.standard_normal((200, 30))
    phi_s = phi + 0.01 * rng.standard_normal((200, 30))
    return 0.9 * phi_s @ phi.T - phi @ phi.T


@pytest.mark.parametrize(
    "make",
    [
        *(lambda s=s: _cluster_matrix(s) for s in range(4)),
        *(lambda s=s: _rightmost_complex_matrix(s) for s in range(2)),
        *(lambda s=s: _exact_zero_cluster(s) for s in range(2)),
        lambda: np.random.default_rng(5).standard_normal((220, 220)),  # Ginibre: disk spectrum
    ],
)
def test_mixed_on_hard_spectra(make) -> None:
    a = make()
    frob = np.linalg.norm(a)
    w = np.linalg.eigvals(a / frob)
    vals = S._mixed_eigs(a / frob)
    assert vals is not None, "mixed should verify these matrices"
    assert abs(vals[0].real - w.real.max()) < 1e-9
    assert np.abs(w - vals[0]).min() < 1e-9  # an eigenvalue of a, not just its real part
    lam, used = S.rightmost_eigenvalue(a, "mixed")
    assert used == "mixed"
    assert abs(lam.real - w.real.max() * frob) < 1e-9 * frob


def test_mixed_complex_pair_keeps_imaginary_part() -> None:
    a = _rightmost_complex_matrix(3)
    lam, used = S.rightmost_eigenvalue(a, "mixed")
    w = np.linalg.eigvals(a)
    top = w[np.argmax(w.real)]
    assert used == "mixed"
    assert abs(abs(lam.imag) - abs(top.imag)) < 1e-9 * np.linalg.norm(a)
    assert abs(lam.imag) > 0.1


def test_mixed_falls_back_to_dense_when_unverified(monkeypatch: pytest.MonkeyPatch) -> None:
    a = _cluster_matrix(7)
    monkeypatch.setattr(S, "MIXED_ITERS", 0)  # no refinement step can verify anything
    lam, used = S.rightmost_eigenvalue(a, "mixed")
    assert used == "dense"
    assert abs(lam.real - np.linalg.eigvals(a).real.max()) < 1e-10 * np.linalg.norm(a)


def test_auto_picks_dense_for_small_and_mixed_for_large(monkeypatch: pytest.MonkeyPatch) -> None:
    a = _rightmost_complex_matrix(4)
    assert S.rightmost_eigenvalue(a)[1] == "dense"  # n=250 <= DENSE_MAX_N
    monkeypatch.setattr(S, "DENSE_MAX_N", 100)
    lam, used = S.rightmost_eigenvalue(a)
    assert used == "mixed"
    assert abs(lam.real - np.linalg.eigvals(a).real.max()) < 1e-10 * np.linalg.norm(a)
    torch.manual_seed(17)
    critic = Critic(mlp(5, (16,)))
    x = probe(120, seed=17)
    res = S.compute_seem(critic, *x, gamma=0.99, top_k=3)  # top_k > 1: whole spectrum
    assert res.eig_method == "dense" and len(res.top_eigs) == 3
    assert S.compute_seem(critic, *x, gamma=0.99).eig_method == "mixed"


def test_arnoldi_is_gone() -> None:
    critic = Critic(mlp(5, (4,)))
    with pytest.raises(ValueError, match="eig"):
        S.compute_seem(critic, *probe(6), eig="arnoldi")


# ----------------------------------------------------------------------------- duplicate rows


def _with_duplicates(n: int, pool: int, seed: int) -> tuple[torch.Tensor, ...]:
    """n draws with replacement from `pool` distinct transitions, like the official probe."""
    base = probe(pool, seed=seed)
    idx = torch.randint(0, pool, (n,), generator=torch.Generator().manual_seed(seed))
    return tuple(t[idx] for t in base)


@pytest.mark.parametrize(
    ("norm", "gamma", "pool"), [("none", 0.99, 25), ("layer", 1.2, 40), ("layer", 0.0, 30)]
)
def test_duplicate_rows_reduce_exactly(norm: str, gamma: float, pool: int) -> None:
    torch.manual_seed(18)
    critic = Critic(mlp(5, (16, 16), norm))
    x = _with_duplicates(90, pool, seed=18)
    distinct = len(torch.unique(torch.cat(x, 1), dim=0))
    assert distinct < 90
    a = naive_a(critic, x, gamma)  # the full N x N matrix, one backward per row
    merged = S.compute_seem(critic, *x, gamma=gamma, top_k=4)
    full = S.compute_seem(critic, *x, gamma=gamma, top_k=4, dedupe=False)
    assert merged.unique_rows == distinct and full.unique_rows == 90
    assert merged.n == full.n == 90
    assert abs(merged.seem - naive_seem(a)) < 1e-9
    assert abs(merged.seem - full.seem) < 1e-9
    assert math.isclose(merged.frob, np.linalg.norm(a) / merged.num_params, rel_tol=1e-10)
    w = np.linalg.eigvals(a) / merged.num_params
    scale = merged.frob
    for lam in merged.top_eigs:  # zeros included: N - u of them are exact eigenvalues
        assert np.abs(w - lam).min() < 1e-9 * scale
    assert abs(merged.max_eig - w.real.max()) < 1e-9 * scale
    if gamma == 0.0:  # -G is NSD; the duplicated rows add exact zeros, so max Re == 0
        assert merged.seem == 0.0


def test_duplicates_differing_only_in_done_are_kept_apart() -> None:
    torch.manual_seed(19)
    critic = Critic(mlp(5, (8, 8)))
    base = probe(10, seed=19)
    x = tuple(torch.cat([t, t]) for t in base)  # every row twice
    done = torch.cat([torch.zeros(10), torch.ones(10)])
    res = S.compute_seem(critic, *x, gamma=0.99, done=done, mask_terminals=True)
    assert res.unique_rows == 20
    phi, phi_s = naive_phi(critic, x[0], x[1]), naive_phi(critic, x[2], x[3])
    coef = 0.99 * (1 - done.double())
    a = (coef[:, None] * phi_s @ phi.T - phi @ phi.T).numpy()
    assert abs(res.seem - naive_seem(a)) < 1e-10
    plain = S.compute_seem(critic, *x, gamma=0.99)
    assert plain.unique_rows == 10
    assert abs(plain.seem - naive_seem(naive_a(critic, x, 0.99))) < 1e-10
