"""The algorithm contract and the pieces every algorithm shares, written once.

Flow position: Batch -> ``Algorithm.update`` (critic, actor, targets) -> metrics dict read by
the loop every K steps. Here: the :class:`Algorithm` protocol, target-network updates
(``torch._foreach_lerp_``), the min-over-heads target, the per-head MSE, optimizer
construction, the grad norm, and :class:`OfflineAlgorithm`, which holds the bookkeeping
(step, noise generator, DDP wrapping, state dicts) so each algorithm file only states its
losses and update order.

No host syncs in an update: metrics are detached 0-dim tensors; the caller reads them.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn
from torch.optim.optimizer import _global_optimizer_post_hooks, _global_optimizer_pre_hooks

from seem_ray.algos import handgrad
from seem_ray.config import ConfigError
from seem_ray.data.batches import Batch
from seem_ray.nets import EnsembleCritic

__all__ = [
    "Algorithm",
    "OfflineAlgorithm",
    "bellman_target",
    "compile_pass",
    "TargetUpdate",
    "ensemble_mse",
    "ensemble_mse_and_grad",
    "eval_mode",
    "grad_norm",
    "LeanAdam",
    "make_optimizer",
    "make_target",
    "min_over_heads",
]

log = logging.getLogger(__name__)


@runtime_checkable
class Algorithm(Protocol):
    """What the training loop, the SEEM probe and checkpoints rely on."""

    critic: EnsembleCritic  # the online critic (SEEM probes head_module(seem.head))
    actor: nn.Module
    step: int  # number of update() calls so far

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        """One gradient step; detached 0-dim tensors under metrics.py keys (no host sync)."""
        ...

    def act(self, obs: torch.Tensor) -> torch.Tensor:
        """Deterministic action for (normalized) obs, no grad."""
        ...

    def next_actions(self, next_obs: torch.Tensor) -> torch.Tensor:
        """X* actions for SEEM: the online deterministic policy, no noise."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Nets, targets, optimizers, step and RNG: everything to resume exactly."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def modules_for_ddp(self) -> dict[str, nn.Module]:
        """Names -> modules whose gradients must be all-reduced."""
        ...

    def wrap_modules(self, wrapped: dict[str, nn.Module]) -> None:
        """Use these (DDP) wrappers in the loss forwards; optimizers/targets keep the params."""
        ...


# --------------------------------------------------------------------------------------------
# Shared math and plumbing
# --------------------------------------------------------------------------------------------


def min_over_heads(q: torch.Tensor) -> torch.Tensor:
    """Clipped double-Q: the minimum over the head axis of [E, B] -> [B]."""
    return q.amin(dim=0)


def bellman_target(
    rew: torch.Tensor, done: torch.Tensor, gamma: float, next_value: torch.Tensor
) -> torch.Tensor:
    """y = r + gamma * (1 - done) * next_value (all [B]); done = true terminal."""
    return torch.addcmul(rew, 1.0 - done, next_value, value=gamma)


