"""Persistent Optuna studies over critic architectures: `seem-ray study CONFIG | report | compare`.

Flow position: study YAML (a SweepConfig with an ``optuna`` section) -> :class:`StudySpace`, a
define-by-run space (depth -> widths -> norm kind -> which layers get it -> position, activation,
dropout, ensemble, training choices) -> ``StudySearch`` (Ray's ``OptunaSearch`` on a durable
RDB storage) -> :func:`seem_ray.tune.run_sweep` (Ray Train trials, the SEEM stopper, MLflow) ->
each finished trial is told to Optuna with values from :func:`trial_outcome` (divergence is never
rewarded) and user attrs (stop_reason, diverged_since, steps, max_seem) -> :func:`write_report`
(best trials, importances, PNG plots, logged to the sweep's MLflow parent run) and
:func:`compare_studies`.

Resuming after a crash (even ``kill -9``) needs no Tune state: the Optuna storage is the source
of truth. ``--resume`` marks trials left RUNNING as FAIL (stop_reason ``killed``), counts the
finished ones and runs a fresh Tune experiment (``<name>-resume<k>``) for the rest of the budget,
with the searcher loading the same study so the sampler sees every earlier trial.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import statistics
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from seem_ray import metrics as M
from seem_ray.config import (
    NORMS,
    ArchSpaceConfig,
    ConfigError,
    SpaceSpec,
    StopperConfig,
    SweepConfig,
    apply_overrides,
    load_sweep_config,
    parse_set_expressions,
)
from seem_ray.runtime import atomic_write_text, runs_dir

__all__ = [
    "OBJECTIVES",
    "KILLED",
    "StudyPlan",
    "StudyReport",
    "StudySpace",
    "TrialOutcome",
    "TrialStats",
    "build_space",
    "compare_studies",
    "default_storage_url",
    "prepare_study",
    "register",
    "resolve_storage_url",
    "run_study",
    "suggest_overrides",
    "trial_outcome",
    "worst_value",
    "write_report",
]

log = logging.getLogger("seem_ray.study")

OBJECTIVES: dict[str, tuple[str, str]] = {
    "normalized_score": ("maximize", M.NORMALIZED_SCORE),
    "final_td_error": ("minimize", M.CRITIC_LOSS),
    "max_seem": ("minimize", M.SEEM),
}
"""Objective name -> (its only sensible direction, the reported metric it is read from)."""

WORST: dict[str, float] = {"normalized_score": -100.0, "final_td_error": 1e6, "max_seem": 1.0}
"""Value a diverged trial gets at best (finite so importances and plots keep working)."""

KILLED = "killed"
"""stop_reason of trials left RUNNING by a killed driver (set on --resume)."""
ERROR = "error"
INCOMPLETE = "incomplete"
DIVERGED_REASONS = (M.REASON_SEEM, M.REASON_Q_BOUND, M.REASON_NAN, M.REASON_GROWTH)

FEATURE_NORMS = ("layer", "rms", "batch")
"""Norms with a placement choice (before/after the activation); the others wrap the weights."""
ARCH_FIELDS = ("critic.hidden", "critic.norm_layers")
"""Fields the `optuna.arch` section builds itself (so `space` must not also search them)."""


# ============================================================================ search space
def _primitive(value: Any) -> bool:
    return value is None or isinstance(value, bool | int | float | str)


def _categorical(trial: Any, name: str, values: Sequence[Any]) -> Any:
    """suggest_categorical that also takes list values (Optuna stores them as JSON strings)."""
    values = [list(v) if isinstance(v, tuple) else v for v in values]
    if all(_primitive(v) for v in values):
        return trial.suggest_categorical(name, values)
    encoded = [json.dumps(v) for v in values]
    return values[encoded.index(trial.suggest_categorical(name, encoded))]


def _suggest(trial: Any, name: str, spec: SpaceSpec) -> Any:
    """One value from a sweep `space` domain, under the Optuna parameter `name`."""
    if spec.kind in ("grid", "choice"):
        return _categorical(trial, name, spec.values)
    assert spec.low is not None and spec.high is not None
    if spec.kind == "randint":  # Tune's randint excludes `high`; keep that meaning
        return trial.suggest_int(name, int(spec.low), int(spec.high) - 1)
    return trial.suggest_float(name, spec.low, spec.high, log=spec.kind == "loguniform")


@dataclass(frozen=True)
class StudySpace:
    """The define-by-run search space; called by OptunaSearch with one trial per Tune trial.

    Args:
        domains: the sweep's `space` (dotted field -> domain). Critic fields among them
            (critic.norm, critic.activation, critic.dropout, critic.norm_position) are the
            domains of the architecture choices; the rest are suggested as they are.
        arch: structure search (depth, widths, per-layer norm placement); None = plain domains.
        base_norm: the base critic's norm, used when `space` does not search critic.norm.

    Returns (when called): ``{"overrides/<dotted field>": value}``; Ray unflattens it into the
    trial config's ``overrides`` which :func:`seem_ray.tune.trial_config` applies.
    """

    domains: Mapping[str, SpaceSpec]
    arch: ArchSpaceConfig | None = None
    base_norm: str = "none"

    def __call__(self, trial: Any) -> dict[str, Any]:
        return {f"overrides/{key}": value for key, value in suggest_overrides(trial, self).items()}


def suggest_overrides(trial: Any, space: StudySpace) -> dict[str, Any]:
    """Sample one trial's dotted-field overrides (pure: only `trial.suggest_*` calls).

    Parameter names are the dotted fields where a field is searched directly, plus
    ``critic.depth``, ``critic.width`` / ``critic.width_l<i>`` and ``critic.norm_l<i>`` (bool:
    does hidden layer i get the norm) for the structure.
    """
    domains = dict(space.domains)
    out: dict[str, Any] = {}
    arch = space.arch
    if arch is not None:
        depth = trial.suggest_int("critic.depth", arch.depth[0], arch.depth[1])
        if arch.per_layer_width:
            hidden = [
                int(_categorical(trial, f"critic.width_l{i}", arch.widths)) for i in range(depth)
            ]
        else:
            hidden = [int(_categorical(trial, "critic.width", arch.widths))] * depth
        out["critic.hidden"] = hidden

    norm_spec = domains.pop("critic.norm", None)
    position_spec = domains.pop("critic.norm_position", None)
    layers_spec = domains.pop("critic.norm_layers", None)
    norm = _suggest(trial, "critic.norm", norm_spec) if norm_spec is not None else space.base_norm
    if norm_spec is not None:
        out["critic.norm"] = norm
    if arch is not None:
        layers: list[int] | None = None
        if norm != "none" and arch.per_layer_norm:
            layers = [
                i
                for i in range(len(out["critic.hidden"]))
                if trial.suggest_categorical(f"critic.norm_l{i}", [True, False])
            ]
            if not layers:  # a norm on no layer is the plain critic: say so in the config
                norm, layers = "none", None
                out["critic.norm"] = norm
        out["critic.norm_layers"] = layers
    elif layers_spec is not None and norm != "none":
        out["critic.norm_layers"] = _suggest(trial, "critic.norm_layers", layers_spec)
    if position_spec is not None and norm in FEATURE_NORMS:
        out["critic.norm_position"] = _suggest(trial, "critic.norm_position", position_spec)
    for key, spec in domains.items():
        out[key] = _suggest(trial, key, spec)
    return out


def build_space(sweep: SweepConfig) -> StudySpace:
    """The study's space from a sweep config; conflicting or unusable domains raise ConfigError."""
    arch = sweep.optuna.arch
    if arch is not None:
        for key in ARCH_FIELDS:
            if key in sweep.space:
                raise ConfigError(
                    f"space.{key}",
                    "searched by optuna.arch already; remove it from space (or drop optuna.arch)",
                )
        for width in arch.widths:  # the widths must make a valid critic with the base config
            apply_overrides(
                sweep.base, {"critic.hidden": [width] * arch.depth[1], "critic.norm_layers": None}
            )
    norm = sweep.space.get("critic.norm")
    if norm is not None and norm.kind not in ("grid", "choice"):
        raise ConfigError(
            "space.critic.norm", f"got {norm.kind}; expected a choice among {', '.join(NORMS)}"
        )
    return StudySpace(domains=dict(sweep.space), arch=arch, base_norm=sweep.base.critic.norm)


