"""``algo.compile``: the TD3+BC and IQL steps' passes through torch.compile (inductor, real C++).

The compiled step must train exactly like the eager one (same RNG stream, same values up to
float reassociation), keep the one-buffer gradient norm, compile once per configuration, and
refuse clearly what it cannot do. Each compile takes a few seconds here (cached on disk after).
"""

from __future__ import annotations

import copy
import logging
import os
import pickle
import shutil

import pytest
import torch
from tiny_batches import ACT, OBS, random_batch

from seem_ray.algos import OfflineAlgorithm, build_algorithm, handgrad
from seem_ray.config import AlgoConfig, ConfigError, NetConfig

pytestmark = pytest.mark.usefixtures("one_thread")

needs_cxx = pytest.mark.skipif(
    shutil.which(os.environ.get("CXX", "g++")) is None,
    reason="torch.compile on CPU needs a C++ compiler",
)


def make(
    compile: bool, name: str = "td3bc", critic: NetConfig | None = None, gamma: float = 0.99
) -> OfflineAlgorithm:
    torch.manual_seed(0)
    net = NetConfig(hidden=(16, 16))
    cfg = AlgoConfig(name=name, tau=0.5, gamma=gamma, compile=compile)
    algo = build_algorithm(cfg, critic or net, net, OBS, ACT, 1.0, torch.device("cpu"))
    assert isinstance(algo, OfflineAlgorithm)
    return algo


NETS = {  # every net each algorithm trains or tracks
    "td3bc": ("critic", "actor", "critic_target", "actor_target"),
    "iql": ("critic", "value", "actor", "critic_target"),
}


@needs_cxx
@pytest.mark.parametrize("name", sorted(NETS))
def test_compiled_step_trains_like_the_eager_one(name: str) -> None:
    """TD3+BC: both hand-written passes compiled. IQL: the V/actor losses compiled with their
    backward (AOTAutograd), and the hand-written critic pass."""
    eager, compiled = make(False, name), make(True, name)
    assert compiled.compiled and not eager.compiled
    assert eager._critic_by_hand() and compiled._critic_by_hand()
    for s in range(6):  # TD3+BC: three actor and target updates
        b = random_batch(s, 32)
        out_e, out_c = eager.update(b), compiled.update(b)
        for key in out_e:
            torch.testing.assert_close(out_c[key], out_e[key], rtol=1e-5, atol=1e-6)
    for m in NETS[name]:
        pairs = zip(getattr(compiled, m).parameters(), getattr(eager, m).parameters(), strict=True)
        for p, q in pairs:
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    # The gradient-norm metric still reads the one flat buffer, and it is the true norm.
    assert handgrad.flat_critic_grad(compiled.critic) is not None
    naive = sum(float(p.grad.double().square().sum()) for p in compiled.critic.parameters()) ** 0.5  # type: ignore[union-attr]
    assert float(out_c["critic_grad_norm"]) == pytest.approx(naive, rel=1e-5)
    for p in compiled.critic.parameters():  # state that outlives a step is autograd-usable
        assert not p.is_inference() and not p.grad.is_inference()  # type: ignore[union-attr]


@needs_cxx
def test_a_second_algorithm_reuses_the_compiled_code_and_other_nets_do_not_recompile_it() -> None:
    first = make(True)
    first.update(random_batch(0, 32))
    first.update(random_batch(1, 32))
    # Other nets cached by the eager hand path, and a second compiled algorithm with the same
    # settings, must hit the same compiled code: a recompile here raises.
    eager = make(False)
    eager.update(random_batch(0, 32))
    with torch._dynamo.config.patch(error_on_recompile=True):
        second = make(True)
        second.update(random_batch(0, 32))
        second.update(random_batch(1, 32))
        first.update(random_batch(2, 32))
    other_gamma = make(True, gamma=0.9)  # hyper-parameters are compiled in as constants
    out = other_gamma.update(random_batch(0, 32))
    assert out["critic_loss"].isfinite()


def test_compile_without_a_cxx_compiler_is_one_clear_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CXX", "no-such-c++-compiler")
    with pytest.raises(
        ConfigError, match=r"algo\.compile: .*no-such-c\+\+-compiler.*compile: false"
    ):
        make(True)


def test_compile_is_refused_for_algorithms_it_does_not_compile() -> None:
    with pytest.raises(
        ConfigError, match=r"compile: only td3bc and iql steps are compiled, not cql"
    ):
        AlgoConfig(name="cql", compile=True)


def test_compile_with_a_layernorm_critic_warns_and_trains_eagerly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="seem_ray.algos.base"):
        algo = make(True, critic=NetConfig(hidden=(16, 16), norm="layer"))
    assert not algo.compiled and not algo._critic_by_hand()
    assert "only plain ReLU nets" in caplog.text
    assert algo.update(random_batch(0, 32))["critic_loss"].isfinite()


def test_copies_of_a_net_do_not_share_its_cached_parameters() -> None:
    """The hand path caches each net's (weight, bias) list on the net: a deep copy (how targets
    are made) or a pickle must use its own parameters, not the original's."""
    algo = make(False)
    algo.update(random_batch(0, 32))  # fills the caches
    for clone in (copy.deepcopy(algo.critic), pickle.loads(pickle.dumps(algo.critic))):
        layers = handgrad._critic_layers(clone)
        own = {id(p) for p in clone.parameters()}
        assert all(id(w) in own and id(b) in own for w, b in layers)
        with torch.no_grad():
            for p in clone.parameters():
                p.add_(1.0)
        x = torch.randn(4, OBS + ACT)
        torch.testing.assert_close(
            handgrad.critic_forward(clone, x)[0], clone(x[:, :OBS], x[:, OBS:])
        )
