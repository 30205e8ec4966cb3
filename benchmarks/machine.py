"""The machine and the versions a report was measured on (no TensorFlow or mlflow import needed)."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gb() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return float("nan")


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _source() -> str:
    """The layerprobe code measured: its git commit, and whether the tree had uncommitted changes."""
    import subprocess

    import layerprobe

    root = Path(layerprobe.__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "layerprobe", "conf"], cwd=root, capture_output=True, text=True
        )
    except OSError:
        return str(root)
    if commit.returncode != 0:
        return f"{root} (not a git checkout)"
    return commit.stdout.strip() + (" + uncommitted changes" if dirty.stdout.strip() else "")


def describe() -> dict[str, str]:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return {
        "cpu": _cpu_model(),
        "cores": str(cores),
        "memory": f"{_memory_gb():.1f} GB",
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "tensorflow": _version("tensorflow-cpu")
        if _version("tensorflow") == "not installed"
        else _version("tensorflow"),
        "tensorflow-estimator": _version("tensorflow-estimator"),
        "mlflow": _version("mlflow"),
        "numpy": _version("numpy"),
        "load average at start (1, 5, 15 min)": load,
        "layerprobe code": _source(),
    }
