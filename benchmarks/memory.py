"""Peak RSS growth of the probe phase, one fresh subprocess per configuration.

`python -m benchmarks.memory '{"examples": N, "exposed": [...], "model_dir": ..., "workdir": ...}'`
prepares the experiment, then measures only the probe session's pass and its files: peak RSS during it
minus RSS just before it (see measure.PeakRSS), and prints one JSON line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.measure import PeakRSS
from layerprobe.config.loaded import load

ROOT = Path(__file__).absolute().parents[1]  # not resolved: a symlinked checkout keeps its own layerprobe
MARK = "MEMORY_RESULT "


# glibc raises its mmap threshold to the size of each large block freed (up to 32 MB), so TensorFlow's
# per-batch tensors end up in the heap, which keeps freed pages mapped: peak RSS climbs over the first
# thousands of examples, then levels off. A fixed threshold turns that off (and makes every large
# allocation an mmap: slower); the benchmark measures both to tell retention from growth.
STATIC_MMAP = {"MALLOC_MMAP_THRESHOLD_": str(1 << 20)}


def measure_in_subprocess(
    examples: int, exposed: Sequence[str], model_dir: str, workdir: Path, env_extra: dict[str, str] | None = None
) -> dict[str, Any]:
    spec = {"examples": examples, "exposed": list(exposed), "model_dir": model_dir, "workdir": str(workdir)}
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT), **(env_extra or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.memory", json.dumps(spec)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    for line in proc.stdout.splitlines():
        if line.startswith(MARK):
            return json.loads(line[len(MARK) :])
    raise RuntimeError(f"memory worker failed ({proc.returncode}):\n{proc.stderr[-3000:]}")


def _worker(spec: dict[str, Any]) -> dict[str, Any]:
    import time

    from benchmarks.configs import cnn_config
    from layerprobe.artifacts import probe_outcome
    from layerprobe.experiment import prepare

    c = cnn_config(spec["examples"], spec["model_dir"], spec["exposed"])
    x = prepare(load(c), spec["model_dir"])
    names = x.exposed
    out = Path(spec["workdir"]) / f"mem-{spec['examples']}-{len(names)}"
    with PeakRSS() as mem:
        t = time.perf_counter()
        stats = probe_outcome(load(c), x.session().run(x.data), x.summary, out).stats
        seconds = time.perf_counter() - t
    return {
        "examples": stats[names[0]].examples,
        "layers": len(names),
        "seconds": seconds,
        "rss_before": mem.before,
        "peak": mem.peak,
        "sampled_peak": mem.sampled_peak,
        "hwm_peak": mem.hwm_peak,
        "hwm_reset": mem.hwm_reset,
        "growth": mem.growth,
    }


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    result = _worker(json.loads(sys.argv[1]))
    print(MARK + json.dumps(result), flush=True)
