"""The hand-written backward (algos/handgrad.py) against autograd on the same nets, and the
conditions under which TD3+BC, IQL and CQL use it."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from tiny_batches import ACT, OBS, random_batch

from seem_ray.algos import TD3BC, build_algorithm, handgrad
from seem_ray.algos.base import OfflineAlgorithm, ensemble_mse, ensemble_mse_and_grad
from seem_ray.config import AlgoConfig, CQLConfig, NetConfig, TD3BCConfig
from seem_ray.data.batches import Batch
from seem_ray.nets import DeterministicActor, EnsembleCritic

pytestmark = pytest.mark.usefixtures("one_thread")

B = 32


def batch(seed: int) -> Batch:
    return random_batch(seed, B)


def grads(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() for p in module.parameters()]  # type: ignore[union-attr]


def clear(module: torch.nn.Module) -> None:
    for p in module.parameters():
        p.grad = None


@pytest.mark.parametrize("hidden", [(8,), (16, 16), (12, 16, 8)])
@pytest.mark.parametrize("ensemble", [1, 2, 3])
def test_critic_param_grads_equal_autograd(hidden: tuple[int, ...], ensemble: int) -> None:
    torch.manual_seed(0)
    critic = EnsembleCritic(OBS, ACT, NetConfig(hidden=hidden), ensemble)
    bt, y = batch(1), torch.randn(B)
    ensemble_mse(critic(bt.obs, bt.act), y).backward()
    expected = grads(critic)
    clear(critic)
    with torch.no_grad():
        q, acts = handgrad.critic_forward(critic, torch.cat([bt.obs, bt.act], -1))
        torch.testing.assert_close(q, critic(bt.obs, bt.act))
        handgrad.critic_param_grads(critic, acts, 2 * (q - y) / B)
    for e, g in zip(expected, grads(critic), strict=True):
        assert g.shape == e.shape
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-7)


def test_ensemble_mse_and_grad_equal_autograd_of_ensemble_mse() -> None:
    g = torch.Generator().manual_seed(3)
    q = torch.randn(3, 20, generator=g, requires_grad=True)
    target = torch.randn(20, generator=g)
    loss, grad = ensemble_mse_and_grad(q.detach(), target)
    expected = ensemble_mse(q, target)
    expected.backward()
    torch.testing.assert_close(loss, expected.detach())
    torch.testing.assert_close(grad, q.grad)


@pytest.mark.parametrize("head", [0, 1])
def test_critic_action_grad_equals_autograd_through_one_head(head: int) -> None:
    torch.manual_seed(1)
    critic = EnsembleCritic(OBS, ACT, NetConfig(hidden=(16, 16)), 2)
    bt = batch(2)
    weights = torch.randn(B)  # any dLoss/dQ, not just a constant
    act = bt.act.clone().requires_grad_(True)
    (critic.forward_head(bt.obs, act, head) * weights).sum().backward()
    with torch.no_grad():
        q, acts = handgrad.critic_forward(critic, torch.cat([bt.obs, bt.act], -1), head=head)
        torch.testing.assert_close(q[0], critic.forward_head(bt.obs, bt.act, head))
        got = handgrad.critic_action_grad(critic, acts, weights[None], head)
    assert act.grad is not None and got.shape == (B, ACT)
    torch.testing.assert_close(got, act.grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("hidden", [(8,), (16, 16)])
def test_actor_forward_and_param_grads_equal_autograd(hidden: tuple[int, ...]) -> None:
    torch.manual_seed(2)
    actor = DeterministicActor(OBS, ACT, NetConfig(hidden=hidden), max_action=2.0)
    obs, grad_pi = batch(3).obs, torch.randn(B, ACT)
    pi = actor(obs)
    (pi * grad_pi).sum().backward()
    expected = grads(actor)
    clear(actor)
    with torch.no_grad():
        got_pi, acts = handgrad.actor_forward(actor, obs)
        handgrad.actor_param_grads(actor, acts, grad_pi)
    torch.testing.assert_close(got_pi, pi.detach())
    for e, g in zip(expected, grads(actor), strict=True):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-7)


def make_td3(hand: bool, critic: NetConfig | None = None, **td3: Any) -> TD3BC:
    torch.manual_seed(0)
    net = NetConfig(hidden=(16, 16))
    algo = build_algorithm(
        AlgoConfig(name="td3bc", tau=0.5, td3bc=TD3BCConfig(**td3)),
        critic or net,
        net,
        OBS,
        ACT,
        1.0,
        torch.device("cpu"),
    )
    assert isinstance(algo, TD3BC)
    algo.hand_backward = hand and algo.hand_backward
    return algo


@pytest.mark.parametrize("bc_weight", [0.0, 1.0])
def test_td3bc_by_hand_trains_like_autograd(bc_weight: float) -> None:
    by_hand, autograd = make_td3(True, bc_weight=bc_weight), make_td3(False, bc_weight=bc_weight)
    assert by_hand._by_hand() and not autograd._by_hand()
    modules = ("critic", "actor", "critic_target", "actor_target")
    initial = {m: [p.detach().clone() for p in getattr(autograd, m).parameters()] for m in modules}
    for s in range(6):  # three actor and target updates
        out_h, out_a = by_hand.update(batch(s)), autograd.update(batch(s))
        for key in out_a:
            torch.testing.assert_close(out_h[key], out_a[key], rtol=1e-5, atol=1e-6)
    for m in modules:
        pairs = zip(
            getattr(by_hand, m).parameters(), getattr(autograd, m).parameters(), strict=True
        )
        for (p, q), p0 in zip(pairs, initial[m], strict=True):
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
            assert not torch.equal(q, p0), m  # the comparison is not between idle nets


def test_grad_norm_metric_is_the_norm_of_every_critic_gradient_on_both_paths() -> None:
    algo = make_td3(True)

    def naive_norm() -> float:
        return sum(float(p.grad.double().square().sum()) for p in algo.critic.parameters()) ** 0.5  # type: ignore[union-attr]

    out = algo.update(batch(0))  # by hand: the gradients sit in one flat buffer
    assert handgrad.flat_critic_grad(algo.critic) is not None
    assert float(out["critic_grad_norm"]) == pytest.approx(naive_norm(), rel=1e-5)
    algo.hand_backward = False  # autograd's fresh .grad tensors: the stale buffer is not read
    out = algo.update(batch(1))
    assert handgrad.flat_critic_grad(algo.critic) is None
    assert float(out["critic_grad_norm"]) == pytest.approx(naive_norm(), rel=1e-5)


@pytest.mark.parametrize("name", ["td3bc", "iql", "cql"])
def test_hand_steps_leave_no_inference_tensors_in_persistent_state(name: str) -> None:
    """The hand path runs under inference mode; what outlives a step must stay usable by
    autograd: parameters, their .grad (autograd may accumulate into it), optimizer state."""
    algo = make_td3(True) if name == "td3bc" else make_critic_only(name, True)
    for s in range(2):  # TD3+BC's second step is an actor step
        algo.update(batch(s))
    nets = [
        algo.critic,
        algo.actor,
        *(getattr(algo, n) for n in ("critic_target", "actor_target") if hasattr(algo, n)),
    ]
    for net in nets:
        for p in net.parameters():
            assert not p.is_inference()
            assert p.grad is None or not p.grad.is_inference()
    for opt in (algo.critic_opt, algo.actor_opt):  # type: ignore[attr-defined]
        for state in opt.state.values():
            assert not any(t.is_inference() for t in state.values() if isinstance(t, torch.Tensor))
    q = algo.critic(batch(5).obs, batch(5).act)
    q.sum().backward()  # accumulates into the hand path's .grad buffers without an error
    algo.hand_backward = False
    algo.update(batch(6))  # and the autograd path can take over the same optimizer state


@pytest.mark.parametrize(
    "critic",
    [
        NetConfig(hidden=(16, 16), norm="layer"),
        NetConfig(hidden=(16, 16), norm="spectral"),
        NetConfig(hidden=(16, 16), activation="tanh"),
        NetConfig(hidden=(16, 16), dropout=0.1),
    ],
    ids=["layernorm", "spectral", "tanh", "dropout"],
)
def test_nets_that_are_not_plain_relu_train_through_autograd(critic: NetConfig) -> None:
    algo = make_td3(True, critic=critic)
    assert not handgrad.is_plain_critic(algo.critic)
    assert not algo.hand_backward and not algo._by_hand()
    algo.update(batch(0))  # and it still trains


def test_autocast_and_wrapped_modules_fall_back_to_autograd() -> None:
    algo = make_td3(True)
    assert algo._by_hand()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not algo._by_hand()
        out = algo.update(batch(0))  # bf16 grads would not fit the fp32 .grad by hand
    assert out["critic_loss"].isfinite()
    algo.wrap_modules({"critic": torch.nn.Identity()})  # anything but the plain critic (DDP)
    assert not algo._by_hand()


def test_is_plain_actor_rejects_other_policies() -> None:
    cfg = NetConfig(hidden=(8, 8))
    assert handgrad.is_plain_actor(DeterministicActor(OBS, ACT, cfg, 1.0))
    assert not handgrad.is_plain_actor(
        DeterministicActor(OBS, ACT, NetConfig(hidden=(8,), norm="layer"), 1.0)
    )
    assert not handgrad.is_plain_actor(
        DeterministicActor(OBS, ACT, NetConfig(hidden=(8,), activation="tanh"), 1.0)
    )
    assert not handgrad.is_plain_actor(torch.nn.Linear(OBS, ACT))


CRITIC_ONLY = {  # algorithms whose critic step alone goes by hand (their actors are stochastic)
    "iql": AlgoConfig(name="iql", tau=0.5),
    "cql": AlgoConfig(name="cql", tau=0.5, cql=CQLConfig(n_action_samples=4, cql_alpha=5.0)),
}


def make_critic_only(name: str, hand: bool, critic: NetConfig | None = None) -> OfflineAlgorithm:
    torch.manual_seed(0)
    net = NetConfig(hidden=(16, 16))
    algo = build_algorithm(
        CRITIC_ONLY[name], critic or net, net, OBS, ACT, 1.0, torch.device("cpu")
    )
    assert isinstance(algo, OfflineAlgorithm)
    algo.hand_backward = hand and algo.hand_backward
    return algo


@pytest.mark.parametrize("name", sorted(CRITIC_ONLY))
def test_critic_by_hand_trains_like_autograd_in_iql_and_cql(name: str) -> None:
    by_hand, autograd = make_critic_only(name, True), make_critic_only(name, False)
    assert by_hand._critic_by_hand() and not autograd._critic_by_hand()
    for s in range(4):
        out_h, out_a = by_hand.update(batch(s)), autograd.update(batch(s))
        for key in out_a:
            torch.testing.assert_close(out_h[key], out_a[key], rtol=1e-5, atol=1e-5)
    for p, q in zip(by_hand.critic.parameters(), autograd.critic.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    layer = NetConfig(hidden=(16, 16), norm="layer")
    assert not make_critic_only(name, True, critic=layer)._critic_by_hand()
