"""MLflow: the only module that imports mlflow. Params, tags and metrics go in batches."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import socket
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.tracking import MlflowClient

from layerprobe.errors import ConfigError, LayerprobeError

log = logging.getLogger(__name__)

MAX_METRICS, MAX_PARAMS, MAX_TAGS = 1000, 100, 100  # per log_batch call
MAX_PARAM_VALUE = 6000
PENDING_FILE = "mlflow-pending.jsonl"  # calls the store did not take; `layerprobe upload-pending DIR`
RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0)  # seconds between attempts of one call before it is buffered
OFFLINE_PROBE_SECONDS = 15.0  # while the store is down, how often a call tries it again
HOST_TAG, PID_TAG, PID_START_TAG = "layerprobe.host", "layerprobe.pid", "layerprobe.pid_start"
# MLflow's own HTTP retries default to 7 with backoff factor 2 (minutes per call against a dead
# server); layerprobe retries and buffers itself, so it keeps MLflow's short unless the user set them.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}
LOCAL_WRITE_ERRORS = {errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EISDIR, errno.EROFS, errno.ENOSPC, errno.ENOENT}
# Errors that mean "this call is wrong", not "the store is away": retrying or buffering cannot help.
PERMANENT_CODES = {
    "INVALID_PARAMETER_VALUE",
    "RESOURCE_ALREADY_EXISTS",
    "RESOURCE_DOES_NOT_EXIST",
    "INVALID_STATE",
    "BAD_REQUEST",
    "PERMISSION_DENIED",
    "UNAUTHENTICATED",
    "ENDPOINT_NOT_FOUND",
}
_UNSAFE_KEY = re.compile(r"[^A-Za-z0-9_\-. /]")


def sanitize_key(key: str) -> str:
    """MLflow keys allow alphanumerics and `_ - . space /`; anything else becomes `_`, at most 250."""
    return _UNSAFE_KEY.sub("_", key)[:250]


def resolve_uri(configured: str | None) -> str:
    """tracking.uri, else $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the working directory."""
    if configured:
        return configured
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def ui_link(uri: str, experiment_id: str, run_id: str) -> str:
    """The run's page in the MLflow UI, opened in the model-training view (MLflow 3's UI starts in
    its GenAI view): on the tracking server itself, or where `mlflow ui` / `make ui` serves a
    local store (http://127.0.0.1:5000)."""
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}?workflowType=machine_learning"


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """One line, before any training, when the store cannot be used."""
    scheme = uri.split(":", 1)[0] if ":" in uri else ""
    if scheme in ("http", "https"):
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as r:
                if r.status != 200:
                    raise LayerprobeError(f"tracking store {uri} (tracking.uri) answered /health with {r.status}")
        except (urllib.error.URLError, OSError) as e:
            raise LayerprobeError(
                f"tracking store {uri} (tracking.uri) cannot be reached: {getattr(e, 'reason', e)}"
            ) from None
    elif scheme.startswith("sqlite"):
        path = uri.split(":///", 1)[-1]
        parent = Path(path).resolve().parent
        if not parent.is_dir() or not os.access(parent, os.W_OK):
            raise LayerprobeError(f"tracking store {uri} (tracking.uri): directory {parent} is missing or not writable")
    elif scheme not in ("postgresql", "mysql", "mssql", "file", "databricks") and not scheme.startswith(
        ("postgresql+", "mysql+", "mssql+")
    ):
        raise ConfigError(
            "tracking.uri", uri, "unknown tracking URI scheme", ("http://", "https://", "sqlite:///", "postgresql://")
        )


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


def is_transient(e: BaseException) -> bool:
    """Whether `e` means the store is away or busy (retry, then buffer), not that the call is wrong."""
    code = getattr(e, "error_code", None)
    if isinstance(e, mlflow.exceptions.MlflowException):
        return code not in PERMANENT_CODES
    if isinstance(e, OSError) and e.errno in LOCAL_WRITE_ERRORS:  # a local artifact dir: will not heal
        return False
    return isinstance(e, OSError) or type(e).__name__ in ("OperationalError", "DBAPIError", "TimeoutError")


