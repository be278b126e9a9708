"""The framework-free training loop (seem_ray.loop): precision and compile settings reach the
updates."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
from tiny_run import TINY_RUN

from seem_ray.config import load_run_config, parse_set_expressions
from seem_ray.loop import TrainingRun, prepare_data

TINY = ["data.dataset=seem_ray/pointmaze-umaze-dense-v0", *TINY_RUN, "train.steps=40"]


def _train(bf16: bool, compile: bool = False) -> tuple[TrainingRun, list[dict[str, float]]]:
    flags = [f"train.bf16={str(bf16).lower()}", f"algo.compile={str(compile).lower()}"]
    cfg = load_run_config(None, parse_set_expressions([*TINY, *flags]))
    run = TrainingRun(cfg, prepare_data(cfg), torch.device("cpu"))
    reports: list[dict[str, float]] = []
    run.run(lambda _run, report: reports.append(report.metrics) or False)
    return run, reports


def test_bf16_autocasts_the_updates_only(isolated_env: Path) -> None:
    """train.bf16 changes the training arithmetic (bf16 matmuls: same start, nearby but not
    identical weights), while parameters stay fp32 and SEEM is still measured."""
    fp32, reports32 = _train(bf16=False)
    bf16, reports16 = _train(bf16=True)
    w32 = torch.cat([p.detach().flatten() for p in fp32.algo.critic.parameters()])
    w16 = torch.cat([p.detach().flatten() for p in bf16.algo.critic.parameters()])
    assert all(p.dtype == torch.float32 for p in bf16.algo.critic.parameters())
    assert not torch.equal(w32, w16)
    assert float((w16 - w32).norm() / w32.norm()) < 0.05
    assert [r["step"] for r in reports16] == [r["step"] for r in reports32] == [20.0, 40.0]
    assert all(torch.isfinite(torch.tensor(r["seem"])) for r in reports16)


@pytest.mark.skipif(
    shutil.which(os.environ.get("CXX", "g++")) is None, reason="torch.compile needs a C++ compiler"
)
def test_algo_compile_trains_the_same_run_and_keeps_checkpoints_interchangeable(
    isolated_env: Path,
) -> None:
    """algo.compile changes how the step runs, not what it computes: the same weights and SEEM
    (up to float reassociation), and the same checkpoint fingerprint, so a run can be resumed
    with compile switched on or off."""
    eager, reports_e = _train(bf16=False)
    compiled, reports_c = _train(bf16=False, compile=True)
    assert compiled.algo.compiled and not eager.algo.compiled  # type: ignore[attr-defined]
    we = torch.cat([p.detach().flatten() for p in eager.algo.critic.parameters()])
    wc = torch.cat([p.detach().flatten() for p in compiled.algo.critic.parameters()])
    torch.testing.assert_close(wc, we, rtol=1e-4, atol=1e-5)
    assert [r["step"] for r in reports_c] == [r["step"] for r in reports_e] == [20.0, 40.0]
    for rc, re in zip(reports_c, reports_e, strict=True):
        assert rc["seem"] == pytest.approx(re["seem"], abs=1e-4)
    assert compiled.fingerprint_parts() == eager.fingerprint_parts()


def test_dense_early_phase_adds_reports_and_probes_but_no_checkpoints(isolated_env: Path) -> None:
    """seem.early_every/early_until: records and SEEM probes every early_every steps up to
    early_until, then the regular cadence; checkpoints stay on the regular cadence only."""
    cfg = load_run_config(
        None,
        parse_set_expressions(
            [
                *TINY,
                "train.steps=100",
                "train.log_every=50",
                "seem.every=50",
                "seem.early_every=10",
                "seem.early_until=30",
                "train.checkpoint_every=50",
            ]
        ),
    )
    run = TrainingRun(cfg, prepare_data(cfg), torch.device("cpu"))
    reports = []
    run.run(lambda _run, report: reports.append(report) or False)
    assert [r.step for r in reports] == [10, 20, 30, 50, 100]
    assert all("seem" in r.metrics for r in reports)
    assert [r.step for r in reports if r.checkpoint_due] == [50, 100]

    # A startup phase denser still comes first; the early phase takes over after it.
    startup = load_run_config(
        None,
        parse_set_expressions(
            [
                *TINY,
                "train.steps=60",
                "train.log_every=50",
                "seem.every=50",
                "seem.startup_every=4",
                "seem.startup_until=12",
                "seem.early_every=10",
                "seem.early_until=30",
            ]
        ),
    )
    run = TrainingRun(startup, prepare_data(startup), torch.device("cpu"))
    steps: list[int] = []
    run.run(lambda _run, report: steps.append(report.step) or False)
    assert steps == [4, 8, 10, 12, 20, 30, 50, 60]

    off = load_run_config(
        None,
        parse_set_expressions(
            [*TINY, "train.steps=100", "train.log_every=50", "seem.every=100", "seem.early_every=0"]
        ),
    )
    plain = TrainingRun(off, prepare_data(off), torch.device("cpu"))
    records: list[dict[str, float]] = []
    plain.run(lambda _run, report: records.append(report.metrics) or False)
    assert [r["step"] for r in records] == [50.0, 100.0]
    assert ["seem" in r for r in records] == [False, True]
