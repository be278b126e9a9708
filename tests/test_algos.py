"""Algorithms: the contract on every algorithm, losses vs hand-computed values and naive
re-computations, exact target updates, exact resume, and the LayerNorm divergence effect."""

from __future__ import annotations

import io
import math
import sys
from typing import Any

import pytest
import torch
from tiny_batches import ACT, OBS, random_batch
from torch import nn

from seem_ray import metrics as M
from seem_ray.algos import CQLSAC, IQL, TD3BC, Algorithm, build_algorithm
from seem_ray.algos.base import LeanAdam, OfflineAlgorithm, ensemble_mse, min_over_heads
from seem_ray.algos.cqlsac import cql_penalty, sac_actor_loss, temperature_loss
from seem_ray.algos.iql import awr_actor_loss, awr_weights, expectile_loss
from seem_ray.algos.td3bc import smoothed_target_action, td3bc_actor_loss
from seem_ray.config import (
    NORMS,
    AlgoConfig,
    ConfigError,
    CQLConfig,
    IQLConfig,
    NetConfig,
    TD3BCConfig,
)
from seem_ray.data.batches import Batch

pytestmark = pytest.mark.usefixtures("one_thread")

B = 16
ALGOS = ("td3bc", "iql", "cql")
EXPECTED_KEYS = {
    "td3bc": {
        M.CRITIC_LOSS,
        M.ACTOR_LOSS,
        M.BC_LOSS,
        M.BATCH_Q_MEAN,
        M.BATCH_Q_MAX,
        M.CRITIC_GRAD_NORM,
    },
    "iql": {
        M.CRITIC_LOSS,
        M.ACTOR_LOSS,
        M.VALUE_LOSS,
        M.BATCH_Q_MEAN,
        M.BATCH_Q_MAX,
        M.CRITIC_GRAD_NORM,
    },
    "cql": {
        M.CRITIC_LOSS,
        M.ACTOR_LOSS,
        M.CQL_LOSS,
        M.ALPHA,
        M.BATCH_Q_MEAN,
        M.BATCH_Q_MAX,
        M.CRITIC_GRAD_NORM,
    },
}


def make(
    name: str, seed: int = 0, critic: NetConfig | None = None, **algo: Any
) -> OfflineAlgorithm:
    torch.manual_seed(seed)
    cfg = AlgoConfig(name=name, **algo)
    net = NetConfig(hidden=(16, 16))
    out = build_algorithm(cfg, critic or net, net, OBS, ACT, 1.0, torch.device("cpu"))
    assert isinstance(out, OfflineAlgorithm)
    return out


def batch(seed: int = 0, b: int = B) -> Batch:
    return random_batch(seed, b)


def params(m: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in m.parameters()]


def snapshot(state: dict[str, Any]) -> dict[str, Any]:
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=False)


# --------------------------------------------------------------------------------------------
# Pure losses vs hand-computed values
# --------------------------------------------------------------------------------------------


def test_td3_smoothed_target_action_by_hand() -> None:
    next_pi = torch.tensor([[0.9, -0.2], [0.0, 0.5]])
    noise = torch.tensor([[1.0, -10.0], [2.0, 0.5]])
    # noise*0.2 = [0.2, -2 -> clip -0.5], [0.4, 0.1]; times max_action 2
    out = smoothed_target_action(next_pi, noise, policy_noise=0.2, noise_clip=0.5, max_action=2.0)
    expected = torch.tensor([[0.9 + 0.4, -0.2 - 1.0], [0.0 + 0.8, 0.5 + 0.2]])
    torch.testing.assert_close(out, expected)
    big = smoothed_target_action(torch.tensor([[1.9]]), torch.tensor([[5.0]]), 0.2, 0.5, 2.0)
    assert big.item() == pytest.approx(2.0)  # clipped to max_action