def _process_start(pid: int) -> str | None:
    """The kernel's start time of `pid` (Linux), so that a reused pid is not taken for the run's."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]  # field 22, counted after the command name


def _alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        pass
    now = _process_start(pid)
    return start is None or now is None or now == start


def mark_stale_runs(client: MlflowClient, experiment_id: str) -> list[str]:
    """End as KILLED the RUNNING runs of this experiment started on this host by a process that is
    gone (SIGKILL, OOM kill, power loss leave a run RUNNING forever). Returns their ids."""
    host = socket.gethostname()
    stale = []
    runs = client.search_runs(
        [experiment_id], filter_string=f"attributes.status = 'RUNNING' and tags.`{HOST_TAG}` = '{host}'"
    )
    for r in runs:
        pid = r.data.tags.get(PID_TAG, "")
        if not pid.isdigit() or _alive(int(pid), r.data.tags.get(PID_START_TAG)):
            continue
        note = f"process {pid} on {host} was gone when a later run started at {time.strftime('%Y-%m-%d %H:%M:%S')}"
        client.set_tag(r.info.run_id, "layerprobe.stale", note)
        client.set_terminated(r.info.run_id, RunStatus.to_string(RunStatus.KILLED))
        log.warning("marked run %s KILLED: %s", r.info.run_id, note)
        stale.append(r.info.run_id)
    return stale


@contextlib.contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """Hold an exclusive lock file beside a sqlite store: processes that open a fresh store at once
    otherwise all run MLflow's migrations and fail ("Online migration expected to match one row")."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    import fcntl

    lock = Path(uri[len("sqlite:///") :] + ".lock")
    with lock.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def _one_line_before_training(uri: str) -> Iterator[None]:
    """A store that passed `check_reachable` but fails the calls that start a run (a server whose
    database is gone answers /health and 503s the rest): one line, before any training."""
    try:
        yield
    except Exception as e:
        if not (is_transient(e) or isinstance(e, mlflow.exceptions.MlflowException)):
            raise
        first = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
        raise LayerprobeError(f"tracking store {uri} did not start the run: {first}") from None


# What kind of experiment this is, in MLflow 3's terms (model training, not GenAI). Checked in the
# 3.17 UI: it does not pick the view an experiment opens in (the `workflowType` URL parameter does,
# see ui_link); it records the kind for the UI and for clients that read it.
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


