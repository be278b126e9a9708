"""Optuna studies: the define-by-run space, the value policy, storage/resume rules, reports,
and (marked ray + slow) a study run from the CLI that is killed with SIGKILL and resumed."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from seem_ray import metrics as M
from seem_ray.config import (
    ArchSpaceConfig,
    ConfigError,
    SpaceSpec,
    SweepConfig,
    apply_overrides,
    from_dict,
    load_sweep_config,
    to_dict,
)
from seem_ray.study import (
    KILLED,
    WORST,
    StudySpace,
    TrialStats,
    build_space,
    compare_studies,
    prepare_study,
    redact,
    resolve_storage_url,
    suggest_overrides,
    trial_outcome,
    worst_value,
    write_report,
)

ROOT = Path(__file__).resolve().parents[2]
STUDY_ARCH = ROOT / "tune_configs" / "study_arch.yaml"
STUDY_NO_LN = ROOT / "tune_configs" / "study_arch_no_ln.yaml"

optuna.logging.set_verbosity(logging.WARNING)


def _sweep(**changes: Any) -> SweepConfig:
    data = yaml.safe_load(STUDY_ARCH.read_text())
    for dotted, value in changes.items():
        if dotted.startswith("space."):  # space keys are dotted fields themselves
            data["space"][dotted.removeprefix("space.")] = value
            continue
        node = data
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        if value is None and last in node:
            del node[last]
        else:
            node[last] = value
    return from_dict(SweepConfig, data)


# ------------------------------------------------------------------------------- search space
def test_fixed_trial_builds_the_conditional_architecture() -> None:
    space = build_space(load_sweep_config(STUDY_ARCH))
    params = {
        "critic.depth": 3,
        "critic.width": 128,
        "critic.norm": "layer",
        "critic.norm_l0": False,
        "critic.norm_l1": True,
        "critic.norm_l2": True,
        "critic.norm_position": "after_act",
        "critic.activation": "mish",
        "critic.dropout": 0.1,
        "algo.ensemble": 4,
        "algo.critic_lr": 3e-4,
        "algo.batch_size": 128,
    }
    out = suggest_overrides(optuna.trial.FixedTrial(params), space)
    assert out["critic.hidden"] == [128, 128, 128]
    assert out["critic.norm"] == "layer" and out["critic.norm_layers"] == [1, 2]
    assert out["critic.norm_position"] == "after_act"
    assert out["algo.ensemble"] == 4 and out["algo.critic_lr"] == pytest.approx(3e-4)
    cfg = apply_overrides(load_sweep_config(STUDY_ARCH).base, out)
    assert cfg.critic.normed_layers() == (1, 2) and cfg.critic.hidden == (128, 128, 128)
    # The callable OptunaSearch sees nests everything under the trial config's "overrides".
    nested = space(optuna.trial.FixedTrial(params))
    assert set(nested) == {f"overrides/{k}" for k in out}


def test_fixed_trial_norm_on_no_layer_is_the_plain_critic() -> None:
    space = build_space(load_sweep_config(STUDY_ARCH))
    params = {
        "critic.depth": 2,
        "critic.width": 64,
        "critic.norm": "layer",
        "critic.norm_l0": False,
        "critic.norm_l1": False,
        "critic.norm_position": "before_act",
        "critic.activation": "relu",
        "critic.dropout": 0.0,
        "algo.ensemble": 2,
        "algo.critic_lr": 1e-3,
        "algo.batch_size": 256,
    }
    out = suggest_overrides(optuna.trial.FixedTrial(params), space)
    assert out["critic.norm"] == "none" and out["critic.norm_layers"] is None
    assert "critic.norm_position" not in out


@pytest.mark.parametrize("per_layer_width", [False, True])
def test_sampled_trials_are_valid_configs_within_their_domains(per_layer_width: bool) -> None:
    sweep = _sweep(**{"optuna.arch.per_layer_width": per_layer_width})
    space = build_space(sweep)
    arch = sweep.optuna.arch
    assert arch is not None
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    seen_norms, seen_depths = set(), set()
    for _ in range(60):
        trial = study.ask()
        out = suggest_overrides(trial, space)
        cfg = apply_overrides(sweep.base, out)  # raises on any invalid combination
        depth = trial.params["critic.depth"]
        seen_depths.add(depth)
        assert arch.depth[0] <= depth <= arch.depth[1] and len(cfg.critic.hidden) == depth
        assert set(cfg.critic.hidden) <= set(arch.widths)
        width_params = [k for k in trial.params if k.startswith("critic.width")]
        assert len(width_params) == (depth if per_layer_width else 1)
        norm_flags = [k for k in trial.params if k.startswith("critic.norm_l")]
        if trial.params["critic.norm"] == "none":
            assert norm_flags == [] and "critic.norm_position" not in trial.params
            assert cfg.critic.normed_layers() == ()
        else:  # one flag per layer; the config carries exactly the flagged layers
            assert len(norm_flags) == depth
            flagged = tuple(i for i in range(depth) if trial.params[f"critic.norm_l{i}"])
            assert cfg.critic.normed_layers() == flagged
        seen_norms.add(cfg.critic.norm)
        assert 1e-4 <= cfg.algo.critic_lr <= 1e-3
        assert 2 <= cfg.algo.ensemble <= 4  # randint [2, 5) as in Tune
        study.tell(trial, 0.0)
    assert seen_norms == {"none", "layer"} and seen_depths == set(
        range(arch.depth[0], arch.depth[1] + 1)
    )


def test_the_two_shipped_studies_differ_only_in_layernorm() -> None:
    with_ln, without = load_sweep_config(STUDY_ARCH), load_sweep_config(STUDY_NO_LN)
    assert with_ln.name != without.name
    assert "layer" in with_ln.space["critic.norm"].values
    assert "layer" not in without.space["critic.norm"].values

    def rest(sweep: SweepConfig) -> dict[str, Any]:
        plain = to_dict(sweep)
        del plain["name"], plain["space"]["critic.norm"]
        return plain

    assert rest(with_ln) == rest(without)
    space = build_space(without)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(30):
        trial = study.ask()
        assert suggest_overrides(trial, space)["critic.norm"] != "layer"
        study.tell(trial, 0.0)


def test_plain_domains_without_arch_section_and_list_choices() -> None:
    space = StudySpace(
        domains={
            "critic.hidden": SpaceSpec("choice", values=((32, 32), (64,))),
            "critic.norm": SpaceSpec("choice", values=("none", "rms")),
            "critic.norm_layers": SpaceSpec("choice", values=(None, (0,))),
            "train.seed": SpaceSpec("randint", low=0, high=3),
        }
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    hidden_seen = set()
    for _ in range(40):
        trial = study.ask()
        out = suggest_overrides(trial, space)
        hidden_seen.add(tuple(out["critic.hidden"]))
        assert out["train.seed"] in (0, 1, 2)
        assert ("critic.norm_layers" in out) == (out["critic.norm"] != "none")
        apply_overrides(from_dict(SweepConfig, yaml.safe_load(STUDY_ARCH.read_text())).base, out)
        study.tell(trial, 0.0)
    assert hidden_seen == {(32, 32), (64,)}


def test_bad_study_configs_raise_one_line_config_errors(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    with pytest.raises(ConfigError, match="space.critic.hidden"):
        build_space(_sweep(**{"space.critic.hidden": {"choice": [[8, 8]]}}))
    with pytest.raises(ConfigError, match="optuna.directions"):
        prepare_study(_sweep(**{"optuna.directions": ["maximize", "maximize"]}), storage_url=url)
    with pytest.raises(ConfigError, match="optuna.objectives"):
        prepare_study(_sweep(**{"optuna.objectives": ["score", "max_seem"]}), storage_url=url)
    with pytest.raises(ConfigError, match="eval_episodes"):
        prepare_study(_sweep(**{"base.train.eval_episodes": 0}), storage_url=url)
    with pytest.raises(ConfigError, match="search: optuna"):
        prepare_study(_sweep(search="random"), storage_url=url)
    with pytest.raises(ConfigError, match="depth"):
        ArchSpaceConfig(depth=(3, 1))
    with pytest.raises(ConfigError) as info:
        prepare_study(_sweep(), storage_url="sqlite:///:memory:")
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------------------- value policy
def _results(
    seems: list[float], *, score: float | None, loss: float = 0.5, q: float = 1.0
) -> list[dict]:
    rows = []
    for i, seem in enumerate(seems):
        rows.append(
            {
                M.STEP: 50 * (i + 1),
                M.SEEM: seem,
                M.CRITIC_LOSS: loss + i,
                M.Q_MEAN: q,
                "q_bound": 100.0,
            }
        )
    if score is not None:
        rows[-1][M.NORMALIZED_SCORE] = score
    return rows


def test_trial_stats_fold_results_once_per_step() -> None:
    stats = TrialStats()
    rows = _results([0.01, 0.2, -0.3], score=42.0)
    for row in rows:
        stats = stats.add(row)
    again = stats.add(rows[-1])  # Tune repeats the last result when a trial ends
    assert again is stats
    assert stats.steps == 150 and stats.max_seem == pytest.approx(0.2)
    assert stats.raw("normalized_score") == 42.0 and stats.raw("final_td_error") == pytest.approx(
        2.5
    )
    assert not stats.nonfinite
    assert stats.add({M.STEP: 200, M.CRITIC_LOSS: float("nan")}).nonfinite
    assert TrialStats().add({"no_step": 1}) == TrialStats()


def test_value_policy_never_rewards_divergence() -> None:
    rng = random.Random(0)
    objectives, directions = (
        ("normalized_score", "final_td_error", "max_seem"),
        ("maximize", "minimize", "minimize"),
    )
    for _ in range(200):
        seems = [rng.uniform(-1, 1) for _ in range(rng.randint(1, 6))]
        score = rng.uniform(-150, 150)
        stats = TrialStats()
        for row in _results(seems, score=score, loss=rng.uniform(0, 2e6)):
            stats = stats.add(row)
        healthy = trial_outcome(stats, M.REASON_BUDGET, objectives, directions)
        assert healthy.state == "COMPLETE" and healthy.values is not None
        assert healthy.values == pytest.approx((score, stats.raw("final_td_error"), max(seems)))
        for reason in (M.REASON_SEEM, M.REASON_GROWTH, M.REASON_Q_BOUND, M.REASON_NAN):
            bad = trial_outcome(stats, reason, objectives, directions, diverged_since=100)
            assert bad.state == "COMPLETE" and bad.values is not None
            assert bad.attrs[M.STOP_REASON] == reason and bad.attrs[M.DIVERGED_SINCE] == 100
            s, td, seem = bad.values
            # never better than the worst value, nor than what the trial itself measured
            assert s <= WORST["normalized_score"] and s <= score
            assert td >= WORST["final_td_error"] and td >= healthy.values[1]
            assert seem >= WORST["max_seem"] and seem >= healthy.values[2]


def test_value_policy_fails_unmeasured_or_errored_trials() -> None:
    stats = TrialStats()
    for row in _results([0.0, 0.01], score=None):
        stats = stats.add(row)
    missing = trial_outcome(stats, M.REASON_BUDGET, ("normalized_score",), ("maximize",))
    assert (
        missing.state == "FAIL"
        and missing.values is None
        and missing.attrs["missing"] == ["normalized_score"]
    )
    assert trial_outcome(stats, "error", ("max_seem",), ("minimize",)).state == "FAIL"
    assert trial_outcome(TrialStats(), M.REASON_SEEM, ("max_seem",), ("minimize",)).values == (1.0,)
    assert worst_value("normalized_score", "maximize", float("nan")) == WORST["normalized_score"]
    assert worst_value("normalized_score", "maximize", -500.0) == -500.0


def test_searcher_tells_optuna_values_and_stop_reasons(tmp_path: Path) -> None:
    """StudySearch driven like Tune drives it (no Ray session needed)."""
    import pickle

    from seem_ray.config import StopperConfig
    from seem_ray.study import StudySearch, open_storage

    sweep = _sweep(
        **{"base.train.steps": 150, "optuna.objectives": ["normalized_score", "max_seem"]}
    )
    storage = open_storage(resolve_storage_url(f"sqlite:///{tmp_path / 'study.db'}"))
    searcher = StudySearch(
        build_space(sweep),
        study_name="unit",
        storage=storage,
        objectives=("normalized_score", "max_seem"),
        directions=("maximize", "minimize"),
        seed=0,
        stopper=StopperConfig(kind="q_bound"),
        budget_steps=150,
    )
    configs = {tid: searcher.suggest(tid) for tid in ("healthy", "diverged", "broken")}
    for config in configs.values():
        assert set(config["overrides"]) >= {"critic.hidden", "critic.norm", "algo.critic_lr"}
        apply_overrides(sweep.base, config["overrides"])
    good = _results([0.01, 0.03, 0.02], score=12.5)
    for row in good:
        searcher.on_trial_result("healthy", row)
    searcher.on_trial_complete("healthy", result=good[-1])
    bad = _results([0.02, 0.5], score=None, q=1.0)
    searcher.on_trial_result("diverged", bad[0])
    bad[1][M.Q_MEAN] = 1e5  # beyond q_bound: Tune's stopper stops here and completes the trial
    searcher.on_trial_complete("diverged", result=bad[1])
    searcher.on_trial_result("broken", good[0])
    searcher.on_trial_complete("broken", error=True)
    searcher.save(str(tmp_path / "searcher.pkl"))  # Tune checkpoints the searcher: must pickle
    assert pickle.loads((tmp_path / "searcher.pkl").read_bytes())

    study = optuna.load_study(study_name="unit", storage=storage)
    by_id = {t.user_attrs["tune_trial_id"]: t for t in study.trials}
    ok = by_id["healthy"]
    assert ok.state.name == "COMPLETE" and ok.values == pytest.approx([12.5, 0.03])
    assert ok.user_attrs[M.STOP_REASON] == M.REASON_BUDGET and ok.user_attrs["steps"] == 150
    assert ok.user_attrs["overrides"] == configs["healthy"]["overrides"]
    div = by_id["diverged"]
    assert div.state.name == "COMPLETE" and div.values == pytest.approx(
        [WORST["normalized_score"], 1.0]
    )
    assert (
        div.user_attrs[M.STOP_REASON] == M.REASON_Q_BOUND
        and div.user_attrs[M.DIVERGED_SINCE] == 100
    )
    assert div.user_attrs["steps"] == 100 and div.user_attrs["max_seem"] == pytest.approx(0.5)
    broken = by_id["broken"]
    assert broken.state.name == "FAIL" and broken.user_attrs[M.STOP_REASON] == "error"


# ------------------------------------------------------------------------------- storage / resume
def test_storage_urls_are_absolute_and_redacted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SEEM_RAY_RUNS", str(tmp_path / "runs"))
    monkeypatch.delenv("SEEM_RAY_STUDY_STORAGE", raising=False)
    assert resolve_storage_url("sqlite:///rel/s.db") == f"sqlite:///{tmp_path / 'rel' / 's.db'}"
    assert resolve_storage_url(None) == f"sqlite:///{tmp_path / 'runs' / 'studies' / 'optuna.db'}"
    assert (
        resolve_storage_url("postgresql://u:pw@db:5432/optuna")
        == "postgresql://u:pw@db:5432/optuna"
    )
    assert redact("postgresql://u:pw@db:5432/optuna") == "postgresql://u:***@db:5432/optuna"
    with pytest.raises(ConfigError, match="in-memory"):
        resolve_storage_url("sqlite://")
    with pytest.raises(ConfigError, match="SQLAlchemy URL"):
        resolve_storage_url("studies.db")


def test_prepare_resume_fails_unfinished_trials_and_counts_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEEM_RAY_RUNS", str(tmp_path / "runs"))
    url = f"sqlite:///{tmp_path / 'study.db'}"
    sweep = _sweep(name="resumable", num_samples=5)
    with pytest.raises(ConfigError, match="nothing to resume"):
        prepare_study(sweep, storage_url=url, resume=True)
    plan = prepare_study(sweep, storage_url=url)
    assert plan.remaining == 5 and plan.sweep.name == "resumable" and plan.killed == ()
    with pytest.raises(ConfigError, match="--resume"):
        prepare_study(sweep, storage_url=url)
    study = optuna.load_study(study_name="resumable", storage=url)
    study.set_user_attr("sweeps", ["resumable"])
    done = study.ask()
    study.tell(done, [3.0, 0.1])
    errored = study.ask()
    errored.set_user_attr(M.STOP_REASON, "error")
    study.tell(errored, state=optuna.trial.TrialState.FAIL)
    running = [study.ask(), study.ask()]  # a killed driver leaves these RUNNING
    plan = prepare_study(sweep, storage_url=url, resume=True)
    assert sorted(plan.killed) == sorted(t.number for t in running)
    assert plan.done == 2 and plan.remaining == 3 and plan.sweep.name == "resumable-resume1"
    assert plan.sampler_seed != sweep.optuna.sampler_seed  # no replay of the first random points
    states = {t.number: (t.state.name, t.user_attrs.get(M.STOP_REASON)) for t in study.get_trials()}
    for t in running:
        assert states[t.number] == ("FAIL", KILLED)
    assert states[done.number] == ("COMPLETE", None)
    with pytest.raises(ConfigError, match="optimises"):
        prepare_study(
            _sweep(
                name="resumable",
                **{"optuna.objectives": ["normalized_score"], "optuna.directions": ["maximize"]},
            ),
            storage_url=url,
            resume=True,
        )


# ------------------------------------------------------------------------------- reports
def _fake_study(url: str, name: str, diverged_every: int, n: int = 8, seed: int = 0) -> None:
    rng = random.Random(seed)
    study = optuna.create_study(study_name=name, storage=url, directions=["maximize", "minimize"])
    study.set_user_attr("objectives", ["normalized_score", "max_seem"])
    study.set_user_attr("experiment", "seem_ray_studies")
    study.set_user_attr("sweeps", [name])
    dists = {
        "critic.depth": optuna.distributions.IntDistribution(1, 3),
        "critic.norm": optuna.distributions.CategoricalDistribution(["none", "layer"]),
        "algo.critic_lr": optuna.distributions.FloatDistribution(1e-4, 1e-3, log=True),
    }
    for i in range(n):
        diverged = i % diverged_every == 0
        seem = 0.3 + 0.1 * i if diverged else 0.01 * i
        attrs = {
            M.STOP_REASON: M.REASON_SEEM if diverged else M.REASON_BUDGET,
            "max_seem": seem,
            "steps": 100 if diverged else 200,
        }
        study.add_trial(
            optuna.trial.create_trial(
                params={
                    "critic.depth": 1 + i % 3,
                    "critic.norm": "none" if diverged else "layer",
                    "algo.critic_lr": rng.uniform(1e-4, 1e-3),
                },
                distributions=dists,
                values=[-100.0, 1.0] if diverged else [10.0 + i, seem],
                user_attrs=attrs,
            )
        )
    killed = optuna.trial.create_trial(
        state=optuna.trial.TrialState.FAIL, user_attrs={M.STOP_REASON: KILLED}
    )
    study.add_trial(killed)


@pytest.mark.slow
def test_report_writes_pngs_and_logs_them_to_the_sweep_parent_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import matplotlib.image
    from mlflow.tracking import MlflowClient

    from seem_ray.tracking import resolve_tracking_uri

    monkeypatch.setenv("SEEM_RAY_RUNS", str(tmp_path / "runs"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    _fake_study(url, "with_ln", diverged_every=4)
    client = MlflowClient(resolve_tracking_uri(None))
    exp = client.create_experiment("seem_ray_studies")
    parent = client.create_run(
        exp, run_name="with_ln", tags={"seem_ray.kind": "sweep", "seem_ray.sweep": "with_ln"}
    )
    client.set_terminated(parent.info.run_id)

    report = write_report("with_ln", storage_url=url, out=tmp_path / "report")
    names = {p.name for p in report.files}
    expected_png = {
        "history_normalized_score.png",
        "history_max_seem.png",
        "pareto_front.png",
        "importances_normalized_score.png",
        "importances_max_seem.png",
    }
    assert expected_png <= names
    for name in expected_png:
        path = tmp_path / "report" / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert matplotlib.image.imread(path).shape[0] > 100
    body = json.loads((tmp_path / "report" / "report.json").read_text())
    assert body["best"] and all(b["attrs"][M.STOP_REASON] == M.REASON_BUDGET for b in body["best"])
    assert set(body["importances"]["normalized_score"]) == {
        "critic.depth",
        "critic.norm",
        "algo.critic_lr",
    }
    assert math.isclose(sum(body["importances"]["normalized_score"].values()), 1.0, rel_tol=1e-6)
    assert "Pareto front" in report.text
    assert report.mlflow_run_id == parent.info.run_id
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "study_report")}
    assert {f"study_report/{n}" for n in expected_png} <= logged


def test_compare_reports_divergence_rates_and_best_healthy_values(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    _fake_study(url, "with_ln", diverged_every=4)  # trials 0, 4 diverge: 2/8
    _fake_study(url, "no_ln", diverged_every=2)  # trials 0, 2, 4, 6 diverge: 4/8
    table = compare_studies(["with_ln", "no_ln"], url)
    rows = {line.split()[0]: line.split() for line in table.splitlines()[2:]}
    assert rows["with_ln"][1:4] == ["8", "2", "25%"] and rows["no_ln"][1:4] == ["8", "4", "50%"]
    # best healthy score: with_ln's best healthy trial is 7 (17.0); no_ln's is 7 too
    assert (
        "normalized_score=17" in rows["with_ln"][-2] and "normalized_score=17" in rows["no_ln"][-2]
    )
    with pytest.raises(ConfigError, match="no study named 'missing'"):
        compare_studies(["with_ln", "missing"], url)


# ------------------------------------------------------------------------------- end to end (CLI)
def _tiny_study_yaml(path: Path, trials: int) -> Path:
    data = yaml.safe_load(STUDY_ARCH.read_text())
    base = data["base"]
    base["data"]["max_transitions"] = 500
    base["algo"]["batch_size"] = 32
    base["critic"]["hidden"] = [16, 16]
    base["actor"]["hidden"] = [16, 16]
    base["seem"] = {"every": 50, "probe_size": 32, "startup_every": 0}  # reports at 50, 100
    base["train"] = {
        "steps": 100,
        "log_every": 50,
        "eval_episodes": 1,
        "checkpoint_every": 0,
        "threads": 1,
    }
    base["scaling"] = {"num_workers": 1, "cpus_per_worker": 0.5}
    data["space"]["algo.batch_size"] = {"choice": [32, 64]}
    data["num_samples"] = trials
    data["max_concurrent"] = 2
    data["optuna"]["arch"].update({"depth": [1, 2], "widths": [8, 16]})
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _count_complete(db: Path) -> int:
    """COMPLETE trials in a study database, read with plain sqlite (creates nothing)."""
    import sqlite3

    if not db.exists():
        return 0
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as con:
            return int(
                con.execute("SELECT count(*) FROM trials WHERE state = 'COMPLETE'").fetchone()[0]
            )
    except sqlite3.OperationalError:  # tables not created yet, or busy
        return 0


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "seem_ray.cli", *args]


def _env() -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "SEEM_RAY_STUDY_STORAGE")
    }
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env["MPLBACKEND"] = "Agg"
    return env


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.faults
def test_study_from_cli_survives_kill_9_resumes_and_reports(isolated_env: Path) -> None:
    tmp = isolated_env
    config = _tiny_study_yaml(tmp / "tiny_study.yaml", trials=3)
    db = tmp / "runs" / "studies" / "optuna.db"
    url = f"sqlite:///{db}"
    log_path = tmp / "first.log"
    run = _cli("study", str(config), "--name", "killme", "--address", "local", "--quiet")
    with log_path.open("w") as log_file:
        proc = subprocess.Popen(
            run,
            cwd=ROOT,
            env=_env(),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.time() + 240
        complete = 0
        while time.time() < deadline and proc.poll() is None:
            complete = _count_complete(db)
            if complete:
                break
            time.sleep(1.0)
        assert proc.poll() is None, f"study ended before the kill:\n{log_path.read_text()[-3000:]}"
        assert complete, f"no trial finished in time:\n{log_path.read_text()[-3000:]}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        # Ray's agents of the killed driver live in the session we started: end them too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    before = optuna.load_study(study_name="killme", storage=url).get_trials()
    finished_before = {t.number: t.values for t in before if t.state.name == "COMPLETE"}
    unfinished_before = {t.number for t in before if t.state.name in ("RUNNING", "WAITING")}
    assert finished_before

    again = subprocess.run(
        _cli("study", str(config), "--name", "killme"),
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 2 and "--resume" in again.stderr

    # The resumed part also exercises the stop path: a q_bound far below any Q stops each new
    # trial at its first report, and the study must record it as diverged, not rewarded.
    stop_now = [
        "--set",
        "base.stopper.kind=q_bound",
        "--set",
        "base.stopper.q_bound_factor=0.000001",
    ]
    resumed = subprocess.run(
        [*run, "--resume", *stop_now],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]
    assert "3/3 trials done" in resumed.stdout
    study = optuna.load_study(study_name="killme", storage=url)
    trials = {t.number: t for t in study.get_trials()}
    for number, values in finished_before.items():  # finished trials kept as they were
        assert trials[number].state.name == "COMPLETE" and trials[number].values == values
    for number in unfinished_before:  # trials running at the kill are FAIL, not lost or duplicated
        assert (
            trials[number].state.name == "FAIL"
            and trials[number].user_attrs[M.STOP_REASON] == KILLED
        )
    counted = [
        t
        for t in trials.values()
        if t.user_attrs.get(M.STOP_REASON) != KILLED and t.state.name in ("COMPLETE", "FAIL")
    ]
    assert len(counted) == 3
    assert not [t for t in trials.values() if t.state.name in ("RUNNING", "WAITING")]
    for t in counted:
        assert (
            t.user_attrs[M.STOP_REASON] in (*M.STOP_REASONS, "error")
            and "tune_trial_id" in t.user_attrs
        )
        if t.state.name == "COMPLETE":
            assert t.user_attrs["steps"] >= 1 and len(t.values) == 2
    assert study.user_attrs["sweeps"] == ["killme", "killme-resume1"]
    new_trials = [
        t for t in counted if t.number not in finished_before and t.state.name == "COMPLETE"
    ]
    assert new_trials
    for t in new_trials:
        assert t.user_attrs[M.STOP_REASON] == M.REASON_Q_BOUND and t.user_attrs[M.DIVERGED] is True
        assert (
            t.values == [WORST["normalized_score"], WORST["max_seem"]]
            and t.user_attrs["steps"] == 50
        )

    out = tmp / "report"
    report = subprocess.run(
        _cli("study", "report", "killme", "--out", str(out)),
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert report.returncode == 0, report.stderr[-3000:]
    assert "Pareto front" in report.stdout and "MLflow run" in report.stdout
    for name in ("history_normalized_score.png", "history_max_seem.png", "pareto_front.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "report.json").read_text())["states"]["COMPLETE"] >= len(
        finished_before
    )
    compare = subprocess.run(
        _cli("study", "compare", "killme", "killme"),
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert compare.returncode == 0 and compare.stdout.count("killme") == 2
