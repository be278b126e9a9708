"""Configuration: frozen dataclasses, one per concern, and the only YAML reader.

Every entry point (``seem-ray train``, sweeps, studies, benchmarks) builds a :class:`RunConfig`
through :func:`load_run_config` / :func:`parse_run_config`; sweeps override the same dotted
fields (``critic.norm``, ``algo.gamma``...). Unknown keys, wrong types and bad values raise
:class:`ConfigError` whose one-line message names the dotted field, the value and what is
allowed; the CLI prints it and exits 2.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

__all__ = [
    "ACTIVATIONS",
    "ALGORITHMS",
    "NORMS",
    "AlgoConfig",
    "CQLConfig",
    "ConfigError",
    "DataConfig",
    "IQLConfig",
    "NetConfig",
    "RunConfig",
    "ScalingConfig",
    "SeemConfig",
    "SpaceSpec",
    "StopperConfig",
    "SweepConfig",
    "TD3BCConfig",
    "TrackingConfig",
    "TrainConfig",
    "apply_overrides",
    "flatten",
    "from_dict",
    "load_run_config",
    "load_sweep_config",
    "load_yaml",
    "parse_run_config",
    "parse_set_expressions",
    "to_dict",
]

ACTIVATIONS = ("relu", "tanh", "mish", "gelu", "elu", "silu", "leaky_relu")
NORMS = ("none", "layer", "rms", "batch", "spectral", "weight")
NORM_POSITIONS = ("before_act", "after_act")
ALGORITHMS = ("td3bc", "iql", "cql")
OPTIMIZERS = ("adam", "sgd")
COMPILED_ALGORITHMS = ("td3bc", "iql")  # algo.compile: steps built around the hand-written pass
EIG_METHODS = ("auto", "dense", "mixed")
STOPPERS = ("seem", "q_bound", "none")
SUBSAMPLE_MODES = ("random", "first")
DEVICES = ("auto", "cpu", "cuda")


class ConfigError(ValueError):
    """A bad configuration value; ``str()`` is one line naming the dotted field."""

    def __init__(self, field_name: str, message: str) -> None:
        self.field = field_name
        self.detail = message
        super().__init__(f"config error: {field_name}: {message}" if field_name else message)

    def prefixed(self, prefix: str) -> ConfigError:
        name = f"{prefix}.{self.field}" if self.field else prefix
        return ConfigError(name, self.detail)


def _require(ok: bool, name: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(name, f"got {value!r}; expected {allowed}")


def _positive(name: str, value: float) -> None:
    _require(value > 0 and math.isfinite(value), name, value, "a finite number > 0")


def _choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    _require(value in choices, name, value, "one of " + ", ".join(choices))


# --------------------------------------------------------------------------------------------
# The run: data -> nets -> algorithm -> loop (+ SEEM probe) -> stopper -> tracking
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataConfig:
    """Which offline dataset a run trains on, and how much of it."""

    dataset: str = "seem_ray/pointmaze-umaze-dense-v0"
    """Minari dataset id (name-vN). Local ids are made with `seem-ray datasets make`."""
    fraction: float = 1.0
    """Keep this fraction of transitions (the paper's X% experiments: 1.0, 0.1, 0.01)."""
    max_transitions: int | None = None
    """Keep at most this many transitions after `fraction` (e.g. 1000 for tiny-data runs)."""
    subsample: str = "random"
    """How to pick the kept transitions: 'random' (seeded) or 'first' (in dataset order)."""
    subsample_seed: int = 0
    """Seed of the subsample; fixed apart from the training seed so seeds share data."""
    normalize_states: bool = True
    """Standardise observations with dataset mean/std (TD3+BC does this)."""
    reward_scale: float = 1.0
    """Multiply rewards by this (the paper used 10 on AntMaze)."""

    def __post_init__(self) -> None:
        _require(bool(self.dataset), "dataset", self.dataset, "a Minari dataset id")
        _require(0.0 < self.fraction <= 1.0, "fraction", self.fraction, "0 < fraction <= 1")
        if self.max_transitions is not None:
            _require(self.max_transitions >= 2, "max_transitions", self.max_transitions, ">= 2")
        _choice("subsample", self.subsample, SUBSAMPLE_MODES)
        _require(self.subsample_seed >= 0, "subsample_seed", self.subsample_seed, ">= 0")
        _positive("reward_scale", self.reward_scale)


@dataclass(frozen=True)
class NetConfig:
    """One MLP architecture (actor or critic). Tune/Optuna sample it; MLflow logs it."""

    hidden: tuple[int, ...] = (256, 256)
    """Width of each hidden layer; its length is the depth (number of Linear layers - 1)."""
    activation: str = "relu"
    """Elementwise activation after each hidden layer."""
    norm: str = "none"
    """Normalization in hidden layers: none, layer, rms, batch (CrossQ-style), spectral, weight."""
    norm_layers: tuple[int, ...] | None = None
    """Hidden-layer indices (0-based) that get `norm`; None = all (the paper's LN placement)."""
    norm_position: str = "before_act"
    """Feature norms (layer/rms/batch): Linear->norm->act ('before_act') or Linear->act->norm."""
    dropout: float = 0.0
    """Dropout after each hidden activation (0 disables; SEEM probes run in eval mode)."""

    def __post_init__(self) -> None:
        _require(len(self.hidden) >= 1, "hidden", self.hidden, "at least one hidden layer")
        for i, width in enumerate(self.hidden):
            _require(isinstance(width, int) and width >= 1, f"hidden[{i}]", width, "an int >= 1")
        _choice("activation", self.activation, ACTIVATIONS)
        _choice("norm", self.norm, NORMS)
        _choice("norm_position", self.norm_position, NORM_POSITIONS)
        if self.norm_layers is not None:
            for i in self.norm_layers:
                _require(
                    0 <= i < len(self.hidden),
                    "norm_layers",
                    self.norm_layers,
                    f"indices in 0..{len(self.hidden) - 1}",
                )
        _require(0.0 <= self.dropout < 1.0, "dropout", self.dropout, "0 <= dropout < 1")

    def normed_layers(self) -> tuple[int, ...]:
        """Indices of hidden layers that carry the norm (empty for norm='none')."""
        if self.norm == "none":
            return ()
        if self.norm_layers is None:
            return tuple(range(len(self.hidden)))
        return tuple(sorted(set(self.norm_layers)))


@dataclass(frozen=True)
class TD3BCConfig:
    """TD3+BC (Fujimoto & Gu 2021). bc_weight=0 is plain offline TD3: the paper's divergence setting."""

    bc_alpha: float = 2.5
    """alpha in lambda = alpha / mean|Q| scaling the actor's Q term."""
    bc_weight: float = 1.0
    """Weight of the behaviour-cloning MSE term; 0 gives plain offline TD3."""
    policy_noise: float = 0.2
    """Std of target-policy smoothing noise (in units of max action)."""
    noise_clip: float = 0.5
    """Clip of the target-policy smoothing noise."""
    policy_freq: int = 2
    """Actor and target updates every this many critic updates."""

    def __post_init__(self) -> None:
        _require(self.bc_alpha >= 0, "bc_alpha", self.bc_alpha, ">= 0")
        _require(self.bc_weight >= 0, "bc_weight", self.bc_weight, ">= 0")
        _require(self.policy_noise >= 0, "policy_noise", self.policy_noise, ">= 0")
        _require(self.noise_clip >= 0, "noise_clip", self.noise_clip, ">= 0")
        _require(self.policy_freq >= 1, "policy_freq", self.policy_freq, ">= 1")


@dataclass(frozen=True)
class IQLConfig:
    """IQL (Kostrikov et al. 2021): expectile value regression + advantage-weighted actor."""

    expectile: float = 0.7
    """tau of the expectile loss on Q - V (0.5 = mean regression)."""
    beta: float = 3.0
    """Inverse temperature of the advantage weights exp(beta * A)."""
    max_weight: float = 100.0
    """Clip of the advantage weights."""
    value_lr: float = 3e-4
    """Learning rate of the state-value network V."""

    def __post_init__(self) -> None:
        _require(0.0 < self.expectile < 1.0, "expectile", self.expectile, "0 < expectile < 1")
        _require(self.beta >= 0, "beta", self.beta, ">= 0")
        _positive("max_weight", self.max_weight)
        _positive("value_lr", self.value_lr)


@dataclass(frozen=True)
class CQLConfig:
    """CQL (Kumar et al. 2020) on SAC: logsumexp conservative penalty on the twin critics."""

    cql_alpha: float = 5.0
    """Weight of the conservative penalty."""
    n_action_samples: int = 10
    """Random and policy actions per state for the logsumexp estimate."""
    auto_entropy: bool = True
    """Learn the SAC temperature towards target entropy -|A|."""
    init_temperature: float = 1.0
    """Initial SAC temperature."""
    temperature_lr: float = 3e-4
    """Learning rate of log-temperature."""

    def __post_init__(self) -> None:
        _require(self.cql_alpha >= 0, "cql_alpha", self.cql_alpha, ">= 0")
        _require(self.n_action_samples >= 1, "n_action_samples", self.n_action_samples, ">= 1")
        _positive("init_temperature", self.init_temperature)
        _positive("temperature_lr", self.temperature_lr)


@dataclass(frozen=True)
class AlgoConfig:
    """The offline RL algorithm and the settings shared by all of them."""

    name: str = "td3bc"
    """td3bc, iql or cql."""
    gamma: float = 0.99
    """Discount."""
    allow_gamma_above_one: bool = False
    """Explicit opt-in for gamma > 1 (only meaningful for SEEM experiments)."""
    tau: float = 0.005
    """Target update rate; 1.0 = hard copy (the paper's divergence setting)."""
    batch_size: int = 256
    """Minibatch per worker."""
    critic_lr: float = 3e-4
    """Critic learning rate."""
    actor_lr: float = 3e-4
    """Actor learning rate."""
    critic_optimizer: str = "adam"
    """adam or sgd (the paper contrasts their growth laws)."""
    ensemble: int = 2
    """Number of critic heads, computed together (2 = twin critics)."""
    compile: bool = False
    """torch.compile the TD3+BC or IQL step around its hand-written critic pass: ~15% (TD3+BC)
    to ~25% (IQL) faster steps on CPU here, after 13-21 s of compiling once per process, 3-4 s
    with a warm cache (needs a C++ compiler on CPU). Applies to plain ReLU critics in
    single-worker runs (the hand-written path); other runs train eagerly. Worth it for runs of
    tens of thousands of steps, not for smoke runs."""
    td3bc: TD3BCConfig = field(default_factory=TD3BCConfig)
    iql: IQLConfig = field(default_factory=IQLConfig)
    cql: CQLConfig = field(default_factory=CQLConfig)

    def __post_init__(self) -> None:
        _choice("name", self.name, ALGORITHMS)
        top = 1.5 if self.allow_gamma_above_one else 1.0
        _require(
            0.0 <= self.gamma <= top,
            "gamma",
            self.gamma,
            "0 <= gamma <= 1 (set algo.allow_gamma_above_one: true to go above 1)",
        )
        _require(0.0 < self.tau <= 1.0, "tau", self.tau, "0 < tau <= 1")
        _require(self.batch_size >= 1, "batch_size", self.batch_size, ">= 1")
        _positive("critic_lr", self.critic_lr)
        _positive("actor_lr", self.actor_lr)
        _choice("critic_optimizer", self.critic_optimizer, OPTIMIZERS)
        _require(1 <= self.ensemble <= 64, "ensemble", self.ensemble, "1..64")
        if self.name in ("td3bc", "cql"):
            _require(
                self.ensemble >= 2, "ensemble", self.ensemble, ">= 2 for twin-critic algorithms"
            )
        if self.compile and self.name not in COMPILED_ALGORITHMS:
            raise ConfigError(
                "compile",
                f"only {' and '.join(COMPILED_ALGORITHMS)} steps are compiled, not {self.name}'s "
                "(its sampled-action critic passes are matmul-bound); set algo.compile: false",
            )


@dataclass(frozen=True)
class SeemConfig:
    """The SEEM probe: a fixed batch, measured every `every` steps on the online critic."""

    enabled: bool = True
    """Measure SEEM at all."""
    every: int = 1000
    """Probe cadence in steps (the paper: 10,000 of 1M)."""
    early_every: int = 200
    """Denser cadence (records and SEEM) during the first `early_until` steps, so a fast
    diverger is seen before the first regular probe; 0 = no dense phase."""
    early_until: int = 2000
    """Last step of the dense early phase."""
    startup_every: int = 25
    """A denser cadence still for the first `startup_until` steps (0 = off): the fastest
    divergers cross the bound at step 150-425, and probes every 25 steps flag them at step
    75-100 (docs/calibration.md); 32 probes in a 10k-step run in all."""
    startup_until: int = 400
    """Last step of the startup phase."""
    probe_size: int = 512
    """Transitions in the fixed probe batch (the paper: 2560)."""
    head: int = 0
    """Critic head probed (the paper: the first)."""
    mask_terminals: bool = False
    """Use gamma*(1-done) per row of A (the paper ignores done)."""
    eig: str = "auto"
    """Eigen-solver for the rightmost eigenvalue: auto, dense or mixed (exact, checked)."""

    def __post_init__(self) -> None:
        _require(self.every >= 1, "every", self.every, ">= 1")
        _require(self.early_every >= 0, "early_every", self.early_every, ">= 0 (0 = off)")
        _require(self.early_until >= 0, "early_until", self.early_until, ">= 0")
        _require(self.startup_every >= 0, "startup_every", self.startup_every, ">= 0 (0 = off)")
        _require(self.startup_until >= 0, "startup_until", self.startup_until, ">= 0")
        _require(2 <= self.probe_size <= 20000, "probe_size", self.probe_size, "2..20000")
        _require(self.head >= 0, "head", self.head, ">= 0")
        _choice("eig", self.eig, EIG_METHODS)

    def dense_due(self, step: int) -> bool:
        """A report + SEEM probe of the dense early phases falls on `step` (the one place that
        decides it: the training loop, the external monitor and the calibration replay)."""
        phases = ((self.startup_every, self.startup_until), (self.early_every, self.early_until))
        return step > 0 and any(e and step <= until and step % e == 0 for e, until in phases)

    def probe_due(self, step: int) -> bool:
        """A SEEM probe falls on `step` at this cadence: a dense phase's, or every `every`."""
        return step > 0 and (self.dense_due(step) or step % self.every == 0)

    def probes_in(self, steps: int) -> int:
        """Probes a run of `steps` steps makes at this cadence (its SEEM cost: ~0.06 s each at
        probe 512 on a 2-core CPU, benchmarks/bench_seem_share.py)."""
        return sum(map(self.probe_due, range(1, steps + 1)))


@dataclass(frozen=True)
class TrainConfig:
    """The step loop: length, cadence of reports/evaluation/checkpoints, seed, device."""

    steps: int = 10000
    """Gradient steps."""
    log_every: int = 500
    """Report metrics every this many steps (no host sync in between)."""
    eval_every: int = 0
    """Evaluate the policy every this many steps (0 = only at the end)."""
    eval_episodes: int = 5
    """Evaluation episodes (run as one vector env); 0 disables evaluation."""
    checkpoint_every: int = 5000
    """Checkpoint every this many steps (0 = only at the end)."""
    seed: int = 0
    """Seeds torch, numpy and the samplers."""
    device: str = "auto"
    """auto (cuda if available), cpu or cuda."""
    bf16: bool = False
    """bfloat16 autocast for the forward passes (AMX CPUs, GPUs); SEEM stays fp32/fp64."""
    threads: int = 0
    """torch intra-op threads (0 = torch's default). 1 is fastest when processes share cores."""

    def __post_init__(self) -> None:
        _require(self.steps >= 1, "steps", self.steps, ">= 1")
        _require(self.log_every >= 1, "log_every", self.log_every, ">= 1")
        _require(self.eval_every >= 0, "eval_every", self.eval_every, ">= 0")
        _require(self.eval_episodes >= 0, "eval_episodes", self.eval_episodes, ">= 0")
        _require(self.checkpoint_every >= 0, "checkpoint_every", self.checkpoint_every, ">= 0")
        _require(self.seed >= 0, "seed", self.seed, ">= 0 (numpy seeds are non-negative)")
        _choice("device", self.device, DEVICES)
        _require(self.threads >= 0, "threads", self.threads, ">= 0 (0 = torch default)")


@dataclass(frozen=True)
class StopperConfig:
    """How divergence is decided (seem_ray.divergence); the Tune stopper only applies it."""

    kind: str = "seem"
    """seem (calibrated SEEM + growth predictor), q_bound (baseline) or none."""
    seem_threshold: float = 0.3
    """SEEM above this counts as a positive probe (docs/calibration.md: chosen on the calibration
    split, above every SEEM a stable calibration run showed)."""
    patience: int = 1
    """Consecutive positive probes needed; the growth confirmation below is what filters blips."""
    grace_steps: int = 0
    """Never stop before this step."""
    q_bound_factor: float = 1.0
    """Q beyond factor * r_max/(1-gamma) counts as diverged."""
    growth_horizon: float = 4.0
    """Growth predictor: flag when Q is projected to cross the bound within horizon x elapsed steps."""
    confirm_order: float = 0.5
    """A SEEM streak counts only while max |Q| on the probe (a running maximum: sign-free) grows
    at least like t^confirm_order over the last doubling of steps..."""
    weight_order: float = 0.0
    """...or while the critic's weight norm grows at least like t^weight_order (0 = off)."""
    growth_order: float = 1.5
    """Growth predictor alone: growth order of max |Q| needed (sustained over `patience` records)."""
    min_scale_fraction: float = 0.01
    """No SEEM/growth verdict before max |Q| on the probe reaches this fraction of the bound."""

    def __post_init__(self) -> None:
        _choice("kind", self.kind, STOPPERS)
        _require(-1.0 <= self.seem_threshold <= 1.0, "seem_threshold", self.seem_threshold, "-1..1")
        _require(self.patience >= 1, "patience", self.patience, ">= 1")
        _require(self.grace_steps >= 0, "grace_steps", self.grace_steps, ">= 0")
        _positive("q_bound_factor", self.q_bound_factor)
        _positive("growth_horizon", self.growth_horizon)
        _require(self.growth_horizon > 1, "growth_horizon", self.growth_horizon, "> 1")
        _positive("confirm_order", self.confirm_order)
        _require(self.weight_order >= 0, "weight_order", self.weight_order, ">= 0 (0 = off)")
        _positive("growth_order", self.growth_order)
        _require(
            0 <= self.min_scale_fraction < 1, "min_scale_fraction", self.min_scale_fraction, "0..1"
        )


@dataclass(frozen=True)
class ScalingConfig:
    """Ray Train workers for one run (GPUs on a cluster, CPU here)."""

    num_workers: int = 1
    """Data-parallel workers; global batch = algo.batch_size x num_workers."""
    use_gpu: bool = False
    """One GPU per worker when true."""
    cpus_per_worker: float = 1.0
    """CPUs reserved per worker (fractions allowed)."""
    max_failures: int = 2
    """Worker-failure restarts from the last checkpoint before the run fails."""

    def __post_init__(self) -> None:
        _require(self.num_workers >= 1, "num_workers", self.num_workers, ">= 1")
        _positive("cpus_per_worker", self.cpus_per_worker)
        _require(self.max_failures >= -1, "max_failures", self.max_failures, ">= -1 (-1 = forever)")


@dataclass(frozen=True)
class TrackingConfig:
    """MLflow destination."""

    experiment: str = "seem_ray"
    """MLflow experiment name."""
    tracking_uri: str | None = None
    """Any MLflow URI; None = $MLFLOW_TRACKING_URI or sqlite under the runs folder."""

    def __post_init__(self) -> None:
        _require(bool(self.experiment), "experiment", self.experiment, "a non-empty name")


@dataclass(frozen=True)
class RunConfig:
    """Everything one training run needs. YAML keys are exactly these field names."""

    data: DataConfig = field(default_factory=DataConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    critic: NetConfig = field(default_factory=NetConfig)
    actor: NetConfig = field(default_factory=NetConfig)
    seem: SeemConfig = field(default_factory=SeemConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    stopper: StopperConfig = field(default_factory=StopperConfig)
    scaling: ScalingConfig = field(default_factory=ScalingConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def __post_init__(self) -> None:
        if self.seem.enabled:
            _require(
                self.seem.head < self.algo.ensemble,
                "seem.head",
                self.seem.head,
                f"< algo.ensemble ({self.algo.ensemble})",
            )


# --------------------------------------------------------------------------------------------
# Sweeps: a base RunConfig + a search space over its dotted fields
# --------------------------------------------------------------------------------------------

SPACE_KINDS = ("grid", "choice", "uniform", "loguniform", "randint")
SEARCHERS = ("grid", "random", "optuna")
SCHEDULERS = ("none", "asha")


@dataclass(frozen=True)
class SpaceSpec:
    """One searched field: `grid`/`choice` over values, or `uniform`/`loguniform`/`randint` ranges."""

    kind: str
    values: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None

    def __post_init__(self) -> None:
        _choice("kind", self.kind, SPACE_KINDS)
        if self.kind in ("grid", "choice"):
            _require(len(self.values) >= 1, "values", list(self.values), "a non-empty list")
        else:
            _require(
                self.low is not None and self.high is not None and self.low < self.high,
                "range",
                [self.low, self.high],
                "[low, high] with low < high",
            )
            if self.kind == "loguniform":
                assert self.low is not None
                _require(self.low > 0, "range", [self.low, self.high], "low > 0 for loguniform")

    def bounds(self) -> tuple[float, float]:
        """(low, high) of a range kind; __post_init__ has checked both are set."""
        assert self.low is not None and self.high is not None, f"{self.kind} has no range"
        return self.low, self.high

    def candidates(self) -> tuple[Any, ...]:
        """Values to validate against the base config (the range ends for ranges)."""
        if self.kind in ("grid", "choice"):
            return self.values
        low, high = self.bounds()
        if self.kind == "randint":
            return (int(low), int(high) - 1)
        return (low, high)


@dataclass(frozen=True)
class ArchSpaceConfig:
    """Critic structure searched by `seem-ray study` (the parts no single dotted field expresses)."""

    depth: tuple[int, ...] = (1, 3)
    """[min, max] number of hidden layers."""
    widths: tuple[int, ...] = (64, 128, 256)
    """Hidden widths to choose from."""
    per_layer_width: bool = False
    """Choose a width per hidden layer (else one shared width)."""
    per_layer_norm: bool = True
    """Choose per hidden layer whether it gets the norm (else every layer does)."""

    def __post_init__(self) -> None:
        _require(
            len(self.depth) == 2 and 1 <= self.depth[0] <= self.depth[1],
            "depth",
            list(self.depth),
            "[min, max] with 1 <= min <= max",
        )
        _require(len(self.widths) >= 1, "widths", list(self.widths), "a non-empty list")
        for w in self.widths:
            _require(isinstance(w, int) and w >= 1, "widths", list(self.widths), "ints >= 1")


@dataclass(frozen=True)
class OptunaConfig:
    """Persistent Optuna study settings (seem-ray study)."""

    study_name: str | None = None
    """Study name; None = the sweep name."""
    storage: str | None = None
    """SQLAlchemy URL; None = sqlite under the runs folder."""
    objectives: tuple[str, ...] = ("normalized_score",)
    """Metric names to optimise: normalized_score, final_td_error, max_seem (risk)."""
    directions: tuple[str, ...] = ("maximize",)
    """maximize/minimize per objective."""
    sampler_seed: int = 0
    """Seed of the TPE sampler."""
    arch: ArchSpaceConfig | None = None
    """Critic depth/width/norm-placement search; None = only the `space` entries."""

    def __post_init__(self) -> None:
        _require(len(self.objectives) >= 1, "objectives", self.objectives, "at least one")
        _require(self.sampler_seed >= 0, "sampler_seed", self.sampler_seed, ">= 0")
        _require(
            len(self.directions) == len(self.objectives),
            "directions",
            self.directions,
            f"{len(self.objectives)} entries (one per objective)",
        )
        for d in self.directions:
            _choice("directions", d, ("maximize", "minimize"))


@dataclass(frozen=True)
class SweepConfig:
    """A Tune sweep: base run, searched fields, budget and resources."""

    name: str = "sweep"
    """Sweep name (Tune experiment name, MLflow parent run name)."""
    base: RunConfig = field(default_factory=RunConfig)
    """The run every trial starts from; `space` overrides its dotted fields."""
    space: dict[str, SpaceSpec] = field(default_factory=dict)
    """dotted field -> {grid: [...]} | {choice: [...]} | {uniform|loguniform|randint: [lo, hi]}."""
    num_samples: int = 1
    """Samples (x the grid) to run."""
    search: str = "grid"
    """grid/random (Tune's variant generator) or optuna (OptunaSearch, persistent)."""
    scheduler: str = "none"
    """none or asha (on normalized_score)."""
    max_concurrent: int = 0
    """Trials at once (0 = as resources allow)."""
    trial_driver_cpus: float = 0.1
    """CPU reserved by each trial's driver (the Train workers reserve their own)."""
    optuna: OptunaConfig = field(default_factory=OptunaConfig)

    def __post_init__(self) -> None:
        _require(bool(self.name), "name", self.name, "a non-empty name")
        _require(len(self.space) >= 1, "space", self.space, "at least one searched field")
        _require(self.num_samples >= 1, "num_samples", self.num_samples, ">= 1")
        _choice("search", self.search, SEARCHERS)
        _choice("scheduler", self.scheduler, SCHEDULERS)
        _require(self.max_concurrent >= 0, "max_concurrent", self.max_concurrent, ">= 0")
        _require(self.trial_driver_cpus >= 0, "trial_driver_cpus", self.trial_driver_cpus, ">= 0")
        if self.search == "grid":
            for key, spec in self.space.items():
                _require(
                    spec.kind == "grid",
                    f"space.{key}",
                    spec.kind,
                    "grid entries only with search: grid (use search: random or optuna)",
                )
        for key, spec in self.space.items():
            for value in spec.candidates():
                try:
                    apply_overrides(self.base, {key: value})
                except ConfigError as err:
                    raise ConfigError(f"space.{key}", err.detail) from None


# --------------------------------------------------------------------------------------------
# Generic dict <-> dataclass with strict checking
# --------------------------------------------------------------------------------------------

T = TypeVar("T")


def _closest(key: str, options: list[str]) -> str:
    match = difflib.get_close_matches(key, options, n=1)
    return f" (did you mean '{match[0]}'?)" if match else ""


def _coerce(value: Any, tp: Any, name: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], name)
    if tp is SpaceSpec:
        return _space_spec(value, name)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(name, f"got {value!r}; expected a mapping of {tp.__name__} fields")
        return from_dict(tp, value, prefix=name)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(name, f"got {value!r}; expected a list")
        item_tp = args[0] if args else Any
        return tuple(_coerce(v, item_tp, f"{name}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(name, f"got {value!r}; expected a mapping")
        val_tp = args[1]
        return {str(k): _coerce(v, val_tp, f"{name}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(name, f"got {value!r}; expected true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(name, f"got {value!r}; expected an integer")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "3e-4" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(name, f"got {value!r}; expected a number") from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(name, f"got {value!r}; expected a number")
        if not math.isfinite(float(value)):
            raise ConfigError(name, f"got {value!r}; expected a finite number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(name, f"got {value!r}; expected a string")
        return value
    return value


def _space_spec(value: Any, name: str) -> SpaceSpec:
    if isinstance(value, SpaceSpec):
        return value
    if not isinstance(value, Mapping) or len(value) != 1:
        raise ConfigError(
            name,
            f"got {value!r}; expected one of {{grid|choice: [..]}}, {{uniform|loguniform|randint: [lo, hi]}}",
        )
    ((kind, arg),) = value.items()
    if kind not in SPACE_KINDS:
        raise ConfigError(
            name, f"unknown space kind {kind!r}; expected one of {', '.join(SPACE_KINDS)}"
        )
    if not isinstance(arg, list) or not arg:
        raise ConfigError(name, f"got {arg!r}; expected a non-empty list")
    try:
        if kind in ("grid", "choice"):
            return SpaceSpec(
                kind=kind, values=tuple(tuple(v) if isinstance(v, list) else v for v in arg)
            )
        if len(arg) != 2:
            raise ConfigError("range", f"got {arg!r}; expected [low, high]")
        return SpaceSpec(kind=kind, low=float(arg[0]), high=float(arg[1]))
    except ConfigError as err:
        raise err.prefixed(name) from None


def from_dict(cls: type[T], data: Mapping[str, Any], prefix: str = "") -> T:
    """Build dataclass `cls` from a mapping, rejecting unknown keys and bad values."""
    if not isinstance(data, Mapping):
        raise ConfigError(prefix, f"got {data!r}; expected a mapping")
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"from_dict builds dataclasses, not {cls!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            if not str(key).isidentifier():
                dotted = f"{prefix}.{key!r}" if prefix else repr(key)
            raise ConfigError(
                dotted, f"unknown key{_closest(str(key), names)}; allowed: {', '.join(names)}"
            )
        kwargs[key] = _coerce(value, hints[key], dotted)
    try:
        return cls(**kwargs)
    except ConfigError as err:
        raise (err.prefixed(prefix) if prefix else err) from None


def to_dict(cfg: Any) -> Any:
    """Dataclass -> plain YAML-safe dict (tuples become lists)."""
    if isinstance(cfg, SpaceSpec):
        if cfg.kind in ("grid", "choice"):
            return {cfg.kind: [to_dict(v) for v in cfg.values]}
        return {cfg.kind: [cfg.low, cfg.high]}
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, tuple | list):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    return cfg


def flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """Dataclass -> {'algo.gamma': 0.99, ...} (for MLflow params and tables)."""
    out: dict[str, Any] = {}
    plain = to_dict(cfg)

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict) and node:
            for k, v in node.items():
                walk(v, f"{path}.{k}" if path else k)
        else:
            out[path] = node

    walk(plain, prefix)
    return out


def apply_overrides(cfg: T, overrides: Mapping[str, Any]) -> T:
    """Return `cfg` with dotted fields replaced (``{'critic.norm': 'layer'}``), re-validated."""
    data = to_dict(cfg)
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        node = data
        for i, part in enumerate(parts):
            path = ".".join(parts[: i + 1])
            if not isinstance(node, dict) or part not in node:
                options = list(node.keys()) if isinstance(node, dict) else []
                raise ConfigError(path, f"unknown key{_closest(part, options)}")
            if i == len(parts) - 1:
                node[part] = to_dict(value)
            else:
                node = node[part]
    return from_dict(type(cfg), data)


def parse_set_expressions(exprs: list[str]) -> dict[str, Any]:
    """``['algo.gamma=0.9', 'critic.hidden=[64,64]']`` -> overrides (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for expr in exprs:
        key, sep, raw = expr.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError("--set", f"got {expr!r}; expected KEY=VALUE, e.g. algo.gamma=0.95")
        try:
            out[key] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            raise ConfigError("--set", f"cannot parse the value in {expr!r} as YAML") from None
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with `yaml.safe_load`; a clear ConfigError for anything else."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError("", f"config file not found: {p} (check the path)")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError("", f"malformed YAML in {p}{where}: fix the syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            "", f"{p} must contain a mapping of config sections, got {type(data).__name__}"
        )
    return data


def parse_run_config(
    data: Mapping[str, Any], overrides: Mapping[str, Any] | None = None
) -> RunConfig:
    """Mapping (+ dotted overrides) -> validated RunConfig."""
    cfg = from_dict(RunConfig, data)
    return apply_overrides(cfg, overrides) if overrides else cfg


def load_run_config(
    path: str | Path | None, overrides: Mapping[str, Any] | None = None
) -> RunConfig:
    """YAML file (or defaults when None) + overrides -> validated RunConfig."""
    return parse_run_config(load_yaml(path) if path is not None else {}, overrides)


def load_sweep_config(path: str | Path, overrides: Mapping[str, Any] | None = None) -> SweepConfig:
    """YAML sweep file + dotted overrides (e.g. 'base.train.steps') -> validated SweepConfig."""
    data = load_yaml(path)
    if "name" not in data:
        data = {"name": Path(path).stem, **data}
    cfg = from_dict(SweepConfig, data)
    return apply_overrides(cfg, overrides) if overrides else cfg