def _retrying(fn: Any, *args: Any, delays: Sequence[float] = RETRY_DELAYS, **kwargs: Any) -> Any:
    """fn(*args), again after each delay while it fails transiently (sqlite 'database is locked',
    a server restarting); the last error is raised."""
    for delay in (*delays, None):
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            if delay is None or not is_transient(e):
                raise
            log.debug("tracking call failed (%s); again in %.1fs", str(e).splitlines()[0][:200], delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


class Tracker:
    """One MLflow run. Use as a context manager: an exception ends it FAILED, Ctrl-C KILLED.

    Starting a run first marks KILLED the runs of the experiment left RUNNING by a dead process of
    this host (see `mark_stale_runs`). A call the store does not take after RETRY_DELAYS is appended
    to `<pending_dir>/mlflow-pending.jsonl` and training goes on; while the store is away later calls
    go straight to that file, and every OFFLINE_PROBE_SECONDS the file is replayed into the store.
    What is still there at the end is uploaded by `layerprobe upload-pending DIR`.
    """

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
        for key, value in HTTP_DEFAULTS.items():
            os.environ.setdefault(key, value)
        self.uri = uri
        with _store_lock(uri), _one_line_before_training(uri):  # the first use creates (migrates) the store
            self.client = MlflowClient(tracking_uri=uri)
            self.client.search_experiments(max_results=1)
        self.seconds = 0.0  # time spent in MLflow calls, for the logging-cost figure
        self.pending = Path(pending_dir or Path.cwd() / "outputs" / "pending") / PENDING_FILE
        self._offline_since: float | None = None
        self._last_try = 0.0
        self.experiment_id: str | None = None
        if run_id is not None:  # log into an existing run (probing a finished run)
            self.run_id = run_id
            self._owns_run = False
            return
        with _one_line_before_training(uri):
            self.run_id = self._start_run(experiment, run_name, tags, parent_run_id)
        self._owns_run = True

    def _start_run(
        self, experiment: str, run_name: str | None, tags: Mapping[str, str] | None, parent_run_id: str | None
    ) -> str:
        exp_id = _retrying(self._experiment_id, experiment)
        _retrying(mark_stale_runs, self.client, exp_id)
        all_tags = {
            **dict(tags or {}),
            HOST_TAG: socket.gethostname(),
            PID_TAG: str(os.getpid()),
            PID_START_TAG: _process_start(os.getpid()) or "",
        }
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        run = _retrying(self.client.create_run, exp_id, run_name=run_name, tags=all_tags)
        self.experiment_id = exp_id
        return str(run.info.run_id)

    def _experiment_id(self, name: str) -> str:
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            if EXPERIMENT_KIND[0] not in exp.tags:  # made elsewhere: say what it is, unless someone did
                self.client.set_experiment_tag(exp.experiment_id, *EXPERIMENT_KIND)
            return str(exp.experiment_id)
        try:
            return str(self.client.create_experiment(name, tags=dict([EXPERIMENT_KIND])))
        except mlflow.exceptions.MlflowException as e:  # another process created it meanwhile
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                raise LayerprobeError(
                    f"cannot create experiment {name!r} in {self.uri}: {str(e).splitlines()[0]}"
                ) from None
            return str(exp.experiment_id)

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if not self._owns_run:
            self._final_flush()
            return
        if exc_type is None:
            status = RunStatus.FINISHED
        elif issubclass(exc_type, KeyboardInterrupt):
            status = RunStatus.KILLED
        else:
            status = RunStatus.FAILED
            self.set_tags({"error": f"{exc_type.__name__}: {exc}"[:5000]})
        self._send({"op": "terminate", "status": RunStatus.to_string(status)})
        self._final_flush()

    def _final_flush(self) -> None:
        if self._offline_since is not None:
            self._last_try = 0.0
            self._try_replay()
        if self.pending.exists():
            log.warning(
                "the tracking store %s did not take every call; they are in %s: "
                "run `layerprobe upload-pending %s` when it is back",
                self.uri,
                self.pending,
                self.pending.parent,
            )

    # -- sending, with retries and the pending file -------------------------------------------

    def _send(self, record: dict[str, Any]) -> None:
        """Deliver one record, or append it to the pending file when the store is away."""
        if self._offline_since is not None and not self._try_replay():
            self._buffer(record)
            return
        start = time.perf_counter()
        try:
            _retrying(_apply, self.client, self.run_id, record)
        except Exception as e:
            if not is_transient(e):
                raise
            log.warning("tracking store %s unavailable (%s); buffering", self.uri, str(e).splitlines()[0][:200])
            self._offline_since = self._last_try = time.monotonic()
            self._buffer(record)
        finally:
            self.seconds += time.perf_counter() - start

    def _buffer(self, record: dict[str, Any]) -> None:
        new = not self.pending.exists()
        self.pending.parent.mkdir(parents=True, exist_ok=True)
        with self.pending.open("a") as f:
            if new:
                f.write(json.dumps({"op": "header", "uri": self.uri, "run_id": self.run_id}) + "\n")
            f.write(json.dumps({**record, "run_id": self.run_id}) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def _try_replay(self) -> bool:
        """Replay the pending file when the last try is old enough; True when the store is back."""
        if time.monotonic() - self._last_try < OFFLINE_PROBE_SECONDS:
            return False
        self._last_try = time.monotonic()
        try:
            replay_pending(self.pending, self.uri, delays=())
        except Exception as e:
            if not is_transient(e):
                raise
            return False
        log.info("tracking store %s is back; the buffered calls were delivered", self.uri)
        self._offline_since = None
        return True

    # -- the public logging calls ---------------------------------------------------------------

    def log_params(self, params: Mapping[str, str]) -> None:
        items = [[k, str(v)] for k, v in sorted(params.items())]
        for chunk in _chunks(items, MAX_PARAMS):
            self._send({"op": "batch", "params": chunk})

    def set_tags(self, tags: Mapping[str, str]) -> None:
        items = [[sanitize_key(k), str(v)[:5000]] for k, v in tags.items()]
        for chunk in _chunks(items, MAX_TAGS):
            self._send({"op": "batch", "tags": chunk})

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        self.log_metric_records([(metrics, step)])

    def log_metric_records(self, records: Sequence[tuple[Mapping[str, float], int]]) -> None:
        """Many (metrics, step) records in as few log_batch calls as the limits allow."""
        now = int(time.time() * 1000)
        items = [[sanitize_key(k), float(v), now, int(step)] for metrics, step in records for k, v in metrics.items()]
        for chunk in _chunks(items, MAX_METRICS):
            self._send({"op": "batch", "metrics": chunk})

    def log_datasets(self, datasets: Sequence[Mapping[str, Any]]) -> None:
        """The run's dataset inputs (see `_dataset_input` for the record), one call."""
        self._send({"op": "inputs", "datasets": [dict(d) for d in datasets]})

    def log_artifacts(self, local_dir: str | Path, artifact_path: str | None = None) -> None:
        self._send({"op": "artifacts", "local": str(Path(local_dir).resolve()), "path": artifact_path})

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self._send({"op": "artifact", "local": str(Path(path).resolve()), "path": artifact_path})


def _apply(client: MlflowClient, run_id: str, record: Mapping[str, Any]) -> None:
    """Carry out one record (as sent live or read back from a pending file)."""
    op = record["op"]
    if op == "batch":
        client.log_batch(
            run_id,
            metrics=[Metric(k, v, ts, step) for k, v, ts, step in record.get("metrics", [])],
            params=[Param(k, v) for k, v in record.get("params", [])],
            tags=[RunTag(k, v) for k, v in record.get("tags", [])],
        )
    elif op == "inputs":
        client.log_inputs(run_id, datasets=[_dataset_input(d) for d in record["datasets"]])
    elif op == "artifacts":
        client.log_artifacts(run_id, record["local"], record["path"])
    elif op == "artifact":
        client.log_artifact(run_id, record["local"], record["path"])
    elif op == "terminate":
        client.set_terminated(run_id, record["status"])
    elif op != "header":
        raise LayerprobeError(f"unknown record {op!r} in a pending tracking file")


def _dataset_input(d: Mapping[str, Any]) -> Any:
    """An MLflow dataset input from a plain record: name, digest, context (the split), source (tags
    naming where the data came from), rows, and features / targets as {name: [dtype, shape]}. The
    schema and profile take the form MLflow's own numpy datasets log, so the UI shows them."""
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.data.schema import TensorDatasetSchema
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.types import Schema, TensorSpec

    def schema(group: Mapping[str, Any]) -> Schema | None:
        specs = [TensorSpec(np.dtype(dtype), (-1, *shape), name) for name, (dtype, shape) in group.items()]
        return Schema(specs) if specs else None  # type: ignore[arg-type]

    features, targets = schema(d["features"]), schema(d["targets"])
    tensor_schema = None
    if features:
        tensor_schema = TensorDatasetSchema(features, targets) if targets else TensorDatasetSchema(features)
    dataset = Dataset(
        name=d["name"],
        digest=d["digest"],
        source_type="code",
        source=CodeDatasetSource(dict(d["source"])).to_json(),
        schema=json.dumps(tensor_schema.to_dict()) if tensor_schema else None,
        profile=json.dumps({"num_rows": d["rows"]}),
    )
    return DatasetInput(dataset, tags=[InputTag("mlflow.data.context", d["context"])])


def replay_pending(path: Path, uri: str | None = None, delays: Sequence[float] = RETRY_DELAYS) -> int:
    """Send the records of one pending file in order; the file is removed once all are in (on a
    failure, the records not yet sent stay in it). Returns how many records were sent."""
    if not path.exists():
        return 0
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    header: dict[str, Any] = next((r for r in lines if r["op"] == "header"), {})
    uri = uri or header.get("uri")
    if not uri:
        raise LayerprobeError(f"{path}: no tracking URI in the file; pass --tracking-uri")
    client = MlflowClient(tracking_uri=uri)
    records = [r for r in lines if r["op"] != "header"]
    for i, record in enumerate(records):
        try:
            _retrying(_apply, client, record["run_id"], record, delays=delays)
        except Exception:
            rest = [{"op": "header", "uri": uri, "run_id": header.get("run_id")}, *records[i:]]
            tmp = path.with_suffix(".tmp")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in rest))
            tmp.replace(path)
            raise
    path.unlink()
    return len(records)


