"""TD3+BC: Fujimoto & Gu, "A Minimalist Approach to Offline Reinforcement Learning", NeurIPS 2021
(arXiv 2106.06860), on TD3 (Fujimoto et al. 2018). With ``bc_weight=0`` and ``tau=1`` it is the
plain offline TD3 the SEEM paper (seem.md section 6) uses to make critics diverge.

Flow position: Batch -> :meth:`TD3BC.update` -> metrics. Update order (as in the paper's code):
the critic every step; the actor and both targets every ``policy_freq`` steps.

Losses (B = batch, E = critic heads, M = max_action):
- target action  a' = clip(pi_targ(s') + M * clip(policy_noise * eps, -noise_clip, noise_clip), -M, M)
- target         y = r + gamma * (1 - done) * min_e Q_targ_e(s', a')
- critic         sum_e mean_b (Q_e(s, a) - y)^2   (TD3's mse(Q1, y) + mse(Q2, y))
- actor          -lambda * mean_b Q_1(s, pi(s)) + bc_weight * mean_{b,dims} (pi(s) - a)^2,
                 lambda = bc_alpha / mean_b |Q_1(s, pi(s))|  (no gradient through lambda)

With plain ReLU nets (the paper's setting) the gradients come from the hand-written backward
in algos/handgrad.py instead of autograd: same values, less time per step on CPU (measured in
docs/benchmarks.md). With ``algo.compile`` its two passes (target and critic gradients; actor
gradients) run through ``torch.compile`` (base.compile_pass), ~1.15x faster again.
"""

from __future__ import annotations

import torch

from seem_ray import metrics as M
from seem_ray.algos import handgrad
from seem_ray.algos.base import (
    OfflineAlgorithm,
    TargetUpdate,
    bellman_target,
    compile_pass,
    make_optimizer,
    make_target,
    min_over_heads,
)
from seem_ray.config import AlgoConfig, NetConfig
from seem_ray.data.batches import Batch
from seem_ray.nets import DeterministicActor, EnsembleCritic

__all__ = ["TD3BC", "smoothed_target_action", "td3bc_actor_loss"]


def smoothed_target_action(
    next_pi: torch.Tensor,
    noise: torch.Tensor,
    policy_noise: float,
    noise_clip: float,
    max_action: float,
) -> torch.Tensor:
    """TD3's target-policy smoothing; `noise` is standard normal, scales are in units of M."""
    eps = (noise * policy_noise).clamp_(-noise_clip, noise_clip)
    return torch.add(next_pi, eps, alpha=max_action).clamp_(-max_action, max_action)


