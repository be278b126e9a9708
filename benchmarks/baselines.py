"""Straightforward CORL-style reference implementations, used ONLY by bench_train.py.

They compute the same maths as seem_ray.algos (same losses, update order, scalings, fp32) the
way a readable single-file implementation does: one nn.Sequential per critic, a separate call
per critic and per action set, a per-parameter Python loop for soft target updates,
``torch.optim.Adam`` with its defaults (the per-parameter loop on CPU), a numpy-indexed
replay buffer, and ``.item()`` on every metric every step. Never imported by the package.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BaselineBuffer", "BaselineCQL", "BaselineIQL", "BaselineTD3BC", "make_baseline"]


def mlp(
    in_dim: int, out_dim: int, hidden: tuple[int, ...], layer_norm: bool = False
) -> nn.Sequential:
    layers: list[nn.Module] = []
    d = in_dim
    for h in hidden:
        layers.append(nn.Linear(d, h))
        if layer_norm:
            layers.append(nn.LayerNorm(h))
        layers.append(nn.ReLU())
        d = h
    layers.append(nn.Linear(d, out_dim))
    return nn.Sequential(*layers)


class Critic(nn.Module):
    def __init__(
        self, obs_dim: int, act_dim: int, hidden: tuple[int, ...], layer_norm: bool
    ) -> None:
        super().__init__()
        self.net = mlp(obs_dim + act_dim, 1, hidden, layer_norm)

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([obs, act], dim=1)).squeeze(-1)


def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    for tp, sp in zip(target.parameters(), source.parameters(), strict=True):
        tp.data.copy_((1 - tau) * tp.data + tau * sp.data)


class BaselineBuffer:
    """CORL's ReplayBuffer.sample: numpy random indices, one index op per field."""

    def __init__(
        self,
        obs: np.ndarray,
        act: np.ndarray,
        rew: np.ndarray,
        next_obs: np.ndarray,
        done: np.ndarray,
        batch_size: int,
    ) -> None:
        self.obs, self.act = torch.tensor(obs), torch.tensor(act)
        self.rew, self.next_obs = torch.tensor(rew)[:, None], torch.tensor(next_obs)
        self.done = torch.tensor(done)[:, None]
        self.batch_size = batch_size

    def sample(self) -> list[torch.Tensor]:
        idx = np.random.randint(0, len(self.obs), size=self.batch_size)
        return [self.obs[idx], self.act[idx], self.rew[idx], self.next_obs[idx], self.done[idx]]


class BaselineTD3BC:
    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden: tuple[int, ...],
        layer_norm: bool = False,
        max_action: float = 1.0,
        gamma: float = 0.99,
        tau: float = 0.005,
        lr: float = 3e-4,
        policy_noise: float = 0.2,
        noise_clip: float = 0.5,
        policy_freq: int = 2,
        alpha: float = 2.5,
    ) -> None:
        import copy

        self.actor = nn.Sequential(mlp(obs_dim, act_dim, hidden), nn.Tanh())
        self.actor_target = copy.deepcopy(self.actor)
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=lr)
        self.critic_1 = Critic(obs_dim, act_dim, hidden, layer_norm)
        self.critic_1_target = copy.deepcopy(self.critic_1)
        self.critic_1_optimizer = torch.optim.Adam(self.critic_1.parameters(), lr=lr)
        self.critic_2 = Critic(obs_dim, act_dim, hidden, layer_norm)
        self.critic_2_target = copy.deepcopy(self.critic_2)
        self.critic_2_optimizer = torch.optim.Adam(self.critic_2.parameters(), lr=lr)
        self.max_action, self.gamma, self.tau = max_action, gamma, tau
        self.policy_noise, self.noise_clip = policy_noise * max_action, noise_clip * max_action
        self.policy_freq, self.alpha = policy_freq, alpha
        self.total_it = 0

    def train(self, batch: list[torch.Tensor]) -> dict[str, float]:
        log: dict[str, float] = {}
        self.total_it += 1
        state, action, reward, next_state, done = batch
        not_done = 1 - done
        with torch.no_grad():
            noise = (torch.randn_like(action) * self.policy_noise).clamp(
                -self.noise_clip, self.noise_clip
            )
            next_action = (self.max_action * self.actor_target(next_state) + noise).clamp(
                -self.max_action, self.max_action
            )
            target_q1 = self.critic_1_target(next_state, next_action)
            target_q2 = self.critic_2_target(next_state, next_action)
            target_q = torch.min(target_q1, target_q2)
            target_q = reward.squeeze(-1) + not_done.squeeze(-1) * self.gamma * target_q
        current_q1 = self.critic_1(state, action)
        current_q2 = self.critic_2(state, action)
        critic_loss = F.mse_loss(current_q1, target_q) + F.mse_loss(current_q2, target_q)
        log["critic_loss"] = critic_loss.item()
        self.critic_1_optimizer.zero_grad()
        self.critic_2_optimizer.zero_grad()
        critic_loss.backward()
        log["critic_grad_norm"] = torch.nn.utils.clip_grad_norm_(
            list(self.critic_1.parameters()) + list(self.critic_2.parameters()), float("inf")
        ).item()
        self.critic_1_optimizer.step()
        self.critic_2_optimizer.step()
        log["batch_q_mean"] = torch.cat([current_q1, current_q2]).mean().item()
        log["batch_q_max"] = torch.cat([current_q1, current_q2]).max().item()
        if self.total_it % self.policy_freq == 0:
            pi = self.max_action * self.actor(state)
            q = self.critic_1(state, pi)
            lmbda = self.alpha / q.abs().mean().detach()
            bc = F.mse_loss(pi, action)
            actor_loss = -lmbda * q.mean() + bc
            log["actor_loss"] = actor_loss.item()
            log["bc_loss"] = bc.item()
            self.actor_optimizer.zero_grad()
            actor_loss.backward()
            self.actor_optimizer.step()
            soft_update(self.critic_1_target, self.critic_1, self.tau)
            soft_update(self.critic_2_target, self.critic_2, self.tau)
            soft_update(self.actor_target, self.actor, self.tau)
        return log


