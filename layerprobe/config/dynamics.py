"""Rules of probe.dynamics (training dynamics); the subset against the split's size is checked once
the data is loaded (dynamics.trace.check_subset). No TensorFlow here."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from layerprobe.errors import ConfigError


def check_dynamics(d: Mapping[str, Any], trainer: Mapping[str, Any]) -> None:
    """probe.dynamics: the cadence lies inside (0, train_steps]; the subset is a positive count."""
    steps = trainer["train_steps"]
    if steps == 0:  # a probe-only run has no training to follow (dynamics.cadence probes nothing)
        return
    every = d["every"]
    within = f"a probe step is an integer in [1, trainer.train_steps={steps}]"
    if isinstance(every, str):
        if every != "checkpoint":
            raise ConfigError(
                "probe.dynamics.every", every, "a cadence is checkpoint, a step count or a list", ["checkpoint"]
            )
    elif isinstance(every, list):
        if not every:
            raise ConfigError("probe.dynamics.every", every, "a list of steps needs at least one step")
        for i, s in enumerate(every):
            if isinstance(s, bool) or not isinstance(s, int) or not 0 < s <= steps:
                raise ConfigError(f"probe.dynamics.every[{i}]", s, within)
    elif isinstance(every, bool) or not isinstance(every, int) or not 0 < every <= steps:
        raise ConfigError("probe.dynamics.every", every, within)
    n = d["examples"]
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n <= 0):
        raise ConfigError("probe.dynamics.examples", n, "must be a positive integer (null: 256 or the whole split)")
    k = d["linear_every"]
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ConfigError("probe.dynamics.linear_every", k, "must be an integer >= 0 (0: no linear probes)")
