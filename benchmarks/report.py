"""BENCHMARKS.md and the scaling plot."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from benchmarks.measure import Section, fmt


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def scaling_plot(s: Section, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = s.data
    fig, ax = plt.subplots(1, 3, figsize=(13, 3.8))
    ax[0].plot(d["sizes"], d["probe"], "o-", label="layerprobe probe phase")
    ax[0].plot(d["sizes"], d["bare"], "s--", label="bare predict (logits only)")
    ax[0].set(xlabel="examples probed (3 conv layers)", ylabel="wall seconds", title="time vs examples")
    ax[0].legend()
    ax[1].plot(d["sizes"], d["memory"], "o-", color="C2")
    ax[1].set(xlabel="examples probed (3 conv layers)", ylabel="MB", title="probe-phase peak RSS growth")
    ax[1].set_ylim(bottom=0)
    ax[2].plot(d["layers"], d["layer_probe"], "o-", label="probe phase, s")
    ax[2].set(xlabel="exposed layers", ylabel="wall seconds", title="time vs exposed layers")
    ax[2].set_xticks(d["layers"])
    for a in ax:
        a.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(
    out: Path,
    sections: Sequence[Section],
    machine: Mapping[str, str],
    mode: str,
    wall: float,
    plot: str | None,
    analysis: Sequence[str] = (),
) -> None:
    lines = [
        "# Benchmarks",
        "",
        f"Written by `make bench` (`python -m benchmarks{' --quick' if mode == 'quick' else ''}`), mode **{mode}**, "
        f"in {wall / 60:.1f} minutes of wall time. Each figure is the median over repeats (min-max and n in "
        "brackets when repeated); every ratio is of two figures measured in the same run, alternating.",
    ]
    if mode == "quick":
        lines += [
            "",
            "> Quick mode: tiny sizes and one repeat, to check that the benchmarks run. Fixed costs (graph "
            "building, restore, process start) dominate at these sizes, so the goals are not meaningful here.",
        ]
    lines += ["", "## Machine", ""] + _table(["", ""], [[k, v] for k, v in machine.items()])
    lines += ["", "## Goals", ""]
    goal_rows = [
        [g.what, f"{fmt(g.value)}{g.unit}", f"{g.op} {fmt(g.target)}{g.unit}", "met" if g.met else "**not met**"]
        for s in sections
        for g in s.goals
    ]
    lines += _table(["goal", "figure", "target", "status"], goal_rows)
    for s in sections:
        lines += ["", f"## {s.title}", "", s.how, ""] + _table(s.header, s.rows)
        if s.key == "scaling" and plot:
            lines += ["", f"![probe-phase scaling]({plot})"]
        if s.key == "probe" and "costs" in s.data:
            lines += [
                "",
                "Where the in-graph time goes (ms per batch of 256, summed over conv1-3; each group fetched "
                "alone, so shared work such as the finite mask is counted in each):",
                "",
            ]
            lines += _table(["what", "ms / batch"], [[k, fmt(v)] for k, v in s.data["costs"].items()])
        for note in s.notes:
            lines += ["", note]
        for g in s.goals:
            lines += ["", f"- {g.line()}"]
    written = {line for line in lines if line.startswith("## ")} | {WHY}
    kept = [text for title, text in _sections(out.read_text() if out.exists() else "") if title not in written]
    lines += kept  # the sections other benchmarks splice in (goals, fused kernel, Beam...) and the hand-written
    if analysis:
        lines += ["", WHY, ""] + list(analysis)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")


WHY = "## Why goals fell short"


def _sections(text: str) -> list[tuple[str, str]]:
    """(title line, the section's text from a blank line before its title to the next) of each `## ` section."""
    parts = re.split(r"^(?=## )", text, flags=re.M)
    return [(p.splitlines()[0], "\n" + p.rstrip("\n")) for p in parts if p.startswith("## ")]
