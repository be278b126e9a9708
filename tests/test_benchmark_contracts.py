"""The benchmark scripts' command-line contracts (design.md), on tiny sizes: what other tools
parse is the last stdout line as JSON; bad input exits 2 with one line. Speed itself is only
measured by running the benchmarks, never here."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from bench_module import bench_module

ROOT = Path(__file__).resolve().parents[1]


def run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )


def last_json(proc: subprocess.CompletedProcess[str]) -> dict:
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["td3bc", "iql", "cql"])
def test_bench_train_prints_speeds_and_the_baseline_ratio(algo: str) -> None:
    tiny = ["--steps", "4", "--warmup", "1", "--chunk", "2", "--dataset-size", "500"]
    args = ("--algo", algo, *tiny, "--hidden", "16,16", "--autograd", "--json")
    out = last_json(run("bench_train.py", *args))
    assert out["algo"] == algo and out["hidden"] == [16, 16] and out["steps"] == 4
    for key in ("steps_per_s", "baseline_steps_per_s", "ms_per_step", "autograd_steps_per_s"):
        assert out[key] > 0 and math.isfinite(out[key]), key
    assert out["speedup"] == pytest.approx(out["steps_per_s"] / out["baseline_steps_per_s"], 1e-2)
    assert out["hand_backward_gain"] > 0


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which(os.environ.get("CXX", "g++")) is None, reason="torch.compile needs a C++ compiler"
)
def test_bench_train_compile_adds_the_compiled_side_against_the_same_baseline() -> None:
    # Two warm-up steps: the actor pass first runs (and compiles) on the second step.
    tiny = ["--steps", "4", "--warmup", "2", "--chunk", "2", "--dataset-size", "500"]
    out = last_json(run("bench_train.py", *tiny, "--hidden", "16,16", "--compile", "--json"))
    for key in ("compiled_steps_per_s", "compiled_ms_per_step", "compile_s"):
        assert out[key] > 0 and math.isfinite(out[key]), key
    ratio = out["compiled_steps_per_s"] / out["baseline_steps_per_s"]
    assert out["compiled_speedup"] == pytest.approx(ratio, rel=1e-2, abs=2e-3)  # 3 decimals
    gain = out["compiled_steps_per_s"] / out["steps_per_s"]
    assert out["compile_gain"] == pytest.approx(gain, rel=1e-2, abs=2e-3)


@pytest.mark.slow
def test_bench_seem_prints_seconds_and_seem() -> None:
    out = last_json(run("bench_seem.py", "--n", "32", "--repeats", "1", "--json"))
    assert out["seconds"] > 0
    assert -1.0 <= out["seem"] <= 1.0


@pytest.mark.parametrize(
    ("script", "args", "needle"),
    [
        ("bench_train.py", ["--steps", "0"], "--steps must be >= 1"),
        ("bench_train.py", ["--hidden", "a,b"], "--hidden"),
        ("bench_train.py", ["--algo", "cql", "--compile"], "algo.compile"),
        ("bench_stopper.py", ["--replay-every", "-1"], "--replay-every"),
        ("bench_seem_share.py", ["--steps", "0"], "--steps"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(script: str, args: list[str], needle: str) -> None:
    proc = run(script, *args)
    assert proc.returncode == 2
    assert needle in proc.stderr
    assert proc.stdout == ""


def test_bench_peers_table_has_a_row_per_side_with_the_ratio_rss_and_score() -> None:
    # The table printed before the JSON line, from a result as main() builds it (d3rlpy itself is
    # an optional extra, absent in CI: the table is a pure function of the result).
    peers = bench_module("bench_peers")
    result = {
        "dataset": "seem_ray/x-v0",
        "transitions": 1000,
        "steps": 500,
        "batch": 256,
        "threads": 1,
        "torch": "2.13.0+cpu",
        "d3rlpy": "2.8.1",
        "corl": "not installable here",
        "algos": {
            "td3bc": {
                "steps_per_s": {"d3rlpy": 50.0, "seem_ray": 110.0},
                "ratio_to_d3rlpy": {"d3rlpy": 1.0, "seem_ray": 2.2},
                "peak_rss_mib": {
                    "d3rlpy": {"total": 514.8, "added": 96.4},
                    "seem_ray": {"total": 511.1, "added": 92.8},
                },
                "score_steps": 3000,
                "score_mean": {"d3rlpy": 38.6, "seem_ray": 39.5},
            },
            "iql": {
                "steps_per_s": {"d3rlpy": 40.0, "seem_ray": 80.0},
                "ratio_to_d3rlpy": {"d3rlpy": 1.0, "seem_ray": 2.0},
            },
        },
    }
    lines = peers.format_table(result).splitlines()
    assert "after 3000 steps" in lines[0] and "seem_ray/x-v0" in lines[0]
    rows = {tuple(line.split()[:2]): line for line in lines[3:-1]}
    assert len(rows) == 4
    td3_ours = rows[("td3bc", "seem_ray")]
    assert "110.0" in td3_ours and "2.20x" in td3_ours and "511 (93)" in td3_ours
    assert td3_ours.rstrip().endswith("39.5")
    iql_ours = rows[("iql", "seem_ray")]
    assert "2.00x" in iql_ours and iql_ours.rstrip().endswith("-")  # no RSS, no score: dashes
    assert lines[-1] == "CORL: not installable here"
