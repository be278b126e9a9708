"""Hand-written backward passes for plain ReLU MLPs: TD3's hot path without the autograd engine.

Flow position: algorithm update -> here -> optimizers. The critic's regression step of TD3+BC
and IQL (OfflineAlgorithm._critic_mse_grads) and TD3+BC's actor step use it when the nets are
plain (ReLU hidden layers, no norm, no dropout), not DDP-wrapped (DDP reduces gradients from
autograd hooks) and outside autocast; otherwise they run through autograd. Plain ReLU critics
are the paper's divergence setting, the one sweeps run most.

Why: a 256-256 TD3 step on CPU spends about as long in per-op overhead as in its matmuls.
The backward here calls the same kernels autograd would (bmm/mm for weight and input gradients,
``threshold_backward`` for ReLU, sums for biases), keeps the forward activations itself (ReLUs
in place) and writes ``.grad`` directly (into one flat buffer per net), which removes the
autograd engine's share of that overhead. With nothing to record, these paths run under
``torch.inference_mode`` (2-4% of a step less dispatch work than ``no_grad``); what outlives a
step (parameters, ``.grad`` buffers, optimizer state) is made outside it, so autograd can still
use it. Measured gains are in docs/benchmarks.md; tests compare every path with autograd.

With ``algo.compile`` TD3+BC and IQL run these passes through ``torch.compile`` (inductor fuses
the elementwise work around the matmuls); inductor cannot trace inference mode, so compiled
passes and their callers use ``no_grad`` instead (:func:`no_record`).

Shapes: ensemble critic weights are [E, in, out] and biases [E, 1, out] (nets.EnsembleCritic);
actor layers are nn.Linear ([out, in]).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import NamedTuple, cast

import torch
from torch import nn
from torch.nn import functional as F

from seem_ray.nets import DeterministicActor, EnsembleCritic

__all__ = [
    "actor_forward",
    "actor_param_grads",
    "critic_action_grad",
    "critic_forward",
    "critic_param_grads",
    "flat_critic_grad",
    "is_plain_actor",
    "is_plain_critic",
    "no_record",
    "prepare_caches",
]

_relu_backward = torch.ops.aten.threshold_backward


def is_plain_critic(critic: EnsembleCritic) -> bool:
    """ReLU hidden layers with plain weights: no norm of any kind, no dropout."""
    cfg = critic.cfg
    return cfg.activation == "relu" and cfg.dropout == 0 and all(k == "none" for k in critic.kinds)


def is_plain_actor(actor: nn.Module) -> bool:
    """TD3's actor as Linear -> ReLU blocks ending in Linear -> Tanh."""
    if not isinstance(actor, DeterministicActor):
        return False
    mods = list(actor.net)
    if len(mods) < 2 or type(mods[-1]) is not nn.Tanh or type(mods[-2]) is not nn.Linear:
        return False
    hidden = mods[:-2]
    return len(hidden) % 2 == 0 and all(
        type(m) is (nn.Linear if i % 2 == 0 else nn.ReLU) for i, m in enumerate(hidden)
    )


def no_record(compiled: bool = False) -> contextlib.AbstractContextManager[None]:
    """The grad mode for hand-written passes: inference mode (2-4% of a step less dispatch work
    than ``no_grad``), or ``no_grad`` for compiled passes, in them and around them."""
    if compiled or torch.compiler.is_compiling():
        return torch.no_grad()
    return torch.inference_mode()


def prepare_caches(trained: Sequence[nn.Module], frozen: Sequence[nn.Module] = ()) -> None:
    """Gather every net's layer list, and make the trained nets' flat gradient buffers, now and
    eagerly, so that a compiled pass finds them cached instead of tracing their creation."""
    for net in trained:
        _grad_views(net)
    for net in frozen:
        _cache(net)


# --------------------------------------------------------------------------------------------
# Ensemble critic
# --------------------------------------------------------------------------------------------


class _FlatGrads(NamedTuple):
    flat: torch.Tensor  # every gradient of a net, layer by layer
    pairs: list[tuple[torch.Tensor, torch.Tensor]]  # (weight grad, bias grad) views per layer