# ============================================================================ value policy
@dataclass(frozen=True)
class TrialStats:
    """What a trial has reported so far, reduced to what the objectives need."""

    steps: int = 0
    max_seem: float | None = None
    last: Mapping[str, float] = field(default_factory=dict)
    nonfinite: bool = False

    def add(self, result: Mapping[str, Any]) -> TrialStats:
        """Fold in one Tune result; a repeat of an already seen step changes nothing."""
        if M.STEP not in result:
            return self
        step = int(result[M.STEP])
        if step <= self.steps:
            return self
        last = dict(self.last)
        nonfinite = self.nonfinite
        max_seem = self.max_seem
        for _, key in OBJECTIVES.values():
            value = result.get(key)
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if not math.isfinite(value):
                nonfinite = True
                continue
            last[key] = float(value)
            if key == M.SEEM:
                max_seem = float(value) if max_seem is None else max(max_seem, float(value))
        q = result.get(M.Q_MEAN)
        if isinstance(q, float) and not math.isfinite(q):
            nonfinite = True
        return TrialStats(steps=step, max_seem=max_seem, last=last, nonfinite=nonfinite)

    def raw(self, objective: str) -> float | None:
        """The objective's measured value (None when never reported)."""
        if objective == "max_seem":
            return self.max_seem
        return self.last.get(OBJECTIVES[objective][1])


@dataclass(frozen=True)
class TrialOutcome:
    """What Optuna is told about a finished trial."""

    state: str
    """COMPLETE or FAIL."""
    values: tuple[float, ...] | None
    attrs: dict[str, Any]