def td3bc_actor_loss(
    q: torch.Tensor, pi: torch.Tensor, act: torch.Tensor, bc_alpha: float, bc_weight: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """TD3+BC actor loss and its BC term.

    Args:
        q: Q_1(s, pi(s)), [B].
        pi: policy actions, [B, A].
        act: dataset actions, [B, A].
        bc_alpha: alpha in lambda = alpha / mean|Q|.
        bc_weight: weight of the BC term (1 in the paper, 0 for plain TD3).

    Returns:
        (loss, bc) with bc = mean (pi - a)^2 over batch and action dims.
    """
    lmbda = bc_alpha / q.abs().mean().detach()
    bc = (pi - act).square().mean()
    return -lmbda * q.mean() + bc_weight * bc, bc


class TD3BC(OfflineAlgorithm):
    """TD3+BC with an E-head fused critic (E >= 2; the min over all heads forms the target)."""

    def __init__(
        self,
        algo: AlgoConfig,
        critic: NetConfig,
        actor: NetConfig,
        obs_dim: int,
        act_dim: int,
        max_action: float,
        device: torch.device,
    ) -> None:
        super().__init__(device)
        self.cfg, self.hp, self.max_action = algo, algo.td3bc, float(max_action)
        self.critic = EnsembleCritic(obs_dim, act_dim, critic, algo.ensemble).to(self.device)
        self.actor = DeterministicActor(obs_dim, act_dim, actor, max_action).to(self.device)
        self.critic_target = make_target(self.critic)
        self.actor_target = make_target(self.actor)
        self.critic_opt = make_optimizer(
            self.critic.parameters(), algo.critic_lr, algo.critic_optimizer
        )
        self.actor_opt = make_optimizer(self.actor.parameters(), algo.actor_lr)
        self._critic_params = list(self.critic.parameters())
        self._actor_params = list(self.actor.parameters())
        self._update_targets = TargetUpdate(
            [(self.critic_target, self.critic), (self.actor_target, self.actor)]
        )
        self._set_forward_modules(critic=self.critic, actor=self.actor)
        # The hand-written backward needs both nets plain (ReLU, no norm): see handgrad.py.
        self.hand_backward = handgrad.is_plain_critic(self.critic) and handgrad.is_plain_actor(
            self.actor
        )
        # The two hand-written passes, compiled with algo.compile (the optimizer steps and
        # target updates stay eager: each is already one fused kernel).
        self._critic_pass = self._critic_grads_by_hand
        self._actor_pass = self._actor_grads_by_hand
        nets = [self.critic, self.actor], [self.critic_target, self.actor_target]
        if self._start_compiling(algo.compile, *nets):
            self._critic_pass = compile_pass(self._critic_grads_by_hand, self.device)
            self._actor_pass = compile_pass(self._actor_grads_by_hand, self.device)
        self._track(
            critic=self.critic,
            critic_target=self.critic_target,
            actor=self.actor,
            actor_target=self.actor_target,
            critic_opt=self.critic_opt,
            actor_opt=self.actor_opt,
        )
        zero = torch.zeros((), device=self.device)
        self._track_tensors(actor_loss=zero, bc_loss=zero.clone())

    def _policy_action(self, obs: torch.Tensor) -> torch.Tensor:
        return self.actor(obs)

    def _smoothed_next_action(self, next_pi: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        hp = self.hp
        return smoothed_target_action(
            next_pi, noise, hp.policy_noise, hp.noise_clip, self.max_action
        )

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        if self._by_hand():  # nothing to record for autograd: see handgrad.py
            with handgrad.no_record(compiled=self.compiled):
                return self._update(batch, by_hand=True)
        return self._update(batch, by_hand=False)

    def _update(self, batch: Batch, by_hand: bool) -> dict[str, torch.Tensor]:
        hp = self.hp
        self.step += 1

        # Critic: regress every head on the clipped double-Q target.
        with torch.no_grad():
            noise = self._randn(*batch.act.shape)
        if by_hand:  # sets every critic .grad
            q, critic_loss = self._critic_pass(batch, noise)
        else:
            with torch.no_grad():
                next_act = self._smoothed_next_action(self.actor_target(batch.next_obs), noise)
                next_q_heads = self.critic_target(batch.next_obs, next_act)
                target = bellman_target(
                    batch.rew, batch.done, self.cfg.gamma, min_over_heads(next_q_heads)
                )
            q, critic_loss = self._critic_mse_grads(batch.obs, batch.act, target)
        critic_grad_norm = self._critic_grad_norm()
        self.critic_opt.step()

        # Actor and targets: delayed. Only actor grads are computed (by hand, or autograd with
        # inputs=), so the critic's weights get no stray gradients and the plain (unwrapped)
        # critic is enough here.
        if self.step % hp.policy_freq == 0:
            if by_hand:  # sets every actor .grad
                actor_loss, bc_loss = self._actor_pass(batch)
            else:
                self.actor_opt.zero_grad(set_to_none=True)
                pi = self._fwd["actor"](batch.obs)
                q_pi = self.critic.forward_head(batch.obs, pi, 0)
                actor_loss, bc_loss = td3bc_actor_loss(
                    q_pi, pi, batch.act, hp.bc_alpha, hp.bc_weight
                )
                actor_loss.backward(inputs=self._actor_params)
            self.actor_opt.step()
            self._update_targets(self.cfg.tau)
            self._tensors["actor_loss"] = actor_loss.detach()
            self._tensors["bc_loss"] = bc_loss.detach()

        q = q.detach()
        return {
            M.CRITIC_LOSS: critic_loss.detach(),
            M.ACTOR_LOSS: self._tensors["actor_loss"],
            M.BC_LOSS: self._tensors["bc_loss"],
            M.BATCH_Q_MEAN: q.mean(),
            M.BATCH_Q_MAX: q.max(),
            M.CRITIC_GRAD_NORM: critic_grad_norm,
        }

    # --- the hand-written backward (algos/handgrad.py) ----------------------------------------

    def _by_hand(self) -> bool:
        """The critic by hand (base class) and a plain, unwrapped actor too."""
        return self._critic_by_hand() and self._fwd["actor"] is self.actor

    def _critic_grads_by_hand(
        self, batch: Batch, noise: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The clipped double-Q target, then Q [E, B], the critic loss and every critic .grad;
        the same forwards as autograd's without module calls or fresh ReLU outputs."""
        next_pi = handgrad.actor_forward(self.actor_target, batch.next_obs)[0]  # type: ignore[arg-type]
        next_act = self._smoothed_next_action(next_pi, noise)
        next_q_heads = handgrad.critic_forward(
            self.critic_target,  # type: ignore[arg-type]
            torch.cat([batch.next_obs, next_act], dim=-1),
        )[0]
        target = bellman_target(batch.rew, batch.done, self.cfg.gamma, min_over_heads(next_q_heads))
        return self._critic_mse_grads(batch.obs, batch.act, target)

    @torch.no_grad()
    def _actor_grads_by_hand(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """td3bc_actor_loss's value and gradients (lambda constant, as in autograd's detach)."""
        hp = self.hp
        pi, actor_acts = handgrad.actor_forward(self.actor, batch.obs)  # type: ignore[arg-type]
        q_pi, critic_acts = handgrad.critic_forward(
            self.critic, torch.cat([batch.obs, pi], dim=-1), head=0
        )
        b, a = pi.shape
        lmbda = q_pi.abs().mean().reciprocal_().mul_(hp.bc_alpha)
        diff = (pi - batch.act).view(-1)
        bc = torch.dot(diff, diff).div_(b * a)
        loss = torch.addcmul(bc * hp.bc_weight, lmbda, q_pi.mean(), value=-1.0)
        grad_q = (lmbda * (-1.0 / b)).expand(1, b)
        grad_pi = handgrad.critic_action_grad(self.critic, critic_acts, grad_q, head=0)
        if hp.bc_weight:  # d/dpi of bc_weight * mean (pi - a)^2
            grad_pi = grad_pi.add_(diff.view(b, a), alpha=2.0 * hp.bc_weight / (b * a))
        handgrad.actor_param_grads(self.actor, actor_acts, grad_pi)  # type: ignore[arg-type]
        return loss, bc
