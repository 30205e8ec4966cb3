"""`make bench` rewrites only the sections it measures: the sections other benchmarks splice into
BENCHMARKS.md (probe-speed goals, fused kernel, Beam, ...) and the hand-written ones stay."""

from __future__ import annotations

from pathlib import Path

from benchmarks.measure import Goal, Section
from benchmarks.report import write


def test_bench_keeps_the_sections_it_does_not_write(tmp_path: Path) -> None:
    out = tmp_path / "BENCHMARKS.md"
    out.write_text(
        "# Benchmarks\n\nold header\n\n## Machine\n\n| old | machine |\n\n## Goals\n\nold goals\n\n"
        "## 2. Probe phase\n\nold probe figures\n\n## Probe speed goals\n\nspliced 1.23x\n\n"
        "## Why goals fell short\n\nold reasons\n\n## Test tiers\n\nhand-written tiers\n"
    )
    section = Section("probe", "2. Probe phase", "how it was measured", ["", "value"], [["bare", "1 s"]])
    section.goals.append(Goal("(a) probe phase / bare predict", 2.0, "<=", 1.3))
    write(out, [section], {"cpu": "new cpu"}, "full", 60.0, None, ["- new reason"])
    text = out.read_text()
    titles = [line for line in text.splitlines() if line.startswith("## ")]
    assert titles == [
        "## Machine",
        "## Goals",
        "## 2. Probe phase",
        "## Probe speed goals",
        "## Test tiers",
        "## Why goals fell short",
    ]
    assert "spliced 1.23x" in text and "hand-written tiers" in text  # kept as they were
    assert "new cpu" in text and "how it was measured" in text and "- new reason" in text  # written anew
    for old in ("old header", "| old | machine |", "old goals", "old probe figures", "old reasons"):
        assert old not in text
