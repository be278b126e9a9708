"""The study's define-by-run search space: depth -> widths -> norm kind -> which layers get it.

Flow position: study YAML (``space`` + ``optuna.arch``) -> **StudySpace** -> called by Ray's
OptunaSearch once per trial -> ``overrides/<dotted field>`` for :func:`seem_ray.tune.trial_config`.
Pure: it only calls ``trial.suggest_*``, so it is tested with a plain Optuna trial.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from seem_ray.config import (
    NORMS,
    ArchSpaceConfig,
    ConfigError,
    SpaceSpec,
    SweepConfig,
    apply_overrides,
)

__all__ = ["ARCH_FIELDS", "FEATURE_NORMS", "StudySpace", "build_space", "suggest_overrides"]

FEATURE_NORMS = ("layer", "rms", "batch")
"""Norms with a placement choice (before/after the activation); the others wrap the weights."""
ARCH_FIELDS = ("critic.hidden", "critic.norm_layers")
"""Fields the `optuna.arch` section builds itself (so `space` must not also search them)."""


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
    low, high = spec.bounds()
    if spec.kind == "randint":  # Tune's randint excludes `high`; keep that meaning
        return trial.suggest_int(name, int(low), int(high) - 1)
    return trial.suggest_float(name, low, high, log=spec.kind == "loguniform")


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
