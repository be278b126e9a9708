"""The framework-free training loop (seem_ray.loop): precision settings reach the updates."""

from __future__ import annotations

from pathlib import Path

import torch
from tiny_run import TINY_RUN

from seem_ray.config import load_run_config, parse_set_expressions
from seem_ray.loop import TrainingRun, prepare_data

TINY = ["data.dataset=seem_ray/pointmaze-umaze-dense-v0", *TINY_RUN, "train.steps=40"]


def _train(bf16: bool) -> tuple[TrainingRun, list[dict[str, float]]]:
    cfg = load_run_config(None, parse_set_expressions([*TINY, f"train.bf16={str(bf16).lower()}"]))
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
