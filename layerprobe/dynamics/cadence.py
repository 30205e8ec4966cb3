"""Which global steps are probed while training (probe.dynamics.every). No TensorFlow here."""

from __future__ import annotations

from typing import Any

from layerprobe.config.loaded import Config


def probe_steps(every: Any, train_steps: int, save_every: int) -> list[int]:
    """The probe points of a run trained to `train_steps`, step 0 (the initialised model) included.

    every: "checkpoint" (the steps the Estimator saves at: multiples of `save_every` and the last
    step), an integer N (multiples of N and the last step) or a list of steps.
    """
    if isinstance(every, list):
        steps = set(every)
    else:
        n = save_every if every == "checkpoint" else int(every)
        steps = set(range(n, train_steps + 1, n)) | {train_steps}
    return sorted({0} | {s for s in steps if 0 < s <= train_steps})


def snapshot_steps(c: Config) -> list[int]:
    """The steps to snapshot for config `c`: none when dynamics or the probe is off."""
    d, t = c.probe.dynamics, c.trainer
    if not (c.probe.enabled and d.enabled) or t.train_steps == 0:  # 0: nothing trains, nothing moves
        return []
    return probe_steps(d.every, t.train_steps, t.save_checkpoints_steps)
