"""Shared pieces of the toy experiments: toy-maze data, bias-free ReLU critics, TD loss, fits, I/O.

Flow position: outside the service. The experiments replace "dataset -> batches -> update" by a
full-batch TD update on the CPU-sized toy of docs/seem.md section 6 (2-D states, 8 unit actions,
a random walk, zero reward, so the true Q is 0 and any growth of Q is divergence) and then
measure the growth laws of seem.md section 5 with `seem_ray.seem.compute_seem`.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from seem_ray.runtime import PROJECT_ROOT, atomic_write_text, runs_dir

__all__ = [
    "FIGURES_DIR",
    "LinearFit",
    "ToyCritic",
    "SummaryRow",
    "ToyMaze",
    "base_parser",
    "experiment_main",
    "fmt",
    "num",
    "crash_step_from_eig",
    "crash_step_from_fit",
    "greedy_targets",
    "linear_fit",
    "make_toy_maze",
    "param_norm",
    "prepare_torch",
    "results_path",
    "td_loss",
    "write_json",
]

FIGURES_DIR = PROJECT_ROOT / "docs" / "figures"

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- toy problem


@dataclass(frozen=True)
class ToyMaze:
    """One random-walk dataset: N transitions (s, a, s'), reward 0, and the K-action set."""

    obs: torch.Tensor
    """[N, 2] states s_i."""
    act: torch.Tensor
    """[N, 2] dataset actions a_i (unit vectors)."""
    next_obs: torch.Tensor
    """[N, 2] next states s_{i+1}."""
    action_set: torch.Tensor
    """[K, 2] the K unit actions the greedy target maximises over."""


def make_toy_maze(
    seed: int,
    length: int = 64,
    n_actions: int = 8,
    step: float = 0.1,
    noise: float = 0.02,
    dtype: torch.dtype = torch.float64,
) -> ToyMaze:
    """A `length`-state random walk from U[0,1]^2 moving `step` along a random unit action.

    Each move adds U[0, noise]^2 drift, as in the authors' toy-maze; N = length - 1 transitions.
    """
    if length < 2 or n_actions < 1:
        raise ValueError(f"need length >= 2 and n_actions >= 1; got {length}, {n_actions}")
    rng = np.random.default_rng(seed)
    angles = 2.0 * np.pi * np.arange(n_actions) / n_actions
    action_set = np.stack([np.cos(angles), np.sin(angles)], 1)
    picks = rng.integers(0, n_actions, size=length - 1)
    states = np.empty((length, 2))
    states[0] = rng.random(2)
    for i, k in enumerate(picks):
        states[i + 1] = states[i] + step * action_set[k] + noise * rng.random(2)

    def as_t(x: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(x, dtype=dtype)

    return ToyMaze(as_t(states[:-1]), as_t(action_set[picks]), as_t(states[1:]), as_t(action_set))


class ToyCritic(nn.Module):
    """Bias-free ReLU MLP Q(s, a) with `layers` Linear layers: exactly L-homogeneous in theta.

    Q(c theta) = c^L Q(theta), the property the growth laws of seem.md section 5 rest on.
    """

    def __init__(self, in_dim: int, width: int, layers: int) -> None:
        super().__init__()
        if layers < 1 or width < 1:
            raise ValueError(f"need layers >= 1 and width >= 1; got {layers}, {width}")
        dims = [in_dim] + [width] * (layers - 1) + [1]
        mods: list[nn.Module] = []
        for i in range(layers):
            mods.append(nn.Linear(dims[i], dims[i + 1], bias=False))
            if i < layers - 1:
                mods.append(nn.ReLU())
        self.net = nn.Sequential(*mods)
        self.layers = layers

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([obs, act], -1)).squeeze(-1)


def greedy_targets(critic: nn.Module, maze: ToyMaze) -> tuple[torch.Tensor, torch.Tensor]:
    """max_a Q(s', a) over the action set and the argmax actions (no gradient).

    Returns:
        (max_q [N], next_act [N, 2]).
    """
    n, k = maze.next_obs.shape[0], maze.action_set.shape[0]
    with torch.no_grad():
        s = maze.next_obs.repeat_interleave(k, 0)
        a = maze.action_set.repeat(n, 1)
        q = critic(s, a).reshape(n, k)
        best, idx = q.max(1)
    return best, maze.action_set[idx]


def td_loss(
    critic: nn.Module, maze: ToyMaze, gamma: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Plain mean-squared TD loss against gamma * max_a Q(s', a) from the same net (r = 0).

    The gradient step on this loss moves the probe residual with eta_eff = 2 lr / N (seem.md
    section 1); the target is stop-grad, as in fitted Q-iteration.

    Returns:
        (loss, Q(X) [N] detached, greedy next actions [N, 2]).
    """
    best, next_act = greedy_targets(critic, maze)
    q = critic(maze.obs, maze.act)
    loss = (q - gamma * best).square().mean()
    return loss, q.detach(), next_act


def param_norm(module: nn.Module) -> float:
    """||theta||_2 over all parameters."""
    with torch.no_grad():
        return math.sqrt(sum(float(p.double().square().sum()) for p in module.parameters()))


# ----------------------------------------------------------------------------- fits


@dataclass(frozen=True)
class LinearFit:
    """Least-squares line y = slope * x + intercept and its coefficient of determination."""

    slope: float
    intercept: float
    r2: float


def linear_fit(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> LinearFit:
    """Ordinary least squares on finite (x, y) pairs; R^2 = 1 - SS_res / SS_tot."""
    xa, ya = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if xa.shape != ya.shape or xa.ndim != 1:
        raise ValueError(f"x and y must be 1-D of equal length; got {xa.shape}, {ya.shape}")
    keep = np.isfinite(xa) & np.isfinite(ya)
    xa, ya = xa[keep], ya[keep]
    if xa.size < 2 or np.ptp(xa) == 0:
        raise ValueError(f"need >= 2 finite points with distinct x; got {xa.size}")
    slope, intercept = np.polyfit(xa, ya, 1)
    resid = ya - (slope * xa + intercept)
    ss_tot = float(np.sum((ya - ya.mean()) ** 2))
    r2 = 1.0 - float(np.sum(resid**2)) / ss_tot if ss_tot > 0 else 1.0
    return LinearFit(float(slope), float(intercept), r2)


def crash_step_from_eig(t0: float, layers: int, eta_eff: float, max_eig: float) -> float:
    """Blow-up step of gradient descent on an L-homogeneous critic (seem.md section 5).

    With rho = ||theta||, A ∝ rho^(2L-2) and delta ∝ rho^L, d rho/dt = (eta lam / L) rho^(2L-1),
    so rho^-(2L-2) falls linearly and hits 0 at t0 + L / ((2L - 2) eta lam_max(A_t0)).

    Args:
        t0: step at which A was measured (inside the divergent phase).
        layers: L, the number of Linear layers (>= 2: L = 1 is linear, no finite blow-up).
        eta_eff: loss-scale-corrected step size (2 lr / N for a mean-squared loss).
        max_eig: raw (not 1/P-scaled) rightmost eigenvalue of A_t0; must be > 0.
    """
    if layers < 2:
        raise ValueError(f"finite-time blow-up needs layers >= 2; got {layers}")
    if not (eta_eff > 0 and max_eig > 0):
        raise ValueError(f"need eta_eff > 0 and max_eig > 0; got {eta_eff}, {max_eig}")
    return t0 + layers / ((2 * layers - 2) * eta_eff * max_eig)


def crash_step_from_fit(
    steps: Sequence[float] | np.ndarray, q_scale: Sequence[float] | np.ndarray, layers: int
) -> tuple[float, LinearFit]:
    """Blow-up step from a line through Q^-(2L-2)/L against t, extrapolated to 0.

    Args:
        steps: steps t of the fit window.
        q_scale: a positive Q magnitude at those steps (e.g. RMS of Q on the batch); it scales as
            rho^L once the direction of theta is stable.
        layers: L >= 2.

    Returns:
        (t*, the fit); t* is inf when the line does not fall (no blow-up predicted).
    """
    if layers < 2:
        raise ValueError(f"finite-time blow-up needs layers >= 2; got {layers}")
    q = np.asarray(q_scale, dtype=np.float64)
    if np.any(q <= 0):
        raise ValueError("q_scale must be positive")
    fit = linear_fit(np.asarray(steps, dtype=np.float64), q ** (-(2 * layers - 2) / layers))
    if fit.slope >= 0:
        return math.inf, fit
    return -fit.intercept / fit.slope, fit


# ----------------------------------------------------------------------------- plumbing


def prepare_torch() -> None:
    """One intra-op thread (the machine is shared) and a headless matplotlib backend."""
    torch.set_num_threads(1)
    os.environ.setdefault("MPLBACKEND", "Agg")


def results_path(name: str) -> Path:
    """runs/experiments/<name>.json (under $SEEM_RAY_RUNS when set)."""
    return runs_dir() / "experiments" / f"{name}.json"


def write_json(path: Path, payload: dict[str, Any]) -> Path:
    """Write `payload` atomically as indented JSON (non-finite floats as null)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(path, json.dumps(_finite(payload), indent=2, sort_keys=False) + "\n")


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def experiment_main(
    argv: Sequence[str] | None,
    *,
    name: str,
    doc: str | None,
    figure: str,
    run: Callable[[bool], dict[str, Any]],
    make_figure: Callable[[dict[str, Any], Path], Path],
) -> dict[str, Any]:
    """The command line every experiment shares: parse the flags, then either redraw the figure
    from the saved JSON (--replot) or run (quick or full), write the JSON and draw the figure.

    Args:
        argv: command-line arguments (None: sys.argv).
        name: experiment name (JSON default runs/experiments/<name>.json).
        doc: the module docstring; its first line is the --help description.
        figure: PNG file name under --figures.
        run: run(quick) -> the result dict (JSON-able).
        make_figure: make_figure(result, png_path) -> the written path.
    """
    args = base_parser(name, doc.splitlines()[0] if doc else name).parse_args(argv)
    prepare_torch()
    json_path = Path(args.json or results_path(name))
    if args.replot:
        result = json.loads(json_path.read_text())
        make_figure(result, Path(args.figures) / figure)
        return result
    started = time.perf_counter()
    result = run(bool(args.quick))
    result["quick"] = bool(args.quick)
    result["seconds"] = time.perf_counter() - started
    fig = make_figure(result, Path(args.figures) / figure)
    result["figure"] = str(fig)
    out = write_json(json_path, result)
    log.info("wrote %s and %s in %.1fs", out, fig, result["seconds"])
    return result


def base_parser(name: str, doc: str) -> argparse.ArgumentParser:
    """--quick, --figures DIR, --json PATH, --replot: the flags every experiment script takes."""
    p = argparse.ArgumentParser(prog=f"python -m experiments.{name}", description=doc)
    p.add_argument("--quick", action="store_true", help="seconds-long version (CI smoke test)")
    p.add_argument("--figures", type=Path, default=FIGURES_DIR, help="figure folder")
    p.add_argument("--json", type=Path, default=None, help="numbers (default runs/experiments)")
    p.add_argument(
        "--replot", action="store_true", help="only redraw the figure from the existing JSON"
    )
    return p


@dataclass(frozen=True)
class SummaryRow:
    """One line of the results summary: the paper's claim, what we measured, our verdict."""

    section: str
    claim: str
    measured: str
    verdict: str


def num(value: Any) -> float:
    """A JSON number back as float: null (a non-finite value written by write_json) -> nan."""
    return math.nan if value is None else float(value)


def fmt(value: Any, spec: str = ".3g") -> str:
    """Format a number for the report; null/nan/inf -> 'n/a'."""
    x = num(value)
    return format(x, spec) if math.isfinite(x) else "n/a"
