"""Config loader: strict keys, types and ranges, dotted error names, sweeps, every shipped YAML."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from seem_ray.config import (
    ConfigError,
    RunConfig,
    SeemConfig,
    SweepConfig,
    apply_overrides,
    flatten,
    from_dict,
    load_run_config,
    load_sweep_config,
    parse_run_config,
    parse_set_expressions,
    to_dict,
)

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_round_trip_through_yaml() -> None:
    cfg = RunConfig()
    again = parse_run_config(yaml.safe_load(yaml.safe_dump(to_dict(cfg))))
    assert again == cfg


@pytest.mark.parametrize(
    ("data", "field", "hint"),
    [
        ({"algo": {"gama": 0.9}}, "algo.gama", "did you mean 'gamma'"),
        ({"critc": {}}, "critc", "did you mean 'critic'"),
        ({"algo": {"gamma": 1.2}}, "algo.gamma", "allow_gamma_above_one"),
        ({"algo": {"critic_lr": -1e-3}}, "algo.critic_lr", "> 0"),
        ({"seem": {"probe_size": 0}}, "seem.probe_size", "2..20000"),
        ({"critic": {"norm": "lyer"}}, "critic.norm", "layer"),
        ({"critic": {"hidden": [64, 0]}}, "critic.hidden[1]", ">= 1"),
        ({"critic": {"norm_layers": [3]}}, "critic.norm_layers", "0..1"),
        ({"train": {"steps": "many"}}, "train.steps", "integer"),
        ({"train": {"bf16": "yes"}}, "train.bf16", "true or false"),
        ({"algo": {"td3bc": {"bc_weight": -1}}}, "algo.td3bc.bc_weight", ">= 0"),
        ({"scaling": {"num_workers": 0}}, "scaling.num_workers", ">= 1"),
        ({"seem": {"head": 5}}, "seem.head", "algo.ensemble"),
        ({"seem": {"startup_every": -1}}, "seem.startup_every", ">= 0"),
        ({"algo": {"gamma": float("nan")}}, "algo.gamma", "finite"),
    ],
)
def test_bad_values_name_their_dotted_field(data: dict, field: str, hint: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_run_config(data)
    msg = str(info.value)
    assert info.value.field == field
    assert hint in msg
    assert "\n" not in msg


def test_gamma_above_one_needs_explicit_flag() -> None:
    cfg = parse_run_config({"algo": {"gamma": 1.1, "allow_gamma_above_one": True}})
    assert cfg.algo.gamma == pytest.approx(1.1)


def test_overrides_and_set_expressions() -> None:
    sets = parse_set_expressions(["algo.gamma=0.9", "critic.hidden=[64, 32]", "critic.norm=layer"])
    cfg = apply_overrides(RunConfig(), sets)
    assert cfg.algo.gamma == 0.9 and cfg.critic.hidden == (64, 32) and cfg.critic.norm == "layer"
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_set_expressions(["algo.gamma"])
    with pytest.raises(ConfigError, match="did you mean 'gamma'"):
        apply_overrides(RunConfig(), {"algo.gamm": 0.5})


def test_flatten_names_every_leaf() -> None:
    flat = flatten(RunConfig())
    assert flat["algo.td3bc.bc_weight"] == 1.0
    assert flat["critic.hidden"] == [256, 256]


def test_yaml_errors_are_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("algo: {gamma: [0.9\n")
    with pytest.raises(ConfigError, match="malformed YAML") as info:
        load_run_config(bad)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="not found"):
        load_run_config(tmp_path / "missing.yaml")
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_run_config(listy)


def test_sweep_space_is_validated_against_the_base() -> None:
    with pytest.raises(ConfigError, match="space.critic.norm"):
        from_dict(SweepConfig, {"space": {"critic.norm": {"grid": ["none", "bogus"]}}})
    with pytest.raises(ConfigError, match="space.critic.nrm"):
        from_dict(SweepConfig, {"space": {"critic.nrm": {"grid": ["none"]}}})
    with pytest.raises(ConfigError, match="at least one searched field"):
        from_dict(SweepConfig, {"space": {}})
    with pytest.raises(ConfigError, match="search: random or optuna"):
        from_dict(SweepConfig, {"space": {"algo.critic_lr": {"loguniform": [1e-4, 1e-3]}}})
    with pytest.raises(ConfigError, match="low > 0"):
        from_dict(
            SweepConfig, {"search": "random", "space": {"algo.critic_lr": {"loguniform": [0, 1]}}}
        )


@pytest.mark.parametrize(
    "path", sorted((ROOT / "tune_configs").glob("*.yaml")), ids=lambda p: p.name
)
def test_every_shipped_sweep_loads(path: Path) -> None:
    sweep = load_sweep_config(path)
    assert sweep.space and sweep.name


def test_demo_yaml_matches_embedded_default() -> None:
    from seem_ray.tune import DEFAULT_SWEEP

    shipped = load_sweep_config(ROOT / "tune_configs" / "demo.yaml")
    assert shipped == from_dict(SweepConfig, DEFAULT_SWEEP)


_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=True), st.text(max_size=5)
)


@settings(max_examples=150, deadline=None)
@given(
    section=st.sampled_from(["algo", "critic", "seem", "train", "data", "stopper", "scaling"]),
    key=st.text(min_size=1, max_size=12),
    value=_scalars,
)
def test_loader_never_crashes_with_anything_but_config_error(
    section: str, key: str, value: object
) -> None:
    """Property: arbitrary keys/values either load into a valid config or raise ConfigError."""
    try:
        cfg = parse_run_config({section: {key: value}})
    except ConfigError as err:
        assert "\n" not in str(err)
    else:
        assert isinstance(cfg, RunConfig)


def test_dense_phases_cover_their_steps_then_hand_over() -> None:
    sc = SeemConfig(
        every=1000, startup_every=25, startup_until=100, early_every=100, early_until=400
    )
    naive = {s for s in range(1, 2001) if (s <= 100 and s % 25 == 0) or (s <= 400 and s % 100 == 0)}
    assert {s for s in range(0, 2001) if sc.dense_due(s)} == naive
    off = SeemConfig(startup_every=0, early_every=0)
    assert not any(off.dense_due(s) for s in range(0, 3000))
    probes = [s for s in range(0, 3001) if sc.probe_due(s)]
    assert probes == sorted(naive | {1000, 2000, 3000}) and not sc.probe_due(0)
