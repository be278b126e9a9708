"""Where studies live: storage URLs, opening and loading studies, the budget after a kill.

Flow position: ``--storage`` / ``$SEEM_RAY_STUDY_STORAGE`` / default sqlite file -> **RDBStorage**
-> prepare/run/report. The Optuna storage is the source of truth for resuming, so trials a
killed driver left RUNNING are marked FAIL (``killed``) here and run again.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from seem_ray import metrics as M
from seem_ray.config import ConfigError
from seem_ray.runtime import runs_dir
from seem_ray.study.outcome import KILLED

__all__ = [
    "counts_toward_budget",
    "default_storage_url",
    "fail_unfinished",
    "find_study",
    "load_study",
    "open_storage",
    "redact",
    "resolve_storage_url",
    "study_dir",
]


def default_storage_url() -> str:
    """sqlite file under the runs folder, shared by all studies (so they can be compared)."""
    path = runs_dir() / "studies" / "optuna.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def resolve_storage_url(url: str | None) -> str:
    """Given URL (any SQLAlchemy URL), else $SEEM_RAY_STUDY_STORAGE, else the default sqlite file.

    Relative sqlite paths are made absolute (Ray processes run in other folders).
    """
    url = url or os.environ.get("SEEM_RAY_STUDY_STORAGE") or default_storage_url()
    if url.startswith("sqlite:"):
        if not url.startswith("sqlite:///") or url in ("sqlite:///", "sqlite:///:memory:"):
            raise ConfigError(
                "storage", f"got {url!r}; an in-memory study does not persist, use sqlite:///FILE"
            )
        path = Path(url[len("sqlite:///") :]).expanduser()
        path = path if path.is_absolute() else path.resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"
    if "://" not in url:
        raise ConfigError(
            "storage", f"got {url!r}; expected an SQLAlchemy URL, e.g. sqlite:///studies.db"
        )
    return url


def redact(url: str) -> str:
    """The URL without its password (for logs and printed hints)."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not at or ":" not in creds:
        return url
    return f"{scheme}{sep}{creds.split(':', 1)[0]}:***@{host}"


def open_storage(url: str) -> Any:
    """An RDBStorage; sqlite waits on locks (a report may read while a study writes)."""
    import optuna

    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None
    for attempt in range(3):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
        except Exception as exc:
            # Two processes creating a fresh database race on its tables: the loser retries.
            if attempt < 2 and "already exists" in str(exc):
                time.sleep(0.5 * (attempt + 1))
                continue
            first = str(exc).splitlines()[0]
            raise ConfigError("storage", f"cannot open {redact(url)}: {first}") from None
    raise AssertionError("unreachable")


def find_study(storage: Any, name: str) -> Any | None:
    """The study of that name in an open storage, or None."""
    import optuna

    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return None


def load_study(name: str, storage_url: str | None = None) -> Any:
    """An existing study, or a ConfigError listing the studies the storage has."""
    import optuna

    url = resolve_storage_url(storage_url)
    storage = open_storage(url)
    study = find_study(storage, name)
    if study is None:
        names = optuna.get_all_study_names(storage)
        raise ConfigError(
            "", f"no study named {name!r} in {redact(url)} (studies: {', '.join(names) or 'none'})"
        )
    return study


def counts_toward_budget(trial: Any) -> bool:
    """Finished trials count; those a killed driver left behind are run again."""
    import optuna

    if trial.state == optuna.trial.TrialState.COMPLETE:
        return True
    return (
        trial.state == optuna.trial.TrialState.FAIL
        and trial.user_attrs.get(M.STOP_REASON) != KILLED
    )


def fail_unfinished(storage: Any, name: str) -> list[int]:
    """Mark RUNNING/WAITING trials of a study FAIL with stop_reason 'killed'; their numbers."""
    import optuna

    study_id = storage.get_study_id_from_name(name)
    states = (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)
    numbers = []
    for trial in storage.get_all_trials(study_id, deepcopy=False, states=states):
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        storage.set_trial_user_attr(trial_id, M.STOP_REASON, KILLED)
        storage.set_trial_state_values(trial_id, optuna.trial.TrialState.FAIL)
        numbers.append(trial.number)
    return numbers


def study_dir(name: str) -> Path:
    """Folder of one study's Tune runs and reports, under the shared runs folder."""
    return runs_dir() / "studies" / name
