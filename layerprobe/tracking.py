"""MLflow: the only module that imports mlflow. Params, tags and metrics go in batches."""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.tracking import MlflowClient

from layerprobe.errors import ConfigError, LayerprobeError

log = logging.getLogger(__name__)

MAX_METRICS, MAX_PARAMS, MAX_TAGS = 1000, 100, 100  # per log_batch call
MAX_PARAM_VALUE = 6000
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


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """One line, before any training, when the store cannot be used."""
    scheme = uri.split(":", 1)[0] if ":" in uri else ""
    if scheme in ("http", "https"):
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as r:
                if r.status != 200:
                    raise LayerprobeError(f"tracking store {uri} answered /health with {r.status}")
        except (urllib.error.URLError, OSError) as e:
            raise LayerprobeError(f"tracking store {uri} cannot be reached: {getattr(e, 'reason', e)}") from None
    elif scheme.startswith("sqlite"):
        path = uri.split(":///", 1)[-1]
        parent = Path(path).resolve().parent
        if not parent.is_dir() or not os.access(parent, os.W_OK):
            raise LayerprobeError(f"tracking store {uri}: directory {parent} is missing or not writable")
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


class Tracker:
    """One MLflow run. Use as a context manager: an exception ends it FAILED, Ctrl-C KILLED."""

    def __init__(
        self,
        uri: str,
        experiment: str,
        run_name: str | None,
        tags: Mapping[str, str] | None = None,
        parent_run_id: str | None = None,
        run_id: str | None = None,
    ) -> None:
        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        self.seconds = 0.0  # time spent in MLflow calls, for the logging-cost figure
        if run_id is not None:  # log into an existing run (probing a finished run)
            self.run_id = run_id
            self._owns_run = False
            return
        exp = self.client.get_experiment_by_name(experiment)
        exp_id = exp.experiment_id if exp else self.client.create_experiment(experiment)
        all_tags = dict(tags or {})
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        run = self.client.create_run(exp_id, run_name=run_name, tags=all_tags)
        self.run_id = run.info.run_id
        self._owns_run = True

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if not self._owns_run:
            return
        if exc_type is None:
            status = RunStatus.FINISHED
        elif issubclass(exc_type, KeyboardInterrupt):
            status = RunStatus.KILLED
        else:
            status = RunStatus.FAILED
            self.set_tags({"error": f"{exc_type.__name__}: {exc}"[:5000]})
        self.client.set_terminated(self.run_id, RunStatus.to_string(status))

    def _timed(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start

    def log_params(self, params: Mapping[str, str]) -> None:
        items = [Param(k, v) for k, v in sorted(params.items())]
        for chunk in _chunks(items, MAX_PARAMS):
            self._timed(self.client.log_batch, self.run_id, params=chunk)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        items = [RunTag(sanitize_key(k), str(v)[:5000]) for k, v in tags.items()]
        for chunk in _chunks(items, MAX_TAGS):
            self._timed(self.client.log_batch, self.run_id, tags=chunk)

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        now = int(time.time() * 1000)
        items = [Metric(sanitize_key(k), float(v), now, step) for k, v in metrics.items()]
        for chunk in _chunks(items, MAX_METRICS):
            self._timed(self.client.log_batch, self.run_id, metrics=chunk)

    def log_metric_records(self, records: Sequence[tuple[Mapping[str, float], int]]) -> None:
        """Many (metrics, step) records in as few log_batch calls as the limits allow."""
        now = int(time.time() * 1000)
        items = [Metric(sanitize_key(k), float(v), now, step) for metrics, step in records for k, v in metrics.items()]
        for chunk in _chunks(items, MAX_METRICS):
            self._timed(self.client.log_batch, self.run_id, metrics=chunk)

    def log_artifacts(self, local_dir: str | Path, artifact_path: str | None = None) -> None:
        self._timed(self.client.log_artifacts, self.run_id, str(local_dir), artifact_path)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self._timed(self.client.log_artifact, self.run_id, str(path), artifact_path)


def download_artifact(uri: str, run_id: str, path: str, dst: str | Path) -> Path:
    return Path(
        mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=str(dst), tracking_uri=uri)
    )


def run_tags(uri: str, run_id: str) -> dict[str, str]:
    try:
        return dict(MlflowClient(tracking_uri=uri).get_run(run_id).data.tags)
    except mlflow.exceptions.MlflowException as e:
        raise LayerprobeError(f"run {run_id!r} not found in {uri}: {str(e).splitlines()[0]}") from None


def start_sweep_parent(uri: str, experiment: str, name: str, tags: Mapping[str, str]) -> str:
    tracker = Tracker(uri, experiment, name, tags)
    return tracker.run_id


def finish_sweep_parent(
    uri: str, parent_id: str, objective: str, direction: str, out_dir: Path
) -> tuple[str, float] | None:
    """Log the children's table and the best child to the parent, then end the parent run."""
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
    client.log_batch(parent_id, tags=[RunTag(k, v) for k, v in tags.items()])
    client.set_terminated(parent_id, "FINISHED")
    return best
