"""Tests of experiments.seem_vs_bound (section 1) and experiments.gamma_threshold (section 4):
the per-run analysis and verdict rules on synthetic run histories, and both --quick runs (slow)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from experiments import gamma_threshold as gt
from experiments import seem_vs_bound as svb
from experiments.service import RunRecord, demo_base
from seem_ray import metrics as M
from seem_ray.config import to_dict


def make_record(
    seem: list[float],
    q: list[float],
    q_bound: float = 10.0,
    every: int = 100,
    score: dict[int, float] | None = None,
) -> RunRecord:
    """A RunRecord whose reports k = 1..n carry SEEM seem[k-1] and probe mean Q q[k-1]."""
    history = []
    for k, (s, qv) in enumerate(zip(seem, q, strict=True), 1):
        row: dict[str, Any] = {
            M.STEP: float(k * every),
            M.SEEM: s,
            M.Q_MEAN: qv,
            M.CRITIC_WEIGHT_NORM: 10.0 + k,
        }
        if score and k * every in score:
            row[M.NORMALIZED_SCORE] = score[k * every]
        history.append(row)
    return RunRecord(
        name="synthetic",
        config=to_dict(demo_base()),
        history=history,
        q_bound=q_bound,
        steps=len(seem) * every,
        wall_seconds=1.0,
        seem_share=0.0,
    )


def fact(norm: str, diverged: bool, warned: bool, late: float = 0.0) -> dict[str, Any]:
    return {
        "norm": norm,
        "diverged": diverged,
        "warned_before": warned,
        "late_seem_median": late,
    }


# ----------------------------------------------------------------------------- section 1


def test_run_facts_finds_warning_crossing_and_lead() -> None:
    rec = make_record(
        seem=[-0.01, 0.02, 0.3, 0.4, 0.5, 0.04, 0.45, 0.4],
        q=[0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0],
        score={400: 5.0, 800: -3.0},
    )
    f = svb.run_facts(rec, threshold=0.05)
    assert f["first_seem_pos"] == 200
    assert f["first_seem_warn"] == 300
    assert f["bound_step"] == 600  # |Q| 16 > 10 first at report 6
    assert f["diverged"] and f["warned_before"]
    assert f["lead"] == pytest.approx(2.0)
    assert f["lead_pos"] == pytest.approx(3.0)
    assert f["max_seem"] == pytest.approx(0.5)
    assert f["late_seem_median"] == pytest.approx(0.425)  # reports 500-800
    assert f["min_seem_after_warn"] == pytest.approx(0.04)
    assert f["min_seem_after_warn_step"] == 600
    assert f["min_seem_warn_to_bound"] == pytest.approx(0.3)  # reports 300-500
    assert f["final_q"] == 64.0 and f["final_q_over_bound"] == pytest.approx(6.4)
    assert f["q_growth_late"] == pytest.approx(64.0 / 4.0)
    assert f["final_weight_norm"] == pytest.approx(18.0)
    assert f["final_score"] == -3.0


def test_run_facts_same_step_warning_is_no_warning() -> None:
    rec = make_record(seem=[0.0, 0.01, 0.6, 0.6], q=[1.0, 2.0, 20.0, 40.0])
    f = svb.run_facts(rec, threshold=0.05)
    assert f["bound_step"] == 300 and f["first_seem_warn"] == 300
    assert not f["warned_before"]
    assert f["lead"] == pytest.approx(1.0)


def test_run_facts_bounded_run_and_non_finite_q() -> None:
    calm = svb.run_facts(make_record(seem=[0.01, -0.02, 0.0, 0.01], q=[1.0, -2.0, 3.0, -4.0]))
    assert calm["bound_step"] is None and not calm["diverged"] and not calm["warned_before"]
    assert calm["first_seem_warn"] is None and calm["lead"] is None
    assert calm["min_seem_after_warn_step"] is None
    assert math.isnan(calm["final_score"])
    # a negative mean Q counts by its size; an overflowed (inf) Q counts as crossed
    neg = svb.run_facts(make_record(seem=[0.1, 0.1, 0.1], q=[1.0, -11.0, 0.0]))
    assert neg["bound_step"] == 200
    inf = svb.run_facts(make_record(seem=[0.2, 0.2, 0.2], q=[1.0, 2.0, math.inf]))
    assert inf["bound_step"] == 300 and inf["warned_before"]


def test_early_warning_verdict_rule() -> None:
    good = [fact("none", True, True), fact("layer", False, False)]
    assert svb.early_warning_verdict(good) == "reproduced"
    late = [fact("none", True, False), fact("layer", False, False)]
    assert svb.early_warning_verdict(late) == "partly"
    ln_blew = [fact("none", True, True), fact("layer", True, True)]
    assert svb.early_warning_verdict(ln_blew) == "partly"
    both = [fact("none", True, False), fact("layer", True, True)]
    assert svb.early_warning_verdict(both) == "not reproduced"
    nothing = [fact("none", False, False), fact("layer", False, False)]
    assert svb.early_warning_verdict(nothing) == "inconclusive"


def test_quiet_verdict_only_counts_bounded_ln_runs() -> None:
    # a loud no-LN run that has not crossed (maybe a slow diverger) does not count
    runs = [fact("none", False, False, late=0.4), fact("layer", False, False, late=0.01)]
    assert svb.quiet_verdict(runs, 0.05) == "reproduced"
    runs.append(fact("layer", False, False, late=0.2))
    assert svb.quiet_verdict(runs, 0.05) == "partly"
    assert svb.quiet_verdict([fact("layer", False, False, late=0.2)], 0.05) == "not reproduced"
    assert svb.quiet_verdict([fact("layer", True, True, late=0.0)], 0.05) == "inconclusive"


def test_seem_vs_bound_grid_covers_datasets_norms_seeds() -> None:
    cfgs = svb.configs(svb.Settings())
    assert len(cfgs) == 8
    hop = cfgs["hopper_layer_s1"]
    assert hop.data.dataset == "seem_ray/hopper-random-v0" and hop.data.max_transitions == 1000
    assert hop.critic.norm == "layer" and hop.train.seed == 1 and hop.train.steps == 5000
    pm = cfgs["pointmaze_none_s0"]
    assert pm.data.max_transitions == 2000 and pm.algo.tau == 1.0 and pm.critic.norm == "none"
    assert {c.data.dataset for c in svb.configs(svb.QUICK).values()} == {
        "seem_ray/pointmaze-umaze-dense-v0"
    }


# ----------------------------------------------------------------------------- section 4


def gamma_row(gamma: float, diverged: int, seeds: int = 2) -> dict[str, Any]:
    return {"gamma": gamma, "diverged": diverged, "seeds": seeds, "fraction": diverged / seeds}


def test_threshold_estimate_sharp_bracket() -> None:
    rows = [gamma_row(g, d) for g, d in ((0.99, 2), (0.8, 0), (0.9, 0), (0.95, 2))]
    est = gt.threshold_estimate(rows)
    assert est["bracketed"] and est["monotone"] and est["mixed"] == []
    assert (est["low"], est["high"]) == (0.9, 0.95)
    assert est["threshold"] == pytest.approx(0.925)
    assert gt.threshold_verdict(est) == "reproduced"


def test_threshold_estimate_mixed_and_non_monotone() -> None:
    mixed = gt.threshold_estimate([gamma_row(0.8, 0), gamma_row(0.9, 1), gamma_row(0.95, 2)])
    assert mixed["bracketed"] and mixed["mixed"] == [0.9]
    assert mixed["threshold"] == pytest.approx(0.875)
    assert gt.threshold_verdict(mixed) == "partly"
    wobble = gt.threshold_estimate(
        [gamma_row(0.8, 0), gamma_row(0.85, 1), gamma_row(0.9, 0), gamma_row(0.95, 2)]
    )
    assert wobble["bracketed"] and not wobble["monotone"] and wobble["low"] == 0.9
    assert gt.threshold_verdict(wobble) == "partly"


def test_seem_estimate_uses_warned_counts() -> None:
    rows = [
        gamma_row(0.9, 0) | {"warned": 0},
        gamma_row(0.95, 0) | {"warned": 2},
        gamma_row(0.97, 1) | {"warned": 2},
        gamma_row(0.99, 2) | {"warned": 2},
    ]
    by_bound, by_seem = gt.threshold_estimate(rows), gt.seem_estimate(rows)
    assert (by_bound["low"], by_bound["high"], by_bound["mixed"]) == (0.95, 0.99, [0.97])
    assert (by_seem["low"], by_seem["high"], by_seem["mixed"]) == (0.9, 0.95, [])
    assert by_seem["threshold"] == pytest.approx(0.925)


def test_threshold_estimate_not_bracketed() -> None:
    all_div = gt.threshold_estimate([gamma_row(0.8, 1), gamma_row(0.9, 2)])
    assert not all_div["bracketed"] and "every gamma" in all_div["why"]
    assert gt.threshold_verdict(all_div) == "inconclusive"
    none_full = gt.threshold_estimate([gamma_row(0.8, 0), gamma_row(0.9, 1)])
    assert not none_full["bracketed"] and gt.threshold_verdict(none_full) == "inconclusive"
    reversed_ = gt.threshold_estimate([gamma_row(0.8, 2), gamma_row(0.9, 0)])
    assert not reversed_["bracketed"] and gt.threshold_verdict(reversed_) == "not reproduced"


def test_per_gamma_aggregates_seeds_by_norm() -> None:
    def r(norm: str, gamma: float, diverged: bool, ratio: float | None, seem: float) -> dict:
        return {
            "norm": norm,
            "gamma": gamma,
            "seed": 0,
            "diverged": diverged,
            "q_bound": 0.67 / (1 - gamma),
            "max_seem": seem,
            "late_seem_median": seem / 2,
            "final_q_over_bound": ratio,
            "first_seem_warn": 100 if seem > 0.05 else None,
            "bound_step": 500 if diverged else None,
            "q_growth_late": 1.0,
        }

    runs = [
        r("none", 0.9, False, 0.2, 0.01),
        r("none", 0.9, True, 3.0, 0.3),
        r("none", 0.8, False, 0.1, 0.0),
        r("none", 0.8, False, 0.2, 0.02),
        r("layer", 0.9, False, None, 0.02),  # None = an overflowed final Q written as null
    ]
    rows = gt.per_gamma(runs, "none")
    assert [x["gamma"] for x in rows] == [0.8, 0.9]
    assert [x["fraction"] for x in rows] == [0.0, 0.5]
    assert rows[1]["max_seem"] == pytest.approx(0.3)
    assert [x["warned"] for x in rows] == [0, 1]
    assert rows[1]["q_bound"] == pytest.approx(6.7)
    assert rows[1]["final_q_over_bound_max"] == pytest.approx(3.0)
    ln = gt.per_gamma(runs, "layer")
    assert len(ln) == 1 and ln[0]["seeds"] == 1 and math.isinf(ln[0]["final_q_over_bound_max"])


def test_gamma_grid_and_bound_follow_gamma() -> None:
    s = gt.Settings()
    cfgs = gt.configs(s)
    assert len(cfgs) == len(s.gammas) * len(s.seeds) + len(s.ln_gammas) * len(s.seeds)
    c = cfgs["none_g0.93_s1"]
    assert c.algo.gamma == 0.93 and c.critic.norm == "none" and c.train.eval_episodes == 0
    assert cfgs["layer_g0.99_s0"].critic.norm == "layer"
    assert "none_g0.97_s0" in cfgs and "layer_g0.9_s0" not in cfgs


# ----------------------------------------------------------------------------- quick runs


@pytest.mark.slow
def test_seem_vs_bound_quick(isolated_env: Path) -> None:
    out = isolated_env / "out"
    result = svb.main(["--quick", "--figures", str(out), "--json", str(out / "svb.json")])
    saved = json.loads((out / "svb.json").read_text())
    assert (out / svb.FIGURE).stat().st_size > 10_000
    assert saved["quick"] and len(saved["runs"]) == 2
    assert {r["norm"] for r in saved["runs"]} == {"none", "layer"}
    for r in saved["runs"]:
        assert r["q_bound"] > 0 and r["seem"] and len(r["seem"]) == len(r["seem_step"])
        assert {"first_seem_warn", "bound_step", "lead", "final_weight_norm"} <= r.keys()
    assert saved["verdict_warning"] in ("reproduced", "partly", "not reproduced", "inconclusive")
    text = svb.report_section(result, "figs")
    assert text.startswith("## 1.") and f"figs/{svb.FIGURE}" in text
    rows = svb.summary_rows(saved)
    assert rows and all(row.section == "1" for row in rows)


@pytest.mark.slow
def test_gamma_threshold_quick(isolated_env: Path) -> None:
    out = isolated_env / "out"
    result = gt.main(["--quick", "--figures", str(out), "--json", str(out / "gt.json")])
    saved = json.loads((out / "gt.json").read_text())
    assert (out / gt.FIGURE).stat().st_size > 10_000
    assert [r["gamma"] for r in saved["by_gamma"]] == list(gt.QUICK.gammas)
    assert [r["gamma"] for r in saved["by_gamma_ln"]] == list(gt.QUICK.ln_gammas)
    bounds = {r["gamma"]: r["q_bound"] for r in saved["by_gamma"]}
    # the return bound r_max / (1 - gamma) scales with 1 / (1 - gamma)
    assert bounds[0.99] / bounds[0.8] == pytest.approx(0.2 / 0.01, rel=1e-6)
    assert "bracketed" in saved["estimate"]
    text = gt.report_section(result, "figs")
    assert text.startswith("## 4.") and f"figs/{gt.FIGURE}" in text
    rows = gt.summary_rows(saved)
    assert rows and rows[0].section == "4" and rows[0].verdict == saved["verdict"]
