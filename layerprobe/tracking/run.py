"""One MLflow run: params, tags, metrics, dataset inputs and artifacts, sent in batches."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric, RunStatus, RunTag

from layerprobe.errors import LayerprobeError, first_line
from layerprobe.tracking.outbox import PENDING_FILE, Outbox
from layerprobe.tracking.queries import SWEEP_KEY_TAG, find_runs
from layerprobe.tracking.reaper import STALE_TAG, mark_stale_runs, owner_tags
from layerprobe.tracking.store import (
    client,
    is_transient,
    one_line_before_training,
    retrying,
    sanitize_key,
)

log = logging.getLogger(__name__)

MAX_METRICS, MAX_PARAMS, MAX_TAGS = 1000, 100, 100  # per log_batch call
MAX_PARAM_VALUE = 6000
MAX_TAG_VALUE = 5000
# What kind of experiment this is, in MLflow 3's terms (model training, not GenAI). Checked in the
# 3.17 UI: it does not pick the view an experiment opens in (the `workflowType` URL parameter does,
# see ui_link); it records the kind for the UI and for clients that read it.
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


def flatten(tree: Any, prefix: str = "") -> dict[str, str]:
    """Nested config -> {"model.layers.conv1.filters": "32"}; long values are cut with a marker."""
    out: dict[str, str] = {}
    if isinstance(tree, Mapping):
        for k, v in tree.items():
            out.update(flatten(v, f"{prefix}{k}."))
        if not tree and prefix:
            out[prefix[:-1]] = "{}"
    else:
        value = str(tree)
        if len(value) > MAX_PARAM_VALUE:
            marker = "...[truncated]"
            value = value[: MAX_PARAM_VALUE - len(marker)] + marker
        out[sanitize_key(prefix[:-1])] = value
    return out


def _chunks(items: list, size: int) -> Iterable[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class Tracker:
    """One MLflow run. Use as a context manager: an exception ends it FAILED, Ctrl-C KILLED.

    Starting a run first marks KILLED the runs of the experiment left RUNNING by a dead process of
    this host (see `mark_stale_runs`). A call the store does not take after RETRY_DELAYS is appended
    to `<pending_dir>/mlflow-pending.jsonl` and training goes on; while the store is away later calls
    go straight to that file, and every OFFLINE_PROBE_SECONDS the file is replayed into the store.
    What is still there at the end is uploaded by `layerprobe upload-pending DIR`.

    NullTracker (tracking.null) has the same public interface; the public attributes are the ones
    annotated here.
    """

    uri: str
    run_id: str
    experiment_id: str | None  # None when logging into an existing run
    seconds: float  # time spent in MLflow calls, for the logging-cost figure
    pending: Path  # the pending file

    def __init__(
        self,
        uri: str,
        experiment: str,
        run_name: str | None,
        tags: Mapping[str, str] | None = None,
        parent_run_id: str | None = None,
        run_id: str | None = None,
        pending_dir: str | Path | None = None,
    ) -> None:
        self.uri = uri
        with one_line_before_training(uri):  # client() creates (migrates) a fresh sqlite store under its lock
            self._client = client(uri)
            self._client.search_experiments(max_results=1)
        self.seconds = 0.0
        self.pending = Path(pending_dir or Path.cwd() / "outputs" / "pending") / PENDING_FILE
        self.experiment_id = None
        self._owns_run = run_id is None  # else log into an existing run (probing a finished run)
        if run_id is None:
            with one_line_before_training(uri):
                run_id = self._start_run(experiment, run_name, tags, parent_run_id)
        self.run_id = run_id
        self._outbox = Outbox(self.pending, uri, run_id)

    def _start_run(
        self, experiment: str, run_name: str | None, tags: Mapping[str, str] | None, parent_run_id: str | None
    ) -> str:
        exp_id = retrying(self._experiment_id, experiment)
        retrying(mark_stale_runs, self._client, exp_id)
        all_tags = {**dict(tags or {}), **owner_tags()}
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        run = retrying(self._client.create_run, exp_id, run_name=run_name, tags=all_tags)
        self.experiment_id = exp_id
        return str(run.info.run_id)

    def _experiment_id(self, name: str) -> str:
        exp = self._client.get_experiment_by_name(name)
        if exp is not None:
            if EXPERIMENT_KIND[0] not in exp.tags:  # made elsewhere: say what it is, unless someone did
                self._client.set_experiment_tag(exp.experiment_id, *EXPERIMENT_KIND)
            return str(exp.experiment_id)
        try:
            return str(self._client.create_experiment(name, tags=dict([EXPERIMENT_KIND])))
        except mlflow.exceptions.MlflowException as e:  # another process created it meanwhile
            exp = self._client.get_experiment_by_name(name)
            if exp is None:
                raise LayerprobeError(f"cannot create experiment {name!r} in {self.uri}: {first_line(e)}") from None
            return str(exp.experiment_id)

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        """End the run by how the block ended (a run it did not start stays as it is); then replay
        or name the calls the store did not take."""
        if self._owns_run:
            if exc_type is None:
                status = RunStatus.FINISHED
            elif issubclass(exc_type, KeyboardInterrupt):
                status = RunStatus.KILLED
            else:
                status = RunStatus.FAILED
                self.set_tags({"error": f"{exc_type.__name__}: {exc}"})
            self._send({"op": "terminate", "status": RunStatus.to_string(status)})
        self._outbox.close()

    def _send(self, record: dict[str, Any]) -> None:
        start = time.perf_counter()
        try:
            self._outbox.deliver(self._client, record)
        finally:
            self.seconds += time.perf_counter() - start

    def log_params(self, params: Mapping[str, str]) -> None:
        items = [[k, str(v)] for k, v in sorted(params.items())]
        for chunk in _chunks(items, MAX_PARAMS):
            self._send({"op": "batch", "params": chunk})

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Keys are sanitised (see sanitize_key), values cut at MAX_TAG_VALUE characters."""
        items = [[sanitize_key(k), str(v)[:MAX_TAG_VALUE]] for k, v in tags.items()]
        for chunk in _chunks(items, MAX_TAGS):
            self._send({"op": "batch", "tags": chunk})

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        self.log_metric_records([(metrics, step)])

    def log_metric_records(
        self, records: Sequence[tuple[Mapping[str, float], int]], tags: Mapping[str, str] | None = None
    ) -> None:
        """Many (metrics, step) records in as few log_batch calls as the limits allow; `tags` (a few)
        ride along in the first, so each store round trip counts (each is a commit: 3-6 ms on sqlite)."""
        now = int(time.time() * 1000)
        items = [[sanitize_key(k), float(v), now, int(step)] for metrics, step in records for k, v in metrics.items()]
        rest = dict(tags or {})
        for chunk in _chunks(items, MAX_METRICS):
            if rest and len(rest) <= MAX_TAGS:
                tagged = [[sanitize_key(k), str(v)[:MAX_TAG_VALUE]] for k, v in rest.items()]
                self._send({"op": "batch", "metrics": chunk, "tags": tagged})
                rest = {}
            else:
                self._send({"op": "batch", "metrics": chunk})
        if rest:
            self.set_tags(rest)

    def log_datasets(self, datasets: Sequence[Mapping[str, Any]]) -> None:
        """The run's dataset inputs (see `outbox._dataset_input` for the record), one call."""
        self._send({"op": "inputs", "datasets": [dict(d) for d in datasets]})

    def log_artifacts(self, local_dir: str | Path, artifact_path: str | None = None) -> None:
        self._send({"op": "artifacts", "local": str(Path(local_dir).resolve()), "path": artifact_path})

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self._send({"op": "artifact", "local": str(Path(path).resolve()), "path": artifact_path})

    def log_model(
        self,
        saved_model: str | Path,
        examples: Mapping[str, Any],
        metrics: Mapping[str, float],
        step: int,
        register: str | None = None,
        answers: Mapping[str, Any] | None = None,
    ) -> Any:
        """The run's MLflow Model (see tracking.models.log_model); returns its models.LoggedModel.
        A store that stays away costs a warning and None, not the run: the SavedModel is among the
        run's artifacts (buffered like every artifact) either way."""
        from layerprobe.tracking.models import log_model

        start = time.perf_counter()
        try:
            return log_model(self.uri, self.run_id, str(saved_model), examples, metrics, step, register, answers)
        except Exception as e:
            if not is_transient(e):
                raise
            log.warning("the run's MLflow Model was not logged, the store did not take it: %s", first_line(e))
            return None
        finally:
            self.seconds += time.perf_counter() - start