def test_ensemble_mse_and_min_over_heads_by_hand() -> None:
    q = torch.tensor([[1.0, 2.0], [3.0, 0.0]])
    y = torch.tensor([0.0, 1.0])
    # head 0: (1 + 1)/2 = 1; head 1: (9 + 1)/2 = 5
    assert ensemble_mse(q, y).item() == pytest.approx(6.0)
    torch.testing.assert_close(min_over_heads(q), torch.tensor([1.0, 0.0]))


def test_td3bc_actor_loss_by_hand() -> None:
    q = torch.tensor([2.0, -4.0])  # mean|Q| = 3, mean Q = -1
    pi = torch.tensor([[0.5, 0.0], [0.0, 0.0]])
    act = torch.tensor([[0.0, 0.0], [0.0, 1.0]])  # bc = (0.25 + 1) / 4
    loss, bc = td3bc_actor_loss(q, pi, act, bc_alpha=2.5, bc_weight=1.0)
    assert bc.item() == pytest.approx(0.3125)
    assert loss.item() == pytest.approx(-(2.5 / 3) * -1.0 + 0.3125)
    plain, _ = td3bc_actor_loss(q, pi, act, bc_alpha=2.5, bc_weight=0.0)
    assert plain.item() == pytest.approx(2.5 / 3)


def test_td3bc_lambda_carries_no_gradient() -> None:
    q = torch.tensor([2.0, -4.0], requires_grad=True)
    loss, _ = td3bc_actor_loss(q, torch.zeros(2, 1), torch.zeros(2, 1), 2.5, 1.0)
    loss.backward()
    torch.testing.assert_close(q.grad, torch.full((2,), -2.5 / 3 / 2))


def test_expectile_loss_by_hand() -> None:
    diff = torch.tensor([-2.0, 1.0, 3.0])
    assert expectile_loss(diff, 0.7).item() == pytest.approx((0.3 * 4 + 0.7 * 1 + 0.7 * 9) / 3)
    assert expectile_loss(diff, 0.5).item() == pytest.approx(0.5 * (4 + 1 + 9) / 3)


def test_awr_weights_and_loss_by_hand() -> None:
    adv = torch.tensor([0.0, 1.0, 10.0])
    w = awr_weights(adv, beta=2.0, max_weight=100.0)
    torch.testing.assert_close(w, torch.tensor([1.0, math.exp(2.0), 100.0]))
    logp = torch.tensor([-1.0, -2.0, 0.5])
    expected = -(1.0 * -1.0 + math.exp(2.0) * -2.0 + 100.0 * 0.5) / 3
    assert awr_actor_loss(w, logp).item() == pytest.approx(expected, rel=1e-6)


def test_cql_penalty_by_hand() -> None:
    q_data = torch.tensor([[1.0, 0.0]])  # E=1, B=2
    q_ood = torch.tensor([[[0.0, 1.0, 2.0], [3.0, 3.0, 3.0]]])  # K=3
    log_density = torch.tensor([[0.0, 0.0, math.log(2.0)], [-1.0, -1.0, -1.0]])
    row0 = math.log(math.exp(0.0) + math.exp(1.0) + math.exp(2.0 - math.log(2.0))) - 1.0
    row1 = math.log(3 * math.exp(4.0)) - 0.0
    out = cql_penalty(q_data, q_ood, log_density)
    assert out.shape == (1,)
    assert out.item() == pytest.approx((row0 + row1) / 2, rel=1e-6)


def test_sac_losses_by_hand() -> None:
    q_min, logp, alpha = torch.tensor([1.0, 3.0]), torch.tensor([-1.0, 0.5]), torch.tensor(0.2)
    assert sac_actor_loss(q_min, logp, alpha).item() == pytest.approx(((-0.2 - 1) + (0.1 - 3)) / 2)
    log_alpha = torch.tensor(0.5, requires_grad=True)
    loss = temperature_loss(log_alpha, logp, target_entropy=-3.0)
    assert loss.item() == pytest.approx(-0.5 * ((-1 - 3) + (0.5 - 3)) / 2)
    loss.backward()  # entropy too high (log pi + target < 0): gradient descent lowers alpha
    assert log_alpha.grad.item() == pytest.approx(3.25)


