"""PNGs of the training dynamics: per layer, the distribution and dead/saturated fractions over
steps; for the run, linear-probe accuracy and CKA to the final representation per layer over steps."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from layerprobe.analysis.compare_report import save_png  # noqa: E402
from layerprobe.dynamics.points import Dynamics  # noqa: E402


def layer_dynamics_plot(d: Dynamics, layer: str, path: Path) -> Path:
    """Percentile bands (outermost pair lightest) with median and mean over steps; below, the dead,
    zero and saturated fractions."""
    steps = np.array(d.steps)
    stats = [p.stats[layer] for p in d.points]
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(7, 5.2), sharex=True, height_ratios=[3, 2])
    names = sorted(stats[0].percentiles, key=lambda k: float(k[1:].replace("_", ".")))
    for i in range(len(names) // 2):
        lo = [s.percentiles[names[i]] for s in stats]
        hi = [s.percentiles[names[-1 - i]] for s in stats]
        a1.fill_between(
            steps, lo, hi, alpha=0.18 + 0.14 * i, color="tab:blue", lw=0, label=f"{names[i]}-{names[-1 - i]}"
        )
    if len(names) % 2:
        a1.plot(
            steps,
            [s.percentiles[names[len(names) // 2]] for s in stats],
            color="tab:blue",
            label=names[len(names) // 2],
        )
    a1.plot(steps, [s.mean for s in stats], color="k", ls="--", lw=1, label="mean")
    a1.set_ylabel("activation")
    a1.set_title(f"{layer}: activations over training ({d.examples} examples per point)")
    a1.legend(fontsize=7, loc="upper left")
    a2.plot(steps, [s.dead_fraction for s in stats], marker="o", color="tab:red", label="dead units")
    a2.plot(steps, [s.zero_fraction for s in stats], marker=".", color="tab:gray", label="zero values")
    if stats[0].saturation_fraction is not None:
        a2.plot(steps, [s.saturation_fraction for s in stats], marker="s", color="tab:orange", label="saturated")
    a2.set_ylim(-0.02, 1.02)
    a2.set_ylabel("fraction")
    a2.set_xlabel("global step")
    a2.legend(fontsize=7, loc="upper left")
    return save_png(fig, path, {"left": 0.1, "right": 0.97, "top": 0.93, "bottom": 0.1, "hspace": 0.08})


def convergence_plot(d: Dynamics, path: Path) -> Path:
    """Linear-probe accuracy and CKA against the final checkpoint, one line per layer (depth order):
    lower layers reaching CKA 1 earlier is the pattern Raghu et al. (2017) report."""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for n in d.layers:
        acc = [(p.step, p.linear_acc[n]) for p in d.points if n in p.linear_acc]
        cka = [(p.step, p.cka_to_final[n]) for p in d.points if n in p.cka_to_final]
        if acc:
            a1.plot(*zip(*acc), marker="o", label=n)
        if cka:
            a2.plot(*zip(*cka), marker="o", label=n)
    a1.set_title("linear-probe accuracy")
    a2.set_title("CKA with the final checkpoint")
    for a in (a1, a2):
        a.set_xlabel("global step")
        a.set_ylim(-0.02, 1.02)
        if a.lines:
            a.legend(fontsize=7, loc="lower right")
    return save_png(fig, path, {"left": 0.06, "right": 0.98, "top": 0.9, "bottom": 0.14, "wspace": 0.15})
