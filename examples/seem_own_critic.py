"""SEEM and the divergence verdict for a critic in your own torch loop (no seem_ray training).

A plain fitted-Q loop on synthetic transitions: the next actions come from a fixed policy that
leaves the data's action range, the setting in which an unnormalized critic diverges (the
paper's section 3) and a LayerNorm one does not. `CriticMonitor` probes the critic at the
shipped cadence and ends training on the calibrated verdict.

    python examples/seem_own_critic.py              # no LayerNorm: stopped early
    python examples/seem_own_critic.py --layer-norm # runs to the end
"""

from __future__ import annotations

import argparse
import sys

import torch
from torch import nn

from seem_ray.external import Check, CriticMonitor, Probe


class Critic(nn.Module):
    """Q(s, a): an MLP, optionally with LayerNorm after each hidden layer."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int = 64, layer_norm: bool = False):
        super().__init__()
        layers: list[nn.Module] = []
        width = obs_dim + act_dim
        for _ in range(2):
            layers += [nn.Linear(width, hidden)]
            layers += [nn.LayerNorm(hidden)] if layer_norm else []
            layers += [nn.ReLU()]
            width = hidden
        self.net = nn.Sequential(*layers, nn.Linear(width, 1))

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([obs, act], dim=-1)).squeeze(-1)


def train(
    steps: int = 1000, *, layer_norm: bool = False, gamma: float = 0.99, seed: int = 0
) -> list[Check]:
    """Train the critic (target = online net, i.e. tau 1), return the monitor's checks."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    n, obs_dim, act_dim = 2000, 6, 2
    obs = torch.randn(n, obs_dim, generator=gen)
    act = 0.1 * torch.randn(n, act_dim, generator=gen)  # the data's actions are small...
    next_obs = obs + 0.1 * torch.randn(n, obs_dim, generator=gen)
    rewards = torch.rand(n, generator=gen)
    weights = torch.randn(obs_dim, act_dim, generator=gen)

    def policy(s: torch.Tensor) -> torch.Tensor:  # ...the policy's are not
        return torch.tanh(s @ weights)

    critic = Critic(obs_dim, act_dim, layer_norm=layer_norm)
    optim = torch.optim.Adam(critic.parameters(), lr=3e-4)
    probe = Probe.from_arrays(obs, act, next_obs, rewards=rewards, size=128, seed=seed)
    monitor = CriticMonitor(critic, probe, gamma, policy=policy)
    for step in range(1, steps + 1):
        i = torch.randint(0, n, (256,), generator=gen)
        with torch.no_grad():
            target = rewards[i] + gamma * critic(next_obs[i], policy(next_obs[i]))
        loss = (critic(obs[i], act[i]) - target).pow(2).mean()
        optim.zero_grad()
        loss.backward()
        optim.step()
        if monitor.due(step):
            check = monitor.step(step)
            if check.diverging:
                print(
                    f"step {step}: diverging ({check.verdict.reason}): SEEM {check.seem:.3f}, "
                    f"max |Q| {check.q_abs_max:.1f} of bound {monitor.q_bound:.0f}; stopping"
                )
                break
    else:
        last = monitor.history[-1]
        print(f"step {steps}: healthy: SEEM {last.seem:.3f}, max |Q| {last.q_abs_max:.1f}")
    return monitor.history


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--layer-norm", action="store_true")
    args = parser.parse_args(argv)
    train(args.steps, layer_norm=args.layer_norm)
    return 0


if __name__ == "__main__":
    sys.exit(main())
