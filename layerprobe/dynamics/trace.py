"""Training dynamics of one run, end to end: probe the points, write their files.

Files: `<out_dir>/dynamics.json` (every series), `<out_dir>/<layer>.png`, `<out_dir>/convergence.png`,
and TensorBoard histogram events under `<model_dir>/probe`, beside the engine's own events (the run
logs them with its TensorBoard directory).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from layerprobe.config.loaded import Config
from layerprobe.dynamics.ledger import not_yet_probed
from layerprobe.dynamics.points import Dynamics, points_of, probe_points
from layerprobe.engines.base import Checkpoint

log = logging.getLogger(__name__)
TENSORBOARD_SUBDIR = "probe"  # a TensorBoard "run" of its own beside train and eval
DEFAULT_EXAMPLES = 256  # probe.dynamics.examples=null: enough for stable percentiles and linear probes


def subset_size(c: Config, data: Any) -> int:
    """How many examples of the probe split each point probes (probe.dynamics.examples)."""
    size = data.size(c.probe.split)
    chosen = c.probe.dynamics.examples
    return min(DEFAULT_EXAMPLES, size) if chosen is None else chosen


def trace(x: Any, checkpoints: Sequence[Checkpoint], out_dir: Path, states: Sequence[Any] | None = None) -> Dynamics:
    """Probe `checkpoints` of Experiment `x` on the configured subset and write the files. `states`:
    their probe states (ProbeState, one per checkpoint) made elsewhere, e.g. by a Beam pipeline."""
    c: Config = x.c
    d = c.probe.dynamics
    examples = subset_size(c, x.data)
    if states is None:
        dyn = probe_points(x.session(), x.data, x.summary, checkpoints, examples, d.linear_every, d.cka, c.trainer.seed)
    else:
        steps = [ck.step for ck in checkpoints]
        dyn = points_of(x.summary, steps, states, examples, d.linear_every, d.cka, c.trainer.seed)
    write_files(dyn, out_dir, plots=c.probe.plots)
    if d.histograms:
        from layerprobe.dynamics.tensorboard import write_histograms

        write_histograms(dyn, Path(x.engine.model_dir) / TENSORBOARD_SUBDIR)
    return dyn


def write_files(dyn: Dynamics, out_dir: Path, plots: bool) -> list[Path]:
    """dynamics.json and, with `plots`, a PNG per layer and convergence.png; returns the PNGs."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "dynamics.json").write_text(json.dumps(dyn.to_dict(), indent=1))
    if not plots or not dyn.points:
        return []
    from layerprobe.dynamics.plots import convergence_plot, layer_dynamics_plot

    pngs = [layer_dynamics_plot(dyn, n, out_dir / f"{n}.png") for n in dyn.layers]
    if any(p.linear_acc or p.cka_to_final for p in dyn.points):
        pngs.append(convergence_plot(dyn, out_dir / "convergence.png"))
    return pngs


def report_section(dyn: Dynamics, out_dir: Path) -> dict[str, Any]:
    """What report.html's dynamics section shows: the PNGs in out_dir and a table of steps."""
    from layerprobe.analysis.report import dynamics_section

    return dynamics_section(dyn.to_dict(), out_dir)


def check_subset(c: Config, data: Any) -> None:
    """probe.dynamics.examples must fit in the probe split (one ConfigError, before any training)."""
    from layerprobe.errors import ConfigError

    d, split = c.probe.dynamics, c.probe.split
    if c.probe.enabled and d.enabled and subset_size(c, data) > data.size(split):
        rule = f"the probe subset must fit in the {split} split ({data.size(split)} examples)"
        raise ConfigError("probe.dynamics.examples", d.examples, rule)


def after_training(x: Any, step: int, out_dir: Path, every_snapshot: bool = False) -> Dynamics | None:
    """The points of the snapshots up to `step` that no run has probed yet (see dynamics.ledger):
    those this run trained and those of a run stopped before its probe; `every_snapshot`: all up to
    `step` (a run that trained nothing has its model's series too). None when there are none."""
    snapshots = x.engine.snapshots()
    if every_snapshot:
        checkpoints = [s for s in snapshots if s.step <= step]
    else:
        checkpoints = not_yet_probed(snapshots, x.engine.model_dir, step)
    return trace(x, checkpoints, out_dir) if checkpoints else None
