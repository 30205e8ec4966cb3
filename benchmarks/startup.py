"""Start-up: the CLI's quick commands in fresh subprocesses, and whether they import TensorFlow."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.measure import Goal, Section, median, say, spread

COMMANDS = (["--help"], ["--cfg", "job"], ["validate", "--static"])
GOAL_SECONDS = 1.5

# Runs the CLI in-process and then reports which heavy modules it had imported.
PROBE_IMPORTS = """
import sys
from layerprobe.cli import main
try:
    main({argv!r})
except SystemExit:
    pass
heavy = [m for m in ("tensorflow", "mlflow", "matplotlib") if m in sys.modules]
print("IMPORTED=" + ",".join(heavy), file=sys.stderr)
"""


def _cli() -> list[str]:
    exe = Path(sys.executable).with_name("layerprobe")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "layerprobe"]


def startup(repeats: int) -> Section:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    rows, goals = [], []
    with tempfile.TemporaryDirectory() as cwd:  # nothing is written into the repository
        for argv in COMMANDS:
            times = []
            for _ in range(repeats):
                t = time.perf_counter()
                proc = subprocess.run(_cli() + argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
                times.append(time.perf_counter() - t)
                if proc.returncode != 0:
                    raise RuntimeError(f"layerprobe {' '.join(argv)} failed: {proc.stderr[-2000:]}")
            check = subprocess.run(
                [sys.executable, "-c", PROBE_IMPORTS.format(argv=argv)],
                cwd=cwd,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            line = [ln for ln in check.stderr.splitlines() if ln.startswith("IMPORTED=")]
            heavy = line[-1].split("=", 1)[1] if line else "unknown (the check failed)"
            cmd = "layerprobe " + " ".join(argv)
            say(f"  {cmd}: {median(times):.2f} s (heavy imports: {heavy or 'none'})")
            rows.append([f"`{cmd}`", spread(times, " s"), heavy or "none"])
            goals.append(Goal(f"`{cmd}` wall time", median(times), "<", GOAL_SECONDS, " s"))
    return Section(
        "startup",
        "3. Start-up",
        "Each command runs in a fresh subprocess (the installed `layerprobe` entry point, a temporary working "
        "directory), timed from spawn to exit. A second run of the same command in-process reports which of "
        "tensorflow / mlflow / matplotlib it imported (`sys.modules` after `main`).",
        ["command", "wall time", "heavy modules imported"],
        rows,
        goals,
    )