class _NetCache:
    """What this module keeps per net, on the net itself: its (weight, bias) pairs, gathered
    once (nn.Module attribute lookups cost ~17 us per gather, paid 4-5 times a step), and its
    flat gradient buffer.

    On the net rather than in a module-level dict so that torch.compile guards one fixed object
    per net (a shared dict changes size whenever another net is cached, and each change would
    force a recompile). A net's Parameter objects are fixed after construction (state loads
    copy into them, device moves swap their data in place), so the pairs stay valid; a deep copy
    or a pickle of the net starts without a cache, since a copy has parameters of its own.
    """

    __slots__ = ("grads", "layers")

    def __init__(self, layers: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.layers = layers
        self.grads: _FlatGrads | None = None

    def __deepcopy__(self, memo: dict[int, object]) -> None:
        return None

    def __reduce__(self) -> tuple[type[None], tuple[()]]:
        return (type(None), ())


_CACHE_ATTR = "_handgrad_cache"


def _cache(net: nn.Module) -> _NetCache:
    cache = getattr(net, _CACHE_ATTR, None)
    if cache is None:
        if isinstance(net, EnsembleCritic):
            mods = [*net.linears, net.out]
        else:
            mods = [m for m in cast(DeterministicActor, net).net if type(m) is nn.Linear]
        cache = _NetCache(
            [(cast(torch.Tensor, m.weight), cast(torch.Tensor, m.bias)) for m in mods]
        )
        object.__setattr__(net, _CACHE_ATTR, cache)  # a plain attribute, not a submodule
    return cache


def _critic_layers(critic: EnsembleCritic) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(weight [E, in, out], bias [E, 1, out]) of every hidden layer, then of the output layer."""
    return _cache(critic).layers


def critic_forward(
    critic: EnsembleCritic, x: torch.Tensor, head: int | None = None
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Q of every head ([E, B]) or of one head ([1, B]) on inputs x = cat(obs, act) [B, D].

    Returns Q and the saved activations [input, relu(h_1), ..., relu(h_L)], each [e, B, .].
    """

    def sel(t: torch.Tensor) -> torch.Tensor:  # no view op at all for the all-heads case
        return t if head is None else t[head : head + 1]

    *hidden, (w_out, b_out) = _critic_layers(critic)
    e = critic.ensemble if head is None else 1
    h = x.unsqueeze(0).expand(e, *x.shape)
    acts = [h]
    for weight, bias in hidden:
        h = torch.bmm(h, sel(weight)).add_(sel(bias)).relu_()
        acts.append(h)
    q = torch.bmm(h, sel(w_out)).add_(sel(b_out))
    return q.squeeze(-1), acts


def critic_param_grads(
    critic: EnsembleCritic, acts: list[torch.Tensor], grad_q: torch.Tensor
) -> None:
    """Set ``.grad`` of every critic parameter from dLoss/dQ [E, B] (all heads' forward).

    The gradients are written into views of one flat buffer per critic (see
    :func:`flat_critic_grad`), overwritten by the next call.
    """
    *hidden, (w_out, b_out) = _critic_layers(critic)
    *hidden_grads, (gw_out, gb_out) = _grad_views(critic)
    g = grad_q.unsqueeze(-1)  # [E, B, 1]
    w_out.grad = torch.bmm(acts[-1].transpose(1, 2), g, out=gw_out)
    b_out.grad = torch.sum(g, 1, keepdim=True, out=gb_out)
    grad_act = g * w_out.transpose(1, 2)  # [E, B, 1] x [E, 1, H]: the outer product
    for i in range(len(hidden) - 1, -1, -1):
        weight, bias = hidden[i]
        gw, gb = hidden_grads[i]
        grad_h = _relu_backward(grad_act, acts[i + 1], 0)
        weight.grad = torch.bmm(acts[i].transpose(1, 2), grad_h, out=gw)
        bias.grad = torch.sum(grad_h, 1, keepdim=True, out=gb)
        if i > 0:
            grad_act = torch.bmm(grad_h, weight.transpose(1, 2))


def _grad_views(net: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Views of the net's flat gradient buffer shaped like its (weight, bias) pairs.

    The buffer is a normal tensor even when made under inference mode (autograd may later
    accumulate into these ``.grad``), and is made again if the net moved device or dtype.
    """
    cache = _cache(net)
    first = cache.layers[0][0]
    entry = cache.grads
    if entry is None or entry.flat.device != first.device or entry.flat.dtype != first.dtype:
        params = [t for pair in cache.layers for t in pair]
        with torch.inference_mode(False):
            flat = first.new_empty(sum(p.numel() for p in params))
            chunks = torch.split(flat, [p.numel() for p in params])
            views = [c.view(p.shape) for c, p in zip(chunks, params, strict=True)]
        entry = _FlatGrads(flat, list(zip(views[::2], views[1::2], strict=True)))
        cache.grads = entry
    return entry.pairs


def flat_critic_grad(critic: EnsembleCritic) -> torch.Tensor | None:
    """All the critic's gradients as one flat tensor when the last :func:`critic_param_grads`
    left them there (every ``.grad`` still its view), else None.

    Why: the gradient-norm metric is then one norm over one buffer instead of a norm per
    parameter plus a stack (~100 us less per step on CPU).
    """
    cache: _NetCache | None = getattr(critic, _CACHE_ATTR, None)  # no cache: never by hand
    if cache is None or cache.grads is None:
        return None
    for (weight, bias), (gw, gb) in zip(cache.layers, cache.grads.pairs, strict=True):
        if weight.grad is not gw or bias.grad is not gb:
            return None
    return cache.grads.flat


def critic_action_grad(
    critic: EnsembleCritic, acts: list[torch.Tensor], grad_q: torch.Tensor, head: int
) -> torch.Tensor:
    """dLoss/d(action) [B, A] from dLoss/dQ [1, B] of a one-head forward; no weight grads."""
    *hidden, (w_out, _) = _critic_layers(critic)
    sel = slice(head, head + 1)
    grad_act = grad_q.unsqueeze(-1) * w_out[sel].transpose(1, 2)
    for i in range(len(hidden) - 1, -1, -1):
        weight = hidden[i][0][sel]
        if i == 0:  # only the action rows of the first layer: obs needs no gradient
            weight = weight[:, critic.obs_dim :]
        grad_h = _relu_backward(grad_act, acts[i + 1], 0)
        grad_act = torch.bmm(grad_h, weight.transpose(1, 2))
    return grad_act[0]


# --------------------------------------------------------------------------------------------
# Deterministic actor
# --------------------------------------------------------------------------------------------


def _scaled(x: torch.Tensor, scale: float) -> torch.Tensor:
    """x * scale, skipping the op for scale 1 (exact either way; one op less in the hot path)."""
    return x if scale == 1.0 else x * scale


def _actor_layers(actor: DeterministicActor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(weight [out, in], bias [out]) of every Linear, input to output (cached like the critic's)."""
    return _cache(actor).layers


def actor_forward(
    actor: DeterministicActor, obs: torch.Tensor
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """pi(obs) = max_action * tanh(MLP(obs)) [B, A] and the saved activations
    [obs, relu(h_1), ..., relu(h_L), tanh(out)]."""
    *hidden, (w_out, b_out) = _actor_layers(actor)
    h = obs
    acts = [h]
    for weight, bias in hidden:
        h = F.linear(h, weight).add_(bias).relu_()  # h @ weight.T without a Python-side view
        acts.append(h)
    squashed = F.linear(h, w_out).add_(b_out).tanh_()
    acts.append(squashed)
    return _scaled(squashed, actor.max_action), acts


def actor_param_grads(
    actor: DeterministicActor, acts: list[torch.Tensor], grad_pi: torch.Tensor
) -> None:
    """Set ``.grad`` of every actor parameter from dLoss/dpi [B, A] (views of one flat buffer,
    like the critic's)."""
    layers = _actor_layers(actor)
    grads = _grad_views(actor)
    squashed = acts[-1]
    g = torch.ops.aten.tanh_backward(_scaled(grad_pi, actor.max_action), squashed)
    for i in range(len(layers) - 1, -1, -1):
        weight, bias = layers[i]
        gw, gb = grads[i]
        weight.grad = torch.mm(g.t(), acts[i], out=gw)
        bias.grad = torch.sum(g, 0, out=gb)
        if i > 0:
            g = _relu_backward(torch.mm(g, weight), acts[i], 0)
