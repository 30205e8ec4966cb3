"""Runs left RUNNING by a process that died without a word (SIGKILL, OOM killer, power loss): each
run records its host, pid and the pid's start time; a later run on the same host ends them KILLED."""

from __future__ import annotations

import logging
import os
import socket
import time
from pathlib import Path

from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

HOST_TAG, PID_TAG, PID_START_TAG = "layerprobe.host", "layerprobe.pid", "layerprobe.pid_start"
STALE_TAG = "layerprobe.stale"


def owner_tags() -> dict[str, str]:
    """The tags that let a later run tell whether this process is still alive."""
    pid = os.getpid()
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(pid), PID_START_TAG: process_start(pid) or ""}


def process_start(pid: int) -> str | None:
    """The kernel's start time of `pid` (Linux), so that a reused pid is not taken for the run's."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]  # field 22, counted after the command name


def alive(pid: int, start: str | None) -> bool:
    """Whether `pid` runs and is the process that started at `start` (unknown start: any process)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        pass
    now = process_start(pid)
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
        if not pid.isdigit() or alive(int(pid), r.data.tags.get(PID_START_TAG)):
            continue
        note = f"process {pid} on {host} was gone when a later run started at {time.strftime('%Y-%m-%d %H:%M:%S')}"
        client.set_tag(r.info.run_id, STALE_TAG, note)
        client.set_terminated(r.info.run_id, RunStatus.to_string(RunStatus.KILLED))
        log.warning("marked run %s KILLED: %s", r.info.run_id, note)
        stale.append(r.info.run_id)
    return stale