def upload_pending(root: str | Path, uri: str | None = None) -> dict[Path, int]:
    """Replay every pending file under `root` (a run's output dir, or outputs/ for all runs)."""
    root = Path(root)
    files = [root] if root.is_file() else sorted(root.rglob(PENDING_FILE))
    done: dict[Path, int] = {}
    for path in files:
        try:
            done[path] = replay_pending(path, uri)
        except Exception as e:
            if isinstance(e, LayerprobeError):
                raise
            raise LayerprobeError(
                f"{path}: the tracking store did not take the buffered calls: {str(e).splitlines()[0][:300]}"
            ) from None
    return done


def download_artifact(uri: str, run_id: str, path: str, dst: str | Path) -> Path:
    return Path(
        mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=str(dst), tracking_uri=uri)
    )


def run_data(uri: str, run_id: str) -> Any:
    """The run's data (latest metric values, params, tags); one line when the run is unknown."""
    try:
        return MlflowClient(tracking_uri=uri).get_run(run_id).data
    except mlflow.exceptions.MlflowException as e:
        raise LayerprobeError(f"run {run_id!r} not found in {uri}: {str(e).splitlines()[0]}") from None


def run_info(uri: str, run_id: str) -> dict[str, Any]:
    """Name, status, experiment and parent of a run."""
    try:
        run = MlflowClient(tracking_uri=uri).get_run(run_id)
    except mlflow.exceptions.MlflowException as e:
        raise LayerprobeError(f"run {run_id!r} not found in {uri}: {str(e).splitlines()[0]}") from None
    return {
        "run_name": run.info.run_name,
        "status": run.info.status,
        "experiment_id": run.info.experiment_id,
        "parent": run.data.tags.get("mlflow.parentRunId"),
    }


