"""Sweeps: a sweep YAML -> Ray Tune over Ray Train trials, the SEEM stopper, MLflow tracking.

Run on a cluster with ``ray submit ray_cluster.yaml seem_ray/tune.py [-- --config FILE]`` (Ray
copies this file alone to the head as ~/tune.py, so imports are absolute and the embedded default
sweep lives here), locally with ``python seem_ray/tune.py [--config FILE]`` or ``seem-ray sweep``.

Flow: SweepConfig -> param space {"run": base RunConfig, "overrides": {dotted field: domain}} ->
each trial applies its overrides, fits a TorchTrainer (seem_ray.train) whose rank-0 reports reach
Tune through TuneReportCallback -> DivergenceStopper stops predicted divergers ->
MlflowSweepTracker records parent/child runs -> a summary table (compute used and saved).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seem_ray import metrics as M
from seem_ray.config import (
    ConfigError,
    SpaceSpec,
    SweepConfig,
    apply_overrides,
    from_dict,
    load_sweep_config,
    parse_run_config,
    parse_set_expressions,
    to_dict,
)
from seem_ray.runtime import atomic_write_text, runs_dir, setup_logging

__all__ = ["DEFAULT_SWEEP", "SweepSummary", "main", "run_sweep", "trial_config"]

log = logging.getLogger("seem_ray.tune")

# The README's main job (also tune_configs/demo.yaml; a test keeps the two identical): plain
# offline TD3 (bc_weight 0, hard target updates: the paper's divergence setting, with a small
# critic learning rate so divergence unfolds over ~1k steps) on 2,000 transitions of a local
# PointMaze dataset, critics with and without LayerNorm. The no-LN critics diverge and the SEEM
# stopper ends them before Q crosses the return bound; the LN critics train to the budget.
DEFAULT_SWEEP: dict[str, Any] = {
    "name": "demo",
    "base": {
        "data": {"dataset": "seem_ray/pointmaze-umaze-dense-v0", "max_transitions": 2000},
        "algo": {"name": "td3bc", "tau": 1.0, "critic_lr": 3e-5, "td3bc": {"bc_weight": 0.0}},
        "critic": {"hidden": [256, 256]},
        "actor": {"hidden": [256, 256]},
        "seem": {"every": 100, "probe_size": 256},
        "train": {
            "steps": 3000,
            "log_every": 100,
            "eval_episodes": 2,
            "checkpoint_every": 1000,
            "threads": 1,
        },
        "stopper": {"kind": "seem"},
        "scaling": {"num_workers": 1, "cpus_per_worker": 0.9},
        "tracking": {"experiment": "seem_ray_demo"},
    },
    "space": {"critic.norm": {"grid": ["none", "layer"]}, "train.seed": {"grid": [0, 1]}},
    "search": "grid",
    "max_concurrent": 2,
}


def trial_config(config: dict[str, Any]) -> Any:
    """A trial's validated RunConfig: the base run plus its sampled overrides."""
    base = parse_run_config(config["run"])
    return apply_overrides(base, config.get("overrides", {}))


def run_trial(config: dict[str, Any]) -> None:
    """Tune function trainable: one Ray Train fit per trial (resumes its own last checkpoint)."""
    from ray import tune

    from seem_ray.data.generate import ensure_dataset
    from seem_ray.train import make_trainer

    cfg = trial_config(config)
    ensure_dataset(cfg.data.dataset)
    ctx = tune.get_context()
    storage = Path(config["train_storage"]) / ctx.get_trial_id()
    done = _finished_run_metrics(storage / "train", cfg.train.steps)
    if done is not None:  # restored sweep: the driver died after this trial's last step
        tune.report(done)
        return
    marker = storage / _STOP_MARKER
    marker.unlink(missing_ok=True)  # a restored trial runs again
    trainer = make_trainer(
        cfg, name="train", storage_path=storage, callbacks=[_report_callback(marker)]
    )
    trainer.fit()


