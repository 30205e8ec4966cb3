"""Everything that can fail on the user's input, checked before training: `layerprobe validate` and a
run make the same checks in the same order.

The static checks (config rules) need no TensorFlow; the rest read the data and build the training
graph once in a scratch graph. Each failure is one ConfigError naming the config path.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from layerprobe.config.loaded import Config, load
from layerprobe.experiment import Experiment

STATIC_CHECK = "config: schema, types, layer types and arguments, wiring, losses, metrics, names"


@dataclass(frozen=True)
class Preflight:
    """The checks that passed and what a run needs next, made while checking (the experiment: the
    prepared data, the model spec, the engine over its model_dir and the dry build's layer table)."""

    experiment: Experiment
    checks: tuple[str, ...]

    @property
    def exposed(self) -> tuple[str, ...]:
        return self.experiment.exposed


def preflight(c: Config | Mapping[str, Any], model_dir: str | None = None) -> Preflight:
    """Check `c` as far as it can be checked without training (a mapping is loaded first: the
    config rules, the static checks)."""
    c = load(c)
    checks = [STATIC_CHECK]
    from layerprobe.experiment import prepare

    x = prepare(c, model_dir)
    sizes = ", ".join(f"{k} {v}" for k, v in x.data.sizes().items())
    checks.append(f"data: {x.data.name} prepared ({sizes} examples)")
    checks.append(f"data: every split has the model's inputs ({', '.join(c.model.inputs)}) and labels")
    checks.append(f"graph: training graph built ({x.summary.total_params} parameters); losses fit their outputs")
    from layerprobe.dynamics.trace import check_subset

    check_subset(c, x.data)
    return Preflight(x, tuple(checks))


def static_checks(c: Config | Mapping[str, Any]) -> tuple[str, ...]:
    """The checks that need no TensorFlow and no data (`layerprobe validate --static`)."""
    load(c)
    return (STATIC_CHECK,)
