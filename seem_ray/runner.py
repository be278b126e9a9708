"""Single-process runs (``seem-ray train``): the loop plus a run folder, progress and the predictor.

Flow position: config -> prepare_data -> TrainingRun.run(callback) with the callback writing
``metrics.jsonl``, atomic checkpoints and progress lines, and asking the divergence predictor
whether to stop. The run folder holds::

    config.yaml        the validated config (re-loadable with `seem-ray train`)
    metrics.jsonl      one JSON record per report, in step order
    checkpoint/state.pt  the latest checkpoint (atomic)
    summary.json       written last: stop reason, steps, final metrics, timings
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from seem_ray import metrics as M
from seem_ray.checkpoint import (
    CHECKPOINT_FILE,
    CheckpointError,
    config_fingerprint,
    load_latest_good,
    save_checkpoint,
)
from seem_ray.config import RunConfig, to_dict
from seem_ray.divergence import Verdict, build_predictor
from seem_ray.loop import Report, TrainingRun, prepare_data
from seem_ray.runtime import (
    RunFolderError,
    StorageError,
    atomic_write_text,
    pick_device,
    seed_everything,
    set_threads,
    storage_fix,
)

__all__ = ["RunSummary", "format_progress", "read_history", "run_local"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunSummary:
    """The end of a run, as written to summary.json."""

    run_dir: str
    steps: int
    stop_reason: str
    diverged_since: int | None
    final_metrics: dict[str, float]
    wall_seconds: float
    seem_seconds: float
    q_bound: float
    history: list[dict[str, float]] = field(default_factory=list, repr=False)

    @property
    def seem_share(self) -> float:
        return self.seem_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0


def format_progress(step: int, total: int, m: dict[str, float]) -> str:
    """One progress line: step, speed, Q on the probe, SEEM, critic loss."""
    parts = [f"step {step}/{total}", f"{m.get(M.STEPS_PER_S, 0.0):.0f} steps/s"]
    if M.Q_MEAN in m:
        parts.append(f"Q {m[M.Q_MEAN]:.3g}")
    if M.SEEM in m:
        parts.append(f"SEEM {m[M.SEEM]:+.3f}")
    if M.CRITIC_LOSS in m:
        parts.append(f"loss {m[M.CRITIC_LOSS]:.3g}")
    if M.NORMALIZED_SCORE in m:
        parts.append(f"score {m[M.NORMALIZED_SCORE]:.1f}")
    return " | ".join(parts)


def read_history(path: Path, upto_step: float = math.inf) -> list[dict[str, Any]]:
    """A run's metrics.jsonl records up to `upto_step`, as written (non-finite values are the
    strings "nan"/"inf"); a line cut short (disk full, crash mid-append) is dropped."""
    if not path.exists():
        return []
    out = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            rec = None
        if not isinstance(rec, dict):
            log.warning(
                "%s line %d is not a JSON record (a write cut short?); dropped", path, number
            )
            continue
        if rec.get(M.STEP, 0) <= upto_step:
            out.append(rec)
    return out


def _check_run_folder(run_dir: Path) -> None:
    """Refuse, before any data is loaded, a run folder that cannot be created or written."""
    try:
        existing = run_dir
        while not existing.exists():
            existing = existing.parent
        if not existing.is_dir():
            raise RunFolderError(
                f"run folder {run_dir} cannot be created: {existing} is a file, not a folder; "
                "choose another --run-dir"
            )
        for folder in (existing, run_dir / "checkpoint"):
            if folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK):
                raise RunFolderError(
                    f"run folder {run_dir} cannot be written: {folder} is not writable; "
                    "choose a writable --run-dir or change its permissions"
                )
    except RunFolderError:
        raise
    except OSError as err:  # e.g. a parent we may not even look into
        raise RunFolderError(
            f"run folder {run_dir} cannot be used: {err.strerror or err}; choose another --run-dir",
            err.errno,
        ) from err


@contextmanager
def _disk_errors_as(
    error: type[StorageError], what: str, then: str, folder: Path
) -> Iterator[None]:
    """Turn an OSError in the block into one `error` line: what failed, why, what to do."""
    try:
        yield
    except StorageError:
        raise
    except OSError as err:
        reason = err.strerror or str(err) or type(err).__name__
        raise error(f"{what}: {reason}; {storage_fix(err, folder)}, {then}", err.errno) from err


def _resume_hint(run_dir: Path, last_saved: int | None) -> str:
    if last_saved is None:
        return f"then delete {run_dir} and start again (no checkpoint was saved yet)"
    return (
        f"then continue from the last good checkpoint (step {last_saved}) with "
        f"`seem-ray train {run_dir / 'config.yaml'} --run-dir {run_dir} --resume`"
    )


def _json_float(x: float) -> float | str:
    return x if math.isfinite(x) else str(x)


def run_local(cfg: RunConfig, run_dir: str | Path, *, resume: bool = False) -> RunSummary:
    """Train one run in this process, writing the run folder; returns the summary.

    Args:
        cfg: validated config.
        run_dir: output folder; must be new or empty unless ``resume``.
        resume: continue from ``run_dir/checkpoint`` (same config required).
    """
    run_dir = Path(run_dir).resolve()
    ckpt_dir = run_dir / "checkpoint"
    metrics_path = run_dir / "metrics.jsonl"
    _check_run_folder(run_dir)
    if resume:
        if not any((ckpt_dir / f).exists() for f in ("state.pt", "state.prev.pt")):
            raise CheckpointError(
                f"nothing to resume in {run_dir}: no checkpoint/state.pt; start without --resume"
            )
    elif run_dir.exists() and any(run_dir.iterdir()):
        raise FileExistsError(
            f"run folder {run_dir} is not empty; pass --resume to continue it or choose another --run-dir"
        )

    seed_everything(cfg.train.seed)
    set_threads(cfg.train.threads)
    device = pick_device(cfg.train.device)
    data = prepare_data(cfg)
    run = TrainingRun(cfg, data, device)
    fingerprint = config_fingerprint(run.fingerprint_parts())
    history: list[dict[str, float]] = []
    if resume:
        state = load_latest_good(ckpt_dir, fingerprint)
        run.load_state_dict(state)
        history = read_history(metrics_path, run.step)
        log.info("resuming %s from step %d", run_dir, run.step)
    with _disk_errors_as(
        RunFolderError,
        f"could not write the run folder {run_dir}",
        "or choose another --run-dir",
        run_dir,
    ):
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False))
        # Rewrite the metrics file up to the checkpoint: steps after it will be trained again.
        atomic_write_text(metrics_path, "".join(json.dumps(r) + "\n" for r in history))
    last_saved = run.step if resume else None

    predictor = build_predictor(cfg.stopper, data.q_bound)
    verdict = Verdict()
    for rec in history:  # predictor state is a pure function of the history: replay it
        if predictor is not None:
            verdict = predictor.update(int(rec[M.STEP]), rec)

    started = time.perf_counter()
    log.info(
        "training %s on %s (%d transitions, q_bound %.3g) for %d steps on %s",
        cfg.algo.name,
        cfg.data.dataset,
        len(data.transitions),
        data.q_bound,
        cfg.train.steps,
        device,
    )

    def on_report(r: TrainingRun, rep: Report) -> bool:
        nonlocal verdict, last_saved
        record = dict(rep.metrics)
        if predictor is not None:
            verdict = predictor.update(rep.step, record)
        with (
            _disk_errors_as(
                StorageError,
                f"could not append to {metrics_path} at step {rep.step}",
                _resume_hint(run_dir, last_saved),
                run_dir,
            ),
            metrics_path.open("a") as fh,
        ):
            fh.write(json.dumps({k: _json_float(v) for k, v in record.items()}) + "\n")
        history.append(record)
        if rep.checkpoint_due or verdict.diverging:
            with _disk_errors_as(
                StorageError,
                f"could not write checkpoint {ckpt_dir / CHECKPOINT_FILE} at step {rep.step}",
                _resume_hint(run_dir, last_saved),
                ckpt_dir,
            ):
                save_checkpoint(ckpt_dir, r.state_dict(), fingerprint)
            last_saved = rep.step
        line = format_progress(rep.step, cfg.train.steps, record)
        if verdict.diverging:
            line += f" | DIVERGING ({verdict.reason}, since step {verdict.since})"
        log.info(line)
        return verdict.diverging

    steps = run.run(on_report)
    wall = time.perf_counter() - started
    summary = RunSummary(
        run_dir=str(run_dir),
        steps=steps,
        stop_reason=verdict.reason if verdict.diverging and verdict.reason else M.REASON_BUDGET,
        diverged_since=verdict.since,
        final_metrics=history[-1] if history else {},
        wall_seconds=wall,
        seem_seconds=run.seem_seconds,
        q_bound=data.q_bound,
        history=history,
    )
    body: dict[str, Any] = {
        "run_dir": summary.run_dir,
        "steps": summary.steps,
        "stop_reason": summary.stop_reason,
        "diverged_since": summary.diverged_since,
        "q_bound": summary.q_bound,
        "wall_seconds": round(wall, 3),
        "seem_seconds": round(run.seem_seconds, 3),
        "seem_share": round(summary.seem_share, 4),
        "final_metrics": {k: _json_float(v) for k, v in summary.final_metrics.items()},
    }
    summary_path = run_dir / "summary.json"
    with _disk_errors_as(
        StorageError,
        f"training finished ({steps} steps) but {summary_path} could not be written",
        _resume_hint(run_dir, last_saved),
        run_dir,
    ):
        atomic_write_text(summary_path, json.dumps(body, indent=2) + "\n")
    log.info(
        "done: %d steps in %.1fs, stop reason %s, SEEM share of wall time %.1f%%",
        steps,
        wall,
        summary.stop_reason,
        100 * summary.seem_share,
    )
    return summary
