"""PNG plots of the analyses: linear-probe accuracy by depth and a CKA heatmap (matplotlib, Agg)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from layerprobe.analysis.linear_probe import ProbeScore  # noqa: E402


def probe_plot(scores: Mapping[str, ProbeScore], path: Path, title: str = "linear probe accuracy by depth") -> Path:
    """Held-out accuracy per layer in the given (model) order, with ±1 stderr and chance level."""
    names = list(scores)
    x = np.arange(len(names))
    acc = np.array([scores[n].accuracy for n in names])
    err = np.array([scores[n].stderr for n in names])
    chance = np.array([scores[n].chance for n in names])
    fig, ax = plt.subplots(figsize=(max(6.5, 0.7 * len(names) + 2), 4.0), layout="constrained")
    ax.errorbar(x, acc, yerr=err, fmt="o-", capsize=3, label="linear probe (held-out, ±1 stderr)")
    # chance can differ per layer only when layers sampled different examples; draw it per layer
    ax.stairs(
        chance, np.arange(len(names) + 1) - 0.5, baseline=None, color="gray", ls="--", label="chance (majority class)"
    )
    for xi, a in zip(x, acc):
        ax.annotate(
            f"{a:.2f}",
            (xi, a),
            textcoords="offset points",
            xytext=(0, 7),
            ha="center",
            fontsize=8,
            bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85},
        )  # over the chance line
    ax.set_xticks(x, [short(n) for n in names], rotation=30, ha="right", fontsize=9)
    ax.set_xlim(-0.5, len(names) - 0.5)
    ax.set_ylim(0.0, 1.12)  # head room for the value labels above 1.0
    ax.set_ylabel("accuracy")
    ax.set_xlabel("exposed layer (model order)")
    ax.grid(axis="y", alpha=0.3)
    fig.legend(fontsize=8, loc="outside lower center", ncol=2, frameon=False)  # never over the data
    ax.set_title(title)
    return _save(fig, path)


def cka_heatmap(
    names: Sequence[str], values: np.ndarray, path: Path, title: str = "linear CKA", axis_label: str = "layer"
) -> Path:
    """Square heatmap on a fixed [0, 1] scale with each value written in its cell (NaN cells say n/a)."""
    k = len(names)
    side = max(4.5, 0.65 * k + 2.5)
    fig, ax = plt.subplots(figsize=(side + 1.0, side), layout="constrained")
    cmap = plt.get_cmap("magma").with_extremes(bad="lightgray")
    im = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=0.0, vmax=1.0)
    fontsize = 10 if k <= 8 else 8 if k <= 16 else 6
    for i in range(k):
        for j in range(k):
            v = values[i, j]
            text = "n/a" if np.isnan(v) else f"{v:.2f}"
            color = "black" if np.isnan(v) or v > 0.6 else "white"  # readable on both ends of magma
            ax.text(j, i, text, ha="center", va="center", fontsize=fontsize, color=color)
    ax.set_xticks(range(k), [short(n) for n in names], rotation=45, ha="right", fontsize=9)
    ax.set_yticks(range(k), [short(n) for n in names], fontsize=9)
    ax.set_xlabel(axis_label)
    ax.set_ylabel(axis_label)
    fig.colorbar(im, ax=ax, shrink=0.8, label="CKA")
    ax.set_title(title)
    return _save(fig, path)


def short(name: str, limit: int = 22) -> str:
    """A tick label: long layer names keep their start and end, so the axes do not shrink to fit them."""
    if len(name) <= limit:
        return name
    half = (limit - 1) // 2
    return name[:half] + "\u2026" + name[-(limit - 1 - half) :]


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)  # figures use constrained layout, so no tight_layout here
    plt.close(fig)
    return path
