"""The store itself: where it is (URIs, UI links), whether it can be used, how a call to it is
retried, and the lock that keeps processes from migrating a fresh sqlite store at once."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient

from layerprobe import locks
from layerprobe.errors import ConfigError, LayerprobeError, first_line

log = logging.getLogger(__name__)

RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0)  # seconds between attempts of one call before it is buffered
# Creating a fresh sqlite store runs MLflow's migrations (~3 s alone, longer with several processes
# queued behind the lock); ten minutes means the holder is stuck. LAYERPROBE_LOCK_TIMEOUT overrides it.
STORE_LOCK_SECONDS = 600.0
# Set unless the user set them. HTTP: MLflow's own retries default to 7 with backoff factor 2
# (minutes per call against a dead server); layerprobe retries and buffers itself, so it keeps
# MLflow's short. Progress bar: MLflow draws a tqdm bar per artifact download into the log of every
# sweep and re-probe; it reads MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR at each download (3.17).
MLFLOW_ENV_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
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


def use_layerprobe_defaults() -> None:
    """Set MLflow's environment to MLFLOW_ENV_DEFAULTS wherever the user has not set it."""
    for key, value in MLFLOW_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)


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


def sqlite_file(uri: str) -> Path | None:
    """The database file of a `sqlite:///path` store (relative to the working directory unless
    absolute), None for any other store."""
    if not uri.startswith("sqlite:///") or uri == "sqlite:///:memory:":
        return None
    return Path(uri[len("sqlite:///") :].split("?", 1)[0])


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


def is_transient(e: BaseException) -> bool:
    """Whether `e` means the store is away or busy (retry, then buffer), not that the call is wrong."""
    code = getattr(e, "error_code", None)
    if isinstance(e, mlflow.exceptions.MlflowException):
        return code not in PERMANENT_CODES
    if isinstance(e, OSError) and e.errno in LOCAL_WRITE_ERRORS:  # a local artifact dir: will not heal
        return False
    return isinstance(e, OSError) or type(e).__name__ in ("OperationalError", "DBAPIError", "TimeoutError")


def retrying(fn: Any, *args: Any, delays: Sequence[float] = RETRY_DELAYS, **kwargs: Any) -> Any:
    """fn(*args), again after each delay while it fails transiently (sqlite 'database is locked',
    a server restarting); the last error is raised."""
    for delay in (*delays, None):
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            if delay is None or not is_transient(e):
                raise
            log.debug("tracking call failed (%s); again in %.1fs", first_line(e), delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


@contextlib.contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Hold an exclusive lock file beside a sqlite store: processes that open a fresh store at once
    otherwise all run MLflow's migrations and fail ("Online migration expected to match one row")."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    db = uri[len("sqlite:///") :]
    with locks.exclusive(db + ".lock", f"tracking store {db}", locks.timeout(STORE_LOCK_SECONDS)):
        yield


@contextlib.contextmanager
def one_line_before_training(uri: str) -> Iterator[None]:
    """A store that passed `check_reachable` but fails the calls that start a run (a server whose
    database is gone answers /health and 503s the rest): one line, before any training."""
    try:
        yield
    except Exception as e:
        if not (is_transient(e) or isinstance(e, mlflow.exceptions.MlflowException)):
            raise
        raise LayerprobeError(f"tracking store {uri} did not start the run: {first_line(e, 300)}") from None


_OPENED: set[str] = set()  # the sqlite stores this process has opened (created or migrated) under the lock


def client(uri: str) -> MlflowClient:
    """An MLflow client of `uri`, with MLFLOW_ENV_DEFAULTS in the environment (every client of
    layerprobe is made here). A sqlite store is opened the first time under `store_lock`: MLflow
    creates its tables on the first call, and two processes doing that at once (two sweeps starting
    on one store) fail with "table ... already exists"."""
    use_layerprobe_defaults()
    if sqlite_file(uri) is None or uri in _OPENED:
        return MlflowClient(tracking_uri=uri)
    with store_lock(uri):  # the client opens its store at once: creates and migrates its tables
        made = MlflowClient(tracking_uri=uri)
    _OPENED.add(uri)
    return made
