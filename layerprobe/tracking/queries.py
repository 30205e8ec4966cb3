"""Reading runs back: their data, their status and parent, their children, their artifacts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow

from layerprobe.errors import LayerprobeError, first_line
from layerprobe.tracking.store import client, sqlite_file, use_layerprobe_defaults

MAX_CHILDREN = 10000  # one search; a sweep has far fewer jobs
SWEEP_KEY_TAG = "layerprobe.sweep_key"  # the same on a sweep's parents and children, over its reruns


@dataclass(frozen=True)
class RunSummary:
    """What a sweep's summary needs of one run."""

    run_id: str
    name: str
    status: str  # FINISHED, FAILED, KILLED, RUNNING
    start_time: int  # ms since the epoch; 0 when unknown
    tags: dict[str, str]
    metrics: dict[str, float]  # the latest value of each


def download_artifact(uri: str, run_id: str, path: str, dst: str | Path) -> Path:
    """Download the run's artifact `path` (a file or a directory) into `dst`; returns the local path."""
    use_layerprobe_defaults()  # no tqdm progress bar in the log
    return Path(
        mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=str(dst), tracking_uri=uri)
    )


def list_artifacts(uri: str, run_id: str, path: str) -> dict[str, bool]:
    """What the run's artifact directory `path` holds: name -> whether it is a directory."""
    return {Path(f.path).name: f.is_dir for f in client(uri).list_artifacts(run_id, path)}


class RunNotFound(LayerprobeError):
    """The store holds no run with this id (or there is no store yet: `store_exists` False)."""

    def __init__(self, message: str, uri: str, store_exists: bool) -> None:
        super().__init__(message)
        self.uri, self.store_exists = uri, store_exists


def _get_run(uri: str, run_id: str) -> Any:
    """The run; one line when it is not there. Reading never creates a store: a sqlite file that does
    not exist holds no run (opening it would create it, and MLflow log its migrations)."""
    db = sqlite_file(uri)
    if db is not None and not db.is_file():
        raise RunNotFound(f"run {run_id!r} not found: the tracking store {uri} does not exist", uri, False)
    try:
        return client(uri).get_run(run_id)
    except mlflow.exceptions.MlflowException as e:
        if e.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise RunNotFound(f"run {run_id!r} not found in {uri}", uri, True) from None
        raise LayerprobeError(f"run {run_id!r} could not be read from {uri}: {first_line(e)}") from None


def run_data(uri: str, run_id: str) -> Any:
    """The run's data (latest metric values, params, tags); one line when the run is unknown."""
    return _get_run(uri, run_id).data


def run_info(uri: str, run_id: str) -> dict[str, Any]:
    """Name, status, experiment and parent of a run."""
    run = _get_run(uri, run_id)
    return {
        "run_name": run.info.run_name,
        "status": run.info.status,
        "experiment_id": run.info.experiment_id,
        "parent": run.data.tags.get("mlflow.parentRunId"),
    }


def run_tags(uri: str, run_id: str) -> dict[str, str]:
    return dict(run_data(uri, run_id).tags)


def child_run_summaries(uri: str, parent_id: str) -> list[RunSummary]:
    """The runs nested under `parent_id`, oldest first."""
    experiment_id = client(uri).get_run(parent_id).info.experiment_id
    return _summaries(uri, experiment_id, f"tags.mlflow.parentRunId = '{parent_id}'")


def sweep_children(uri: str, parent_id: str) -> list[RunSummary]:
    """The child runs of the sweep `parent_id` belongs to, oldest first: those of every parent with
    its sweep key (the sweep's reruns, processes sharing its study), else the ones nested under it."""
    parent = client(uri).get_run(parent_id)
    nested = child_run_summaries(uri, parent_id)
    key = parent.data.tags.get(SWEEP_KEY_TAG)
    if not key:
        return nested
    runs = _summaries(uri, parent.info.experiment_id, f"tags.`{SWEEP_KEY_TAG}` = '{key}'")
    keyed = {r.run_id: r for r in runs if r.tags.get("layerprobe.sweep") != "parent"}
    return sorted({**{r.run_id: r for r in nested}, **keyed}.values(), key=lambda r: r.start_time)


def find_runs(uri: str, experiment: str, tags: Mapping[str, str], status: str | None = None) -> list[RunSummary]:
    """The runs of `experiment` (a name) that carry every one of `tags` (and have `status`), oldest
    first; none when the store or the experiment does not exist (reading creates neither)."""
    db = sqlite_file(uri)
    if db is not None and not db.is_file():
        return []
    found = client(uri).get_experiment_by_name(experiment)
    if found is None:
        return []
    where = [f"tags.`{k}` = '{v}'" for k, v in tags.items()]  # our ids and digests: no quotes in them
    where += [f"attributes.status = '{status}'"] if status else []
    return _summaries(uri, found.experiment_id, " and ".join(where))


def _summaries(uri: str, experiment_id: str, filter_string: str) -> list[RunSummary]:
    runs = client(uri).search_runs([experiment_id], filter_string=filter_string, max_results=MAX_CHILDREN)
    summaries = [
        RunSummary(
            run_id=r.info.run_id,
            name=r.info.run_name or "",
            status=r.info.status,
            start_time=r.info.start_time or 0,
            tags=dict(r.data.tags),
            metrics=dict(r.data.metrics),
        )
        for r in runs
    ]
    return sorted(summaries, key=lambda r: r.start_time)


def child_runs(uri: str, parent_id: str) -> list[str]:
    """Ids of the runs nested under `parent_id`, oldest first."""
    return [r.run_id for r in child_run_summaries(uri, parent_id)]


def latest_metric_points(uri: str, run_id: str) -> dict[str, tuple[int, float]]:
    """Each metric's latest point in the run: key -> (step, value)."""
    return {m.key: (int(m.step), float(m.value)) for m in run_data(uri, run_id)._metric_objs}


def metric_steps(uri: str, run_id: str, keys: Sequence[str]) -> dict[str, set[int]]:
    """The steps at which the run holds a point of each of `keys` (empty for a key never logged)."""
    c = client(uri)
    return {k: {int(m.step) for m in c.get_metric_history(run_id, k)} for k in keys}
