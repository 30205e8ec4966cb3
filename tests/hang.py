"""Subprocesses in tests get a bound only against a hang, never a timing assertion: a loaded machine
may run a CLI call 10x slower than a quiet one, and that must not fail a test."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

HANG_GUARD = 900  # seconds
ROOT = Path(__file__).resolve().parents[1]


# Through a real `python -m layerprobe`, nothing in-process (pytest's capture, a warm TensorFlow)
# hides a traceback or a different exit code.
def layerprobe_process(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """`python -m layerprobe ARGV` in `cwd`, importing this checkout, without the variables that
    would change what it prints (HYDRA_FULL_ERROR) or where it logs (MLFLOW_TRACKING_URI)."""
    return subprocess.run(
        [sys.executable, "-m", "layerprobe", *argv],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=HANG_GUARD,
    )


def layerprobe_started(argv: list[str], cwd: Path) -> subprocess.Popen:
    """`layerprobe_process` started and left running, in a session of its own (a signal to its
    group reaches it as Ctrl-C reaches a terminal's job); stdout and stderr in one pipe, in order.
    SIGINT is Ctrl-C to it even when the tests run in a background job, whose shell starts children
    with SIGINT ignored (Python then keeps ignoring it)."""
    return subprocess.Popen(
        [sys.executable, "-m", "layerprobe", *argv],
        cwd=cwd,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "MLFLOW_TRACKING_URI")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env["PYTHONFAULTHANDLER"] = "1"  # a crash (SIGSEGV) prints every thread's Python stack into the output
    return env