def worst_value(objective: str, direction: str, observed: float | None) -> float:
    """A diverged trial's value: the configured worst, or its own value if that is even worse."""
    worst = WORST[objective]
    if observed is None or not math.isfinite(observed):
        return worst
    return min(observed, worst) if direction == "maximize" else max(observed, worst)


def trial_outcome(
    stats: TrialStats,
    stop_reason: str,
    objectives: Sequence[str],
    directions: Sequence[str],
    *,
    diverged_since: int | None = None,
) -> TrialOutcome:
    """Value policy: finished trials get their measured values, diverged ones the worst value.

    A trial stopped for divergence is COMPLETE (so the sampler learns to avoid its region) with
    values no better than :data:`WORST`; an errored, incomplete or unmeasured trial is FAIL.
    """
    attrs: dict[str, Any] = {M.STOP_REASON: stop_reason, "steps": stats.steps}
    if stats.max_seem is not None:
        attrs["max_seem"] = stats.max_seem
    for obj in objectives:
        raw = stats.raw(obj)
        if raw is not None:
            attrs[f"raw_{obj}"] = raw
    if diverged_since is not None:
        attrs[M.DIVERGED_SINCE] = int(diverged_since)
    if stop_reason in DIVERGED_REASONS:
        attrs[M.DIVERGED] = True
        values = tuple(
            worst_value(o, d, stats.raw(o)) for o, d in zip(objectives, directions, strict=True)
        )
        return TrialOutcome("COMPLETE", values, attrs)
    attrs[M.DIVERGED] = False
    if stop_reason != M.REASON_BUDGET:
        return TrialOutcome("FAIL", None, attrs)
    raw_values = [stats.raw(o) for o in objectives]
    if any(v is None for v in raw_values):
        attrs["missing"] = [o for o, v in zip(objectives, raw_values, strict=True) if v is None]
        return TrialOutcome("FAIL", None, attrs)
    return TrialOutcome("COMPLETE", tuple(float(v) for v in raw_values if v is not None), attrs)