# --------------------------------------------------------------------------------------------
# The update against a naive, independent re-computation
# --------------------------------------------------------------------------------------------


def _adam_pair() -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    torch.manual_seed(0)
    shapes = [(2, 5, 7), (2, 1, 7), (7,), ()]
    ours = [nn.Parameter(torch.randn(s)) for s in shapes]
    ref = [nn.Parameter(p.detach().clone()) for p in ours]
    return ours, ref


def _adam_steps(opts: list[torch.optim.Optimizer], pairs: list, n: int, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for _ in range(n):
        grads = [torch.randn(p.shape, generator=gen) for p in pairs[0]]
        for opt, params in zip(opts, pairs, strict=True):
            opt.zero_grad(set_to_none=True)
            for p, g in zip(params, grads, strict=True):
                p.grad = g.clone()
            opt.step()


def test_lean_adam_matches_torch_fused_adam_bit_for_bit() -> None:
    ours, ref = _adam_pair()
    lean = LeanAdam(ours, lr=1e-2)
    torch_adam = torch.optim.Adam(ref, lr=1e-2, fused=True)
    _adam_steps([lean, torch_adam], [ours, ref], 5, seed=1)
    assert lean._lists is not None  # the fast path is the one under test
    for group in (*lean.param_groups, *torch_adam.param_groups):
        group["lr"] = 3e-3  # a changed learning rate is honoured
    _adam_steps([lean, torch_adam], [ours, ref], 5, seed=2)
    for a, b in zip(ours, ref, strict=True):
        assert torch.equal(a, b)
    # Same state_dict format: a checkpoint of torch's Adam loads into LeanAdam (through a
    # serialised copy, as from a checkpoint file; in memory torch would share the tensors).
    buffer = io.BytesIO()
    torch.save(torch_adam.state_dict(), buffer)
    buffer.seek(0)
    lean.load_state_dict(torch.load(buffer, weights_only=True))
    assert lean._lists is None
    _adam_steps([lean, torch_adam], [ours, ref], 3, seed=3)
    for a, b in zip(ours, ref, strict=True):
        assert torch.equal(a, b)
    for a, b in zip(lean.state.values(), torch_adam.state.values(), strict=True):
        assert all(torch.equal(a[k], b[k]) for k in ("step", "exp_avg", "exp_avg_sq"))


def test_lean_adam_skips_parameters_without_gradients_like_torch() -> None:
    ours, ref = _adam_pair()
    lean, torch_adam = LeanAdam(ours, lr=1e-2), torch.optim.Adam(ref, lr=1e-2, fused=True)
    _adam_steps([lean, torch_adam], [ours, ref], 2, seed=4)
    for opt, params in ((lean, ours), (torch_adam, ref)):
        opt.zero_grad(set_to_none=True)
        params[0].grad = torch.ones_like(params[0])  # the others get no gradient this step
        opt.step()
    for a, b in zip(ours, ref, strict=True):
        assert torch.equal(a, b)
    assert float(lean.state[ours[1]]["step"]) == 2.0  # untouched, as torch does


def test_lean_adam_still_runs_registered_step_hooks() -> None:
    ours, ref = _adam_pair()
    lean, torch_adam = LeanAdam(ours, lr=1e-2), torch.optim.Adam(ref, lr=1e-2, fused=True)
    _adam_steps([lean, torch_adam], [ours, ref], 2, seed=5)  # fast path armed
    calls: list[int] = []
    handle = lean.register_step_post_hook(lambda opt, args, kwargs: calls.append(1))
    _adam_steps([lean, torch_adam], [ours, ref], 3, seed=6)
    handle.remove()
    assert len(calls) == 3
    _adam_steps([lean, torch_adam], [ours, ref], 2, seed=7)
    assert len(calls) == 3
    for a, b in zip(ours, ref, strict=True):
        assert torch.equal(a, b)


def test_td3bc_critic_loss_equals_naive_recomputation() -> None:
    algo = make("td3bc", tau=0.3)
    assert isinstance(algo, TD3BC)
    for s in range(3):  # targets and online nets differ after some updates
        algo.update(batch(s))
    bt = batch(9)
    gen = torch.Generator().manual_seed(0)
    gen.set_state(algo.generator.get_state())
    noise = torch.randn(bt.act.shape, generator=gen)
    heads = [algo.critic.head_module(i).train() for i in range(2)]
    targ_heads = [algo.critic_target.head_module(i).train() for i in range(2)]
    with torch.no_grad():
        next_a = (algo.actor_target(bt.next_obs) + (0.2 * noise).clamp(-0.5, 0.5)).clamp(-1, 1)
        q_next = torch.minimum(
            targ_heads[0](bt.next_obs, next_a), targ_heads[1](bt.next_obs, next_a)
        )
        y = bt.rew + 0.99 * (1 - bt.done) * q_next
        expected = sum(((h(bt.obs, bt.act) - y) ** 2).mean() for h in heads)
    out = algo.update(bt)
    assert out[M.CRITIC_LOSS].item() == pytest.approx(expected.item(), rel=1e-5)


def test_iql_value_and_critic_losses_equal_naive_recomputation() -> None:
    algo = make("iql", tau=0.3)
    assert isinstance(algo, IQL)
    for s in range(3):
        algo.update(batch(s))
    bt = batch(9)
    targ = [algo.critic_target.head_module(i) for i in range(2)]
    heads = [algo.critic.head_module(i) for i in range(2)]
    with torch.no_grad():
        q_t = torch.minimum(targ[0](bt.obs, bt.act), targ[1](bt.obs, bt.act))
        u = q_t - algo.value(bt.obs).squeeze(-1)
        value_loss = torch.mean(torch.where(u > 0, 0.7, 0.3) * u**2)
        y = bt.rew + 0.99 * (1 - bt.done) * algo.value(bt.next_obs).squeeze(-1)
        critic_loss = sum(((h(bt.obs, bt.act) - y) ** 2).mean() for h in heads)
    out = algo.update(bt)
    assert out[M.VALUE_LOSS].item() == pytest.approx(value_loss.item(), rel=1e-5)
    assert out[M.CRITIC_LOSS].item() == pytest.approx(critic_loss.item(), rel=1e-5)


def test_cql_penalty_in_update_equals_naive_recomputation() -> None:
    n = 4
    algo = make("cql", tau=0.3, cql=CQLConfig(n_action_samples=n, auto_entropy=False))
    assert isinstance(algo, CQLSAC)
    for s in range(2):
        algo.update(batch(s))
    bt = batch(9)
    # Replay the algorithm's noise stream: actor-loss draw, target draw, uniform, pi(s), pi(s').
    gen = torch.Generator().manual_seed(0)
    gen.set_state(algo.generator.get_state())
    torch.randn(B, ACT, generator=gen)
    torch.randn(B, ACT, generator=gen)
    uniform = torch.rand(B, n, ACT, generator=gen)
    eps_s = torch.randn(B, n, ACT, generator=gen)
    eps_n = torch.randn(B, n, ACT, generator=gen)
    heads = [algo.critic.head_module(i) for i in range(2)]
    with torch.no_grad():
        mean_s, log_std_s = algo.actor(bt.obs)
        mean_n, log_std_n = algo.actor(bt.next_obs)
    out = algo.update(bt)

    def tanh_sample(
        mean: torch.Tensor, log_std: torch.Tensor, eps: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        base = torch.distributions.Normal(mean.unsqueeze(1), log_std.exp().unsqueeze(1))
        u = base.loc + eps * base.scale
        return torch.tanh(u), (base.log_prob(u) - torch.log(1 - torch.tanh(u) ** 2)).sum(-1)

    with torch.no_grad():
        a_s, lp_s = tanh_sample(mean_s, log_std_s, eps_s)
        a_n, lp_n = tanh_sample(mean_n, log_std_n, eps_n)
        a_r, lp_r = uniform * 2 - 1, torch.full((n,), -ACT * math.log(2.0))
        penalties = []
        for h in heads:
            rows = []
            for i in range(B):
                s_i = bt.obs[i].expand(n, OBS)
                vals = [h(s_i, a_r[i]) - lp_r, h(s_i, a_s[i]) - lp_s[i], h(s_i, a_n[i]) - lp_n[i]]
                q_data = h(bt.obs[i : i + 1], bt.act[i : i + 1])[0]
                rows.append(torch.logsumexp(torch.cat(vals), 0) - q_data)
            penalties.append(torch.stack(rows).mean())
    assert out[M.CQL_LOSS].item() == pytest.approx(torch.stack(penalties).mean().item(), rel=1e-4)


# --------------------------------------------------------------------------------------------
# The contract, on every algorithm
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALGOS)
def test_update_returns_finite_detached_scalars_under_expected_keys(name: str) -> None:
    algo = make(name)
    assert isinstance(algo, Algorithm)
    for s in range(3):
        out = algo.update(batch(s))
        assert set(out) == EXPECTED_KEYS[name]
        for key, value in out.items():
            assert isinstance(value, torch.Tensor) and value.dim() == 0, key
            assert not value.requires_grad and value.dtype == torch.float32, key
            assert math.isfinite(value.item()), key
    assert algo.step == 3


@pytest.mark.parametrize("name", ALGOS)
def test_update_makes_no_host_sync(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    algo = make(name)
    algo.update(batch(0))

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("host sync inside update()")

    for method in ("item", "tolist", "__bool__", "__float__", "__int__", "numpy"):
        monkeypatch.setattr(torch.Tensor, method, refuse)
    for s in range(1, 3):
        algo.update(batch(s))


@pytest.mark.parametrize("name", ALGOS)
def test_weights_move(name: str) -> None:
    algo = make(name)
    critic0, actor0 = params(algo.critic), params(algo.actor)
    for s in range(2):
        algo.update(batch(s))
    for before, after in ((critic0, algo.critic.parameters()), (actor0, algo.actor.parameters())):
        assert all(not torch.equal(a, b) for a, b in zip(before, after, strict=True))


@pytest.mark.parametrize("name", ALGOS)
@pytest.mark.parametrize("tau", [0.25, 1.0])
def test_targets_move_by_exactly_tau(name: str, tau: float) -> None:
    algo = make(name, tau=tau)
    pairs: list[tuple[nn.Module, nn.Module]] = [(algo.critic_target, algo.critic)]  # type: ignore[attr-defined]
    if name == "td3bc":
        pairs.append((algo.actor_target, algo.actor))  # type: ignore[attr-defined]
        frozen = [params(t) for t, _ in pairs]
        algo.update(batch(0))  # the targets move on the policy_freq-th step, not this one
        for (target, _), old in zip(pairs, frozen, strict=True):
            assert all(torch.equal(t, p) for t, p in zip(target.parameters(), old, strict=True))
    before = [params(t) for t, _ in pairs]
    algo.update(batch(1))
    for (target, online), old in zip(pairs, before, strict=True):
        for t, o, p in zip(target.parameters(), online.parameters(), old, strict=True):
            if tau == 1.0:
                assert torch.equal(t, o)
            else:
                torch.testing.assert_close(t, p + tau * (o - p), rtol=0, atol=1e-6)
                assert not torch.equal(t, o)
            assert not t.requires_grad


@pytest.mark.parametrize("name", ALGOS)
def test_save_load_round_trip_and_exact_resume(name: str) -> None:
    algo = make(name, seed=0)
    for s in range(3):
        algo.update(batch(s))
    state = snapshot(algo.state_dict())
    assert state["step"] == 3
    expected = [algo.update(batch(10 + s)) for s in range(3)]
    expected_params = params(algo.critic) + params(algo.actor)

    resumed = make(name, seed=123)  # different init and noise stream until loaded
    resumed.load_state_dict(state)
    assert resumed.step == 3
    got = [resumed.update(batch(10 + s)) for s in range(3)]
    for e, g in zip(expected, got, strict=True):
        for key in e:
            assert torch.equal(e[key], g[key]), key
    for a, b in zip(expected_params, params(resumed.critic) + params(resumed.actor), strict=True):
        assert torch.equal(a, b)


def test_load_state_dict_rejects_a_foreign_checkpoint() -> None:
    with pytest.raises(KeyError, match="missing"):
        make("iql").load_state_dict(make("td3bc").state_dict())


@pytest.mark.parametrize("name", ALGOS)
def test_act_and_next_actions_are_deterministic_bounded_and_gradient_free(name: str) -> None:
    algo = make(name)
    algo.actor.train()
    obs = torch.randn(9, OBS) * 5
    a1, a2 = algo.act(obs), algo.next_actions(obs)
    assert a1.shape == (9, ACT) and not a1.requires_grad
    assert torch.equal(a1, a2) and a1.abs().max() <= 1.0
    assert algo.actor.training  # the mode is restored


@pytest.mark.parametrize("name", ALGOS)
def test_losses_run_through_the_wrapped_modules(name: str) -> None:
    algo = make(name)
    expected = {
        "td3bc": {"critic", "actor"},
        "iql": {"critic", "actor", "value"},
        "cql": {"critic", "actor", "temperature"},
    }
    modules = algo.modules_for_ddp()
    assert set(modules) == expected[name]
    calls: dict[str, int] = {}

    class Counting(nn.Module):
        def __init__(self, key: str, inner: nn.Module) -> None:
            super().__init__()
            self.key, self.inner = key, inner

        def forward(self, *args: Any) -> Any:
            calls[self.key] = calls.get(self.key, 0) + 1
            return self.inner(*args)

    algo.wrap_modules({k: Counting(k, m) for k, m in modules.items()})
    for s in range(2):
        algo.update(batch(s))
    assert set(calls) == expected[name]
    assert calls["critic"] == 2  # one forward per step: what DDP needs
    with pytest.raises(KeyError):
        algo.wrap_modules({"nope": nn.Identity()})


@pytest.mark.parametrize("norm", NORMS)
def test_every_critic_norm_trains(norm: str) -> None:
    for name in ALGOS:
        algo = make(name, critic=NetConfig(hidden=(16, 16), norm=norm, dropout=0.1))
        for s in range(2):
            out = algo.update(batch(s))
        assert all(math.isfinite(v.item()) for v in out.values()), (name, norm)


def test_config_fields_are_honoured() -> None:
    sgd = make("td3bc", critic_optimizer="sgd", ensemble=3, critic_lr=1e-2, actor_lr=2e-3)
    assert isinstance(sgd.critic_opt, torch.optim.SGD)  # type: ignore[attr-defined]
    assert sgd.critic_opt.param_groups[0]["lr"] == 1e-2  # type: ignore[attr-defined]
    assert sgd.actor_opt.param_groups[0]["lr"] == 2e-3  # type: ignore[attr-defined]
    assert sgd.critic.ensemble == 3
    iql = make("iql", ensemble=1, iql=IQLConfig(value_lr=1e-3))
    assert iql.critic.ensemble == 1
    assert iql.value_opt.param_groups[0]["lr"] == 1e-3  # type: ignore[attr-defined]
    cql = make("cql", cql=CQLConfig(auto_entropy=False, init_temperature=0.3))
    for s in range(2):
        out = cql.update(batch(s))
    assert out[M.ALPHA].item() == pytest.approx(0.3)
    auto = make("cql", cql=CQLConfig(init_temperature=0.3))
    for s in range(2):
        out = auto.update(batch(s))
    assert out[M.ALPHA].item() != pytest.approx(0.3, abs=1e-7)
    slow = make("td3bc", td3bc=TD3BCConfig(policy_freq=3))
    actor0 = params(slow.actor)
    slow.update(batch(0))
    slow.update(batch(1))
    assert all(torch.equal(a, b) for a, b in zip(actor0, slow.actor.parameters(), strict=True))
    slow.update(batch(2))
    assert not torch.equal(actor0[0], next(slow.actor.parameters()))
    with pytest.raises(ConfigError):
        AlgoConfig(name="cql", ensemble=1)


@pytest.mark.slow  # a fresh interpreter importing torch
def test_numerical_core_does_not_import_ray_mlflow_optuna() -> None:
    import seem_ray.algos  # noqa: F401
    import seem_ray.nets  # noqa: F401

    heavy = {"ray", "mlflow", "optuna"}
    code = (
        "import sys, seem_ray.algos, seem_ray.nets; "
        f"print(sorted(m for m in {sorted(heavy)!r} if m in sys.modules))"
    )
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------------------------
# Short runs
# --------------------------------------------------------------------------------------------


def _dataset(n: int, seed: int) -> Batch:
    g = torch.Generator().manual_seed(seed)
    return Batch(
        obs=torch.randn(n, 4, generator=g),
        act=torch.rand(n, 2, generator=g) * 2 - 1,
        rew=torch.rand(n, generator=g),
        next_obs=torch.randn(n, 4, generator=g),
        done=torch.zeros(n),
    )


@pytest.mark.parametrize("name", ALGOS)
def test_short_run_lowers_the_critic_loss(name: str) -> None:
    torch.manual_seed(0)
    data = _dataset(64, seed=1)
    algo = build_algorithm(
        AlgoConfig(
            name=name, gamma=0.5, critic_lr=1e-3, cql=CQLConfig(cql_alpha=0.1, n_action_samples=2)
        ),
        NetConfig(hidden=(32, 32)),
        NetConfig(hidden=(32, 32)),
        4,
        2,
        1.0,
        torch.device("cpu"),
    )
    losses = [algo.update(data)[M.CRITIC_LOSS] for _ in range(150)]
    first = torch.stack(losses[:10]).mean().item()
    last = torch.stack(losses[-10:]).mean().item()
    assert last < 0.5 * first, (first, last)


def _plain_td3_q_max(norm: str, steps: int) -> float:
    """The SEEM paper's divergence setting: TD3 without BC, hard target updates (tau=1)."""
    torch.manual_seed(0)
    data = _dataset(32, seed=123)
    algo = build_algorithm(
        AlgoConfig(
            name="td3bc", tau=1.0, critic_lr=1e-3, actor_lr=1e-3, td3bc=TD3BCConfig(bc_weight=0.0)
        ),
        NetConfig(hidden=(64, 64), norm=norm),
        NetConfig(hidden=(64, 64)),
        4,
        2,
        1.0,
        torch.device("cpu"),
    )
    for _ in range(steps):
        out = algo.update(data)
    return out[M.BATCH_Q_MAX].item()


@pytest.mark.slow
def test_plain_offline_td3_diverges_without_layernorm_and_not_with_it() -> None:
    bound = 1.0 / (1 - 0.99)  # r in [0, 1]: |Q| <= 100 for any policy
    without = _plain_td3_q_max("none", 1000)
    with_ln = _plain_td3_q_max("layer", 1000)
    assert without > 10 * bound, without
    assert with_ln < bound, with_ln