# Why the next two classes exist: Tune stops a trial by ending its actor. The Train controller
# that actor started dies with it, but the placement group holding the Train workers' CPUs is
# scoped to the sweep's driver job, so it stays reserved until the sweep ends: after a few
# stopped trials the cluster has no CPU left and the next trial waits forever. Worse, the
# controller is by then stuck handing its next report to the stopped trial (a one-slot queue
# nobody reads any more), so it could not even be aborted. So: the first report carries the
# controller's handle to the trial; when Tune stops the trial, the trial drops a marker file
# (the controller runs on the trial's node) that makes the controller discard further reports,
# then aborts the controller, which releases the placement group.
_CONTROLLER_KEY = "_seem_ray_train_controller"
_STOP_MARKER = "stop_requested"


def _report_callback(stop_marker: Path) -> Any:
    """A TuneReportCallback (it runs in the Train controller) that names the controller in its
    first report and stops forwarding reports once the trial asks the run to stop."""
    import ray
    from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY, TuneReportCallback
    from ray.util.queue import Full

    class ReportToStoppableTrial(TuneReportCallback):
        def __init__(self) -> None:
            super().__init__()
            self._named = False

        def after_report(self, run_context: Any, metrics: list, checkpoint: Any) -> None:
            item = dict(metrics[0])  # a copy: Train's own record keeps plain floats
            if checkpoint:
                item[CHECKPOINT_PATH_KEY] = checkpoint.path
            if not self._named:
                self._named = True
                item[_CONTROLLER_KEY] = ray.get_runtime_context().current_actor
            while not stop_marker.exists():
                try:
                    self._training_actor_item_queue.put(item, timeout=1.0)
                    return
                except Full:  # the trial has not taken the last report yet
                    continue

    return ReportToStoppableTrial()


def trial_trainable() -> type:
    """run_trial as a Tune trainable that aborts its Train run when Tune stops the trial."""
    from ray.tune.trainable import wrap_function

    # wrap_function builds the function-trainable class at run time: a base mypy cannot see.
    base: Any = wrap_function(run_trial)

    class Trial(base):
        _controller: Any = None

        def step(self) -> dict[str, Any]:
            result = super().step()
            handle = result.pop(_CONTROLLER_KEY, None)
            if handle is not None:
                self._controller = handle
            return result

        def cleanup(self) -> None:
            if self._controller is not None:
                import ray

                marker = Path(self.config["train_storage"]) / self.trial_id / _STOP_MARKER
                try:  # a finished run ignores the abort; a dead controller raises
                    marker.parent.mkdir(parents=True, exist_ok=True)
                    marker.touch()
                    ray.get(self._controller.abort.remote(), timeout=60)
                except Exception as err:  # noqa: BLE001 - best effort; the trial is ending anyway
                    log.debug("Train controller abort: %s", err)
                self._controller = None
            super().cleanup()

    return Trial


def _finished_run_metrics(run_dir: Path, budget: int) -> dict[str, Any] | None:
    """The final report of a Ray Train run that already reached its step budget, else None.

    A restored sweep reruns trials Tune had not seen end. Refitting one whose Train run had
    finished would resume at the budget, train nothing and report nothing: Tune, the stopper,
    MLflow and the summary would see a trial of 0 steps. Its last report is replayed instead.
    """
    if not run_dir.is_dir():
        return None
    from ray.train import Result

    try:
        result = Result.from_path(str(run_dir))
    except Exception:  # no checkpoint reported yet: nothing to replay
        return None
    metrics = dict(result.metrics or {})
    if int(metrics.get(M.STEP, 0)) < budget:
        return None
    if result.checkpoint is not None:
        metrics["checkpoint_path"] = result.checkpoint.path  # as TuneReportCallback adds it
    return metrics


def _domain(spec: SpaceSpec) -> Any:
    from ray import tune

    values = [list(v) if isinstance(v, tuple) else v for v in spec.values]
    if spec.kind == "grid":
        return tune.grid_search(values)
    if spec.kind == "choice":
        return tune.choice(values)
    if spec.kind == "uniform":
        return tune.uniform(*spec.bounds())
    if spec.kind == "loguniform":
        return tune.loguniform(*spec.bounds())
    low, high = spec.bounds()
    return tune.randint(int(low), int(high))


