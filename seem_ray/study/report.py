"""Reading studies back: best trials / Pareto front, importances, PNG plots, comparisons.

Flow position: Optuna storage -> **write_report (files, logged to the sweep's MLflow parent
run) / compare_studies (one table)**. Reads only; never changes a study.
"""

from __future__ import annotations

import json
import logging
import statistics
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seem_ray import metrics as M
from seem_ray.runtime import atomic_write_text
from seem_ray.study.outcome import DIVERGED_REASONS, KILLED
from seem_ray.study.storage import load_study, redact, study_dir

__all__ = [
    "StudyReport",
    "best_trials_table",
    "compare_studies",
    "dashboard_hint",
    "write_report",
]

log = logging.getLogger("seem_ray.study")


@dataclass(frozen=True)
class StudyReport:
    """Files and text a study report produced."""

    study_name: str
    out_dir: Path
    files: tuple[Path, ...]
    text: str
    importances: dict[str, dict[str, float]]
    mlflow_run_id: str | None


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _objectives_of(study: Any) -> list[str]:
    names = study.user_attrs.get("objectives")
    if names and len(names) == len(study.directions):
        return list(names)
    return [f"objective_{i}" for i in range(len(study.directions))]


def best_trials_table(study: Any) -> str:
    """Best trial (single objective) or the Pareto front (several), one row each."""
    import optuna

    objectives = _objectives_of(study)
    multi = len(objectives) > 1
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        return f"study {study.study_name}: no complete trials"
    best = study.best_trials if multi else [study.best_trial]
    head = (
        f"{'#':>4}  "
        + "".join(f"{o:>18}" for o in objectives)
        + f"{'stop':>9}{'steps':>7}{'max SEEM':>10}  params"
    )
    lines = [
        f"study {study.study_name}: " + ("Pareto front" if multi else "best trial"),
        head,
        "-" * len(head),
    ]
    for t in sorted(best, key=lambda t: t.number):
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(t.params.items()))
        seem = t.user_attrs.get("max_seem")
        lines.append(
            f"{t.number:>4}  "
            + "".join(f"{_fmt(v):>18}" for v in t.values)
            + f"{t.user_attrs.get(M.STOP_REASON, '?'):>9}{t.user_attrs.get('steps', '?')!s:>7}"
            + f"{(f'{seem:.3f}' if isinstance(seem, float) else '-'):>10}  {params}"
        )
    return "\n".join(lines)


