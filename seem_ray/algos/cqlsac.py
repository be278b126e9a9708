"""CQL(H) on SAC: Kumar, Zhou, Tucker & Levine, "Conservative Q-Learning for Offline
Reinforcement Learning", NeurIPS 2020 (arXiv 2006.04779); SAC: Haarnoja et al. 2018.

Flow position: Batch -> :meth:`CQLSAC.update` -> metrics. Update order (as in CORL): the
temperature and the actor on the current critic, then the critic, then the critic target
(every step, rate tau). All policy samples of a step come from the actor before its step.

Losses (E = critic heads, n = n_action_samples, A = action dims, M = max_action,
alpha = SAC temperature, pi a tanh-Gaussian policy):
- temperature  -mean_b log_alpha * (log pi(a~|s) + target_entropy), target_entropy = -A
- actor        mean_b alpha * log pi(a~|s) - min_e Q_e(s, a~),  a~ ~ pi(.|s) reparametrized
- target       y = r + gamma * (1 - done) * (min_e Q_targ_e(s', a') - alpha * log pi(a'|s'))
- critic       sum_e [ mean_b (Q_e(s, a) - y)^2 + cql_alpha * penalty_e ]
- penalty_e    mean_b logsumexp_k(Q_e(s, a_k) - log mu(a_k)) - Q_e(s, a): the importance-sampled
               CQL(H) estimate over 3n actions a_k: n uniform on [-M, M]^A (mu = (2M)^-A),
               n from pi(.|s) and n from pi(.|s') (mu = their policy densities, no gradient).

The critic sees the data and all 3n sampled actions in one forward (one DDP call; with batch
norm its batch statistics therefore mix data and sampled actions).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from seem_ray import metrics as M
from seem_ray.algos import handgrad
from seem_ray.algos.base import (
    OfflineAlgorithm,
    TargetUpdate,
    bellman_target,
    ensemble_mse,
    ensemble_mse_and_grad,
    make_optimizer,
    make_target,
    min_over_heads,
)
from seem_ray.config import AlgoConfig, NetConfig
from seem_ray.data.batches import Batch
from seem_ray.nets import EnsembleCritic, TanhGaussianActor, tanh_gaussian_sample

__all__ = ["CQLSAC", "Temperature", "cql_penalty", "sac_actor_loss", "temperature_loss"]


def cql_penalty(
    q_data: torch.Tensor, q_ood: torch.Tensor, log_density: torch.Tensor
) -> torch.Tensor:
    """Per-head CQL(H) gap: mean_b [logsumexp_k (Q(s, a_k) - log mu(a_k | s)) - Q(s, a)].

    Args:
        q_data: [E, B] Q on dataset actions.
        q_ood: [E, B, K] Q on the sampled actions.
        log_density: [B, K] log-density of each sampled action under its proposal.

    Returns:
        [E] one penalty per head.
    """
    return (torch.logsumexp(q_ood - log_density, dim=-1) - q_data).mean(dim=-1)


def sac_actor_loss(
    q_min: torch.Tensor, log_prob: torch.Tensor, alpha: torch.Tensor
) -> torch.Tensor:
    """SAC policy loss mean(alpha * log pi - min_e Q)."""
    return (alpha * log_prob - q_min).mean()


def temperature_loss(
    log_alpha: torch.Tensor, log_prob: torch.Tensor, target_entropy: float
) -> torch.Tensor:
    """SAC temperature loss: raises alpha while the entropy is below target_entropy."""
    return -(log_alpha * (log_prob.detach() + target_entropy)).mean()


class Temperature(nn.Module):
    """log(alpha) as a module, so data-parallel workers all-reduce its gradient like the nets."""

    def __init__(self, init: float) -> None:
        super().__init__()
        self.log_alpha = nn.Parameter(torch.tensor(math.log(init)))

    def forward(self) -> torch.Tensor:
        return self.log_alpha


class CQLSAC(OfflineAlgorithm):
    """CQL(H) with importance sampling on SAC, E-head fused critic (E >= 2)."""

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
        self.cfg, self.hp, self.max_action = algo, algo.cql, float(max_action)
        self.act_dim = act_dim
        self.target_entropy = -float(act_dim)
        self.critic = EnsembleCritic(obs_dim, act_dim, critic, algo.ensemble).to(self.device)
        self.actor = TanhGaussianActor(obs_dim, act_dim, actor, max_action).to(self.device)
        self.temperature = Temperature(self.hp.init_temperature).to(self.device)
        self.critic_target = make_target(self.critic)
        self.critic_opt = make_optimizer(
            self.critic.parameters(), algo.critic_lr, algo.critic_optimizer
        )
        self.actor_opt = make_optimizer(self.actor.parameters(), algo.actor_lr)
        self.temperature_opt = make_optimizer(self.temperature.parameters(), self.hp.temperature_lr)
        self._critic_params = list(self.critic.parameters())
        self.hand_backward = handgrad.is_plain_critic(self.critic)
        self._actor_params = list(self.actor.parameters())
        self._update_targets = TargetUpdate([(self.critic_target, self.critic)])
        modules: dict[str, nn.Module] = {"critic": self.critic, "actor": self.actor}
        if self.hp.auto_entropy:
            modules["temperature"] = self.temperature
        self._set_forward_modules(**modules)
        self._track(
            critic=self.critic,
            critic_target=self.critic_target,
            actor=self.actor,
            temperature=self.temperature,
            critic_opt=self.critic_opt,
            actor_opt=self.actor_opt,
            temperature_opt=self.temperature_opt,
        )

    def _policy_action(self, obs: torch.Tensor) -> torch.Tensor:
        mean, _ = self.actor(obs)
        return self.max_action * torch.tanh(mean)

    def _sample(
        self, mean: torch.Tensor, log_std: torch.Tensor, n: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One draw per row ([B, A], [B]) or n draws per row ([B, n, A], [B, n])."""
        shape: tuple[int, ...]
        if n is not None:
            mean, log_std = mean.unsqueeze(1), log_std.unsqueeze(1)
            shape = (mean.shape[0], n, mean.shape[-1])
        else:
            shape = tuple(mean.shape)
        return tanh_gaussian_sample(mean, log_std, self._randn(*shape), self.max_action)

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        hp, n = self.hp, self.hp.n_action_samples
        self.step += 1
        b = len(batch)

        # Temperature and actor on the current critic (only actor grads from the actor loss).
        mean, log_std = self._fwd["actor"](batch.obs)
        new_act, log_prob = self._sample(mean, log_std)
        with torch.no_grad():  # every policy sample below comes from this pre-step actor
            next_mean, next_log_std = self.actor(batch.next_obs)
        if hp.auto_entropy:
            alpha_loss = temperature_loss(self._fwd["temperature"](), log_prob, self.target_entropy)
            self.temperature_opt.zero_grad(set_to_none=True)
            alpha_loss.backward(inputs=[self.temperature.log_alpha])
            alpha = self.temperature.log_alpha.exp().detach()
            self.temperature_opt.step()
        else:
            alpha = self.temperature.log_alpha.exp().detach()
        actor_loss = sac_actor_loss(
            min_over_heads(self.critic(batch.obs, new_act)), log_prob, alpha
        )
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward(inputs=self._actor_params)
        self.actor_opt.step()

        # Critic: soft Bellman target plus the conservative penalty.
        with torch.no_grad():
            next_act, next_log_prob = self._sample(next_mean, next_log_std)
            next_q = min_over_heads(self.critic_target(batch.next_obs, next_act))
            target = bellman_target(
                batch.rew, batch.done, self.cfg.gamma, next_q - alpha * next_log_prob
            )
            rand_act = (2.0 * self._rand(b, n, self.act_dim) - 1.0) * self.max_action
            rand_log_density = torch.full(
                (b, n), -self.act_dim * math.log(2.0 * self.max_action), device=self.device
            )
            pi_act, pi_log_prob = self._sample(mean.detach(), log_std.detach(), n)
            next_pi_act, next_pi_log_prob = self._sample(next_mean, next_log_std, n)
            ood_act = torch.stack([rand_act, pi_act, next_pi_act], dim=1)  # [B, 3, n, A]
            log_density = torch.cat([rand_log_density, pi_log_prob, next_pi_log_prob], dim=1)
        obs_rep = batch.obs.unsqueeze(1).expand(b, 3 * n, batch.obs.shape[-1])
        obs_all = torch.cat([batch.obs, obs_rep.reshape(b * 3 * n, -1)])
        act_all = torch.cat([batch.act, ood_act.reshape(b * 3 * n, self.act_dim)])
        if self._critic_by_hand():  # sets every critic .grad
            q_data, penalty, critic_loss = self._critic_grads_by_hand(
                obs_all, act_all, target, log_density
            )
        else:
            self.critic_opt.zero_grad(set_to_none=True)
            q_all = self._fwd["critic"](obs_all, act_all)
            q_data, q_ood = q_all[:, :b], q_all[:, b:].reshape(-1, b, 3 * n)
            penalty = cql_penalty(q_data, q_ood, log_density)
            critic_loss = ensemble_mse(q_data, target) + hp.cql_alpha * penalty.sum()
            critic_loss.backward()
        critic_grad_norm = self._critic_grad_norm()
        self.critic_opt.step()
        self._update_targets(self.cfg.tau)

        q = q_data.detach()
        return {
            M.CRITIC_LOSS: critic_loss.detach(),
            M.ACTOR_LOSS: actor_loss.detach(),
            M.CQL_LOSS: penalty.detach().mean(),
            M.ALPHA: alpha,
            M.BATCH_Q_MEAN: q.mean(),
            M.BATCH_Q_MAX: q.max(),
            M.CRITIC_GRAD_NORM: critic_grad_norm,
        }

    @torch.inference_mode()
    def _critic_grads_by_hand(
        self,
        obs_all: torch.Tensor,
        act_all: torch.Tensor,
        target: torch.Tensor,
        log_density: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The critic loss's value and gradients through algos/handgrad.py (plain critics).

        d/dQ_e(s, a) = 2 (Q_e - y) / B - cql_alpha / B on data rows, and
        d/dQ_e(s, a_k) = cql_alpha * softmax_k(Q_e(s, a_k) - log mu(a_k)) / B on sampled rows.
        """
        b, k = log_density.shape
        q_all, acts = handgrad.critic_forward(self.critic, torch.cat([obs_all, act_all], dim=-1))
        q_data, q_ood = q_all[:, :b], q_all[:, b:].reshape(-1, b, k)
        logits = q_ood - log_density
        lse = torch.logsumexp(logits, dim=-1)
        penalty = (lse - q_data).mean(dim=-1)
        alpha = self.hp.cql_alpha
        mse, grad_data = ensemble_mse_and_grad(q_data, target)
        loss = mse + alpha * penalty.sum()
        grad_data.sub_(alpha / b)
        grad_ood = logits.sub_(lse.unsqueeze(-1)).exp_().mul_(alpha / b)
        grad_q = torch.cat([grad_data, grad_ood.reshape(grad_ood.shape[0], b * k)], dim=1)
        handgrad.critic_param_grads(self.critic, acts, grad_q)
        return q_data, penalty, loss