@dataclass(frozen=True)
class SweepSummary:
    """What a sweep did: per-trial rows plus compute used and saved by stopping."""

    name: str
    rows: list[dict[str, Any]]
    steps_used: int
    steps_budget: int
    best: dict[str, Any] | None
    path: str

    @property
    def steps_saved(self) -> int:
        return self.steps_budget - self.steps_used

    def table(self) -> str:
        head = f"{'trial':<14}{'overrides':<44}{'steps':>7}{'stop':>9}{'max SEEM':>10}{'|Q| end':>10}{'score':>8}"
        lines = [head, "-" * len(head)]
        for r in self.rows:
            ov = ", ".join(f"{k}={v}" for k, v in r["overrides"].items())[:42]
            score = r.get("score")
            lines.append(
                f"{r['trial_id']:<14}{ov:<44}{r['steps']:>7}{r['stop_reason']:>9}"
                f"{r['max_seem']:>10.3f}{r['q_end']:>10.3g}{(f'{score:.1f}' if score is not None else '-'):>8}"
            )
        diverged = sum(r["stop_reason"] not in (M.REASON_BUDGET, "error") for r in self.rows)
        lines.append("-" * len(head))
        saved = 100.0 * self.steps_saved / self.steps_budget if self.steps_budget else 0.0
        lines.append(
            f"{len(self.rows)} trials: {diverged} stopped as diverging, "
            f"{sum(r['stop_reason'] == M.REASON_BUDGET for r in self.rows)} finished, "
            f"{sum(r['stop_reason'] == 'error' for r in self.rows)} errored; "
            f"steps used {self.steps_used}/{self.steps_budget} (saved {saved:.0f}%)"
        )
        if self.best:
            lines.append(
                f"best (by normalized score, non-diverged): {self.best['trial_id']} {self.best['overrides']}"
            )
        return "\n".join(lines)


def _summarize(sweep: SweepConfig, results: Any, stopper: Any, path: Path) -> SweepSummary:
    rows = []
    for res in results:
        trial_id = Path(res.path).name.split("_")[-2] if res.path else "?"
        config = res.config or {}
        history = res.metrics_dataframe
        cfg = trial_config(config)
        records = history.to_dict("records") if history is not None else []
        trial_id = str((res.metrics or {}).get("trial_id", trial_id))
        steps = int(max((r.get(M.STEP, 0) or 0) for r in records)) if records else 0
        seems = [
            r[M.SEEM]
            for r in records
            if isinstance(r.get(M.SEEM), float) and math.isfinite(r[M.SEEM])
        ]
        last = records[-1] if records else {}
        reason = "error" if res.error else stopper.stop_reason(trial_id, cfg.train.steps)
        score = last.get(M.NORMALIZED_SCORE)
        rows.append(
            {
                "trial_id": trial_id,
                "overrides": config.get("overrides", {}),
                "steps": steps,
                "budget": cfg.train.steps,
                "stop_reason": reason,
                "max_seem": max(seems) if seems else float("nan"),
                "q_end": float(last.get(M.Q_MEAN, float("nan"))),
                "score": float(score)
                if isinstance(score, float) and math.isfinite(score)
                else None,
                "diverged_since": getattr(stopper.verdicts.get(trial_id), "since", None),
            }
        )
    healthy = [r for r in rows if r["stop_reason"] == M.REASON_BUDGET and r["score"] is not None]
    best = max(healthy, key=lambda r: r["score"]) if healthy else None
    return SweepSummary(
        name=sweep.name,
        rows=rows,
        steps_used=sum(r["steps"] for r in rows),
        steps_budget=sum(r["budget"] for r in rows),
        best=best,
        path=str(path),
    )


def init_ray(address: str | None) -> None:
    """Connect to a running cluster ('auto' / an address) or start a local one (127.0.0.1)."""
    import ray

    from seem_ray.train import ray_env_vars

    env = ray_env_vars()
    os.environ.update({k: v for k, v in env.items() if v})
    if ray.is_initialized():
        return
    if address is None:
        address = (
            "auto"
            if os.environ.get("RAY_ADDRESS") or Path("/tmp/ray/ray_current_cluster").exists()
            else "local"
        )
    runtime_env = {"env_vars": {k: v for k, v in env.items() if v}}
    if address == "local":
        ray.init(
            address="local",
            include_dashboard=False,
            runtime_env=runtime_env,
            log_to_driver=False,
        )
    else:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=False)


