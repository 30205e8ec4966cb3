"""One self-contained HTML report per run (templates/run.html.j2): images inlined as data URIs, no
scripts, no external files."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from layerprobe.analysis.analyze import AnalysisResult
from layerprobe.analysis.render import render


@dataclass(frozen=True)
class KeptLayer:
    """A layer's section carried over from the run's earlier probe (a re-probe that left it out)."""

    stats: dict[str, float]  # its scalars, as that probe logged them
    plots: list[Path] = field(default_factory=list)
    note: str = ""  # says where the section comes from


def write_report(
    path: Path,
    title: str,
    model_summary: str,
    layer_stats: Mapping[str, Mapping[str, float]],
    plots: Mapping[str, Sequence[Path]],
    analysis: AnalysisResult | None,
    context: Mapping[str, str] | None = None,
    dynamics: Mapping[str, Any] | None = None,
    kept: Mapping[str, KeptLayer] | None = None,
    order: Sequence[str] = (),
) -> Path:
    """Write the run's report to path; layers appear in `order` (the model's), then in layer_stats
    order, then any others, then `kept`.

    context: what names the run (run id, overrides, step, eval metrics), shown under the title.
    dynamics: dynamics_section of the run's training dynamics (examples, steps, rows, images).
    kept: sections of layers this probe did not measure, carried over from the run's earlier probe.
    """
    kept = {n: k for n, k in (kept or {}).items() if n not in layer_stats}
    return render(
        "run.html.j2",
        path,
        title=title,
        model_summary=model_summary.rstrip(),
        layers=_in_order(_layer_order(layer_stats, plots, analysis) + list(kept), order),
        layer_stats={**{n: k.stats for n, k in kept.items()}, **layer_stats},
        plots={**{n: k.plots for n, k in kept.items()}, **{n: [Path(p) for p in ps] for n, ps in plots.items()}},
        notes={n: k.note for n, k in kept.items() if k.note},
        analysis=analysis,
        context=context or {},
        dynamics=_dynamics_view(dynamics) if dynamics else None,
    )


def dynamics_section(series: Mapping[str, Any], image_dir: Path) -> dict[str, Any]:
    """What report.html's dynamics section shows of `series` (dynamics.json: steps, examples and per
    layer the scalars, linear_acc and cka_to_final lists): a table of steps, the convergence order and
    the PNGs in `image_dir` (<layer>.png, convergence.png) that exist."""
    layers: Mapping[str, Any] = series.get("layers") or {}
    rows = []
    for i, step in enumerate(series["steps"]):
        row: dict[str, float] = {"step": step}
        for label, key in (("linear acc", "linear_acc"), ("CKA to final", "cka_to_final")):
            row |= {f"{n} {label}": s[key][i] for n, s in layers.items() if s[key][i] is not None}
        rows.append(row)
    images = [image_dir / f"{n}.png" for n in layers] + [image_dir / "convergence.png"]
    return {
        "examples": series["examples"],
        "steps": list(series["steps"]),
        "rows": rows,
        "images": [p for p in images if p.is_file()],
        "note": convergence_order({n: s["cka_to_final"] for n, s in layers.items()}),
    }


def convergence_order(cka_to_final: Mapping[str, Sequence[float | None]]) -> str:
    """Whether lower layers reached their final representation earlier (Raghu et al. 2017): the
    layers' mean CKA to the final point over the earlier points, in depth order (`cka_to_final`:
    layer -> one value or None per point, layers in depth order)."""
    series = {n: [v for v in values[:-1] if v is not None] for n, values in cka_to_final.items()}
    means = {n: sum(v) / len(v) for n, v in series.items() if v}
    if len(means) < 2:
        return ""
    values = list(means.values())
    lower_first = all(a >= b for a, b in zip(values, values[1:]))
    shown = ", ".join(f"{n} {v:.3f}" for n, v in means.items())
    verdict = (
        "lower layers converged earlier"
        if lower_first
        else "not in depth order: lower layers did not all converge earlier"
    )
    return f"Mean CKA to the final checkpoint before it, by depth: {shown} ({verdict})."


def _layer_order(
    stats: Mapping[str, object], plots: Mapping[str, object], analysis: AnalysisResult | None
) -> list[str]:
    names = list(stats) + list(plots) + (list(analysis.layers) if analysis else [])
    return list(dict.fromkeys(names))


def _in_order(names: Sequence[str], order: Sequence[str]) -> list[str]:
    """`names` in `order` when it holds them all (an inner layer of a nested model is not in the
    model's own order: then as given)."""
    unique = list(dict.fromkeys(names))
    rank = {n: i for i, n in enumerate(order)}
    return sorted(unique, key=rank.__getitem__) if all(n in rank for n in unique) else unique


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
