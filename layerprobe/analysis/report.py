"""One self-contained HTML report per run (templates/run.html.j2): images inlined as data URIs, no
scripts, no external files."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from layerprobe.analysis.analyze import AnalysisResult
from layerprobe.analysis.render import render


def write_report(
    path: Path,
    title: str,
    model_summary: str,
    layer_stats: Mapping[str, Mapping[str, float]],
    plots: Mapping[str, Sequence[Path]],
    analysis: AnalysisResult | None,
    context: Mapping[str, str] | None = None,
    dynamics: Mapping[str, Any] | None = None,
) -> Path:
    """Write the run's report to path; layers appear in layer_stats order, then any others.

    context: what names the run (run id, overrides, step, eval metrics), shown under the title.
    dynamics: trace.report_section of the run's training dynamics (examples, steps, rows, images).
    """
    return render(
        "run.html.j2",
        path,
        title=title,
        model_summary=model_summary.rstrip(),
        layers=_layer_order(layer_stats, plots, analysis),
        layer_stats=layer_stats,
        plots={n: [Path(p) for p in ps] for n, ps in plots.items()},
        analysis=analysis,
        context=context or {},
        dynamics=_dynamics_view(dynamics) if dynamics else None,
    )


def _layer_order(
    stats: Mapping[str, object], plots: Mapping[str, object], analysis: AnalysisResult | None
) -> list[str]:
    names = list(stats) + list(plots) + (list(analysis.layers) if analysis else [])
    return list(dict.fromkeys(names))


def _dynamics_view(d: Mapping[str, Any]) -> dict[str, Any]:
    rows = d.get("rows") or []
    return {
        "examples": d["examples"],
        "steps": d["steps"],
        "rows": rows,
        "columns": list(dict.fromkeys(k for r in rows for k in r)),  # every key of any row, first seen first
        "note": d.get("note") or "",
        "images": [Path(p) for p in d.get("images") or ()],
    }