# Tune's driver state in a sweep folder: the newest file of each kind is what a restore reads.
_DRIVER_STATE = (
    "experiment_state-*.json",
    "basic-variant-state-*.json",
    "searcher-state-*.pkl",
    "callback-states-*.pkl",
)


def saved_state_problem(exp_path: Path) -> str | None:
    """Why Tune's saved driver state in `exp_path` cannot be restored, or None if it looks whole.

    Why: Tune copies these files from the driver's staging folder to the sweep folder without
    an atomic rename, so a driver killed mid-copy leaves an empty or cut-off file. Tune then
    "restarts" the sweep with empty trial configs instead of resuming it; this check turns that
    into one clear error before anything is started.
    """
    import ray.cloudpickle as cloudpickle

    for pattern in _DRIVER_STATE:
        files = sorted(exp_path.glob(pattern))
        if not files:
            continue
        newest = files[-1]  # Tune's own choice: names sort by their timestamp
        try:
            raw = newest.read_bytes()
            if pattern.startswith("experiment_state"):
                json.loads(raw)
            else:
                cloudpickle.loads(raw)  # Tune's own format, from this sweep's own folder
        except Exception as err:  # noqa: BLE001 - any failure to read means Tune cannot either
            return (
                f"{newest} is truncated or unreadable ({type(err).__name__}; the driver was "
                "probably killed while Tune saved it); run the sweep again under a new name"
            )
    return None


def run_sweep(
    sweep: SweepConfig,
    *,
    resume: bool = False,
    storage: Path | None = None,
    searcher: Any = None,
    quiet: bool = False,
) -> SweepSummary:
    """Run (or resume) a sweep on the connected Ray cluster; returns its summary.

    Args:
        sweep: validated sweep config.
        resume: continue an interrupted sweep of the same name (Tuner.restore).
        storage: Tune storage root (default: <runs>/sweeps).
        searcher: a Tune search algorithm (Optuna studies pass theirs); None = variant generator.
        quiet: no Tune progress table.
    """
    from ray import tune

    from seem_ray.data.generate import ensure_dataset
    from seem_ray.stopper import DivergenceStopper
    from seem_ray.tracking import MlflowSweepTracker, resolve_tracking_uri

    if not quiet:
        # Ray's newer console output ignores progress_reporter and, off a terminal (CI logs,
        # nohup), prints nothing until the end; the classic engine prints the table below.
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    storage = (storage or runs_dir() / "sweeps").resolve()
    exp_path = storage / sweep.name
    ensure_dataset(sweep.base.data.dataset)
    for key, spec in sweep.space.items():  # datasets searched over must exist too
        if key == "data.dataset":
            for value in spec.values:
                ensure_dataset(str(value))
    trainable = tune.with_resources(trial_trainable(), {"cpu": sweep.trial_driver_cpus})
    started = time.time()
    if resume:
        if not tune.Tuner.can_restore(str(exp_path)):
            raise ConfigError(
                "", f"nothing to resume at {exp_path}; run the sweep without --resume first"
            )
        problem = saved_state_problem(exp_path)
        if problem:
            raise ConfigError("", f"cannot resume {sweep.name!r}: {problem}")
        tuner = tune.Tuner.restore(
            str(exp_path), trainable=trainable, resume_unfinished=True, resume_errored=True
        )
        local = tuner._local_tuner
        assert local is not None  # None only under Ray Client, which we do not use
        stopper = local._run_config.stop  # the pickled stopper with its verdicts
    else:
        if exp_path.exists() and any(exp_path.iterdir()):
            raise ConfigError(
                "name",
                f"a sweep named {sweep.name!r} already exists at {exp_path}; pass --resume or choose another name",
            )
        stopper = DivergenceStopper(sweep.base.stopper)
        tracker = MlflowSweepTracker(
            tracking_uri=resolve_tracking_uri(sweep.base.tracking.tracking_uri),
            experiment=sweep.base.tracking.experiment,
            sweep_name=sweep.name,
            sweep_config=to_dict(sweep),
            stopper=stopper,
            budget_steps=sweep.base.train.steps,
        )
        param_space: dict[str, Any] = {
            "run": to_dict(sweep.base),
            "train_storage": str(exp_path / "train"),
        }
        if searcher is None:
            param_space["overrides"] = {k: _domain(v) for k, v in sweep.space.items()}
        reporter = tune.CLIReporter(
            metric_columns={
                M.STEP: "step",
                M.SEEM: "SEEM",
                M.Q_MEAN: "Q mean",
                M.NORMALIZED_SCORE: "score",
            },
            max_report_frequency=15,
        )
        scheduler = None
        if sweep.scheduler == "asha":
            scheduler = tune.schedulers.ASHAScheduler(
                time_attr=M.STEP,
                max_t=sweep.base.train.steps,
                grace_period=max(1, sweep.base.train.steps // 4),
            )
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune.TuneConfig(
                num_samples=sweep.num_samples,
                search_alg=searcher,
                scheduler=scheduler,
                max_concurrent_trials=sweep.max_concurrent or None,
                metric=M.NORMALIZED_SCORE if scheduler is not None else None,
                mode="max" if scheduler is not None else None,
            ),
            run_config=tune.RunConfig(
                name=sweep.name,
                storage_path=str(storage),
                stop=stopper,
                callbacks=[tracker],
                progress_reporter=None if quiet else reporter,
                verbose=0 if quiet else 1,
            ),
        )
    results = tuner.fit()
    summary = _summarize(sweep, results, stopper, exp_path)
    body = {
        "name": summary.name,
        "wall_seconds": round(time.time() - started, 1),
        "steps_used": summary.steps_used,
        "steps_budget": summary.steps_budget,
        "steps_saved": summary.steps_saved,
        "best": summary.best,
        "trials": summary.rows,
    }
    atomic_write_text(exp_path / "summary.json", json.dumps(body, indent=2, default=str) + "\n")
    return summary


