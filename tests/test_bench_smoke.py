"""`python -m benchmarks --quick` runs end to end and writes a report with every section and figures.

It checks that the benchmarks work, not how fast anything is (tests do not time things). It needs
minutes, more on a loaded machine: slow tier (`make test-all`), and no wall-clock limit.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.estimator, pytest.mark.slow]  # `make bench` measures the Estimator engine

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = (
    "## Machine",
    "## Goals",
    "## 1. Training overhead",
    "## 2. Probe phase",
    "## 3. Start-up",
    "## 4. Tracking cost",
    "## 5. Scaling",
    "## 6. Input pipeline",
)


def test_quick_benchmark_writes_every_section_with_figures(tmp_path):
    out = tmp_path / "BENCHMARKS.md"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT)}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--out", str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    for heading in SECTIONS:
        assert heading in text
    assert "mode **quick**" in text
    # the figures the goals are judged on, each a number with its status
    goals = re.findall(
        r"^\| (.+?) \| (-?[\d.,]+(?:e[+-]?\d+)?)(?: ?%| s|x) \| [<>]=? [\d.]+.*? \| (met|\*\*not met\*\*) \|$",
        text,
        flags=re.M,
    )
    names = " ".join(g[0] for g in goals)
    for what in (
        "hand-written steps/s",
        "bare predict",
        "naive",
        "RSS growth",
        "wall time",
        "MLflow share",
        "pipeline",
    ):
        assert what in names
    assert len(goals) == 9
    for label in ("steps/s", "examples/s", "probe phase", "MB"):
        assert label in text
    # the machine table names the versions, and the scaling plot was written where the report links it
    assert re.search(r"\| tensorflow \| 2\.\d+", text) and re.search(r"\| mlflow \| \d", text)
    link = re.search(r"!\[probe-phase scaling\]\((.+?)\)", text)
    assert link and (out.parent / link.group(1)).stat().st_size > 1000
    # figures are printed as they are measured
    assert "steps/s" in proc.stdout and "probe phase" in proc.stdout