def start_sweep_parent(uri: str, experiment: str, name: str, tags: Mapping[str, str]) -> str:
    """Start a sweep's parent run (left RUNNING until finish_sweep_parent); returns its id."""
    return Tracker(uri, experiment, name, tags).run_id


def reopen_sweep_parent(uri: str, experiment: str, key: str, tags: Mapping[str, str]) -> str | None:
    """The oldest parent run of `experiment` tagged `layerprobe.sweep_key`=`key` that has ended (or
    whose process is gone), RUNNING again for this process with `tags` set and the tags saying why
    it ended (error, layerprobe.stale) removed; None when there is none (a parent still RUNNING in a
    live process is not taken)."""
    wanted = {"layerprobe.sweep": "parent", SWEEP_KEY_TAG: key}
    earlier = find_runs(uri, experiment, wanted)
    if not earlier:  # no store, experiment or parent: nothing to reopen
        return None
    mlflow_client = client(uri)
    if any(r.status == "RUNNING" for r in earlier):  # ended KILLED when its process is gone
        mark_stale_runs(mlflow_client, mlflow_client.get_run(earlier[0].run_id).info.experiment_id)
        earlier = find_runs(uri, experiment, wanted)
    ended = [r for r in earlier if r.status != "RUNNING"]
    if not ended:
        return None
    run = ended[0]
    mlflow_client.update_run(run.run_id, status="RUNNING")
    all_tags = {**tags, **owner_tags()}
    mlflow_client.log_batch(run.run_id, tags=[RunTag(sanitize_key(k), str(v)) for k, v in all_tags.items()])
    for why_it_ended in ("error", STALE_TAG):
        if why_it_ended in run.tags:
            mlflow_client.delete_tag(run.run_id, why_it_ended)
    return run.run_id


def finish_sweep_parent(
    uri: str,
    parent_id: str,
    tags: Mapping[str, str],
    metrics: Mapping[str, float],
    files: Sequence[Path] = (),
    status: str = "FINISHED",
) -> None:
    """Log `files`, `tags` and `metrics` (at step 0) to a sweep's parent run, then end it with
    `status` (FINISHED, FAILED or KILLED)."""
    mlflow_client = client(uri)
    for path in files:
        mlflow_client.log_artifact(parent_id, str(path))
    now = int(time.time() * 1000)
    mlflow_client.log_batch(
        parent_id,
        metrics=[Metric(sanitize_key(k), float(v), now, 0) for k, v in metrics.items()],
        tags=[RunTag(sanitize_key(k), str(v)[:MAX_TAG_VALUE]) for k, v in tags.items()],
    )
    mlflow_client.set_terminated(parent_id, status)
