"""IQL: Kostrikov, Nair & Levine, "Offline Reinforcement Learning with Implicit Q-Learning",
ICLR 2022 (arXiv 2110.06169).

Flow position: Batch -> :meth:`IQL.update` -> metrics. Update order (as in the paper's code and
CORL): V, then Q, then the Q target (every step, rate tau), then the actor.

Losses (E = critic heads; V is an MLP with the critic's NetConfig):
- value   mean_b L2_tau(min_e Q_targ_e(s, a) - V(s)),  L2_tau(u) = |tau - 1(u < 0)| * u^2
- critic  sum_e mean_b (Q_e(s, a) - y)^2,  y = r + gamma * (1 - done) * V(s')
- actor   -mean_b min(exp(beta * A), max_weight) * log pi(a | s),  A = min_e Q_targ_e(s, a) - V(s)
          (advantage-weighted regression; pi is a Normal with tanh-squashed mean and a learned
          state-independent std, CORL's choice; the deterministic action is the mean)

SEEM on IQL uses X* = (s', mean action): a proxy, since IQL's Q bootstraps through V (seem.md 7).

A plain ReLU critic's step goes by hand (algos/handgrad.py); with ``algo.compile`` the V/actor
losses and that critic pass run through ``torch.compile`` (~1.25x per step on CPU here).
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
from seem_ray.nets import EnsembleCritic, GaussianActor, build_mlp, gaussian_log_prob

__all__ = ["IQL", "awr_actor_loss", "awr_weights", "expectile_loss"]


def expectile_loss(diff: torch.Tensor, expectile: float) -> torch.Tensor:
    """mean |tau - 1(diff < 0)| * diff^2: expectile regression of V towards Q (diff = Q - V)."""
    weight = torch.where(diff < 0, 1.0 - expectile, expectile)
    return (weight * diff.square()).mean()


def awr_weights(adv: torch.Tensor, beta: float, max_weight: float) -> torch.Tensor:
    """exp(beta * A) clipped at max_weight (no gradient flows through A)."""
    return torch.exp(beta * adv.detach()).clamp(max=max_weight)


def awr_actor_loss(weights: torch.Tensor, log_prob: torch.Tensor) -> torch.Tensor:
    """Advantage-weighted negative log-likelihood of dataset actions."""
    return -(weights * log_prob).mean()


class IQL(OfflineAlgorithm):
    """IQL with an E-head fused critic (E >= 1), a value net V(s) and a Gaussian actor."""

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
        self.cfg, self.hp = algo, algo.iql
        self.critic = EnsembleCritic(obs_dim, act_dim, critic, algo.ensemble).to(self.device)
        self.value = build_mlp(obs_dim, 1, critic).to(self.device)
        self.actor = GaussianActor(obs_dim, act_dim, actor, max_action).to(self.device)
        self.critic_target = make_target(self.critic)
        self.critic_opt = make_optimizer(
            self.critic.parameters(), algo.critic_lr, algo.critic_optimizer
        )
        self.value_opt = make_optimizer(self.value.parameters(), self.hp.value_lr)
        self.actor_opt = make_optimizer(self.actor.parameters(), algo.actor_lr)
        self._critic_params = list(self.critic.parameters())
        self.hand_backward = handgrad.is_plain_critic(self.critic)
        self._update_targets = TargetUpdate([(self.critic_target, self.critic)])
        self._set_forward_modules(critic=self.critic, actor=self.actor, value=self.value)
        # With algo.compile: the V/actor losses (forward and, through AOTAutograd, backward)
        # and the hand-written critic step; the optimizer steps and target update stay eager.
        self._losses = self._value_actor_losses
        self._critic_pass = self._critic_mse_grads
        if self._start_compiling(algo.compile, [self.critic], [self.critic_target]):
            self._losses = compile_pass(self._value_actor_losses, self.device)
            self._critic_pass = compile_pass(self._critic_mse_grads, self.device)
        self._track(
            critic=self.critic,
            critic_target=self.critic_target,
            value=self.value,
            actor=self.actor,
            critic_opt=self.critic_opt,
            value_opt=self.value_opt,
            actor_opt=self.actor_opt,
        )

    def _policy_action(self, obs: torch.Tensor) -> torch.Tensor:
        return self.actor(obs)[0]

    def _value_actor_losses(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """V's expectile loss, the actor's AWR loss (both with autograd graphs) and the critic's
        regression target y = r + gamma (1 - done) V(s'), all from the pre-step nets."""
        hp = self.hp
        with torch.no_grad():
            q_target = min_over_heads(self.critic_target(batch.obs, batch.act))
            next_v = self.value(batch.next_obs).squeeze(-1)
        v = self._fwd["value"](batch.obs).squeeze(-1)
        adv = q_target - v
        value_loss = expectile_loss(adv, hp.expectile)
        mean, log_std = self._fwd["actor"](batch.obs)
        weights = awr_weights(adv, hp.beta, hp.max_weight)
        actor_loss = awr_actor_loss(weights, gaussian_log_prob(mean, log_std, batch.act))
        target = bellman_target(batch.rew, batch.done, self.cfg.gamma, next_v)
        return value_loss, actor_loss, target

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        self.step += 1
        self.value_opt.zero_grad(set_to_none=True)
        self.actor_opt.zero_grad(set_to_none=True)
        value_loss, actor_loss, target = self._losses(batch)
        # V and pi share no parameters and both losses read only pre-step values, so one
        # backward of the sum gives each exactly its own gradients, in one autograd pass.
        (value_loss + actor_loss).backward()
        self.value_opt.step()

        q, critic_loss = self._critic_pass(batch.obs, batch.act, target)
        critic_grad_norm = self._critic_grad_norm()
        self.critic_opt.step()
        self._update_targets(self.cfg.tau)
        self.actor_opt.step()

        q = q.detach()
        return {
            M.CRITIC_LOSS: critic_loss.detach(),
            M.VALUE_LOSS: value_loss.detach(),
            M.ACTOR_LOSS: actor_loss.detach(),
            M.BATCH_Q_MEAN: q.mean(),
            M.BATCH_Q_MAX: q.max(),
            M.CRITIC_GRAD_NORM: critic_grad_norm,
        }