def build_arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tune.py", description="Run a seem_ray sweep (Ray Tune + SEEM stopper + MLflow)."
    )
    p.add_argument(
        "--config", help="sweep YAML (tune_configs/*.yaml); default: the embedded demo sweep"
    )
    p.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a sweep field, e.g. base.train.steps=2000 (repeatable)",
    )
    p.add_argument("--name", help="sweep name (default: from the config)")
    p.add_argument(
        "--resume", action="store_true", help="continue an interrupted sweep of the same name"
    )
    p.add_argument(
        "--address",
        default=None,
        help="Ray address: 'auto' (running cluster), 'local' (start one here), or host:port; "
        "default: auto when a cluster is running, else local",
    )
    p.add_argument("--storage", help="Tune storage folder (default: <runs>/sweeps)")
    p.add_argument("--quiet", action="store_true", help="no live Tune table")
    return p


def load_sweep(args: argparse.Namespace) -> SweepConfig:
    overrides = parse_set_expressions(args.sets)
    if args.name:
        overrides["name"] = args.name
    if args.config:
        return load_sweep_config(args.config, overrides)
    sweep = from_dict(SweepConfig, DEFAULT_SWEEP)
    return apply_overrides(sweep, overrides) if overrides else sweep


def main(argv: list[str] | None = None) -> int:
    """Script entry (also `seem-ray sweep`): exit 0 on success, 2 on bad input."""
    setup_logging()
    args = build_arg_parser().parse_args(argv)
    try:
        sweep = load_sweep(args)
        init_ray(args.address)
        summary = run_sweep(
            sweep,
            resume=args.resume,
            storage=Path(args.storage) if args.storage else None,
            quiet=args.quiet,
        )
    except (ConfigError, ValueError, FileExistsError) as err:
        print(f"error: {str(err).splitlines()[0]}", file=sys.stderr)
        return 2
    print(summary.table())
    print(f"summary: {summary.path}/summary.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