def check_objectives(sweep: SweepConfig) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Objectives and directions of a study, checked against what the base run reports."""
    opt = sweep.optuna
    for obj, direction in zip(opt.objectives, opt.directions, strict=True):
        if obj not in OBJECTIVES:
            raise ConfigError(
                "optuna.objectives", f"got {obj!r}; expected one of {', '.join(OBJECTIVES)}"
            )
        if direction != OBJECTIVES[obj][0]:
            raise ConfigError(
                "optuna.directions", f"{obj} must be {OBJECTIVES[obj][0]}d, got {direction!r}"
            )
    if len(set(opt.objectives)) != len(opt.objectives):
        raise ConfigError("optuna.objectives", f"got {list(opt.objectives)}; each objective once")
    if "normalized_score" in opt.objectives and sweep.base.train.eval_episodes < 1:
        raise ConfigError(
            "base.train.eval_episodes", "must be >= 1 for the normalized_score objective"
        )
    if "max_seem" in opt.objectives and not sweep.base.seem.enabled:
        raise ConfigError("base.seem.enabled", "must be true for the max_seem objective")
    return opt.objectives, opt.directions


# ============================================================================ the searcher
def _stop_reason(stats: TrialStats, verdict: Any, error: bool, budget: int) -> str:
    if error:
        return ERROR
    if verdict is not None and verdict.diverging and verdict.reason:
        return str(verdict.reason)
    if stats.nonfinite:
        return M.REASON_NAN
    return M.REASON_BUDGET if stats.steps >= budget else INCOMPLETE


def _make_searcher_class() -> type:
    """StudySearch, built on first use so `seem-ray --help` does not import Ray Tune."""
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    from seem_ray.stopper import DivergenceStopper

    class StudySearch(OptunaSearch):
        """OptunaSearch that computes the objectives itself and records why each trial ended.

        Trials report every `log_every` steps but the score only at the end, and max SEEM is a
        running maximum: so values come from :class:`TrialStats`, the stop reason from a shadow
        DivergenceStopper fed the same results as Tune's, and :func:`trial_outcome` decides.
        """

        def __init__(
            self,
            space: StudySpace,
            *,
            study_name: str,
            storage: Any,
            objectives: Sequence[str],
            directions: Sequence[str],
            seed: int,
            stopper: StopperConfig,
            budget_steps: int,
        ) -> None:
            self.objectives = tuple(objectives)
            self.directions = tuple(directions)
            self.budget_steps = budget_steps
            self.shadow = DivergenceStopper(stopper)
            self.stats: dict[str, TrialStats] = {}
            multi = len(self.objectives) > 1
            modes = [d[:3] for d in self.directions]
            super().__init__(
                space=space,
                metric=list(self.objectives) if multi else self.objectives[0],
                mode=modes if multi else modes[0],
                sampler=optuna.samplers.TPESampler(seed=seed),
                study_name=study_name,
                storage=storage,
            )

        def suggest(self, trial_id: str) -> dict | None:
            config = super().suggest(trial_id)
            ot_trial = self._ot_trials[trial_id]
            ot_trial.set_user_attr("tune_trial_id", trial_id)
            if config and "overrides" in config:
                ot_trial.set_user_attr("overrides", config["overrides"])
            return config

        def _observe(self, trial_id: str, result: Mapping[str, Any]) -> None:
            before = self.stats.get(trial_id, TrialStats())
            after = before.add(result)
            if after is not before:  # each step once, as Tune's stopper sees it
                self.shadow(trial_id, dict(result))
            self.stats[trial_id] = after

        def on_trial_result(self, trial_id: str, result: dict) -> None:
            self._observe(trial_id, result)

        def on_trial_complete(
            self, trial_id: str, result: dict | None = None, error: bool = False
        ) -> None:
            if trial_id in self._completed_trials or trial_id not in self._ot_trials:
                return
            if result:
                self._observe(trial_id, result)
            stats = self.stats.pop(trial_id, TrialStats())
            verdict = self.shadow.verdicts.get(trial_id)
            reason = _stop_reason(stats, verdict, error, self.budget_steps)
            since = verdict.since if verdict is not None and verdict.diverging else None
            outcome = trial_outcome(
                stats, reason, self.objectives, self.directions, diverged_since=since
            )
            ot_trial = self._ot_trials[trial_id]
            try:
                for key, value in outcome.attrs.items():
                    ot_trial.set_user_attr(key, value)
                state = (
                    optuna.trial.TrialState.COMPLETE
                    if outcome.state == "COMPLETE"
                    else optuna.trial.TrialState.FAIL
                )
                values = list(outcome.values) if outcome.values is not None else None
                study: Any = self._ot_study
                study.tell(
                    ot_trial, values[0] if values and len(values) == 1 else values, state=state
                )
            except Exception as exc:  # a storage hiccup must not take the sweep down
                log.warning("could not record trial %s in the study: %s", trial_id, exc)
            log.info("study trial %s: %s %s", trial_id, reason, outcome.values)
            self._completed_trials.add(trial_id)

    StudySearch.__qualname__ = "StudySearch"
    StudySearch.__module__ = __name__
    return StudySearch


def __getattr__(name: str) -> Any:
    # Pickle finds the searcher class by name when Tune saves/restores its state.
    if name == "StudySearch":
        cls = _make_searcher_class()
        globals()["StudySearch"] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ============================================================================ storage
def default_storage_url() -> str:
    """sqlite file under the runs folder, shared by all studies (so they can be compared)."""
    path = runs_dir() / "studies" / "optuna.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def resolve_storage_url(url: str | None) -> str:
    """Given URL (any SQLAlchemy URL), else $SEEM_RAY_STUDY_STORAGE, else the default sqlite file.

    Relative sqlite paths are made absolute (Ray processes run in other folders).
    """
    url = url or os.environ.get("SEEM_RAY_STUDY_STORAGE") or default_storage_url()
    if url.startswith("sqlite:"):
        if not url.startswith("sqlite:///") or url in ("sqlite:///", "sqlite:///:memory:"):
            raise ConfigError(
                "storage", f"got {url!r}; an in-memory study does not persist, use sqlite:///FILE"
            )
        path = Path(url[len("sqlite:///") :]).expanduser()
        path = path if path.is_absolute() else path.resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"
    if "://" not in url:
        raise ConfigError(
            "storage", f"got {url!r}; expected an SQLAlchemy URL, e.g. sqlite:///studies.db"
        )
    return url


def redact(url: str) -> str:
    """The URL without its password (for logs and printed hints)."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not at or ":" not in creds:
        return url
    return f"{scheme}{sep}{creds.split(':', 1)[0]}:***@{host}"


def open_storage(url: str) -> Any:
    """An RDBStorage; sqlite waits on locks (a report may read while a study writes)."""
    import optuna

    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None
    for attempt in range(3):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
        except Exception as exc:
            # Two processes creating a fresh database race on its tables: the loser retries.
            if attempt < 2 and "already exists" in str(exc):
                time.sleep(0.5 * (attempt + 1))
                continue
            first = str(exc).splitlines()[0]
            raise ConfigError("storage", f"cannot open {redact(url)}: {first}") from None
    raise AssertionError("unreachable")


def _load_study(storage: Any, name: str) -> Any | None:
    import optuna

    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return None


def load_study(name: str, storage_url: str | None = None) -> Any:
    """An existing study, or a ConfigError listing the studies the storage has."""
    import optuna

    url = resolve_storage_url(storage_url)
    storage = open_storage(url)
    study = _load_study(storage, name)
    if study is None:
        names = optuna.get_all_study_names(storage)
        raise ConfigError(
            "", f"no study named {name!r} in {redact(url)} (studies: {', '.join(names) or 'none'})"
        )
    return study


def _counts_toward_budget(trial: Any) -> bool:
    """Finished trials count; those a killed driver left behind are run again."""
    import optuna

    if trial.state == optuna.trial.TrialState.COMPLETE:
        return True
    return (
        trial.state == optuna.trial.TrialState.FAIL
        and trial.user_attrs.get(M.STOP_REASON) != KILLED
    )


