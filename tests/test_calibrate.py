"""benchmarks/calibrate.py's replay machinery on synthetic records: the splice of the dense early
re-recording, the shipped-cadence filter and the search's admissibility rules. The figures
themselves come from running the script on real runs, never from here."""

from __future__ import annotations

import math

import pytest
from bench_module import bench_module

from seem_ray import metrics as M
from seem_ray.config import SeemConfig

C = bench_module("calibrate")


def _rec(step: int, q: float, seem: float | None = None) -> dict[str, float]:
    out = {M.STEP: float(step), M.Q_MEAN: q, M.Q_ABS_MAX: abs(q)}
    if seem is not None:
        out[M.SEEM] = seem
    return out


def test_early_records_replace_the_first_steps_and_the_main_recording_goes_on() -> None:
    main = [_rec(s, s / 100) for s in range(100, 4001, 100)]
    early = [_rec(s, s / 100) for s in range(25, 2001, 25)]
    run = {"records": main, "early_records": early, "q_bound": 1e9}
    merged = C.merged_records(run)
    steps = [int(r[M.STEP]) for r in merged]
    assert steps == [*range(25, 2001, 25), *range(2100, 4001, 100)]
    assert C.early_agreement(run) == 0.0
    drifted = {**run, "early_records": [_rec(s, s / 100 + 0.5) for s in range(25, 2001, 25)]}
    assert C.early_agreement(drifted) == pytest.approx(0.5 / 1.0)  # at step 100: |0.5| / max(1, 1)


def test_an_early_crossing_ends_the_merged_stream() -> None:
    main = [_rec(100, 1.0), _rec(200, 50.0)]
    early = [_rec(25, 1.0), _rec(50, 2.0), _rec(75, 20.0), _rec(100, 1.0)]
    merged = C.merged_records({"records": main, "early_records": early, "q_bound": 10.0})
    assert [int(r[M.STEP]) for r in merged] == [25, 50, 75, 100]
    assert C.outcome(merged, 10.0) == ("diverged", 75)


def test_shipped_cadence_keeps_what_a_run_at_that_cadence_would_record() -> None:
    sc = SeemConfig(startup_every=25, startup_until=100, early_every=200, early_until=1000)
    records = [_rec(s, 1.0, seem=0.0) for s in range(25, 3001, 25)]
    kept = C.shipped_cadence(records, sc)
    with_seem = [int(r[M.STEP]) for r in kept if M.SEEM in r]
    naive = [
        s
        for s in range(25, 3001, 25)
        if (s <= 100 and s % 25 == 0) or (s <= 1000 and s % 200 == 0) or s % 1000 == 0
    ]
    assert with_seem == naive  # the last record (3000) is also a regular probe
    assert [int(r[M.STEP]) for r in kept if M.SEEM not in r] == [500, 1500, 2500]  # Q only
    assert C.first_probe_step(sc) == 25
    assert sc.probes_in(3000) == len(naive)


def test_search_admits_only_thresholds_above_every_stable_seem_and_ranks_by_lead() -> None:
    # A diverger whose SEEM rises while |Q| grows like t^2, and a stable critic with one SEEM
    # blip of 0.15 and saturating |Q|.
    bound = 100.0
    diverger = [_rec(s, (s / 100) ** 2, seem=0.6) for s in range(25, 2001, 25)]
    stable = [
        _rec(s, 5 * (1 - math.exp(-s / 300)), seem=0.15 if s == 200 else 0.0)
        for s in range(25, 30001, 25)
    ]
    runs = [
        {"name": "d", "records": diverger, "q_bound": bound},
        {"name": "s", "records": stable, "q_bound": bound},
    ]
    ranked = C.search(runs)
    assert ranked and all(r["rule"]["seem_threshold"] > 0.15 for r in ranked)
    assert all(r["probes_10k"] <= C.MAX_PROBES_10K for r in ranked)
    leads = [r["geo_lead_x"] for r in ranked]
    assert leads == sorted(leads, reverse=True) and leads[0] > 1.0


def test_fresh_grid_is_new_runs_on_the_held_out_environments_only() -> None:
    main = C.grid(10, 30000)
    fresh = C.grid(10, 30000, fresh=True)
    assert len(fresh) == 10 * len(C.HELD_OUT_ENVS)
    assert {r["env"] for r in fresh} == set(C.HELD_OUT_ENVS)
    assert {r["split"] for r in fresh} == {"fresh"}
    assert not {r["name"] for r in fresh} & {r["name"] for r in main}
    used = {r["overrides"]["train.seed"] for r in main}
    assert not {r["overrides"]["train.seed"] for r in fresh} & used  # new trajectories
    assert C.grid(10, 30000, fresh=True) == fresh  # the draw is fixed: a rerun only scores


def test_fresh_runs_are_scored_and_reported_beside_the_held_out_table() -> None:
    bound = 100.0
    diverger = [_rec(s, (s / 100) ** 2, seem=0.6) for s in range(25, 2001, 25)]
    stable = [_rec(s, 5 * (1 - math.exp(-s / 300)), seem=0.0) for s in range(25, 30001, 25)]
    runs = [
        {"name": n, "env": "walker2d", "split": "fresh", "algo": "td3", "records": r,
         "q_bound": bound}
        for n, r in (("fresh_d", diverger), ("fresh_s", stable))
    ]  # fmt: skip
    fresh = C.analyse_fresh(runs)
    default = fresh["table"][C.DEFAULT]
    assert (default["caught"], default["diverged"]) == (1, 1)
    assert (default["false_alarms"], default["stable"]) == (0, 1)
    assert [r["outcome"] for r in fresh["runs"]] == ["diverged", "stable"]
    text = "\n".join(C._fresh_lines(fresh))
    assert "out of sample" in text and "1 diverged, 1 stable, 0 ambiguous" in text
    assert C._fresh_lines(None) == []