def child_runs(uri: str, parent_id: str) -> list[str]:
    """Ids of the runs nested under `parent_id`, oldest first."""
    client = MlflowClient(tracking_uri=uri)
    parent = client.get_run(parent_id)
    runs = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'", max_results=10000
    )
    return [r.info.run_id for r in sorted(runs, key=lambda r: r.info.start_time or 0)]


def run_tags(uri: str, run_id: str) -> dict[str, str]:
    return dict(run_data(uri, run_id).tags)


def start_sweep_parent(uri: str, experiment: str, name: str, tags: Mapping[str, str]) -> str:
    tracker = Tracker(uri, experiment, name, tags)
    return tracker.run_id


def finish_sweep_parent(
    uri: str, parent_id: str, objective: str, direction: str, out_dir: Path, error: str | None = None
) -> tuple[str, float] | None:
    """Log the children's table and the best child to the parent, then end the parent run: FAILED
    with `error` as a tag when the sweep itself stopped early, FINISHED otherwise."""
    client = MlflowClient(tracking_uri=uri)
    parent = client.get_run(parent_id)
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'", max_results=10000
    )
    keys = sorted({k for r in children for k in r.data.metrics if k.startswith("eval/")})
    header = ["run_id", "name", "status", "overrides", *keys]
    rows = [
        [r.info.run_id, r.info.run_name or "", r.info.status, r.data.tags.get("layerprobe.overrides", "")]
        + [f"{r.data.metrics[k]:.6g}" if k in r.data.metrics else "" for k in keys]
        for r in sorted(children, key=lambda r: r.info.start_time or 0)
    ]
    table = Path(out_dir) / "sweep_summary.csv"
    import csv

    with table.open("w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    client.log_artifact(parent_id, str(table))
    scored = [(r.info.run_id, r.data.metrics[objective]) for r in children if objective in r.data.metrics]
    best = (max if direction == "maximize" else min)(scored, key=lambda x: x[1]) if scored else None
    tags = {
        "layerprobe.children": str(len(children)),
        "layerprobe.failed_children": str(sum(r.info.status == "FAILED" for r in children)),
    }
    if best:
        tags |= {"layerprobe.best_run_id": best[0], "layerprobe.best_objective": f"{objective}={best[1]:.6g}"}
        client.log_batch(
            parent_id, metrics=[Metric(sanitize_key(f"best/{objective}"), best[1], int(time.time() * 1000), 0)]
        )
    if error:
        tags["error"] = error[:5000]
    client.log_batch(parent_id, tags=[RunTag(k, v) for k, v in tags.items()])
    client.set_terminated(parent_id, "FAILED" if error else "FINISHED")
    return best


class NullTracker:
    """Stands in for Tracker when tracking.enabled is false (temporary; replaced by the tracking package)."""

    run_id = None
    uri = None
    experiment_id = None
    seconds = 0.0

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


def latest_metric_points(uri: str, run_id: str) -> dict[str, tuple[int, float]]:
    """Each metric's latest point of the run: key -> (step, value)."""
    data = run_data(uri, run_id)
    return {m.key: (int(m.step), float(m.value)) for m in data._metric_objs}