class GaussianPolicy(nn.Module):
    def __init__(
        self, obs_dim: int, act_dim: int, hidden: tuple[int, ...], max_action: float
    ) -> None:
        super().__init__()
        self.net = nn.Sequential(mlp(obs_dim, act_dim, hidden), nn.Tanh())
        self.log_std = nn.Parameter(torch.zeros(act_dim))
        self.max_action = max_action

    def forward(self, obs: torch.Tensor) -> torch.distributions.Normal:
        mean = self.max_action * self.net(obs)
        return torch.distributions.Normal(mean, torch.exp(self.log_std.clamp(-20.0, 2.0)))


class BaselineIQL:
    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden: tuple[int, ...],
        layer_norm: bool = False,
        max_action: float = 1.0,
        gamma: float = 0.99,
        tau: float = 0.005,
        lr: float = 3e-4,
        iql_tau: float = 0.7,
        beta: float = 3.0,
        max_weight: float = 100.0,
    ) -> None:
        import copy

        self.qf1, self.qf2 = (
            Critic(obs_dim, act_dim, hidden, layer_norm),
            Critic(obs_dim, act_dim, hidden, layer_norm),
        )
        self.q1_target, self.q2_target = copy.deepcopy(self.qf1), copy.deepcopy(self.qf2)
        self.vf = mlp(obs_dim, 1, hidden, layer_norm)
        self.actor = GaussianPolicy(obs_dim, act_dim, hidden, max_action)
        self.q_optimizer = torch.optim.Adam(
            list(self.qf1.parameters()) + list(self.qf2.parameters()), lr=lr
        )
        self.v_optimizer = torch.optim.Adam(self.vf.parameters(), lr=lr)
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=lr)
        self.gamma, self.tau, self.iql_tau, self.beta, self.max_weight = (
            gamma,
            tau,
            iql_tau,
            beta,
            max_weight,
        )
        self.total_it = 0

    def train(self, batch: list[torch.Tensor]) -> dict[str, float]:
        self.total_it += 1
        observations, actions, rewards, next_observations, dones = batch
        log: dict[str, float] = {}
        with torch.no_grad():
            next_v = self.vf(next_observations).squeeze(-1)
            target_q = torch.min(
                self.q1_target(observations, actions), self.q2_target(observations, actions)
            )
        v = self.vf(observations).squeeze(-1)
        adv = target_q - v
        weight = torch.abs(self.iql_tau - (adv < 0).float())
        v_loss = torch.mean(weight * adv**2)
        log["value_loss"] = v_loss.item()
        self.v_optimizer.zero_grad()
        v_loss.backward()
        self.v_optimizer.step()
        targets = rewards.squeeze(-1) + (1.0 - dones.squeeze(-1)) * self.gamma * next_v
        q1, q2 = self.qf1(observations, actions), self.qf2(observations, actions)
        q_loss = F.mse_loss(q1, targets) + F.mse_loss(q2, targets)
        log["critic_loss"] = q_loss.item()
        self.q_optimizer.zero_grad()
        q_loss.backward()
        log["critic_grad_norm"] = torch.nn.utils.clip_grad_norm_(
            list(self.qf1.parameters()) + list(self.qf2.parameters()), float("inf")
        ).item()
        self.q_optimizer.step()
        log["batch_q_mean"] = torch.cat([q1, q2]).mean().item()
        log["batch_q_max"] = torch.cat([q1, q2]).max().item()
        soft_update(self.q1_target, self.qf1, self.tau)
        soft_update(self.q2_target, self.qf2, self.tau)
        exp_adv = torch.exp(self.beta * adv.detach()).clamp(max=self.max_weight)
        policy_out = self.actor(observations)
        bc_losses = -policy_out.log_prob(actions).sum(-1)
        policy_loss = torch.mean(exp_adv * bc_losses)
        log["actor_loss"] = policy_loss.item()
        self.actor_optimizer.zero_grad()
        policy_loss.backward()
        self.actor_optimizer.step()
        return log


