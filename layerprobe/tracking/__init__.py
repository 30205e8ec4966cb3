"""The tracking store: the only package that imports mlflow. Split by job:

- store: URIs, UI links, reachability, retries, the sqlite store's lock
- run: Tracker (one MLflow run: params, tags, metrics, datasets, artifacts), sweep parents
- outbox: the pending file of calls the store did not take, and its replay
- reaper: runs left RUNNING by a dead process
- queries: reading runs back
- models: the trained model as an MLflow Model (a pyfunc over the SavedModel), the Model Registry
- null: NullTracker, for when nothing is tracked (imports no MLflow)

The names below are loaded on first use, so `import layerprobe.tracking` (and NullTracker) costs
no MLflow import (~2.7 s); the submodule that defines a name is the place to patch it.
"""

# ruff: noqa: F401  (the TYPE_CHECKING imports are for mypy; __getattr__ loads the names)
from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from layerprobe.tracking.models import LoggedModel, register_model
    from layerprobe.tracking.null import NullTracker
    from layerprobe.tracking.outbox import PENDING_FILE, replay_pending, upload_pending
    from layerprobe.tracking.queries import (
        SWEEP_KEY_TAG,
        RunNotFound,
        RunSummary,
        child_run_summaries,
        child_runs,
        download_artifact,
        find_runs,
        latest_metric_points,
        list_artifacts,
        metric_steps,
        run_data,
        run_info,
        run_tags,
        sweep_children,
    )
    from layerprobe.tracking.reaper import HOST_TAG, PID_START_TAG, PID_TAG, mark_stale_runs
    from layerprobe.tracking.run import (
        Tracker,
        finish_sweep_parent,
        flatten,
        reopen_sweep_parent,
        start_sweep_parent,
    )
    from layerprobe.tracking.store import RETRY_DELAYS, check_reachable, resolve_uri, sanitize_key, ui_link

_WHERE = {
    "LoggedModel": "models",
    "register_model": "models",
    "NullTracker": "null",
    "PENDING_FILE": "outbox",
    "replay_pending": "outbox",
    "upload_pending": "outbox",
    "RunNotFound": "queries",
    "RunSummary": "queries",
    "child_run_summaries": "queries",
    "child_runs": "queries",
    "download_artifact": "queries",
    "find_runs": "queries",
    "latest_metric_points": "queries",
    "list_artifacts": "queries",
    "metric_steps": "queries",
    "run_data": "queries",
    "run_info": "queries",
    "run_tags": "queries",
    "sweep_children": "queries",
    "HOST_TAG": "reaper",
    "PID_START_TAG": "reaper",
    "PID_TAG": "reaper",
    "mark_stale_runs": "reaper",
    "SWEEP_KEY_TAG": "queries",
    "Tracker": "run",
    "finish_sweep_parent": "run",
    "flatten": "run",
    "reopen_sweep_parent": "run",
    "start_sweep_parent": "run",
    "RETRY_DELAYS": "store",
    "check_reachable": "store",
    "resolve_uri": "store",
    "sanitize_key": "store",
    "ui_link": "store",
}
__all__ = sorted(_WHERE)

# MLflow 3 sends usage telemetry from a thread it starts at `import mlflow` (a lookup of
# config.mlflow-telemetry.io was seen logging a model). A run talks to its store only: off unless
# the user set it, here because this package runs before any module that imports mlflow.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])