def ensemble_mse(q: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Sum over heads of each head's mean squared TD error: sum_e mean_b (Q_e - y)^2.

    With two heads this is TD3's ``mse(Q1, y) + mse(Q2, y)`` (Fujimoto et al.).
    """
    return (q - target).square().mean(dim=-1).sum()


def ensemble_mse_and_grad(
    q: torch.Tensor, target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`ensemble_mse` and its gradient dLoss/dQ = 2 (Q_e - y) / B ([E, B]), for the
    hand-written backward (no autograd)."""
    batch = target.shape[-1]
    err = q - target  # a fresh contiguous [E, B]
    flat = err.view(-1)
    loss = torch.dot(flat, flat).div_(batch)  # sum_e mean_b (Q_e - y)^2 in two ops
    return loss, err.mul_(2.0 / batch)


def compile_pass(fn: Callable[..., Any], device: torch.device) -> Callable[..., Any]:
    """``torch.compile`` (inductor, fixed shapes) of one pass of an algorithm's step, for
    ``algo.compile``: a hand-written gradient pass, or losses whose backward AOTAutograd compiles.

    Inductor fuses the elementwise work between the matmuls (bias, ReLU, its backward, the
    loss) into a few generated kernels. The first call compiles (~13-21 s on the 2-core CPU
    here; 3-4 s in later processes, which find inductor's on-disk cache). Hyper-parameters are
    compiled in as constants: another configuration in the same process compiles again.
    """
    if device.type == "cpu":
        # The generated graph called through a C++ wrapper rather than Python: ~8% less per
        # step again at the cost of a longer first compile (docs/benchmarks.md).
        return torch.compile(fn, dynamic=False, options={"cpp_wrapper": True})
    return torch.compile(fn, dynamic=False)


def _require_cxx_compiler(device: torch.device) -> None:
    """Inductor compiles C++ for CPU code: a missing compiler is a config error when the
    algorithm is built, rather than a long traceback at the first step."""
    if device.type != "cpu":
        return
    cxx = os.environ.get("CXX", "g++")
    if shutil.which(cxx) is None:
        raise ConfigError(
            "algo.compile",
            f"torch.compile on CPU needs a C++ compiler and {cxx!r} is not on PATH; "
            "install g++ (or point CXX at one) or set algo.compile: false",
        )


def make_target(module: nn.Module) -> nn.Module:
    """A frozen deep copy used as a target network (same mode as the source)."""
    target = copy.deepcopy(module)
    target.requires_grad_(False)
    return target


def _float_state(module: nn.Module) -> list[torch.Tensor]:
    """Parameters and floating buffers (BN stats, spectral u/v), in a fixed order."""
    tensors = [p.data for p in module.parameters()]
    tensors += [b for b in module.buffers() if b.is_floating_point()]
    return tensors


class TargetUpdate:
    """target <- target + tau * (online - target) for fixed (target, online) module pairs.

    The tensor lists are gathered once; each call is one ``torch._foreach_lerp_`` over all of
    them (``tau == 1.0`` copies: the hard update). Floating buffers (BN statistics, spectral
    u/v) move with the parameters, so a hard update yields an exact copy.
    """

    def __init__(self, pairs: Iterable[tuple[nn.Module, nn.Module]]) -> None:
        self.dst: list[torch.Tensor] = []
        self.src: list[torch.Tensor] = []
        for target, online in pairs:
            self.dst += _float_state(target)
            self.src += _float_state(online)

    @torch.no_grad()
    def __call__(self, tau: float) -> None:
        if tau == 1.0:
            torch._foreach_copy_(self.dst, self.src)
        else:
            torch._foreach_lerp_(self.dst, self.src, tau)


def _torch_adam_step() -> Any:
    """torch's Adam.step with Optimizer's hook/profiler wrapper, whether or not torch has
    patched the class attribute yet."""
    step = torch.optim.Adam.step  # no_grad-wrapped; hook-wrapped once an Adam was created
    return step if getattr(step, "hooked", False) else torch.optim.Optimizer.profile_hook_step(step)


class LeanAdam(torch.optim.Adam):
    """torch's fused Adam (same kernel, same state_dict) without its per-step Python overhead.

    ``torch.optim.Adam.step`` regroups parameters and state by device and dtype on every call
    and runs inside Optimizer's hook/profiler wrapper before launching its one fused kernel;
    for a critic's few tensors that costs ~0.13 ms per call here, more than the kernel
    (~0.1 ms). Here the state lists are gathered once (after torch's own first step creates
    the state) and the kernel is called directly. torch's full step is used whenever the fast
    path does not apply: several parameter groups, a missing gradient, a closure, step hooks
    registered, or state just loaded. Same results bit for bit (tests/test_algos.py).
    """

    def __init__(self, params: Iterable[torch.Tensor], lr: float) -> None:
        super().__init__(params, lr=lr, fused=True)
        self._lists: (
            tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor], torch.Tensor] | None
        ) = None

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._lists = None
        super().load_state_dict(state_dict)

    def zero_grad(self, set_to_none: bool = True) -> None:
        if not set_to_none or len(self.param_groups) != 1:
            super().zero_grad(set_to_none)
            return
        for p in self.param_groups[0]["params"]:
            p.grad = None

    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        lists = self._lists
        if lists is None or closure is not None or self._hooked():
            return self._torch_step(closure)
        group = self.param_groups[0]
        params = group["params"]
        grads = [p.grad for p in params]
        if any(g is None for g in grads):
            return self._torch_step(closure)
        exp_avgs, exp_avg_sqs, steps, step_counts = lists
        beta1, beta2 = group["betas"]
        with torch.no_grad():
            step_counts.add_(1)  # every parameter's "step" is a view of it
            torch._fused_adam_(
                params,
                grads,  # type: ignore[arg-type]
                exp_avgs,
                exp_avg_sqs,
                [],
                steps,
                amsgrad=False,
                lr=group["lr"],
                beta1=beta1,
                beta2=beta2,
                weight_decay=group["weight_decay"],
                eps=group["eps"],
                maximize=group["maximize"],
            )
        return None

    step.hooked = True  # type: ignore[attr-defined]  # keep Optimizer from wrapping it

    def _torch_step(self, closure: Any) -> Any:
        # State made here must be normal tensors even when the update runs in inference mode
        # (an autograd-path step would later update it in place).
        with torch.inference_mode(False):
            out = _torch_adam_step()(self, closure)
            complete = len(self.param_groups) == 1 and all(
                p.grad is not None for p in self.param_groups[0]["params"]
            )
            self._lists = self._gather() if complete else None
        return out

    def _hooked(self) -> bool:
        return bool(
            self._optimizer_step_pre_hooks
            or self._optimizer_step_post_hooks
            or _global_optimizer_pre_hooks
            or _global_optimizer_post_hooks
        )

    def _gather(
        self,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor], torch.Tensor] | None:
        group = self.param_groups[0]
        if group["amsgrad"] or group["decoupled_weight_decay"] or group["differentiable"]:
            return None
        if any(isinstance(group[k], torch.Tensor) for k in ("lr", "betas", "weight_decay")):
            return None
        params = group["params"]
        if len({(p.device, p.dtype) for p in params}) != 1:
            return None
        states = [self.state[p] for p in params]
        if any("exp_avg" not in s for s in states):
            return None
        # One tensor holds every parameter's step count and each state's "step" becomes a view
        # of it, so a step increments them with one add_ (torch's per-tensor _foreach_add_ costs
        # ~18 us on CPU). The state_dict still holds one 0-dim "step" per parameter.
        step_counts = torch.stack([s["step"] for s in states])
        for i, s in enumerate(states):
            s["step"] = step_counts[i]
        return (
            [s["exp_avg"] for s in states],
            [s["exp_avg_sq"] for s in states],
            [s["step"] for s in states],
            step_counts,
        )