class TanhGaussianPolicy(nn.Module):
    def __init__(
        self, obs_dim: int, act_dim: int, hidden: tuple[int, ...], max_action: float
    ) -> None:
        super().__init__()
        self.net = mlp(obs_dim, 2 * act_dim, hidden)
        self.max_action = max_action

    def forward(
        self, obs: torch.Tensor, repeat: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if repeat is not None:
            obs = obs.unsqueeze(1).repeat(1, repeat, 1).view(-1, obs.shape[-1])
        mean, log_std = torch.chunk(self.net(obs), 2, dim=-1)
        log_std = log_std.clamp(-20.0, 2.0)
        dist = torch.distributions.Normal(mean, log_std.exp())
        u = dist.rsample()
        log_prob = dist.log_prob(u).sum(-1)
        log_prob = log_prob - (2 * (math.log(2) - u - F.softplus(-2 * u))).sum(-1)
        log_prob = log_prob - mean.shape[-1] * math.log(self.max_action)
        return self.max_action * torch.tanh(u), log_prob


class BaselineCQL:
    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden: tuple[int, ...],
        layer_norm: bool = False,
        max_action: float = 1.0,
        gamma: float = 0.99,
        tau: float = 0.005,
        lr: float = 3e-4,
        cql_alpha: float = 5.0,
        n_actions: int = 10,
        init_temperature: float = 1.0,
    ) -> None:
        import copy

        self.critic_1, self.critic_2 = (
            Critic(obs_dim, act_dim, hidden, layer_norm),
            Critic(obs_dim, act_dim, hidden, layer_norm),
        )
        self.target_critic_1, self.target_critic_2 = (
            copy.deepcopy(self.critic_1),
            copy.deepcopy(self.critic_2),
        )
        self.actor = TanhGaussianPolicy(obs_dim, act_dim, hidden, max_action)
        self.log_alpha = nn.Parameter(torch.tensor(math.log(init_temperature)))
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=lr)
        self.critic_1_optimizer = torch.optim.Adam(self.critic_1.parameters(), lr=lr)
        self.critic_2_optimizer = torch.optim.Adam(self.critic_2.parameters(), lr=lr)
        self.alpha_optimizer = torch.optim.Adam([self.log_alpha], lr=lr)
        self.target_entropy = -float(act_dim)
        self.act_dim, self.max_action, self.gamma, self.tau = act_dim, max_action, gamma, tau
        self.cql_alpha, self.n_actions = cql_alpha, n_actions
        self.total_it = 0

    def train(self, batch: list[torch.Tensor]) -> dict[str, float]:
        self.total_it += 1
        observations, actions, rewards, next_observations, dones = batch
        rewards, dones = rewards.squeeze(-1), dones.squeeze(-1)
        log: dict[str, float] = {}
        new_actions, log_pi = self.actor(observations)
        alpha_loss = -(self.log_alpha * (log_pi + self.target_entropy).detach()).mean()
        alpha = self.log_alpha.exp().detach()
        log["alpha"] = alpha.item()
        q_new = torch.min(
            self.critic_1(observations, new_actions), self.critic_2(observations, new_actions)
        )
        policy_loss = (alpha * log_pi - q_new).mean()
        log["actor_loss"] = policy_loss.item()
        self.alpha_optimizer.zero_grad()
        alpha_loss.backward()
        self.alpha_optimizer.step()
        self.actor_optimizer.zero_grad()
        policy_loss.backward()
        self.actor_optimizer.step()

        q1_pred, q2_pred = (
            self.critic_1(observations, actions),
            self.critic_2(observations, actions),
        )
        with torch.no_grad():
            new_next_actions, next_log_pi = self.actor(next_observations)
            target_q = (
                torch.min(
                    self.target_critic_1(next_observations, new_next_actions),
                    self.target_critic_2(next_observations, new_next_actions),
                )
                - alpha * next_log_pi
            )
            td_target = rewards + (1.0 - dones) * self.gamma * target_q
        qf1_loss, qf2_loss = F.mse_loss(q1_pred, td_target), F.mse_loss(q2_pred, td_target)

        b, n = actions.shape[0], self.n_actions
        random_actions = actions.new_empty((b * n, self.act_dim)).uniform_(
            -self.max_action, self.max_action
        )
        with torch.no_grad():
            current_actions, current_log_pis = self.actor(observations, repeat=n)
            next_actions, next_log_pis = self.actor(next_observations, repeat=n)
        obs_rep = observations.unsqueeze(1).repeat(1, n, 1).view(-1, observations.shape[-1])
        q1_rand = self.critic_1(obs_rep, random_actions).view(b, n)
        q2_rand = self.critic_2(obs_rep, random_actions).view(b, n)
        q1_curr = self.critic_1(obs_rep, current_actions).view(b, n)
        q2_curr = self.critic_2(obs_rep, current_actions).view(b, n)
        q1_next = self.critic_1(obs_rep, next_actions).view(b, n)
        q2_next = self.critic_2(obs_rep, next_actions).view(b, n)
        random_density = -self.act_dim * math.log(2.0 * self.max_action)
        cat_q1 = torch.cat(
            [
                q1_rand - random_density,
                q1_curr - current_log_pis.view(b, n),
                q1_next - next_log_pis.view(b, n),
            ],
            1,
        )
        cat_q2 = torch.cat(
            [
                q2_rand - random_density,
                q2_curr - current_log_pis.view(b, n),
                q2_next - next_log_pis.view(b, n),
            ],
            1,
        )
        gap1 = (torch.logsumexp(cat_q1, dim=1) - q1_pred).mean()
        gap2 = (torch.logsumexp(cat_q2, dim=1) - q2_pred).mean()
        qf_loss = qf1_loss + qf2_loss + self.cql_alpha * (gap1 + gap2)
        log["critic_loss"] = qf_loss.item()
        log["cql_loss"] = ((gap1 + gap2) / 2).item()
        self.critic_1_optimizer.zero_grad()
        self.critic_2_optimizer.zero_grad()
        qf_loss.backward()
        log["critic_grad_norm"] = torch.nn.utils.clip_grad_norm_(
            list(self.critic_1.parameters()) + list(self.critic_2.parameters()), float("inf")
        ).item()
        self.critic_1_optimizer.step()
        self.critic_2_optimizer.step()
        log["batch_q_mean"] = torch.cat([q1_pred, q2_pred]).mean().item()
        log["batch_q_max"] = torch.cat([q1_pred, q2_pred]).max().item()
        soft_update(self.target_critic_1, self.critic_1, self.tau)
        soft_update(self.target_critic_2, self.critic_2, self.tau)
        return log


def make_baseline(
    name: str, obs_dim: int, act_dim: int, hidden: tuple[int, ...], layer_norm: bool = False
) -> BaselineTD3BC | BaselineIQL | BaselineCQL:
    """The straightforward implementation of algorithm `name` with default hyper-parameters."""
    cls = {"td3bc": BaselineTD3BC, "iql": BaselineIQL, "cql": BaselineCQL}[name]
    return cls(obs_dim, act_dim, hidden, layer_norm)
