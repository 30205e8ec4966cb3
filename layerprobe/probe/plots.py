"""PNG plots of a layer's statistics and an overview across layers (matplotlib, Agg)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import FuncFormatter, NullFormatter  # noqa: E402

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
            # plain labels ("10,000"): the default's mathtext took ~0.1 s a figure to parse
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}"))
            ax.yaxis.set_minor_formatter(NullFormatter())
    for name, v in s.percentiles.items():
        ax.axvline(v, color="k", lw=0.6, ls=":")
        ax.text(v, ax.get_ylim()[1], name, fontsize=7, rotation=90, va="top")
    ax.set_title(f"{_short(s.layer)}: activations (n={s.count:,}, zeros {s.zero_fraction:.1%})")
    ax.set_xlabel("activation")
    ax.set_ylabel("count")
    return _save(fig, path, left=1.0, top=0.45)


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
            band = ax.get_xaxis_transform()  # x in data, y from the axes' bottom (0) to its top (1)
            ax.bar(x[dead], 1.0, width=0.8, color="tab:red", alpha=0.18, lw=0, transform=band)
            ax.plot(x[dead], np.zeros(dead.sum()), "^", color="tab:red", ms=7, clip_on=False, zorder=3)
    return _save(fig, path, hspace=0.15)


def _channels(s: LayerStats, path: Path) -> Path:
    """Every channel's mean map as one tiled image (one axes: a grid of axes took ~0.5-1 s a layer).
    Channel = the row's label + the column's label."""
    spatial = np.asarray(s.spatial_mean, dtype=float)  # (height, width, channels)
    h, w, c = spatial.shape
    mosaic, pad = tiled(spatial)
    rows, cols = (mosaic.shape[0] + pad) // (h + pad), (mosaic.shape[1] + pad) // (w + pad)
    side = min(0.9, max(0.35, 6.0 / cols))  # inches per channel: big maps stay readable, many stay small
    fig, ax = plt.subplots(figsize=(cols * side + 1.6, rows * side + 0.9))
    cmap = plt.get_cmap("viridis").copy()
    cmap.set_bad("white")
    vmax = float(np.nanmax(np.abs(spatial))) if spatial.size else 0.0
    image = ax.imshow(mosaic, cmap=cmap, vmin=min(0.0, float(np.nanmin(spatial))), vmax=vmax or 1.0)
    ax.set_xticks([q * (w + pad) + (w - 1) / 2 for q in range(cols)], [str(q) for q in range(cols)], fontsize=6)
    ax.set_yticks([r * (h + pad) + (h - 1) / 2 for r in range(rows)], [str(r * cols) for r in range(rows)], fontsize=6)
    ax.tick_params(length=0, labeltop=True, labelbottom=False)
    ax.set_frame_on(False)
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02)
    ax.set_title(f"{_short(s.layer)}: mean activation per channel ({c} channels, channel = row + column)", fontsize=9)
    return _save(fig, path, left=0.5, right=1.0, bottom=0.2, top=0.6)


def tiled(spatial: np.ndarray) -> tuple[np.ndarray, int]:
    """(height, width, channels) maps as one image of ceil(sqrt(channels)) columns, channel i at row
    i // columns, column i % columns, NaN between the tiles and after the last; and that gap's width."""
    h, w, c = spatial.shape
    cols = int(np.ceil(np.sqrt(c)))
    rows = int(np.ceil(c / cols))
    pad = max(1, min(h, w) // 8)
    mosaic = np.full((rows * (h + pad) - pad, cols * (w + pad) - pad), np.nan)
    for i in range(c):
        r, q = divmod(i, cols)
        mosaic[r * (h + pad) : r * (h + pad) + h, q * (w + pad) : q * (w + pad) + w] = spatial[..., i]
    return mosaic, pad


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
    return _save(fig, path, bottom=0.8, wspace=0.25)


def _short(name: str, limit: int = 28) -> str:
    """Long layer names shortened in the middle, so that titles fit their figure."""
    return name if len(name) <= limit else name[: limit // 2 - 1] + "…" + name[-(limit // 2 - 1) :]


def _save(
    fig: plt.Figure,
    path: Path,
    left: float = 0.75,
    right: float = 0.2,
    bottom: float = 0.55,
    top: float = 0.4,
    **space: float,
) -> Path:
    """Save and close `fig`. Margins in inches, so labels fit at any figure size; fixed margins
    rather than tight_layout, which drew every figure twice (~0.05-0.5 s a figure)."""
    width, height = fig.get_size_inches()
    fig.subplots_adjust(
        left=left / width, right=1 - right / width, bottom=bottom / height, top=1 - top / height, **space
    )
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
