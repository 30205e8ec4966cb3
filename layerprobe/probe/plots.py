"""PNG plots of a layer's statistics and an overview across layers (matplotlib, Agg)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from layerprobe.probe.accumulate import LayerStats  # noqa: E402


def layer_plots(stats: LayerStats, out_dir: Path) -> list[Path]:
    """histogram.png, units.png and, for conv layers, channels.png in out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [_histogram(stats, out_dir / "histogram.png"), _units(stats, out_dir / "units.png")]
    if stats.spatial_mean is not None:
        paths.append(_channels(stats, out_dir / "channels.png"))
    return paths


def _histogram(s: LayerStats, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    edges, counts = np.asarray(s.histogram_edges), np.asarray(s.histogram_counts)
    if len(counts):
        ax.stairs(counts, edges, fill=True, alpha=0.8)
        nonzero = counts[counts > 0]
        if len(nonzero) and nonzero.max() > 100 * np.median(nonzero):  # heavy tailed: log y
            ax.set_yscale("log")
    for name, v in s.percentiles.items():
        ax.axvline(v, color="k", lw=0.6, ls=":")
        ax.text(v, ax.get_ylim()[1], name, fontsize=7, rotation=90, va="top")
    ax.set_title(f"{_short(s.layer)}: activations (n={s.count:,}, zeros {s.zero_fraction:.1%})")
    ax.set_xlabel("activation")
    ax.set_ylabel("count")
    return _save(fig, path)


def _units(s: LayerStats, path: Path) -> Path:
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(max(6, s.units * 0.08), 5), sharex=True)
    x = np.arange(s.units)
    dead = np.zeros(s.units, bool)
    dead[s.dead_units] = True
    a1.bar(x, s.unit_mean, yerr=s.unit_std, color="tab:blue", width=0.8, error_kw={"lw": 0.5})
    a1.set_ylabel("mean")
    a1.set_title(f"{_short(s.layer)}: per unit ({s.dead_count} dead of {s.units}, marked red)")
    a2.bar(x, s.unit_active_fraction, color="tab:blue", width=0.8)
    a2.set_ylabel("fraction active")
    a2.set_xlabel("unit")
    if dead.any():  # a dead unit's bars have zero height: mark its place instead
        for ax in (a1, a2):
            for i in x[dead]:
                ax.axvspan(i - 0.4, i + 0.4, color="tab:red", alpha=0.18, lw=0)
            ax.plot(x[dead], np.zeros(dead.sum()), "^", color="tab:red", ms=7, clip_on=False, zorder=3)
    return _save(fig, path)


def _channels(s: LayerStats, path: Path) -> Path:
    spatial = np.asarray(s.spatial_mean)  # (height, width, channels)
    c = spatial.shape[-1]
    cols = int(np.ceil(np.sqrt(c)))
    rows = int(np.ceil(c / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.1, rows * 1.1 + 0.4), squeeze=False)
    vmax = float(np.abs(spatial).max()) or 1.0
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < c:
            ax.imshow(spatial[..., i], cmap="viridis", vmin=min(0.0, float(spatial.min())), vmax=vmax)
            ax.set_title(str(i), fontsize=6)
    fig.suptitle(f"{_short(s.layer)}: mean activation per channel")
    return _save(fig, path)


def overview(stats: Mapping[str, LayerStats], path: Path) -> Path:
    """Sparsity, dead fraction and mean/std by depth, across the exposed layers in model order."""
    names = list(stats)
    x = np.arange(len(names))
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.5))
    a1.plot(x, [stats[n].zero_fraction for n in names], "o-", label="zero fraction")
    a1.plot(x, [stats[n].dead_fraction for n in names], "s-", label="dead unit fraction")
    a1.set_ylim(-0.02, 1.02)
    a1.legend(fontsize=8)
    a2.errorbar(x, [stats[n].mean for n in names], yerr=[stats[n].std for n in names], fmt="o-", capsize=3)
    a2.set_ylabel("mean ± std")
    for ax in (a1, a2):
        ax.set_xticks(x, [_short(n, 16) for n in names], rotation=30, fontsize=8)
    fig.suptitle("exposed layers by depth")
    return _save(fig, path)


def _short(name: str, limit: int = 28) -> str:
    """Long layer names shortened in the middle, so that titles fit their figure."""
    return name if len(name) <= limit else name[: limit // 2 - 1] + "…" + name[-(limit // 2 - 1) :]


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