def fail_unfinished(storage: Any, name: str) -> list[int]:
    """Mark RUNNING/WAITING trials of a study FAIL with stop_reason 'killed'; their numbers."""
    import optuna

    study_id = storage.get_study_id_from_name(name)
    states = (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)
    numbers = []
    for trial in storage.get_all_trials(study_id, deepcopy=False, states=states):
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        storage.set_trial_user_attr(trial_id, M.STOP_REASON, KILLED)
        storage.set_trial_state_values(trial_id, optuna.trial.TrialState.FAIL)
        numbers.append(trial.number)
    return numbers


# ============================================================================ running a study
@dataclass(frozen=True)
class StudyPlan:
    """One `seem-ray study` invocation, decided before Ray starts."""

    study_name: str
    storage_url: str
    sweep: SweepConfig
    """The Tune sweep to run now: name = this part's experiment, num_samples = what is left."""
    budget: int
    done: int
    killed: tuple[int, ...]
    objectives: tuple[str, ...]
    directions: tuple[str, ...]
    space: StudySpace
    tune_root: Path
    sampler_seed: int

    @property
    def remaining(self) -> int:
        return max(0, self.budget - self.done)


def study_dir(name: str) -> Path:
    return runs_dir() / "studies" / name


def prepare_study(
    sweep: SweepConfig, *, storage_url: str | None = None, resume: bool = False
) -> StudyPlan:
    """Validate a study, create or reopen it in storage, and plan what is left of its budget.

    Args:
        sweep: the study YAML as a SweepConfig (search must be 'optuna').
        storage_url: SQLAlchemy URL; None = `optuna.storage` from the config, else the default.
        resume: continue an existing study (after a crash or kill): unfinished trials -> FAIL.
    """
    import optuna

    if sweep.search != "optuna":
        raise ConfigError("search", f"got {sweep.search!r}; a study needs search: optuna")
    objectives, directions = check_objectives(sweep)
    space = build_space(sweep)
    name = sweep.optuna.study_name or sweep.name
    url = resolve_storage_url(storage_url or sweep.optuna.storage)
    storage = open_storage(url)
    study = _load_study(storage, name)
    killed: list[int] = []
    if study is None:
        if resume:
            raise ConfigError("", f"nothing to resume: no study named {name!r} in {redact(url)}")
        dirs: list[Any] = list(directions)
        study = optuna.create_study(study_name=name, storage=storage, directions=dirs)
        study.set_user_attr("objectives", list(objectives))
        study.set_user_attr("budget", sweep.num_samples)
        study.set_user_attr("experiment", sweep.base.tracking.experiment)
        study.set_user_attr("sweeps", [])
    else:
        if not resume:
            raise ConfigError(
                "name",
                f"a study named {name!r} already exists in {redact(url)}; pass --resume or choose another name",
            )
        existing = [d.name.lower() for d in study.directions]
        if existing != list(directions) or study.user_attrs.get(
            "objectives", list(objectives)
        ) != list(objectives):
            raise ConfigError(
                "optuna.objectives",
                f"study {name!r} optimises {study.user_attrs.get('objectives')} ({existing}); the config says "
                f"{list(objectives)} ({list(directions)})",
            )
        killed = fail_unfinished(storage, name)
        if killed:
            log.warning(
                "study %s: trials %s were left unfinished by a killed run; marked FAIL (killed)",
                name,
                killed,
            )
        study.set_user_attr("budget", sweep.num_samples)
    trials = study.get_trials(deepcopy=False)
    done = sum(_counts_toward_budget(t) for t in trials)
    tune_root = study_dir(name) / "tune"
    k = len(study.user_attrs.get("sweeps", []))
    part_name = name if k == 0 else f"{name}-resume{k}"
    while (tune_root / part_name).exists():  # a folder from a run killed before it was recorded
        k += 1
        part_name = f"{name}-resume{k}"
    part = replace(sweep, name=part_name, num_samples=max(1, sweep.num_samples - done))
    return StudyPlan(
        study_name=name,
        storage_url=url,
        sweep=part,
        budget=sweep.num_samples,
        done=done,
        killed=tuple(killed),
        objectives=objectives,
        directions=directions,
        space=space,
        tune_root=tune_root,
        # a restarted sampler with the old seed would replay the old random start-up points
        sampler_seed=sweep.optuna.sampler_seed + len(trials),
    )


def _close_killed_mlflow_runs(experiment: str, sweeps: Sequence[str]) -> None:
    """Parent/child MLflow runs of earlier parts still RUNNING (driver killed) -> KILLED."""
    if not sweeps:
        return
    try:
        from seem_ray.tracking import _client, resolve_tracking_uri

        client = _client(resolve_tracking_uri(None))
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            return
        for sweep_name in sweeps:
            runs = client.search_runs(
                [exp.experiment_id],
                filter_string=f"tags.`seem_ray.sweep` = '{sweep_name}' and attributes.status = 'RUNNING'",
            )
            for run in runs:
                client.set_terminated(run.info.run_id, status="KILLED")
    except Exception as exc:  # tracking is a convenience here, not a reason to refuse resuming
        log.warning("could not close MLflow runs of the killed study run: %s", exc)