def _save(ax: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    axes = ax.flatten() if hasattr(ax, "flatten") else [ax]
    fig = axes[0].figure
    fig.set_size_inches(max(fig.get_size_inches()[0], 7), max(fig.get_size_inches()[1], 4.5))
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _find_parent_run(study: Any) -> tuple[Any, str] | None:
    """(client, run id) of the MLflow parent run of the study's first sweep, if any."""
    from seem_ray.tracking import _client, resolve_tracking_uri

    sweeps = study.user_attrs.get("sweeps") or [study.study_name]
    client = _client(resolve_tracking_uri(None))
    exp = client.get_experiment_by_name(study.user_attrs.get("experiment", ""))
    if exp is None:
        return None
    for name in sweeps:
        runs = client.search_runs(
            [exp.experiment_id],
            filter_string=f"tags.`seem_ray.kind` = 'sweep' and tags.`seem_ray.sweep` = '{name}'",
            order_by=["attributes.start_time ASC"],
        )
        if runs:
            return client, runs[0].info.run_id
    return None


def write_report(
    name: str, *, storage_url: str | None = None, out: Path | None = None, mlflow: bool = True
) -> StudyReport:
    """Best trials, parameter importances and PNG plots of a study; logged to its MLflow parent run.

    Args:
        name: the study.
        storage_url: where it lives (default as for `seem-ray study`).
        out: output folder (default <runs>/studies/<name>/report).
        mlflow: also log the files to the MLflow parent run of the study's sweep, if found.
    """
    import matplotlib

    matplotlib.use("Agg")
    import optuna
    from optuna.visualization import matplotlib as ovm

    study = load_study(name, storage_url)
    out = Path(out) if out is not None else study_dir(name) / "report"
    out.mkdir(parents=True, exist_ok=True)
    objectives = _objectives_of(study)
    multi = len(objectives) > 1
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    files: list[Path] = []
    importances: dict[str, dict[str, float]] = {}
    # fANOVA: direction-agnostic and seeded (Optuna's default evaluator assumes minimisation).
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for i, obj in enumerate(objectives):
            target = (lambda t, i=i: t.values[i]) if multi else None
            if complete:
                files.append(
                    _save(
                        ovm.plot_optimization_history(study, target=target, target_name=obj),
                        out / f"history_{obj}.png",
                    )
                )
            try:
                imp = optuna.importance.get_param_importances(
                    study, evaluator=evaluator, target=target
                )
            except (RuntimeError, ValueError) as exc:  # too few trials, or no common parameters
                log.warning("no importances for %s: %s", obj, exc)
                continue
            importances[obj] = {k: float(v) for k, v in imp.items()}
            if imp:
                files.append(
                    _save(
                        ovm.plot_param_importances(
                            study, evaluator=evaluator, target=target, target_name=obj
                        ),
                        out / f"importances_{obj}.png",
                    )
                )
        if multi and complete:
            files.append(
                _save(
                    ovm.plot_pareto_front(study, target_names=objectives), out / "pareto_front.png"
                )
            )
    text = best_trials_table(study)
    if importances:
        lines = ["parameter importances (fANOVA):"]
        for obj, imp in importances.items():
            lines.append(f"  {obj}: " + ", ".join(f"{k} {v:.2f}" for k, v in imp.items()))
        text += "\n" + "\n".join(lines)
    body = {
        "study": name,
        "objectives": objectives,
        "directions": [d.name.lower() for d in study.directions],
        "trials": len(trials),
        "states": {s.name: sum(t.state == s for t in trials) for s in optuna.trial.TrialState},
        "best": [
            {"number": t.number, "values": t.values, "params": t.params, "attrs": t.user_attrs}
            for t in (study.best_trials if multi else [study.best_trial] if complete else [])
        ],
        "importances": importances,
    }
    files.append(
        atomic_write_text(out / "report.json", json.dumps(body, indent=2, default=str) + "\n")
    )
    rows = [
        {
            "number": t.number,
            "state": t.state.name,
            **{f"value_{o}": (t.values[i] if t.values else None) for i, o in enumerate(objectives)},
            **{f"param_{k}": v for k, v in t.params.items()},
            **{f"attr_{k}": v for k, v in t.user_attrs.items() if k != "overrides"},
        }
        for t in trials
    ]
    files.append(
        atomic_write_text(out / "trials.json", json.dumps(rows, indent=2, default=str) + "\n")
    )
    atomic_write_text(out / "best_trials.txt", text + "\n")
    files.append(out / "best_trials.txt")
    run_id = None
    if mlflow:
        try:
            found = _find_parent_run(study)
            if found is not None:
                client, run_id = found
                for f in files:
                    client.log_artifact(run_id, str(f), artifact_path="study_report")
            else:
                log.info("no MLflow parent run found for study %s; report not logged", name)
        except Exception as exc:
            log.warning("could not log the report to MLflow: %s", exc)
            run_id = None
    return StudyReport(name, out, tuple(files), text, importances, run_id)


def compare_studies(names: Sequence[str], storage_url: str | None = None) -> str:
    """A table comparing studies: trials, divergence rate, median max SEEM, best healthy values."""
    import optuna

    head = f"{'study':<26}{'trials':>7}{'diverged':>9}{'rate':>7}{'med max SEEM':>14}{'med steps':>10}  best (healthy)"
    lines = [head, "-" * len(head)]
    for name in names:
        study = load_study(name, storage_url)
        objectives = _objectives_of(study)
        done = study.get_trials(
            deepcopy=False, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL)
        )
        done = [t for t in done if t.user_attrs.get(M.STOP_REASON) != KILLED]
        diverged = [t for t in done if t.user_attrs.get(M.STOP_REASON) in DIVERGED_REASONS]
        healthy = [
            t
            for t in done
            if t.state == optuna.trial.TrialState.COMPLETE
            and t.user_attrs.get(M.STOP_REASON) == M.REASON_BUDGET
        ]
        seems = [
            float(t.user_attrs["max_seem"])
            for t in done
            if isinstance(t.user_attrs.get("max_seem"), float)
        ]
        steps = [
            int(t.user_attrs["steps"]) for t in done if isinstance(t.user_attrs.get("steps"), int)
        ]
        best = []
        for i, (obj, direction) in enumerate(zip(objectives, study.directions, strict=True)):
            vals = [t.values[i] for t in healthy]
            if vals:
                pick = max(vals) if direction == optuna.study.StudyDirection.MAXIMIZE else min(vals)
                best.append(f"{obj}={pick:.4g}")
        rate = 100.0 * len(diverged) / len(done) if done else 0.0
        lines.append(
            f"{name:<26}{len(done):>7}{len(diverged):>9}{rate:>6.0f}%"
            f"{(f'{statistics.median(seems):.4f}' if seems else '-'):>14}"
            f"{(f'{statistics.median(steps):.0f}' if steps else '-'):>10}  {', '.join(best) or '-'}"
        )
    return "\n".join(lines)


def dashboard_hint(url: str) -> str:
    return f"browse it with optuna-dashboard: pip install optuna-dashboard && optuna-dashboard {redact(url)}"