def make_optimizer(
    params: Iterable[torch.Tensor], lr: float, kind: str = "adam"
) -> torch.optim.Optimizer:
    """Adam (the default everywhere) or plain SGD, as one fused kernel per step.

    Measured on CPU (torch 2.13, critic of two 256-256 heads): fused Adam 0.42 ms/step,
    foreach 0.79 ms, the default per-parameter loop 0.93 ms; :class:`LeanAdam` removes most of
    the fused step's remaining Python overhead.
    """
    params = list(params)
    if kind == "adam":
        return LeanAdam(params, lr=lr)
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr, fused=True)
    raise ValueError(f"unknown optimizer {kind!r}; expected adam or sgd")


def grad_norm(params: Iterable[torch.Tensor]) -> torch.Tensor:
    """Global L2 norm of the gradients (0-dim tensor, no host sync)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))


@contextlib.contextmanager
def eval_mode(*modules: nn.Module) -> Iterator[None]:
    """Run modules in eval mode (dropout off, BN running stats), restoring their modes."""
    modes = [m.training for m in modules]
    try:
        for m in modules:
            m.eval()
        yield
    finally:
        for m, mode in zip(modules, modes, strict=True):
            m.train(mode)


# --------------------------------------------------------------------------------------------
# Bookkeeping shared by the algorithms
# --------------------------------------------------------------------------------------------


class OfflineAlgorithm:
    """Step counter, noise generator, DDP wrapping and exact state dicts.

    Subclasses create their nets/targets/optimizers, register what must be saved with
    :meth:`_track`, list DDP modules in ``_fwd`` (the modules the loss forwards call) and
    implement ``update`` and ``_policy_action``.
    """

    critic: EnsembleCritic
    actor: nn.Module
    critic_opt: torch.optim.Optimizer
    _critic_params: list[torch.Tensor]  # list(critic.parameters()), gathered once
    # Train plain ReLU critics with the hand-written backward (algos/handgrad.py): same values,
    # no autograd engine. Subclasses set it after building the critic; False forces autograd.
    hand_backward: bool = False
    # algo.compile in effect: the algorithm's passes run through compile_pass (torch.compile).
    compiled: bool = False

    def __init__(self, device: torch.device) -> None:
        self.device = torch.device(device)
        self.step = 0
        # Own generator for every noise draw, seeded from the global torch RNG (seeded by the
        # run) and saved in state_dict, so a resumed run draws the same noise.
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(int(torch.randint(0, 2**62, (1,)).item()))
        self._fwd: dict[str, nn.Module] = {}
        self._stateful: dict[str, Any] = {}
        self._tensors: dict[str, torch.Tensor] = {}

    def _track(self, **objects: Any) -> None:
        """Register modules/optimizers (anything with state_dict) to save under these names."""
        self._stateful.update(objects)

    def _track_tensors(self, **tensors: torch.Tensor) -> None:
        """Register plain tensors kept in ``self._tensors`` (e.g. the last actor loss)."""
        self._tensors.update(tensors)

    def _randn(self, *shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=self.generator, device=self.device)

    def _rand(self, *shape: int) -> torch.Tensor:
        return torch.rand(shape, generator=self.generator, device=self.device)

    # --- the critic's regression step, shared --------------------------------------------------

    def _start_compiling(
        self, requested: bool, trained: list[nn.Module], frozen: list[nn.Module]
    ) -> bool:
        """Whether to compile this algorithm's passes: ``algo.compile`` and a hand-written path
        (plain ReLU nets). Caches what the passes look up first, so that they are not traced;
        a warning says when compiling was asked for but does not apply."""
        if requested and self.hand_backward:
            _require_cxx_compiler(self.device)
            handgrad.prepare_caches(trained=trained, frozen=frozen)
            log.info("algo.compile: the first step compiles %s's passes", type(self).__name__)
            self.compiled = True
        elif requested:
            log.warning(
                "algo.compile: only plain ReLU nets (no norm, no dropout) are compiled; "
                "this run trains eagerly"
            )
        return self.compiled

    def _critic_by_hand(self) -> bool:
        """Plain ReLU critic, not DDP-wrapped (DDP reduces grads from autograd hooks), no
        autocast (bf16 grads would not fit the fp32 .grad): use algos/handgrad.py."""
        return (
            self.hand_backward
            and self._fwd["critic"] is self.critic
            and not torch.is_autocast_enabled(self.device.type)
        )

    def _critic_mse_grads(
        self, obs: torch.Tensor, act: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Q(obs, act) [E, B] and ``ensemble_mse(Q, target)``, with its gradients left in the
        critic's ``.grad`` (replacing any old ones): by hand for plain critics (which sets every
        ``.grad``), else zeroed and through autograd."""
        if not self._critic_by_hand():
            self.critic_opt.zero_grad(set_to_none=True)
            q = self._fwd["critic"](obs, act)
            loss = ensemble_mse(q, target)
            loss.backward()
            return q, loss
        with handgrad.no_record():  # see handgrad.py: no autograd bookkeeping per op
            q, acts = handgrad.critic_forward(self.critic, torch.cat([obs, act], dim=-1))
            loss, grad_q = ensemble_mse_and_grad(q, target)
            handgrad.critic_param_grads(self.critic, acts, grad_q)
        return q, loss

    def _critic_grad_norm(self) -> torch.Tensor:
        """Global L2 norm of the critic's gradients: one norm over the flat buffer that the
        hand-written backward fills (handgrad.flat_critic_grad), else :func:`grad_norm`."""
        flat = handgrad.flat_critic_grad(self.critic)
        if flat is None:
            return grad_norm(self._critic_params)
        return torch.linalg.vector_norm(flat)

    # --- policy -----------------------------------------------------------------------------

    def _policy_action(self, obs: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        with eval_mode(self.actor):
            return self._policy_action(obs)

    @torch.no_grad()
    def next_actions(self, next_obs: torch.Tensor) -> torch.Tensor:
        with eval_mode(self.actor):
            return self._policy_action(next_obs)

    # --- DDP --------------------------------------------------------------------------------

    def modules_for_ddp(self) -> dict[str, nn.Module]:
        return dict(self._fwd_base)

    def wrap_modules(self, wrapped: dict[str, nn.Module]) -> None:
        unknown = set(wrapped) - set(self._fwd_base)
        if unknown:
            raise KeyError(
                f"cannot wrap {sorted(unknown)}; this algorithm has {sorted(self._fwd_base)}"
            )
        self._fwd.update(wrapped)

    def _set_forward_modules(self, **modules: nn.Module) -> None:
        self._fwd_base = dict(modules)
        self._fwd = dict(modules)

    # --- checkpoints ------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """References to live state (like torch); serialise it (torch.save) to snapshot it."""
        state: dict[str, Any] = {name: obj.state_dict() for name, obj in self._stateful.items()}
        state["tensors"] = dict(self._tensors)
        state["step"] = self.step
        state["generator"] = self.generator.get_state()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        missing = [k for k in [*self._stateful, "tensors", "step", "generator"] if k not in state]
        if missing:
            raise KeyError(
                f"algorithm state is missing {missing}: not a checkpoint of this algorithm"
            )
        for name, obj in self._stateful.items():
            obj.load_state_dict(state[name])
        for name in self._tensors:
            self._tensors[name] = state["tensors"][name].detach().to(self.device).clone()
        self.step = int(state["step"])
        self.generator.set_state(state["generator"].cpu())
