"""MLflow tracking: one parent run per sweep, one child run per trial, plots as artifacts.

Flow position: Tune results -> **MlflowSweepTracker** (a ``ray.tune.Callback`` in the driver) ->
MLflow backend store (sqlite under the runs folder by default; any MLflow URI accepted).

Each child run gets: the trial's flattened RunConfig as params, every reported metric at its
step, tags (stop_reason, diverged_since, predicted divergence step, dataset, trial id) and
artifacts (config.yaml, seem_q.png, the checkpoint path; stored next to a sqlite database). On a
resumed sweep the parent run is reopened and child runs left RUNNING by a killed driver are marked
KILLED so nothing stays RUNNING forever.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from ray import tune

from seem_ray import metrics as M
from seem_ray.runtime import runs_dir

__all__ = [
    "MlflowSweepTracker",
    "SECRET_MARKERS",
    "default_tracking_uri",
    "plot_history",
    "resolve_tracking_uri",
    "safe_params",
]

log = logging.getLogger(__name__)

SECRET_MARKERS = ("token", "password", "secret", "api_key", "apikey")
"""Param names containing these are never logged (tracking-server tokens come from the env)."""

PLOTTED = (M.SEEM, M.Q_MEAN, M.CRITIC_WEIGHT_NORM, M.NORMALIZED_SCORE)


def default_tracking_uri() -> str:
    """sqlite store under the runs folder (absolute: Ray workers change directory)."""
    path = runs_dir() / "mlflow.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def resolve_tracking_uri(configured: str | None) -> str:
    """Config value, else $MLFLOW_TRACKING_URI, else the default sqlite store."""
    return configured or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


def safe_params(flat: Mapping[str, Any]) -> dict[str, str]:
    """Flattened config -> MLflow params (strings, <= 500 chars), dropping secret-looking keys."""
    out = {}
    for key, value in flat.items():
        if any(marker in key.lower() for marker in SECRET_MARKERS):
            continue
        out[key] = str(value)[:500]
    return out


def plot_history(
    history: Sequence[Mapping[str, float]],
    path: str | Path,
    *,
    title: str = "",
    q_bound: float | None = None,
    stopped_at: int | None = None,
) -> Path:
    """SEEM, |Q| (log scale), weight norm and score over steps, one panel each; writes a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in PLOTTED if any(k in r for r in history)]
    fig, axes = plt.subplots(len(keys) or 1, 1, figsize=(7, 2.2 * max(1, len(keys))), sharex=True)
    axes = list(axes) if hasattr(axes, "__len__") else [axes]
    for ax, key in zip(axes, keys, strict=False):
        pts = [
            (r[M.STEP], r[key])
            for r in history
            if key in r and M.STEP in r and math.isfinite(r[key])
        ]
        if not pts:
            continue
        xs, ys = zip(*pts, strict=True)
        if key == M.Q_MEAN:
            ax.semilogy(xs, [max(abs(y), 1e-8) for y in ys], marker=".", label="|mean Q| (probe)")
            if q_bound is not None and math.isfinite(q_bound):
                ax.axhline(q_bound, color="red", ls="--", lw=1, label="r_max/(1-gamma)")
            ax.legend(fontsize=7)
        else:
            ax.plot(xs, ys, marker=".")
            if key == M.SEEM:
                ax.axhline(0.0, color="grey", lw=0.8)
        ax.set_ylabel(key, fontsize=8)
        if stopped_at is not None:
            ax.axvline(stopped_at, color="orange", ls=":", lw=1.2)
    axes[-1].set_xlabel("step")
    if title:
        axes[0].set_title(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def experiment_id(uri: str, name: str) -> str:
    """Get or create the experiment."""
    client = _client(uri)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    # Open in the UI's "Model training" view (MLflow 3 defaults new experiments to GenAI).
    return client.create_experiment(
        name,
        artifact_location=_artifact_location(uri),
        tags={"mlflow.experimentKind": "custom_model_development"},
    )


def _artifact_location(uri: str) -> str | None:
    """Artifacts of a sqlite store go next to its database; MLflow's default is ./mlruns of
    whatever directory the driver happens to run in. Other stores keep their own default."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return None
    return (Path(uri[len(prefix) :]).resolve().parent / "mlartifacts").as_uri()


def numeric_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    """The finite float metrics of a record, without Tune's bookkeeping keys."""
    skip = {
        "training_iteration",
        "timestamp",
        "time_this_iter_s",
        "time_total_s",
        "pid",
        "time_since_restore",
        "iterations_since_restore",
        "timesteps_total",
        "episodes_total",
        "done",
    }
    out = {}
    for key, value in result.items():
        if key in skip or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if math.isfinite(value):
            out[key] = float(value)
    return out


def log_artifacts_dir(uri: str, run_id: str, files: Mapping[str, str | bytes]) -> None:
    """Write small files into a temp folder and log them as artifacts of `run_id`."""
    client = _client(uri)
    with tempfile.TemporaryDirectory() as tmp:
        for name, content in files.items():
            p = Path(tmp) / name
            if isinstance(content, bytes):
                p.write_bytes(content)
            else:
                p.write_text(content)
            client.log_artifact(run_id, str(p))


def yaml_text(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False)


class MlflowSweepTracker(tune.Callback):
    """Tune callback recording a sweep in MLflow (parent run) and each trial (child run).

    Holds the stopper. Its run ids, histories and the stopper's verdicts go into Tune's
    experiment checkpoints (get_state/set_state), so a restored sweep keeps both the verdicts and
    the parent run. The MLflow client is created on demand.
    """

    def __init__(
        self,
        *,
        tracking_uri: str,
        experiment: str,
        sweep_name: str,
        sweep_config: Mapping[str, Any],
        stopper: Any,
        budget_steps: int,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.sweep_name = sweep_name
        self.sweep_config = dict(sweep_config)
        self.stopper = stopper
        self.budget_steps = budget_steps
        self.parent_run_id: str | None = None
        self.child_runs: dict[str, str] = {}
        self.histories: dict[str, list[dict[str, float]]] = {}
        self.trial_configs: dict[str, dict[str, Any]] = {}
        self.finished: dict[str, dict[str, Any]] = {}
        self.checkpoints: dict[str, str] = {}

    # ----------------------------------------------------------------- lifecycle
    def setup(
        self,
        stop: tune.Stopper | None = None,
        num_samples: int | None = None,
        total_num_samples: int | None = None,
        **info: Any,
    ) -> None:
        client = _client(self.tracking_uri)
        exp_id = experiment_id(self.tracking_uri, self.experiment)
        if self.parent_run_id is None:
            run = client.create_run(
                exp_id,
                run_name=self.sweep_name,
                tags={"seem_ray.kind": "sweep", "seem_ray.sweep": self.sweep_name},
            )
            self.parent_run_id = run.info.run_id
            client.log_dict(self.parent_run_id, self.sweep_config, "sweep.yaml")
        else:  # restored sweep (state from set_state): reopen the parent, tidy its children
            client.update_run(self.parent_run_id, status="RUNNING")
            self._reconcile_children(client, exp_id)

    def _reconcile_children(self, client: Any, exp_id: str) -> None:
        """Match MLflow to a restored sweep. Tune's saved state can be up to a checkpoint period
        older than the store, so MLflow is read rather than trusted: children left RUNNING by the
        killed driver become KILLED (their trials rerun under a fresh child); FAILED ones are
        forgotten too (errored trials rerun); FINISHED ones the saved state missed are adopted,
        so a trial Tune reruns does not get a second FINISHED run."""
        runs = client.search_runs(
            [exp_id],
            filter_string=f"tags.`mlflow.parentRunId` = '{self.parent_run_id}'",
            max_results=10000,
        )
        for run in runs:
            run_id, status = run.info.run_id, run.info.status
            trial_id = run.data.tags.get("seem_ray.trial_id", "")
            if status == "RUNNING":
                client.set_terminated(run_id, status="KILLED")
            if status in ("RUNNING", "FAILED") and self.child_runs.get(trial_id) == run_id:
                del self.child_runs[trial_id]
                self.histories.pop(trial_id, None)
                self.finished.pop(trial_id, None)
            elif status == "FINISHED" and trial_id and trial_id not in self.finished:
                self.child_runs[trial_id] = run_id
                tags = run.data.tags
                self.finished[trial_id] = {
                    "stop_reason": tags.get(M.STOP_REASON, M.REASON_BUDGET),
                    "steps": int(tags.get("steps_trained", 0)),
                }

    # ------------------------------------------------- Tune experiment checkpoints (restore)
    def get_state(self) -> dict[str, Any]:
        """Saved by Tune with each experiment checkpoint. Needed because a restored sweep gets
        this object from tuner.pkl, pickled once at the start (no parent run, no verdicts). The
        stopper's state rides along: it is the same object as the run config's ``stop``."""
        return {
            "parent_run_id": self.parent_run_id,
            "child_runs": self.child_runs,
            "histories": self.histories,
            "trial_configs": self.trial_configs,
            "finished": self.finished,
            "checkpoints": self.checkpoints,
            "stopper": vars(self.stopper) if self.stopper is not None else None,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        state = dict(state)
        stopper_state = state.pop("stopper", None)
        for key, value in state.items():
            setattr(self, key, value)
        if stopper_state is not None and self.stopper is not None:
            vars(self.stopper).update(stopper_state)  # in place: Tune and run_sweep hold it too

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        from seem_ray.config import flatten

        if trial.trial_id in self.child_runs:
            return
        client = _client(self.tracking_uri)
        exp_id = experiment_id(self.tracking_uri, self.experiment)
        run_cfg = trial.config.get("run", {})
        overrides = trial.config.get("overrides", {})
        run = client.create_run(
            exp_id,
            run_name=f"{self.sweep_name}/{trial.trial_id}",
            tags={
                "mlflow.parentRunId": self.parent_run_id or "",
                "seem_ray.kind": "trial",
                "seem_ray.sweep": self.sweep_name,
                "seem_ray.trial_id": trial.trial_id,
                "dataset": str(run_cfg.get("data", {}).get("dataset", "")),
            },
        )
        self.child_runs[trial.trial_id] = run.info.run_id
        self.histories[trial.trial_id] = []
        self.trial_configs[trial.trial_id] = {"run": run_cfg, "overrides": overrides}
        params = safe_params(flatten(run_cfg)) | {
            f"override.{k}": str(v) for k, v in overrides.items()
        }
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in params.items()]
        for start in range(0, len(items), 90):
            client.log_batch(run.info.run_id, params=items[start : start + 90])

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        from mlflow.entities import Metric

        run_id = self.child_runs.get(trial.trial_id)
        if run_id is None or trial.trial_id in self.finished or M.STEP not in result:
            return
        values = numeric_metrics(result)
        if isinstance(result.get("checkpoint_path"), str):  # set by Ray Train's TuneReportCallback
            self.checkpoints[trial.trial_id] = result["checkpoint_path"]
        step = int(values.get(M.STEP, 0))
        self.histories.setdefault(trial.trial_id, []).append(values)
        ts = int(result.get("timestamp", 0) * 1000)
        batch = [Metric(k, v, ts, step) for k, v in values.items() if k != M.STEP]
        _client(self.tracking_uri).log_batch(run_id, metrics=batch)

    def _finish(self, trial: Any, status: str, error: str | None = None) -> None:
        run_id = self.child_runs.get(trial.trial_id)
        if run_id is None or trial.trial_id in self.finished:
            return
        client = _client(self.tracking_uri)
        history = self.histories.get(trial.trial_id, [])
        verdict = self.stopper.verdicts.get(trial.trial_id) if self.stopper is not None else None
        reason = (
            (M.REASON_NAN if error and "nan" in error.lower() else "error")
            if error
            else self.stopper.stop_reason(trial.trial_id, self.budget_steps)
            if self.stopper is not None
            else M.REASON_BUDGET
        )
        last_step = int(history[-1].get(M.STEP, 0)) if history else 0
        tags = {M.STOP_REASON: reason, "steps_trained": str(last_step)}
        if verdict is not None and verdict.diverging:
            tags[M.DIVERGED_SINCE] = str(verdict.since)
            tags["flagged_at"] = str(verdict.flagged_at)
            if verdict.predicted_step is not None:
                tags[M.PREDICTED_DIVERGENCE_STEP] = str(verdict.predicted_step)
        if error:
            tags["error"] = error[:500]
        for key, value in tags.items():
            client.set_tag(run_id, key, value)
        q_bound = history[-1].get("q_bound") if history else None
        files: dict[str, str | bytes] = {
            "config.yaml": yaml_text(self.trial_configs.get(trial.trial_id, {}))
        }
        ckpt = self.checkpoints.get(trial.trial_id)
        if ckpt:
            client.set_tag(run_id, "checkpoint_path", str(ckpt))
        with tempfile.TemporaryDirectory() as tmp:
            if history:
                png = plot_history(
                    history,
                    Path(tmp) / "seem_q.png",
                    title=f"{self.sweep_name} {trial.trial_id} ({reason})",
                    q_bound=q_bound,
                    stopped_at=verdict.flagged_at
                    if verdict is not None and verdict.diverging
                    else None,
                )
                client.log_artifact(run_id, str(png))
        log_artifacts_dir(self.tracking_uri, run_id, files)
        client.set_terminated(run_id, status=status)
        self.finished[trial.trial_id] = {"stop_reason": reason, "steps": last_step, **tags}

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finish(trial, "FINISHED")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        err = getattr(trial, "error_file", None)
        text = "trial errored"
        if err and Path(err).exists():
            lines = [ln for ln in Path(err).read_text().splitlines() if ln.strip()]
            text = lines[-1] if lines else text
        self._finish(trial, "FAILED", error=text)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if self.parent_run_id is None:
            return
        client = _client(self.tracking_uri)
        reasons = [v["stop_reason"] for v in self.finished.values()]
        used = sum(int(v["steps"]) for v in self.finished.values())
        budget = self.budget_steps * len(self.finished)
        for key, value in {
            "trials": len(self.finished),
            "stopped_divergent": sum(
                r in (M.REASON_SEEM, M.REASON_GROWTH, M.REASON_Q_BOUND, M.REASON_NAN)
                for r in reasons
            ),
            "steps_used": used,
            "steps_saved": max(0, budget - used),
        }.items():
            client.log_metric(self.parent_run_id, key, float(value))
        client.log_dict(self.parent_run_id, self.finished, "trials_summary.json")
        client.set_terminated(self.parent_run_id, status="FINISHED")
