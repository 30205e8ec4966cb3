"""The compare report: several runs, exposed layer by exposed layer, in one self-contained HTML file
(templates/compare.html.j2, drawn by analysis.render; images inlined). numpy and matplotlib only."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from layerprobe.analysis.render import render  # noqa: E402

DYNAMICS_STATS = ("mean", "std", "dead_fraction", "zero_fraction")  # drawn as lines over steps


@dataclass(frozen=True)
class RunView:
    """What the report knows of one run: its identity, latest metrics and per-layer files."""

    run_id: str
    name: str
    overrides: str
    step: int
    metrics: dict[str, float]  # latest value of each metric
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)  # layer -> stats.json
    dynamics: dict[str, Any] | None = None  # dynamics.json
    model: str = ""  # model.name and data.name, as the run logged them
    data: str = ""


def compare_title(runs: Sequence[RunView], layers: Sequence[str]) -> str:
    """`layerprobe compare: digits_cnn on digits, 3 runs, 2 layers`: what the runs trained (each model
    and data named once) and how much the page shows."""
    models = ", ".join(dict.fromkeys(r.model for r in runs if r.model))
    data = ", ".join(dict.fromkeys(r.data for r in runs if r.data))
    trained = f"{models} on {data}, " if models and data else ""
    return f"layerprobe compare: {trained}{len(runs)} runs, {len(layers)} layer{'' if len(layers) == 1 else 's'}"


def write_compare_report(
    path: Path, runs: Sequence[RunView], layers: Sequence[str], cka: Mapping[str, Path | str], title: str
) -> Path:
    """Render the report into `path`; `cka`: layer -> heatmap PNG of CKA across the runs, or why not."""
    figs = path.parent / "figures"
    views = []
    for layer in layers:
        images: list[tuple[str, Path]] = []  # (heading, PNG), inlined by the template
        notes = []
        hist = _histograms(runs, layer, figs / f"{layer}_histograms.png")
        if hist:
            images.append(("Histograms overlaid (final probe)", hist))
        dyn = _dynamics(runs, layer, figs / f"{layer}_dynamics.png")
        if dyn:
            images.append(("Dynamics over training", dyn))
        else:
            notes.append("no run logged training dynamics for this layer")
        heatmap = cka.get(layer)
        if isinstance(heatmap, Path):
            images.append(("Linear CKA across runs", heatmap))
        elif heatmap is not None:
            notes.append(f"no CKA across runs: {heatmap}")
        views.append({"name": layer, "stats": _side_by_side(runs, layer), "images": images, "notes": notes})
    depth = _depth(runs, layers, figs / "linear_probe_by_depth.png")
    eval_keys = sorted({k for r in runs for k in r.metrics if k.startswith("eval/")})
    return render("compare.html.j2", path, title=title, runs=runs, layers=views, eval_keys=eval_keys, depth_image=depth)


def _side_by_side(runs: Sequence[RunView], layer: str) -> list[tuple[str, list[float | None]]]:
    prefix = f"probe/{layer}/"
    keys = list(dict.fromkeys(k[len(prefix) :] for r in runs for k in r.metrics if k.startswith(prefix)))
    return [(k, [r.metrics.get(prefix + k) for r in runs]) for k in keys]


def _histograms(runs: Sequence[RunView], layer: str, path: Path) -> Path | None:
    shown = [(r.name, r.stats[layer]) for r in runs if layer in r.stats and r.stats[layer].get("histogram_counts")]
    if not shown:
        return None
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for name, s in shown:
        counts = [c / max(sum(s["histogram_counts"]), 1) for c in s["histogram_counts"]]
        ax.stairs(counts, s["histogram_edges"], label=name, lw=1.4)
    ax.set_xlabel("activation")
    ax.set_ylabel("share of values")
    ax.legend(fontsize=7)
    return save_png(fig, path)


def _dynamics(runs: Sequence[RunView], layer: str, path: Path) -> Path | None:
    shown = [(r.name, r.dynamics) for r in runs if r.dynamics and layer in r.dynamics["layers"]]
    if not shown:
        return None
    fig, axes = plt.subplots(1, len(DYNAMICS_STATS), figsize=(3.2 * len(DYNAMICS_STATS), 3.2))
    for ax, stat in zip(axes, DYNAMICS_STATS):
        for name, d in shown:
            values = d["layers"][layer]["scalars"].get(stat)
            if values:
                ax.plot(d["steps"], values, marker="o", ms=3, label=name)
        ax.set_title(stat)
        ax.set_xlabel("global step")
    axes[0].legend(fontsize=7)
    return save_png(fig, path)


def _depth(runs: Sequence[RunView], layers: Sequence[str], path: Path) -> Path | None:
    lines = [(r.name, [r.metrics.get(f"probe/{n}/linear_acc", math.nan) for n in layers]) for r in runs]
    if all(all(math.isnan(v) for v in acc) for _, acc in lines):
        return None
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(layers)), 3.6))
    for name, acc in lines:
        ax.plot(range(len(layers)), acc, marker="o", label=name)
    ax.set_xticks(range(len(layers)), list(layers), rotation=30, ha="right")
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("held-out accuracy")
    ax.legend(fontsize=7)
    return save_png(fig, path)


def save_png(fig: plt.Figure, path: Path, margins: dict[str, float] | None = None) -> Path:
    """Save and close `fig` at 80 dpi, creating the directory; returns `path`. `margins`: fixed
    subplot margins (fig.subplots_adjust) instead of tight_layout, which took ~0.25 s a figure: the
    training-dynamics plots are drawn during the run."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if margins:
        fig.subplots_adjust(**margins)
    else:
        fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
