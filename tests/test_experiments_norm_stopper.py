"""Experiments 5 (normalization placement) and 7 (the stopper's value): the analysis on synthetic
run records, the verdict rules, and each script's --quick mode end to end (slow)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from experiments import norm_placement as NP
from experiments import stopper_value as SV
from experiments.service import RunRecord, demo_base
from seem_ray.config import to_dict

VERDICTS = {"reproduced", "partly", "not reproduced", "inconclusive"}


def record(
    q: list[float], seem: list[float | None] | None = None, bound: float = 100.0, every: int = 100
) -> RunRecord:
    """A run whose report i is at step (i+1)*every with q_mean q[i] (and SEEM when given)."""
    history = []
    for i, value in enumerate(q):
        rec: dict[str, Any] = {"step": float((i + 1) * every), "q_mean": value}
        if seem is not None and seem[i] is not None:
            rec["seem"] = seem[i]
        history.append(rec)
    history[-1]["normalized_score"] = 12.5
    return RunRecord(
        name="r",
        config=to_dict(demo_base()),
        history=history,
        q_bound=bound,
        steps=len(q) * every,
        wall_seconds=1.0,
        seem_share=0.1,
    )


# ----------------------------------------------------------------------------- norm placement


def test_run_config_sets_the_variant_and_evaluates_only_at_the_end() -> None:
    s = NP.NormSettings(steps=500, eval_episodes=3)
    cfg = NP.run_config("layer_h1", 4, s)
    assert cfg.critic.norm == "layer" and cfg.critic.normed_layers() == (1,)
    assert cfg.train.steps == 500 and cfg.train.seed == 4
    assert cfg.train.eval_every == 0 and cfg.train.eval_episodes == 3
    after = NP.run_config("layer_after_act", 0, s)
    assert after.critic.norm_position == "after_act" and after.critic.normed_layers() == (0, 1)
    assert NP.run_config("none", 0, s).critic.normed_layers() == ()


def test_analyse_run_finds_crossing_seem_extremes_and_final_ratio() -> None:
    rec = record([1.0, 20.0, 150.0, 400.0], seem=[0.01, None, 0.6, 0.2])
    out = NP.analyse_run(rec)
    assert out["diverged"] and out["crossed_at"] == 300
    assert out["max_seem"] == pytest.approx(0.6) and out["final_seem"] == pytest.approx(0.2)
    assert out["final_q_ratio"] == pytest.approx(4.0)
    assert out["max_q_ratio"] == pytest.approx(4.0)
    assert out["final_score"] == pytest.approx(12.5)
    assert out["curve_seem_steps"] == [100.0, 300.0, 400.0]


def test_analyse_run_healthy_and_non_finite() -> None:
    healthy = NP.analyse_run(record([1.0, -50.0, 30.0], seem=[0.0, 0.01, -0.02]))
    assert not healthy["diverged"] and healthy["crossed_at"] is None
    assert healthy["final_q_ratio"] == pytest.approx(0.3)
    assert healthy["max_q_ratio"] == pytest.approx(0.5)  # |Q| counts, not Q
    blown = NP.analyse_run(record([1.0, math.nan]))
    assert blown["diverged"] and blown["crossed_at"] == 200
    assert blown["final_q_ratio"] == math.inf and math.isnan(blown["max_seem"])


def test_summarise_variant_counts_divergers_and_keeps_failures() -> None:
    runs = [
        {**NP.analyse_run(record([1.0, 200.0], seem=[0.1, 0.5])), "seed": 0},
        {**NP.analyse_run(record([1.0, 10.0], seem=[0.02, 0.03])), "seed": 1},
        {"error": "RuntimeError: boom", "seed": 2},
    ]
    row = NP.summarise_variant("rms", runs)
    assert row["runs"] == 2 and row["failed"] == 1 and row["errors"] == ["RuntimeError: boom"]
    assert row["diverged"] == 1
    assert row["max_seem"] == pytest.approx(0.5)
    assert row["mean_max_seem"] == pytest.approx(0.265)
    assert row["mean_final_q_ratio"] == pytest.approx((2.0 + 0.1) / 2)


def _by(**rows: tuple[int, int, float, float]) -> dict[str, Any]:
    """Synthetic result: variant -> (diverged, runs, max SEEM, mean final |Q|/bound)."""
    return {
        "by_variant": [
            {
                "variant": v,
                "label": v,
                "diverged": d,
                "runs": n,
                "max_seem": seem,
                "mean_final_q_ratio": q,
            }
            for v, (d, n, seem, q) in rows.items()
        ]
    }


def test_verdict_ln_rules() -> None:
    assert NP.verdict_ln(_by(none=(2, 2, 0.7, 1e6), layer=(0, 2, 0.01, 0.3))) == "reproduced"
    assert NP.verdict_ln(_by(none=(2, 2, 0.7, 1e6), layer=(0, 2, 0.2, 0.3))) == "partly"
    assert NP.verdict_ln(_by(none=(1, 2, 0.7, 1e6), layer=(0, 2, 0.01, 0.3))) == "partly"
    assert NP.verdict_ln(_by(none=(2, 2, 0.7, 1e6), layer=(1, 2, 0.01, 3))) == "not reproduced"
    assert NP.verdict_ln(_by(none=(0, 2, 0.7, 0.5), layer=(0, 2, 0.01, 0.3))) == "inconclusive"
    assert NP.verdict_ln(_by(none=(2, 2, 0.7, 1e6))) == "inconclusive"


def test_verdict_placement_and_other_norms_rules() -> None:
    base = {"none": (2, 2, 0.7, 1e6), "layer": (0, 2, 0.01, 0.3)}
    assert NP.verdict_placement(_by(**base, layer_h0=(1, 2, 0.4, 5.0))) == "reproduced"
    assert NP.verdict_placement(_by(**base, layer_h1=(0, 2, 0.01, 0.9))) == "partly"
    assert NP.verdict_placement(_by(**base, layer_h1=(0, 2, 0.012, 0.35))) == "not reproduced"
    assert NP.verdict_placement(_by(**base)) == "inconclusive"
    assert NP.verdict_other_norms(_by(**base, spectral=(2, 2, 0.5, 1e4))) == "reproduced"
    assert NP.verdict_other_norms(_by(**base, rms=(0, 2, 0.02, 0.3))) == "not reproduced"
    ln_diverged = {"none": (2, 2, 0.7, 1e6), "layer": (1, 2, 0.3, 2.0)}
    assert NP.verdict_other_norms(_by(**ln_diverged, rms=(2, 2, 0.3, 9.0))) == "inconclusive"


# ----------------------------------------------------------------------------- stopper value


def test_grid_is_the_mixed_cross_product_without_evaluation() -> None:
    configs = SV.grid(SV.StopperSettings(steps=300))
    assert len(configs) == 8
    cfg = configs["layer_n10000_g0.9"]
    assert cfg.critic.norm == "layer" and cfg.data.max_transitions == 10000
    assert cfg.algo.gamma == 0.9 and cfg.train.steps == 300 and cfg.train.eval_episodes == 0
    assert cfg.stopper.kind == "none"


def test_score_stopper_counts_compute_leads_false_kills_and_misses() -> None:
    stops = {"a": 300, "b": None, "c": 500, "d": None}
    truth = {"a": 1500, "b": 800, "c": None, "d": None}
    budgets = {n: 2000 for n in stops}
    out = SV.score_stopper(stops, truth, budgets)
    assert out["steps_used"] == 300 + 2000 + 500 + 2000
    assert out["saved_fraction"] == pytest.approx(1 - 4800 / 8000)
    assert out["stopped"] == ["a", "c"]
    assert out["leads"] == {"a": pytest.approx(5.0)} and out["early"] == ["a"]
    assert out["false_kills"] == ["c"] and out["missed"] == ["b"]
    assert out["detections"] == {"a": 300, "b": None}
    at_crossing = SV.score_stopper({"a": 1500}, {"a": 1500}, {"a": 2000})
    assert at_crossing["early"] == [] and at_crossing["median_lead"] == pytest.approx(1.0)


def _diverger() -> RunRecord:
    # |Q| = 0.5 (t/100)^2 crosses 100 at t = 1500; SEEM positive throughout
    q = [0.5 * (i + 1) ** 2 for i in range(20)]
    return record(q, seem=[0.3] * 20)


def _healthy() -> RunRecord:
    # |Q| saturates well below the bound; SEEM ~0
    return record([40.0 * (1 - math.exp(-(i + 1) / 3)) for i in range(20)], seem=[0.01] * 20)


def test_tune_stream_carries_the_bound() -> None:
    stream = SV.tune_stream(_diverger())
    assert len(stream) == 20 and all(r["q_bound"] == 100.0 for r in stream)


def test_analyse_replays_each_kind_against_the_truth() -> None:
    out = SV.analyse({"div": _diverger(), "ok": _healthy()})
    assert out["divergers"] == ["div"] and out["healthy"] == ["ok"]
    runs = {r["name"]: r for r in out["runs"]}
    assert runs["div"]["crossed_at"] == 1500
    assert runs["div"]["stops"]["q_bound"] == 1500
    seem_stop = runs["div"]["stops"]["seem"]
    assert seem_stop is not None and seem_stop < 1500
    assert runs["div"]["reasons"]["seem"] in ("seem", "growth")
    assert runs["ok"]["stops"] == {"seem": None, "q_bound": None}
    seem, bound = out["kinds"]["seem"], out["kinds"]["q_bound"]
    assert seem["early"] == ["div"] and seem["false_kills"] == [] and seem["missed"] == []
    assert seem["saved_fraction"] > bound["saved_fraction"] > 0
    result = {**out, "settings": {}, "base_config": {}}
    assert SV.verdict_compute(result) == "reproduced"
    assert SV.verdict_lead(result) == "reproduced"


def test_stopper_verdict_rules() -> None:
    def result(seem: dict[str, Any], bound_saved: float, div: list[str], ok: list[str]) -> dict:
        kinds = {"seem": seem, "q_bound": {"saved_fraction": bound_saved}}
        return {"kinds": kinds, "divergers": div, "healthy": ok}

    good = {"saved_fraction": 0.4, "false_kills": [], "missed": [], "early": ["a", "b"]}
    assert SV.verdict_compute(result(good, 0.1, ["a", "b"], ["c"])) == "reproduced"
    assert SV.verdict_compute(result(good, 0.5, ["a", "b"], ["c"])) == "not reproduced"
    assert SV.verdict_compute(result({**good, "false_kills": ["c"]}, 0.1, ["a"], ["c"])) == (
        "partly"
    )
    assert SV.verdict_compute(result(good, 0.1, [], ["c"])) == "inconclusive"
    assert SV.verdict_compute(result(good, 0.1, ["a"], [])) == "inconclusive"
    assert SV.verdict_lead(result(good, 0.1, ["a", "b"], [])) == "reproduced"
    assert SV.verdict_lead(result({**good, "early": ["a"]}, 0.1, ["a", "b"], [])) == "partly"
    assert SV.verdict_lead(result({**good, "early": []}, 0.1, ["a"], [])) == "not reproduced"
    assert SV.verdict_lead(result(good, 0.1, [], ["c"])) == "inconclusive"


# ----------------------------------------------------------------------------- --quick runs


def _png(path: Path) -> None:
    assert path.exists() and path.stat().st_size > 10_000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _check_report(mod: Any, result: dict[str, Any], section: str) -> None:
    text = mod.report_section(result, "figs")
    assert text.startswith(f"## {section}.") and f"figs/{mod.FIGURE}" in text
    rows = mod.summary_rows(result)
    assert rows and all(r.section == section and r.verdict in VERDICTS for r in rows)


@pytest.mark.slow
def test_norm_placement_quick(isolated_env: Path) -> None:
    out = isolated_env / "x.json"
    NP.main(["--quick", "--figures", str(isolated_env / "figs"), "--json", str(out)])
    res = json.loads(out.read_text())
    _png(isolated_env / "figs" / NP.FIGURE)
    assert res["quick"] and [r["variant"] for r in res["by_variant"]] == ["none", "layer", "rms"]
    for r in res["runs"]:
        assert "error" not in r, r.get("error")
        assert r["steps"] == 150 and r["q_bound"] > 0
        assert -1 <= r["max_seem"] <= 1 and r["final_q_ratio"] >= 0
        assert r["final_score"] is not None
    assert (isolated_env / "runs" / "experiments" / f"{NP.NAME}-quick").is_dir()
    _check_report(NP, res, "5")


@pytest.mark.slow
def test_stopper_value_quick(isolated_env: Path) -> None:
    out = isolated_env / "x.json"
    SV.main(["--quick", "--figures", str(isolated_env / "figs"), "--json", str(out)])
    res = json.loads(out.read_text())
    _png(isolated_env / "figs" / SV.FIGURE)
    assert res["quick"] and len(res["runs"]) == 2
    assert sorted(res["divergers"] + res["healthy"]) == sorted(r["name"] for r in res["runs"])
    for kind in SV.KINDS:
        k = res["kinds"][kind]
        assert k["steps_budget"] == 400 and 0 <= k["steps_used"] <= 400
    for r in res["runs"]:
        assert r["budget"] == 200 and set(r["stops"]) == set(SV.KINDS)
    _check_report(SV, res, "7")
