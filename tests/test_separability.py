"""benchmarks/separability.py on synthetic runs: the features are sign- and scale-free, the
envelope is the stable runs' running maximum, an in-sample envelope never false-alarms, and a
transferred one counts the stable runs it flags. The figures come from the committed histories."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from bench_module import bench_module

from seem_ray import metrics as M

S = bench_module("separability")


def _rec(step: int, q: float, seem: float | None = None, w: float = 10.0) -> dict[str, float]:
    out = {M.STEP: float(step), M.Q_MEAN: q, M.Q_ABS_MAX: abs(q), M.CRITIC_WEIGHT_NORM: w}
    if seem is not None:
        out[M.SEEM] = seem
    return out


def test_features_read_q_against_its_first_report_and_the_bound() -> None:
    # mean Q starts at -20, crosses zero and settles at +5: drift is |q - q0| / bound, sign-free
    recs = [_rec(25, -20.0, 0.1, 10.0), _rec(50, 0.0, None, 12.0), _rec(75, 5.0, 0.2, 15.0)]
    feats = S.features(recs, bound=100.0)
    assert [s for s, _ in feats] == [25, 50, 75]
    assert feats[0][1] == pytest.approx(
        {"seem": 0.1, "q_abs_max/bound": 0.2, "q_drift/bound": 0.0, "weight_norm/first": 1.0}
    )
    assert "seem" not in feats[1][1]  # a Q-only record has no SEEM feature
    assert feats[1][1]["q_drift/bound"] == pytest.approx(0.2)
    assert feats[2][1]["q_drift/bound"] == pytest.approx(0.25)
    assert feats[2][1]["weight_norm/first"] == pytest.approx(1.5)
    # scaling rewards (and so Q and its bound) by 10 leaves every feature unchanged
    scaled = [{**r, M.Q_MEAN: 10 * r[M.Q_MEAN], M.Q_ABS_MAX: 10 * r[M.Q_ABS_MAX]} for r in recs]
    for (step, got), (_, want) in zip(S.features(scaled, bound=1000.0), feats, strict=True):
        assert got == pytest.approx(want), step


def test_envelope_is_the_running_maximum_of_the_stable_runs() -> None:
    a = [(25, {"seem": 0.1}), (50, {"seem": 0.05}), (100, {"seem": 0.3})]
    b = [(25, {"seem": 0.2}), (75, {"seem": 0.0})]
    env = S.envelope([a, b], keys=("seem", "q_drift/bound"))
    assert [S.threshold(env, "seem", s) for s in (10, 25, 60, 99, 100, 10_000)] == [
        0.2,  # before the first value: the first value
        0.2,
        0.2,
        0.2,
        0.3,
        0.3,
    ]
    assert S.threshold(env, "q_drift/bound", 50) == math.inf  # no stable value: separates nothing


def test_first_exceed_scales_the_margin_from_the_features_neutral_value() -> None:
    env = S.envelope([[(25, {"seem": 0.1, "weight_norm/first": 1.2})]])
    feats = [(25, {"seem": 0.15, "weight_norm/first": 1.3}), (50, {"seem": 0.25})]
    assert S.first_exceed(feats, env, ["seem"]) == (25, "seem")
    assert S.first_exceed(feats, env, ["seem"], margin=2.0) == (50, "seem")  # 0.25 > 0.2
    assert S.first_exceed(feats, env, ["weight_norm/first"]) == (25, "weight_norm/first")
    # margin 2 on the weight ratio: above 1 + 2 * 0.2 = 1.4, which 1.3 is not
    assert S.first_exceed(feats, env, ["weight_norm/first"], margin=2.0) is None


def _run(name: str, qs: list[float], seems: list[float], bound: float) -> dict:
    steps = range(25, 25 * len(qs) + 1, 25)
    return {"name": name, "q_bound": bound, "records": list(map(_rec, steps, qs, seems))}


def _runs() -> dict[str, list[dict]]:
    bound = 100.0
    calm = [_run(f"calm{i}", [1.0 + i] * 40, [0.1 * (i + 1)] * 40, bound) for i in range(2)]
    # |mean Q| passes the bound at step 250 (2 * 1.6^9 > 100), SEEM high from the first probe
    fast = _run("fast", [2.0 * 1.6**k for k in range(12)], [0.6] * 12, bound)
    # a stable run whose SEEM sits above the calibration runs' but whose Q stays bounded
    blip = _run("blip", [2.0] * 40, [0.5] * 40, bound)
    return {"calibration": [*calm, fast], "held_out": [calm[0], blip, fast]}


def test_in_sample_envelope_never_false_alarms_and_transfer_counts_what_it_flags() -> None:
    result = S.analyse(_runs())
    cal = result["in_sample"]["calibration"]
    assert cal["summary"]["false_alarms"] == 0
    assert cal["per_run"]["fast"]["flag"] == 25  # SEEM 0.6 above both calm runs from step 25
    assert cal["summary"]["median_lead_x"] == pytest.approx(250 / 25)
    held = result["in_sample"]["held_out"]
    assert held["summary"]["false_alarms"] == 0
    assert held["per_run"]["fast"]["by"] == "seem"  # 0.6 > the blip's 0.5
    seem = result["transfer"]["calibration -> held_out"]["seem x1"]
    assert (seem["false_alarms"], seem["stable"]) == (1, 2)  # the blip exceeds calibration's 0.2
    assert (seem["separated"], seem["diverged"]) == (1, 1)
    margin3 = result["transfer"]["calibration -> held_out"]["seem x3"]
    assert margin3["false_alarms"] == 0  # 0.5 < 3 * 0.2


def test_the_report_has_both_tables() -> None:
    result = S.analyse(_runs())
    text = "\n".join(S.markdown(result))
    assert "| calibration -> held_out | seem x1 | 1/2 | 1/1 |" in text
    assert "| calibration | fast | 250 | 25 | seem |" in text


def test_transfers_score_each_held_out_set_and_the_pooled_reference_on_the_fresh_one() -> None:
    assert S.transfers(["calibration", "held_out", "fresh"]) == [
        (("calibration",), "held_out"),
        (("calibration",), "fresh"),
        (("calibration", "held_out"), "fresh"),
    ]
    runs = _runs()
    runs["fresh"] = runs["held_out"]
    result = S.analyse(runs)
    # the pooled envelope holds the held-out blip's SEEM 0.5, so the same blip is no alarm there
    assert result["transfer"]["calibration -> fresh"]["seem x1"]["false_alarms"] == 1
    assert result["transfer"]["calibration + held_out -> fresh"]["seem x1"]["false_alarms"] == 0


def test_main_writes_the_report_from_histories_and_refuses_a_missing_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    C = S.C
    runs = _runs()
    main = {r["name"]: {**r, "env": "hopper"} for r in runs["calibration"]}
    main |= {
        f"w-{r['name']}": {**r, "name": f"w-{r['name']}", "env": "walker2d"}
        for r in runs["held_out"]
    }
    C.write_histories(tmp_path / "h.json.gz", main)
    doc = tmp_path / "sep.md"
    args = ["--histories", str(tmp_path / "h.json.gz"), "--fresh-histories", str(tmp_path / "no")]
    assert S.main([*args, "--doc", str(doc)]) == 0
    text = doc.read_text()
    assert "| calibration -> held_out | seem x1 | 1/2 | 1/1 |" in text
    assert "in-sample held_out: median lead 10.0x" in capsys.readouterr().err
    assert S.main(["--histories", str(tmp_path / "absent.json.gz"), "--doc", str(doc)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not found; run benchmarks/calibrate.py" in err[0]
    assert doc.read_text() == text  # nothing rewritten