@dataclass(frozen=True)
class StudyRun:
    """What `run_study` did."""

    study_name: str
    storage_url: str
    ran: int
    sweep_summary: Any


def run_study(plan: StudyPlan, *, quiet: bool = False) -> StudyRun:
    """Run the planned part of a study through Ray Tune (Ray must be initialised)."""
    from seem_ray.tune import run_sweep

    storage = open_storage(plan.storage_url)
    study = _load_study(storage, plan.study_name)
    assert study is not None, "prepare_study creates the study"
    sweeps = list(study.user_attrs.get("sweeps", []))
    _close_killed_mlflow_runs(plan.sweep.base.tracking.experiment, sweeps)
    if plan.remaining == 0:
        log.info("study %s already has its %d trials", plan.study_name, plan.budget)
        return StudyRun(plan.study_name, plan.storage_url, 0, None)
    study.set_user_attr("sweeps", [*sweeps, plan.sweep.name])
    cls = globals().get("StudySearch") or __getattr__("StudySearch")
    searcher = cls(
        plan.space,
        study_name=plan.study_name,
        storage=storage,
        objectives=plan.objectives,
        directions=plan.directions,
        seed=plan.sampler_seed,
        stopper=plan.sweep.base.stopper,
        budget_steps=plan.sweep.base.train.steps,
    )
    # The objectives are computed by StudySearch from all results, not read from each report.
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    log.info(
        "study %s: running %d of %d trials as Tune experiment %s (storage %s)",
        plan.study_name,
        plan.remaining,
        plan.budget,
        plan.sweep.name,
        redact(plan.storage_url),
    )
    summary = run_sweep(
        replace(plan.sweep, num_samples=plan.remaining),
        storage=plan.tune_root,
        searcher=searcher,
        quiet=quiet,
    )
    _check_reasons(study, summary)
    return StudyRun(plan.study_name, plan.storage_url, plan.remaining, summary)


def _check_reasons(study: Any, summary: Any) -> None:
    """Warn when the study's stop reason differs from the one the sweep's stopper recorded."""
    by_tune_id = {t.user_attrs.get("tune_trial_id"): t for t in study.get_trials(deepcopy=False)}
    for row in summary.rows:
        trial = by_tune_id.get(row["trial_id"])
        if trial is None:
            continue
        mine = trial.user_attrs.get(M.STOP_REASON)
        if mine != row["stop_reason"] and row["stop_reason"] != ERROR:
            log.warning(
                "trial %s: study says %s, sweep stopper %s",
                row["trial_id"],
                mine,
                row["stop_reason"],
            )


# ============================================================================ reports
@dataclass(frozen=True)
class StudyReport:
    """Files and text a study report produced."""

    study_name: str
    out_dir: Path
    files: tuple[Path, ...]
    text: str
    importances: dict[str, dict[str, float]]
    mlflow_run_id: str | None


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _objectives_of(study: Any) -> list[str]:
    names = study.user_attrs.get("objectives")
    if names and len(names) == len(study.directions):
        return list(names)
    return [f"objective_{i}" for i in range(len(study.directions))]


def best_trials_table(study: Any) -> str:
    """Best trial (single objective) or the Pareto front (several), one row each."""
    import optuna

    objectives = _objectives_of(study)
    multi = len(objectives) > 1
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        return f"study {study.study_name}: no complete trials"
    best = study.best_trials if multi else [study.best_trial]
    head = (
        f"{'#':>4}  "
        + "".join(f"{o:>18}" for o in objectives)
        + f"{'stop':>9}{'steps':>7}{'max SEEM':>10}  params"
    )
    lines = [
        f"study {study.study_name}: " + ("Pareto front" if multi else "best trial"),
        head,
        "-" * len(head),
    ]
    for t in sorted(best, key=lambda t: t.number):
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(t.params.items()))
        seem = t.user_attrs.get("max_seem")
        lines.append(
            f"{t.number:>4}  "
            + "".join(f"{_fmt(v):>18}" for v in t.values)
            + f"{t.user_attrs.get(M.STOP_REASON, '?'):>9}{t.user_attrs.get('steps', '?')!s:>7}"
            + f"{(f'{seem:.3f}' if isinstance(seem, float) else '-'):>10}  {params}"
        )
    return "\n".join(lines)


