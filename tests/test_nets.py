"""Nets: norm placement, the fused ensemble vs independent plain heads, spectral bounds, actors."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from seem_ray.config import NORMS, NetConfig
from seem_ray.nets import (
    DeterministicActor,
    EnsembleCritic,
    GaussianActor,
    TanhGaussianActor,
    build_mlp,
    gaussian_log_prob,
    tanh_gaussian_sample,
)

POSITIONS = ("before_act", "after_act")
FEATURE = {"layer": nn.LayerNorm, "rms": nn.RMSNorm, "batch": nn.BatchNorm1d}

pytestmark = pytest.mark.usefixtures("one_thread")


def _inputs(
    b: int = 12, obs_dim: int = 5, act_dim: int = 3, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, obs_dim, generator=g), torch.randn(b, act_dim, generator=g)


def _train_a_little(critic: EnsembleCritic, steps: int = 3) -> None:
    """A few optimizer steps in training mode: moves weights, BN stats and spectral u/v."""
    opt = torch.optim.SGD(critic.parameters(), lr=0.05)
    for s in range(steps):
        obs, act = _inputs(seed=100 + s)
        loss = critic(obs, act).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


# --------------------------------------------------------------------------------------------
# build_mlp
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("norm,position", list(itertools.product(NORMS, POSITIONS)))
def test_build_mlp_every_norm_and_placement_keeps_shapes(norm: str, position: str) -> None:
    cfg = NetConfig(hidden=(16, 8), norm=norm, norm_position=position)
    net = build_mlp(7, 4, cfg, out_act=nn.Tanh())
    out = net(torch.randn(10, 7))
    assert out.shape == (10, 4)
    assert out.abs().max() <= 1.0  # the output activation is last


@pytest.mark.parametrize("norm", ["layer", "rms", "batch"])
@pytest.mark.parametrize("position", POSITIONS)
def test_feature_norm_sits_where_config_says(norm: str, position: str) -> None:
    cfg = NetConfig(
        hidden=(16, 8, 4), norm=norm, norm_layers=(0, 2), norm_position=position, dropout=0.1
    )
    mods = list(build_mlp(6, 2, cfg))
    linears = [i for i, m in enumerate(mods) if isinstance(m, nn.Linear)]
    assert len(linears) == 4
    blocks = [mods[a + 1 : b] for a, b in itertools.pairwise(linears)]
    for layer, block in enumerate(blocks):
        types = [type(m) for m in block]
        if layer in (0, 2):
            expected = (
                [FEATURE[norm], nn.ReLU] if position == "before_act" else [nn.ReLU, FEATURE[norm]]
            )
        else:
            expected = [nn.ReLU]
        assert types == [*expected, nn.Dropout], (layer, types)
    assert mods[-1] is mods[linears[-1]]  # output Linear has no norm after it


@pytest.mark.parametrize("norm", ["spectral", "weight"])
def test_weight_reparametrizations_sit_on_the_chosen_hidden_linears(norm: str) -> None:
    cfg = NetConfig(hidden=(16, 8), norm=norm, norm_layers=(1,))
    linears = [m for m in build_mlp(6, 2, cfg) if isinstance(m, nn.Linear)]
    assert [parametrize.is_parametrized(m) for m in linears] == [False, True, False]


def test_build_mlp_spectral_bounds_top_singular_value() -> None:
    torch.manual_seed(0)
    net = build_mlp(6, 2, NetConfig(hidden=(32, 32), norm="spectral"))
    with torch.no_grad():
        for _ in range(30):  # each training-mode forward runs one power iteration
            net(torch.randn(4, 6))
        for m in list(net)[:-1]:
            if isinstance(m, nn.Linear):
                assert torch.linalg.matrix_norm(m.weight, ord=2) <= 1.0 + 1e-2


# --------------------------------------------------------------------------------------------
# EnsembleCritic
# --------------------------------------------------------------------------------------------

ALL_KINDS = list(itertools.product(NORMS, POSITIONS))


@pytest.mark.parametrize("norm,position", ALL_KINDS)
def test_ensemble_shapes_and_head_module_matches_in_eval(norm: str, position: str) -> None:
    torch.manual_seed(1)
    cfg = NetConfig(hidden=(16, 8), norm=norm, norm_position=position, activation="tanh")
    critic = EnsembleCritic(5, 3, cfg, ensemble=3)
    _train_a_little(critic)
    critic.eval()
    obs, act = _inputs()
    q = critic(obs, act)
    assert q.shape == (3, 12)
    for i in range(3):
        head = critic.head_module(i)
        assert not head.training
        torch.testing.assert_close(head(obs, act), q[i], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(critic.forward_head(obs, act, i), q[i], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("norm,position", [("none", "before_act"), *ALL_KINDS])
@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_direct_kernel_path_equals_the_module_path(
    norm: str, position: str, activation: str
) -> None:
    """The critic's and actor's direct-call forwards (speed) compute exactly the module path:
    same values and same gradients, all heads or one."""
    torch.manual_seed(2)
    cfg = NetConfig(hidden=(16, 8), norm=norm, norm_position=position, activation=activation)
    critic = EnsembleCritic(5, 3, cfg, ensemble=2)
    critic.eval()  # spectral norm's power step would otherwise change u, v between the passes
    assert critic._direct == (norm in ("none", "layer", "rms"))
    actor = DeterministicActor(5, 3, NetConfig(hidden=(16, 8), activation=activation), 2.0)
    assert actor._direct  # Linear, ReLU or Tanh only
    obs, act = _inputs()
    outputs = {}
    for direct in (True, False):
        critic._direct = direct and critic._direct
        actor._direct = direct and actor._direct
        critic.zero_grad()
        q = critic(obs, act)
        q1 = critic.forward_head(obs, act, 1)
        (q.sum() + q1.sum()).backward()
        pi = actor(obs)
        outputs[direct] = (q, q1, pi, [p.grad.clone() for p in critic.parameters()])
    for a, b in zip(outputs[True][:3], outputs[False][:3], strict=True):
        assert torch.equal(a, b)
    for a, b in zip(outputs[True][3], outputs[False][3], strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("norm", NORMS)
def test_head_module_matches_in_training_mode_too(norm: str) -> None:
    """Same batch statistics for BN, same power-iteration step for spectral norm."""
    torch.manual_seed(2)
    critic = EnsembleCritic(5, 3, NetConfig(hidden=(16, 8), norm=norm), ensemble=2)
    _train_a_little(critic)
    heads = [critic.head_module(i).train() for i in range(2)]
    obs, act = _inputs(seed=7)
    q = critic(obs, act)
    for i, head in enumerate(heads):
        torch.testing.assert_close(head(obs, act), q[i], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("norm", ["none", "layer", "rms", "weight", "spectral", "batch"])
def test_head_module_gradients_are_the_ensemble_gradients_of_that_head(norm: str) -> None:
    """The SEEM NTK is w.r.t. the real parameters: per-head grads must coincide."""
    torch.manual_seed(3)
    critic = EnsembleCritic(5, 3, NetConfig(hidden=(8, 8), norm=norm), ensemble=2)
    _train_a_little(critic)
    critic.eval()
    obs, act = _inputs()
    head = critic.head_module(1)
    critic.zero_grad()
    critic(obs, act)[1].sum().backward()
    head(obs, act).sum().backward()
    ens = sorted(p.grad[1].norm().item() for p in critic.parameters() if p.grad is not None)
    plain = sorted(p.grad.norm().item() for p in head.parameters())
    assert ens == pytest.approx(plain, rel=1e-4, abs=1e-7)


def test_head_module_is_an_independent_copy() -> None:
    critic = EnsembleCritic(5, 3, NetConfig(hidden=(8,)), ensemble=2)
    head = critic.head_module(0)
    obs, act = _inputs()
    before = head(obs, act).detach().clone()
    with torch.no_grad():
        for p in critic.parameters():
            p.add_(1.0)
    torch.testing.assert_close(head(obs, act), before)
    assert all(p.requires_grad for p in head.parameters())
    with pytest.raises(IndexError):
        critic.head_module(2)


def test_fast_path_modules_are_plain_torch_modules() -> None:
    critic = EnsembleCritic(5, 3, NetConfig(hidden=(8, 8), norm="layer", activation="mish"), 2)
    kinds = {type(m) for m in critic.head_module(0).net}
    assert kinds == {nn.Linear, nn.LayerNorm, nn.Mish}


def test_heads_are_initialised_like_nn_linear_and_independently() -> None:
    torch.manual_seed(4)
    critic = EnsembleCritic(17, 6, NetConfig(hidden=(64, 32)), ensemble=2)
    for lin, fan_in in zip([*critic.linears, critic.out], [23, 64, 32], strict=True):
        bound = 1 / math.sqrt(fan_in)
        assert lin.weight.abs().max() <= bound and lin.bias.abs().max() <= bound
        assert lin.weight.abs().max() > 0.9 * bound  # spans the range, not a smaller init
        assert not torch.equal(lin.weight[0], lin.weight[1])
    before = critic.out.weight.clone()
    critic.reset_parameters()
    assert not torch.equal(before, critic.out.weight)


def test_layer_weight_norms_match_the_plain_heads() -> None:
    torch.manual_seed(5)
    for norm in ("none", "weight", "spectral"):
        critic = EnsembleCritic(5, 3, NetConfig(hidden=(8, 8), norm=norm), ensemble=3)
        _train_a_little(critic)
        norms = critic.layer_weight_norms()
        heads = [critic.head_module(i) for i in range(3)]
        for layer, value in enumerate(norms):
            per_head = [[m for m in h.net if isinstance(m, nn.Linear)][layer].weight for h in heads]
            expected = math.sqrt(sum(w.norm().item() ** 2 for w in per_head))
            assert value.item() == pytest.approx(expected, rel=1e-5)
        assert len(norms) == 3


@pytest.mark.parametrize("iters", [1, 30])
def test_ensemble_spectral_norm_bounds_top_singular_value_per_head(iters: int) -> None:
    torch.manual_seed(6)
    critic = EnsembleCritic(5, 3, NetConfig(hidden=(32, 32), norm="spectral"), ensemble=2)
    with torch.no_grad():
        for _ in range(iters):
            critic(*_inputs())
        for lin in critic.linears:
            sigma = torch.linalg.matrix_norm(lin.effective_weight(), ord=2)
            assert sigma.shape == (2,)
            assert (sigma <= 1.0 + 1e-2).all() and (sigma >= 0.9).all()
        raw = torch.linalg.matrix_norm(critic.out.weight, ord=2)  # output layer not normed
        assert torch.equal(raw, torch.linalg.matrix_norm(critic.out.effective_weight(), ord=2))


def test_batch_norm_is_per_head_and_updates_running_stats_only_in_training() -> None:
    critic = EnsembleCritic(5, 3, NetConfig(hidden=(8,), norm="batch"), ensemble=2)
    bn = critic.norms[0]
    obs, act = _inputs()
    critic(obs, act)
    moved = bn.running_mean.clone()
    assert not torch.equal(moved[0], moved[1])  # each head has its own statistics
    critic.eval()
    critic(obs, act)
    assert torch.equal(bn.running_mean, moved)


# --------------------------------------------------------------------------------------------
# Actors
# --------------------------------------------------------------------------------------------


def test_actors_respect_max_action_and_dropout_config() -> None:
    cfg = NetConfig(hidden=(16,), dropout=0.2)
    obs = torch.randn(64, 4) * 10
    assert DeterministicActor(4, 2, cfg, 2.0)(obs).abs().max() <= 2.0
    mean, log_std = GaussianActor(4, 2, cfg, 2.0)(obs)
    assert mean.abs().max() <= 2.0 and log_std.shape == mean.shape
    mean, log_std = TanhGaussianActor(4, 2, cfg, 2.0)(obs)
    assert mean.shape == (64, 2) and log_std.max() <= 2.0
    assert any(isinstance(m, nn.Dropout) for m in DeterministicActor(4, 2, cfg, 1.0).modules())


def test_gaussian_log_prob_matches_torch_distributions() -> None:
    mean, log_std, act = torch.randn(6, 3), torch.randn(6, 3) * 0.3, torch.randn(6, 3)
    expected = torch.distributions.Normal(mean, log_std.exp()).log_prob(act).sum(-1)
    torch.testing.assert_close(gaussian_log_prob(mean, log_std, act), expected)


def test_tanh_gaussian_sample_matches_a_transformed_distribution() -> None:
    torch.manual_seed(7)
    mean, log_std, noise = torch.randn(6, 3), torch.randn(6, 3) * 0.3, torch.randn(6, 3)
    action, log_prob = tanh_gaussian_sample(mean, log_std, noise, 2.0)
    base = torch.distributions.Normal(mean, log_std.exp())
    dist = torch.distributions.TransformedDistribution(
        base,
        [torch.distributions.TanhTransform(), torch.distributions.AffineTransform(0.0, 2.0)],
    )
    torch.testing.assert_close(action, 2.0 * torch.tanh(mean + noise * log_std.exp()))
    torch.testing.assert_close(log_prob, dist.log_prob(action).sum(-1), rtol=1e-4, atol=1e-4)
