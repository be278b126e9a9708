"""Ray Train adapter: the loop of seem_ray.loop on N workers with PyTorch DDP.

Flow position: RunConfig -> TorchTrainer(train_loop_per_worker) -> each worker: prepare_data,
TrainingRun, DDP-wrap the modules whose gradients must agree, run the loop with a callback that
calls ``ray.train.report`` (metrics every ``log_every`` steps, a checkpoint when due).

Design choices:
- Every worker samples its own independent stream over the whole dataset (seed + rank). Offline
  datasets here are small; sharding them would cut each worker's view without saving memory.
  The global batch is ``batch_size x num_workers``; DDP averages gradients, so N workers on
  N batches match one worker on their concatenation (tested).
- Only rank 0 probes SEEM and evaluates; every worker reports (``ray.train.report`` is a barrier)
  and rank 0's metrics are the ones Tune sees.
- Checkpoints hold the algorithm, sampler RNG, step and the probe indices (so a resumed run
  probes the same batch); they are written by rank 0 atomically and read with weights_only.
"""

from __future__ import annotations

import logging
import os
import tempfile
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ray
import ray.train
import torch
from ray.train import Checkpoint, CheckpointConfig, FailureConfig
from ray.train import RunConfig as RayRunConfig
from ray.train import ScalingConfig as RayScalingConfig
from ray.train.torch import TorchTrainer

from seem_ray import metrics as M
from seem_ray.checkpoint import (
    CheckpointError,
    config_fingerprint,
    load_checkpoint,
    save_checkpoint,
)
from seem_ray.config import RunConfig, parse_run_config, to_dict
from seem_ray.loop import Report, TrainingRun, prepare_data
from seem_ray.runtime import datasets_dir, seed_everything, set_threads

__all__ = [
    "Q_BOUND_KEY",
    "TrainFailure",
    "fit",
    "make_trainer",
    "ray_env_vars",
    "train_loop_per_worker",
    "wrap_ddp",
]

log = logging.getLogger(__name__)

Q_BOUND_KEY = "q_bound"
"""Reported with every record so a stopper can build the trial's predictor from its first result."""


class TrainFailure(RuntimeError):
    """Training failed on a worker: one clear line; the worker traceback goes to the log."""


def ray_env_vars() -> dict[str, str]:
    """Environment every Ray process of ours needs (dataset root, fast report barrier)."""
    return {
        "MINARI_DATASETS_PATH": str(datasets_dir()),
        # Train V2's report barrier polls worker health; the 2 s default stalls short reports.
        "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": os.environ.get(
            "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2"
        ),
        "SEEM_RAY_RUNS": os.environ.get("SEEM_RAY_RUNS", ""),
    }


def _device(cfg: RunConfig) -> torch.device:
    if cfg.scaling.use_gpu and torch.cuda.is_available():
        return ray.train.torch.get_device()
    return torch.device("cpu")


def wrap_ddp(algo: Any, device: torch.device) -> None:
    """DDP-wrap every module whose gradients must be all-reduced; the losses call the wrappers."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [device.index] if device.type == "cuda" else None
    wrapped = {name: DDP(module, device_ids=ids) for name, module in algo.modules_for_ddp().items()}
    algo.wrap_modules(wrapped)


def _load_with_fallback(checkpoint: Checkpoint, fingerprint: str) -> dict[str, Any]:
    """Ray's latest checkpoint, or, if it is corrupt on a local filesystem, the newest good sibling."""
    try:
        with checkpoint.as_directory() as folder:
            return load_checkpoint(folder, fingerprint)
    except CheckpointError as err:
        parent = Path(checkpoint.path).parent
        if "different configuration" in str(err) or not parent.is_dir():
            raise
        for older in sorted(parent.glob("checkpoint_*"), reverse=True):
            if not older.is_dir() or older.resolve() == Path(checkpoint.path).resolve():
                continue
            try:
                state = load_checkpoint(older, fingerprint)
            except CheckpointError:
                continue
            log.warning("%s; resuming from the older checkpoint %s instead", err, older)
            return state
        raise


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Entry point run by every Ray Train worker. ``config = {"run": RunConfig as dict}``."""
    cfg = parse_run_config(config["run"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    seed_everything(cfg.train.seed)
    set_threads(cfg.train.threads)
    device = _device(cfg)
    data = prepare_data(cfg)
    run = TrainingRun(cfg, data, device, rank=rank, world_size=world)
    fingerprint = config_fingerprint(run.fingerprint_parts())
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        run.load_state_dict(_load_with_fallback(checkpoint, fingerprint))
        log.info("rank %d resumed from step %d", rank, run.step)
    if world > 1:
        wrap_ddp(run.algo, device)

    def on_report(r: TrainingRun, rep: Report) -> bool:
        metrics = dict(rep.metrics)
        metrics[Q_BOUND_KEY] = data.q_bound
        if rep.checkpoint_due and r.is_chief:
            with tempfile.TemporaryDirectory() as tmp:
                save_checkpoint(tmp, r.state_dict(), fingerprint)
                ray.train.report(metrics, checkpoint=Checkpoint.from_directory(tmp))
        else:
            ray.train.report(metrics)
        return False

    try:
        run.run(on_report)
    except Exception:
        log.error("rank %d failed:\n%s", rank, traceback.format_exc())
        raise


def make_trainer(
    cfg: RunConfig,
    *,
    name: str,
    storage_path: str | Path,
    callbacks: Sequence[Any] = (),
) -> TorchTrainer:
    """A TorchTrainer for one run. Same ``name`` + ``storage_path`` resumes from its last checkpoint."""
    sc = cfg.scaling
    resources = {"CPU": sc.cpus_per_worker}
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"run": to_dict(cfg)},
        scaling_config=RayScalingConfig(
            num_workers=sc.num_workers,
            use_gpu=sc.use_gpu,
            resources_per_worker=resources | ({"GPU": 1} if sc.use_gpu else {}),
        ),
        run_config=RayRunConfig(
            name=name,
            storage_path=str(Path(storage_path).resolve()),
            failure_config=FailureConfig(max_failures=sc.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            callbacks=list(callbacks),
        ),
    )


def _root_cause(err: BaseException) -> str:
    """The innermost worker exception as one line."""
    failures = getattr(err, "worker_failures", None)
    if failures:
        rank, exc = sorted(failures.items())[0]
        inner: BaseException = exc
        while (cause := getattr(inner, "cause", None)) is not None:
            inner = cause
        text = str(inner).strip().splitlines()
        return f"worker {rank}: {type(inner).__name__}: {text[-1] if text else ''}"
    lines = str(err).strip().splitlines()
    return lines[-1] if lines else type(err).__name__


def fit(cfg: RunConfig, *, name: str, storage_path: str | Path) -> dict[str, float]:
    """Run one Ray Train job to completion; returns the last reported metrics.

    Raises:
        TrainFailure: a worker failed beyond ``scaling.max_failures`` (one line; traceback logged).
    """
    trainer = make_trainer(cfg, name=name, storage_path=storage_path)
    try:
        result = trainer.fit()
    except ray.train.TrainingFailedError as err:
        log.debug("training failed", exc_info=err)
        raise TrainFailure(
            f"training failed: {_root_cause(err)} (full traceback in the Ray logs)"
        ) from None
    return dict(result.metrics or {})


def step_of(metrics: dict[str, Any]) -> int:
    return int(metrics.get(M.STEP, 0))