def _save(ax: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    axes = ax.flatten() if hasattr(ax, "flatten") else [ax]
    fig = axes[0].figure
    fig.set_size_inches(max(fig.get_size_inches()[0], 7), max(fig.get_size_inches()[1], 4.5))
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _find_parent_run(study: Any) -> tuple[Any, str] | None:
    """(client, run id) of the MLflow parent run of the study's first sweep, if any."""
    from seem_ray.tracking import _client, resolve_tracking_uri

    sweeps = study.user_attrs.get("sweeps") or [study.study_name]
    client = _client(resolve_tracking_uri(None))
    exp = client.get_experiment_by_name(study.user_attrs.get("experiment", ""))
    if exp is None:
        return None
    for name in sweeps:
        runs = client.search_runs(
            [exp.experiment_id],
            filter_string=f"tags.`seem_ray.kind` = 'sweep' and tags.`seem_ray.sweep` = '{name}'",
            order_by=["attributes.start_time ASC"],
        )
        if runs:
            return client, runs[0].info.run_id
    return None


def write_report(
    name: str, *, storage_url: str | None = None, out: Path | None = None, mlflow: bool = True
) -> StudyReport:
    """Best trials, parameter importances and PNG plots of a study; logged to its MLflow parent run.

    Args:
        name: the study.
        storage_url: where it lives (default as for `seem-ray study`).
        out: output folder (default <runs>/studies/<name>/report).
        mlflow: also log the files to the MLflow parent run of the study's sweep, if found.
    """
    import matplotlib

    matplotlib.use("Agg")
    import optuna
    from optuna.visualization import matplotlib as ovm

    study = load_study(name, storage_url)
    out = Path(out) if out is not None else study_dir(name) / "report"
    out.mkdir(parents=True, exist_ok=True)
    objectives = _objectives_of(study)
    multi = len(objectives) > 1
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    files: list[Path] = []
    importances: dict[str, dict[str, float]] = {}
    # fANOVA: direction-agnostic and seeded (Optuna's default evaluator assumes minimisation).
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for i, obj in enumerate(objectives):
            target = (lambda t, i=i: t.values[i]) if multi else None
            if complete:
                files.append(
                    _save(
                        ovm.plot_optimization_history(study, target=target, target_name=obj),
                        out / f"history_{obj}.png",
                    )
                )
            try:
                imp = optuna.importance.get_param_importances(
                    study, evaluator=evaluator, target=target
                )
            except (RuntimeError, ValueError) as exc:  # too few trials, or no common parameters
                log.warning("no importances for %s: %s", obj, exc)
                continue
            importances[obj] = {k: float(v) for k, v in imp.items()}
            if imp:
                files.append(
                    _save(
                        ovm.plot_param_importances(
                            study, evaluator=evaluator, target=target, target_name=obj
                        ),
                        out / f"importances_{obj}.png",
                    )
                )
        if multi and complete:
            files.append(
                _save(
                    ovm.plot_pareto_front(study, target_names=objectives), out / "pareto_front.png"
                )
            )
    text = best_trials_table(study)
    if importances:
        lines = ["parameter importances (fANOVA):"]
        for obj, imp in importances.items():
            lines.append(f"  {obj}: " + ", ".join(f"{k} {v:.2f}" for k, v in imp.items()))
        text += "\n" + "\n".join(lines)
    body = {
        "study": name,
        "objectives": objectives,
        "directions": [d.name.lower() for d in study.directions],
        "trials": len(trials),
        "states": {s.name: sum(t.state == s for t in trials) for s in optuna.trial.TrialState},
        "best": [
            {"number": t.number, "values": t.values, "params": t.params, "attrs": t.user_attrs}
            for t in (study.best_trials if multi else [study.best_trial] if complete else [])
        ],
        "importances": importances,
    }
    files.append(
        atomic_write_text(out / "report.json", json.dumps(body, indent=2, default=str) + "\n")
    )
    rows = [
        {
            "number": t.number,
            "state": t.state.name,
            **{f"value_{o}": (t.values[i] if t.values else None) for i, o in enumerate(objectives)},
            **{f"param_{k}": v for k, v in t.params.items()},
            **{f"attr_{k}": v for k, v in t.user_attrs.items() if k != "overrides"},
        }
        for t in trials
    ]
    files.append(
        atomic_write_text(out / "trials.json", json.dumps(rows, indent=2, default=str) + "\n")
    )
    atomic_write_text(out / "best_trials.txt", text + "\n")
    files.append(out / "best_trials.txt")
    run_id = None
    if mlflow:
        try:
            found = _find_parent_run(study)
            if found is not None:
                client, run_id = found
                for f in files:
                    client.log_artifact(run_id, str(f), artifact_path="study_report")
            else:
                log.info("no MLflow parent run found for study %s; report not logged", name)
        except Exception as exc:
            log.warning("could not log the report to MLflow: %s", exc)
            run_id = None
    return StudyReport(name, out, tuple(files), text, importances, run_id)


def compare_studies(names: Sequence[str], storage_url: str | None = None) -> str:
    """A table comparing studies: trials, divergence rate, median max SEEM, best healthy values."""
    import optuna

    head = f"{'study':<26}{'trials':>7}{'diverged':>9}{'rate':>7}{'med max SEEM':>14}{'med steps':>10}  best (healthy)"
    lines = [head, "-" * len(head)]
    for name in names:
        study = load_study(name, storage_url)
        objectives = _objectives_of(study)
        done = study.get_trials(
            deepcopy=False, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL)
        )
        done = [t for t in done if t.user_attrs.get(M.STOP_REASON) != KILLED]
        diverged = [t for t in done if t.user_attrs.get(M.STOP_REASON) in DIVERGED_REASONS]
        healthy = [
            t
            for t in done
            if t.state == optuna.trial.TrialState.COMPLETE
            and t.user_attrs.get(M.STOP_REASON) == M.REASON_BUDGET
        ]
        seems = [
            float(t.user_attrs["max_seem"])
            for t in done
            if isinstance(t.user_attrs.get("max_seem"), float)
        ]
        steps = [
            int(t.user_attrs["steps"]) for t in done if isinstance(t.user_attrs.get("steps"), int)
        ]
        best = []
        for i, (obj, direction) in enumerate(zip(objectives, study.directions, strict=True)):
            vals = [t.values[i] for t in healthy]
            if vals:
                pick = max(vals) if direction == optuna.study.StudyDirection.MAXIMIZE else min(vals)
                best.append(f"{obj}={pick:.4g}")
        rate = 100.0 * len(diverged) / len(done) if done else 0.0
        lines.append(
            f"{name:<26}{len(done):>7}{len(diverged):>9}{rate:>6.0f}%"
            f"{(f'{statistics.median(seems):.4f}' if seems else '-'):>14}"
            f"{(f'{statistics.median(steps):.0f}' if steps else '-'):>10}  {', '.join(best) or '-'}"
        )
    return "\n".join(lines)


