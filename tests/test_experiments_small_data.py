"""Tests of experiments.small_data: per-run numbers from synthetic run records, the per-cell
summary, the LN-vs-none comparison and verdict rule, the configs it trains, and --quick end to
end (slow)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from experiments import small_data as sd
from experiments.service import RunRecord
from seem_ray import metrics as M

BOUND = 100.0


def _record(q_means: list[float], score: float | None, seem: float = 0.01) -> RunRecord:
    """A RunRecord whose history reports q_mean every 100 steps, SEEM and score at the end."""
    history: list[dict[str, float]] = []
    for i, q in enumerate(q_means, 1):
        history.append({M.STEP: 100.0 * i, M.Q_MEAN: q, M.CRITIC_WEIGHT_NORM: 10.0 + i})
    history[-1][M.SEEM] = seem
    if score is not None:
        history[-1][M.NORMALIZED_SCORE] = score
        history[-1][M.RETURN_MEAN] = 3.0 * score
    return RunRecord(
        name="r",
        config={},
        history=history,
        q_bound=BOUND,
        steps=100 * len(q_means),
        wall_seconds=1.0,
        seem_share=0.0,
    )


# ----------------------------------------------------------------------------- per run


def test_run_summary_reads_final_values() -> None:
    out = sd.run_summary(_record([1.0, 5.0, -20.0], score=42.0, seem=0.3))
    assert out["score"] == 42.0 and out["return"] == 126.0
    assert out["seem_final"] == 0.3
    assert not out["diverged"] and out["crossed_at"] is None
    assert out["q_ratio_final"] == pytest.approx(0.2)
    assert out["q_ratio_max"] == pytest.approx(0.2)
    assert out["weight_norm_final"] == 13.0


def test_run_summary_flags_crossing_and_keeps_max_ratio() -> None:
    out = sd.run_summary(_record([1.0, 250.0, 50.0], score=10.0))
    assert out["diverged"] and out["crossed_at"] == 200
    assert out["q_ratio_final"] == pytest.approx(0.5)
    assert out["q_ratio_max"] == pytest.approx(2.5)


def test_run_summary_nonfinite_q_is_divergence() -> None:
    out = sd.run_summary(_record([1.0, math.nan], score=None))
    assert out["diverged"] and math.isnan(out["score"])
    assert math.isinf(out["q_ratio_max"])


# ----------------------------------------------------------------------------- cells, rule


def _run(
    algo: str, size: str, norm: str, seed: int, score: float, div: bool = False
) -> dict[str, Any]:
    n = {"full": 30000, "p10": 3000, "n1000": 1000, "p1": 300}[size]
    return {
        "algo": algo,
        "size": size,
        "size_label": size,
        "small": n <= 1000,
        "n_transitions": n,
        "norm": norm,
        "seed": seed,
        "score": score,
        "diverged": div,
        "seem_final": 0.1 if div else 0.0,
        "q_ratio_final": 3.0 if div else 0.3,
        "q_ratio_max": 5.0 if div else 0.4,
    }


Scores = dict[tuple[str, str], float]
NoDiv: frozenset[tuple[str, str]] = frozenset()


def _grid(scores: Scores, div: frozenset[tuple[str, str]] = NoDiv) -> list[dict[str, Any]]:
    """Two seeds per (size, norm) at mean score +- 1 (std 1), td3bc only."""
    runs = []
    for (size, norm), mean in scores.items():
        for seed, delta in ((0, -1.0), (1, 1.0)):
            runs.append(_run("td3bc", size, norm, seed, mean + delta, (size, norm) in div))
    return runs


def test_summarise_means_stds_and_counts() -> None:
    runs = [
        _run("td3bc", "p1", "none", 0, 10.0, div=True),
        _run("td3bc", "p1", "none", 1, 30.0),
        _run("td3bc", "p1", "layer", 0, 50.0),
    ]
    cells = sd.summarise(runs)
    assert len(cells) == 2
    none = next(c for c in cells if c["norm"] == "none")
    assert none["score_mean"] == 20.0 and none["score_std"] == 10.0
    assert none["diverged"] == 1 and none["runs"] == 2
    assert none["q_ratio_max"] == 5.0
    assert none["q_ratio_final_mean"] == pytest.approx(1.65)


def _verdict(
    scores: Scores, div: frozenset[tuple[str, str]] = NoDiv
) -> tuple[str, list[dict[str, Any]]]:
    comps = sd.compare(sd.summarise(_grid(scores, div)))
    return sd.verdict(comps), comps


def test_verdict_reproduced_when_ln_rescues_small_sizes() -> None:
    v, comps = _verdict(
        {
            ("full", "none"): 60,
            ("full", "layer"): 61,
            ("n1000", "none"): 30,
            ("n1000", "layer"): 58,
            ("p1", "none"): 10,
            ("p1", "layer"): 50,
        }
    )
    assert v == "reproduced"
    small = [c for c in comps if c["small"]]
    assert all(c["ln_better"] and c["none_degraded"] for c in small)
    full = next(c for c in comps if c["size"] == "full")
    assert full["gap"] == pytest.approx(1.0) and full["noise"] == pytest.approx(2.0)


def test_verdict_partly_when_only_some_small_sizes_improve() -> None:
    v, _ = _verdict(
        {
            ("full", "none"): 60,
            ("full", "layer"): 60,
            ("n1000", "none"): 59,
            ("n1000", "layer"): 59,
            ("p1", "none"): 10,
            ("p1", "layer"): 50,
        }
    )
    assert v == "partly"


def test_verdict_counts_fewer_divergences_as_better() -> None:
    scores = {
        ("full", "none"): 60,
        ("full", "layer"): 60,
        ("p1", "none"): 60,
        ("p1", "layer"): 60,
    }
    v, comps = _verdict(scores, div=frozenset({("p1", "none")}))
    small = next(c for c in comps if c["size"] == "p1")
    assert small["ln_better"] and small["none_degraded"]
    assert v == "reproduced"


def test_verdict_inconclusive_when_nothing_degrades() -> None:
    v, comps = _verdict(
        {
            ("full", "none"): 60,
            ("full", "layer"): 59,
            ("p1", "none"): 59,
            ("p1", "layer"): 60,
        }
    )
    assert v == "inconclusive"
    assert not any(c["none_degraded"] for c in comps)


def test_verdict_not_reproduced_when_none_degrades_and_ln_does_not_help() -> None:
    v, _ = _verdict(
        {
            ("full", "none"): 60,
            ("full", "layer"): 60,
            ("p1", "none"): 20,
            ("p1", "layer"): 19,
        }
    )
    assert v == "not reproduced"


def test_verdict_not_reproduced_when_ln_hurts_and_helps_nowhere() -> None:
    v, comps = _verdict(
        {
            ("full", "none"): 60,
            ("full", "layer"): 40,
            ("p1", "none"): 60,
            ("p1", "layer"): 60,
        }
    )
    assert v == "not reproduced"
    assert not next(c for c in comps if c["size"] == "full")["ln_not_worse"]


def test_noise_uses_pooled_std_above_floor() -> None:
    runs = [
        _run("td3bc", "full", "none", 0, 40.0),
        _run("td3bc", "full", "none", 1, 60.0),  # std 10
        _run("td3bc", "full", "layer", 0, 55.0),
        _run("td3bc", "full", "layer", 1, 55.0),  # std 0
    ]
    (comp,) = sd.compare(sd.summarise(runs))
    assert comp["noise"] == pytest.approx(math.sqrt(50.0))
    assert comp["gap"] == pytest.approx(5.0) and not comp["ln_better"]


# ----------------------------------------------------------------------------- configs


def test_configs_use_algorithm_defaults_not_the_divergence_setting() -> None:
    from seem_ray.config import AlgoConfig, to_dict

    s = sd.SmallDataSettings()
    cfg = sd.run_config(s, "td3bc", sd.THOUSAND, "layer", 1)
    assert to_dict(cfg.algo) == to_dict(AlgoConfig(name="td3bc"))
    assert cfg.algo.td3bc.bc_weight > 0 and cfg.algo.tau < 1.0
    assert cfg.data.max_transitions == 1000 and cfg.data.fraction == 1.0
    assert cfg.critic.norm == "layer" and cfg.train.seed == 1
    assert cfg.train.eval_every == 0 and cfg.train.eval_episodes == s.eval_episodes
    assert cfg.seem.every == s.seem_every and cfg.stopper.kind == "none"
    iql = sd.run_config(s, "iql", sd.ONE, "none", 0)
    assert iql.algo.name == "iql" and iql.data.max_transitions is None
    assert iql.data.fraction == 0.01


def test_grid_size_and_kept_transitions() -> None:
    assert len(sd.grid(sd.SmallDataSettings())) == 32
    assert len(sd.grid(sd.QUICK)) == 4
    assert [sd.kept_transitions(30000, z) for z in (sd.FULL, sd.TEN, sd.ONE, sd.THOUSAND)] == [
        30000,
        3000,
        300,
        1000,
    ]


# ----------------------------------------------------------------------------- --quick


@pytest.mark.slow
def test_small_data_quick(isolated_env: Path) -> None:
    figs, out = isolated_env / "figs", isolated_env / "small_data.json"
    res = sd.main(["--quick", "--figures", str(figs), "--json", str(out)])
    png = figs / sd.FIGURE
    assert png.stat().st_size > 10_000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads(out.read_text())
    assert saved["quick"] and saved["experiment"] == "small_data-quick"
    assert len(saved["runs"]) == 4 and len(saved["cells"]) == 4 and len(saved["comparisons"]) == 2
    for r in saved["runs"]:
        assert r["steps"] == sd.QUICK.steps
        assert r["score"] is not None and math.isfinite(r["score"])
        assert r["seem_final"] is not None and r["q_ratio_final"] >= 0
    sizes = {r["size"]: r["n_transitions"] for r in saved["runs"]}
    assert sizes["full"] == saved["dataset_transitions"] > sizes["p1"] >= 1
    assert saved["configs"]["td3bc"]["algo"]["td3bc"]["bc_weight"] == 1.0
    assert saved["verdict"] in ("reproduced", "partly", "not reproduced", "inconclusive")
    (row,) = sd.summary_rows(saved)
    assert row.section == "6" and row.verdict.startswith(saved["verdict"])
    md = sd.report_section(saved, "figures")
    assert md.startswith("## 6. Small datasets") and "**Reading.**" in md
    assert f"figures/{sd.FIGURE}" in md and "| 1% |" in md
    assert res["verdict"] == saved["verdict"]


def test_failure_kind_separates_divergence_from_shared_score_loss() -> None:
    base = {("full", "none"): 60.0, ("full", "layer"): 60.0}
    shared = sd.compare(sd.summarise(_grid({**base, ("p1", "none"): 30, ("p1", "layer"): 31})))
    assert sd.failure_kind(shared) == "shared"
    rescued = sd.compare(sd.summarise(_grid({**base, ("p1", "none"): 30, ("p1", "layer"): 59})))
    assert sd.failure_kind(rescued) == "score"
    calm = sd.compare(sd.summarise(_grid({**base, ("p1", "none"): 60, ("p1", "layer"): 60})))
    assert sd.failure_kind(calm) == "none"
    div = frozenset({("p1", "none")})
    blown = sd.compare(sd.summarise(_grid({**base, ("p1", "none"): 60, ("p1", "layer"): 60}, div)))
    assert sd.failure_kind(blown) == "divergence"
