"""Exclusive locks across processes, with a bounded wait and a message that names the holder.

`exclusive(path, what, timeout)` holds the file lock `path` (flock, through the filelock package)
for the block. The holder writes who it is (pid, host, start time, command line) to
`<path>.holder`; a process that waits longer than `timeout` seconds stops with one line naming it:

    model_dir models/x is locked by pid 123 on host h since 2026-11-26 12:01:02
    (layerprobe trainer.seed=3); waited 60 s

`LAYERPROBE_LOCK_TIMEOUT` (seconds) overrides every default wait (see `timeout`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import filelock

from layerprobe.errors import ConfigError, LayerprobeError

log = logging.getLogger(__name__)

TIMEOUT_ENV = "LAYERPROBE_LOCK_TIMEOUT"
HOLDER_SUFFIX = ".holder"


def timeout(default: float) -> float:
    """Seconds to wait for a lock: $LAYERPROBE_LOCK_TIMEOUT when set, else `default`."""
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    if not raw:
        return default
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:  # also NaN
        raise ConfigError(TIMEOUT_ENV, raw, "must be a number of seconds >= 0")
    return seconds


@contextlib.contextmanager
def exclusive(path: str | Path, what: str, timeout: float) -> Iterator[None]:
    """Hold the lock file `path` for the block, waiting at most `timeout` seconds for it; `what`
    names the locked thing in the message. Raises LayerprobeError when the wait runs out."""
    path = Path(path)
    lock = filelock.FileLock(path, is_singleton=False)
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        log.info("%s is in use (%s); waiting up to %s", what, _holder(path), _seconds(timeout))
        try:
            lock.acquire(timeout=timeout)
        except filelock.Timeout:
            raise LayerprobeError(f"{what} is locked by {_holder(path)}; waited {_seconds(timeout)}") from None
    holder = _holder_file(path)
    try:
        _write_holder(holder)
        yield
    finally:
        holder.unlink(missing_ok=True)  # before the release, so that it never erases the next holder's
        lock.release()


def _holder_file(path: Path) -> Path:
    return path.with_name(path.name + HOLDER_SUFFIX)


def _write_holder(holder: Path) -> None:
    record = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": _command(),
    }
    tmp = holder.with_name(f"{holder.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record))
    tmp.replace(holder)  # whole or absent to a reader, never half-written


def _command() -> str:
    """How this process was started, as typed (`layerprobe trainer.seed=3`), on one line."""
    argv = list(sys.argv) or [""]
    name = Path(argv[0]).name
    if name == "__main__.py":  # python -m <package>
        name = Path(argv[0]).parent.name
    elif name == "-c":
        name = "python -c"
    return " ".join(" ".join([name, *argv[1:]]).split())[:300]


def _holder(path: Path) -> str:
    """Who holds the lock, as its `.holder` record says; the record is written just after the lock
    is taken, so a reader can come too early (or find a holder that predates this record)."""
    try:
        r = json.loads(_holder_file(path).read_text())
        return f"pid {r['pid']} on host {r['host']} since {r['since']} ({r['command']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process (it has not said which)"


def _seconds(seconds: float) -> str:
    return f"{seconds:g} s"