def dashboard_hint(url: str) -> str:
    return f"browse it with optuna-dashboard: pip install optuna-dashboard && optuna-dashboard {redact(url)}"


# ============================================================================ CLI
def _cmd_study(args: argparse.Namespace) -> int:
    if args.target == "report":
        if len(args.names) != 1:
            raise ConfigError("", "usage: seem-ray study report NAME [--storage URL] [--out DIR]")
        report = write_report(
            args.names[0],
            storage_url=args.storage,
            out=Path(args.out) if args.out else None,
            mlflow=not args.no_mlflow,
        )
        print(report.text)
        print(
            f"report: {report.out_dir}"
            + (f" (MLflow run {report.mlflow_run_id})" if report.mlflow_run_id else "")
        )
        return 0
    if args.target == "compare":
        if len(args.names) < 2:
            raise ConfigError(
                "", "usage: seem-ray study compare NAME_A NAME_B [...] [--storage URL]"
            )
        print(compare_studies(args.names, args.storage))
        return 0
    if args.names:
        raise ConfigError(
            "", f"unexpected arguments {args.names}; usage: seem-ray study CONFIG [--resume] [...]"
        )
    overrides = parse_set_expressions(args.set)
    if args.name:
        overrides["name"] = args.name
        overrides["optuna.study_name"] = args.name
    sweep = load_sweep_config(args.target, overrides)
    plan = prepare_study(sweep, storage_url=args.storage, resume=args.resume)
    if plan.remaining > 0:
        from seem_ray.tune import init_ray

        init_ray(args.address)
    run = run_study(plan, quiet=args.quiet)
    if run.sweep_summary is not None:
        print(run.sweep_summary.table())
    study = load_study(plan.study_name, plan.storage_url)
    print(best_trials_table(study))
    print(
        f"study {plan.study_name}: {sum(_counts_toward_budget(t) for t in study.trials)}/{plan.budget} trials done"
    )
    print(dashboard_hint(plan.storage_url))
    return 0


def register(sub: Any) -> None:
    """Add `seem-ray study` (run CONFIG | report NAME | compare A B) to the CLI's subparsers."""
    p = sub.add_parser(
        "study",
        help="persistent Optuna study over critic architectures (CONFIG | report NAME | compare A B)",
        usage=(
            "seem-ray study CONFIG [--set K=V] [--name N] [--storage URL] [--resume] [--address A] [--quiet]\n"
            "       seem-ray study report NAME [--storage URL] [--out DIR] [--no-mlflow]\n"
            "       seem-ray study compare NAME_A NAME_B [...] [--storage URL]"
        ),
    )
    p.add_argument("target", help="study YAML (tune_configs/study_*.yaml), or 'report' / 'compare'")
    p.add_argument("names", nargs="*", help="study name(s) for report / compare")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a sweep field"
    )
    p.add_argument(
        "--name", help="study (and sweep) name; default: optuna.study_name or the sweep name"
    )
    p.add_argument("--storage", help="SQLAlchemy URL (default: sqlite:///<runs>/studies/optuna.db)")
    p.add_argument("--resume", action="store_true", help="continue the study (also after kill -9)")
    p.add_argument("--address", default=None, help="Ray address (auto/local/host:port)")
    p.add_argument("--quiet", action="store_true", help="no live Tune table")
    p.add_argument("--out", help="report folder (default: <runs>/studies/NAME/report)")
    p.add_argument("--no-mlflow", action="store_true", help="report: do not log to MLflow")
    p.set_defaults(func=_cmd_study)


if __name__ == "__main__":  # pragma: no cover - `python -m seem_ray.study` mirrors `seem-ray study`
    from seem_ray.cli import main

    sys.exit(main(["study", *sys.argv[1:]]))
