"""Calls the store did not take: appended to a pending file while training goes on, replayed when
the store answers again or by `layerprobe upload-pending DIR`.

A record is one plain JSON object (`{"op": "batch", "metrics": [...]}`, `"inputs"`, `"artifacts"`,
`"artifact"`, `"terminate"`), carried out by `apply` whether it is sent live or read back from a file.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from layerprobe.errors import LayerprobeError, first_line
from layerprobe.shell import installed_command
from layerprobe.tracking.store import RETRY_DELAYS, client, is_transient, retrying

log = logging.getLogger(__name__)

PENDING_FILE = "mlflow-pending.jsonl"  # calls the store did not take; `layerprobe upload-pending DIR`
OFFLINE_PROBE_SECONDS = 15.0  # while the store is down, how often a call tries it again


class Outbox:
    """One run's pending file `path`, and whether the store is away: while it is, records go
    straight to the file, and every OFFLINE_PROBE_SECONDS the file is replayed into the store."""

    def __init__(self, path: Path, uri: str, run_id: str) -> None:
        self.path, self.uri, self.run_id = path, uri, run_id
        self._offline_since: float | None = None
        self._last_try = 0.0

    def deliver(self, mlflow_client: MlflowClient, record: Mapping[str, Any]) -> None:
        """Carry out `record` now (retried while the store is busy), or append it to the file."""
        if self._offline_since is not None and not self._try_replay():
            self._append(record)
            return
        try:
            retrying(apply, mlflow_client, self.run_id, record)
        except Exception as e:
            if not is_transient(e):
                raise
            log.warning("tracking store %s unavailable (%s); buffering", self.uri, first_line(e))
            self._offline_since = self._last_try = time.monotonic()
            self._append(record)

    def close(self) -> None:
        """Replay the file one last time; warn with the command that sends what is still there."""
        if self._offline_since is not None:
            self._last_try = 0.0
            self._try_replay()
        if self.path.exists():
            log.warning(
                "the tracking store %s did not take every call; they are in %s: "
                "run `%s upload-pending %s` when it is back",
                self.uri,
                self.path,
                installed_command("layerprobe"),
                self.path.parent,
            )

    def _append(self, record: Mapping[str, Any]) -> None:
        new = not self.path.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            if new:
                f.write(json.dumps({"op": "header", "uri": self.uri, "run_id": self.run_id}) + "\n")
            f.write(json.dumps({**record, "run_id": self.run_id}) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def _try_replay(self) -> bool:
        """Replay the file when the last try is old enough; True when the store is back."""
        if time.monotonic() - self._last_try < OFFLINE_PROBE_SECONDS:
            return False
        self._last_try = time.monotonic()
        try:
            replay_pending(self.path, self.uri, delays=())
        except Exception as e:
            if not is_transient(e):
                raise
            return False
        log.info("tracking store %s is back; the buffered calls were delivered", self.uri)
        self._offline_since = None
        return True


def apply(mlflow_client: MlflowClient, run_id: str, record: Mapping[str, Any]) -> None:
    """Carry out one record (as sent live or read back from a pending file)."""
    op = record["op"]
    if op == "batch":
        mlflow_client.log_batch(
            run_id,
            metrics=[Metric(k, v, ts, step) for k, v, ts, step in record.get("metrics", [])],
            params=[Param(k, v) for k, v in record.get("params", [])],
            tags=[RunTag(k, v) for k, v in record.get("tags", [])],
        )
    elif op == "inputs":
        mlflow_client.log_inputs(run_id, datasets=[_dataset_input(d) for d in record["datasets"]])
    elif op == "artifacts":
        mlflow_client.log_artifacts(run_id, record["local"], record["path"])
    elif op == "artifact":
        mlflow_client.log_artifact(run_id, record["local"], record["path"])
    elif op == "terminate":
        mlflow_client.set_terminated(run_id, record["status"])
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
    mlflow_client = client(uri)
    records = [r for r in lines if r["op"] != "header"]
    for i, record in enumerate(records):
        try:
            retrying(apply, mlflow_client, record["run_id"], record, delays=delays)
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
                f"{path}: the tracking store did not take the buffered calls: {first_line(e, 300)}"
            ) from None
    return done
