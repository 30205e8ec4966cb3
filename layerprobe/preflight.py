"""Everything that can fail on the user's input, checked before training: `layerprobe validate` and a
run make the same checks in the same order.

The static checks (config rules) need no TensorFlow; the rest read the data and build the training
graph once in a scratch graph. Each failure is one ConfigError naming the config path.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from layerprobe.config.validate import validate
from layerprobe.provenance import exposed_layers

STATIC_CHECK = "config: schema, types, layer types and arguments, wiring, losses, metrics, names"


@dataclass(frozen=True)
class Preflight:
    """What a run needs next, made while checking: the prepared data, the model spec (with the
    probe specs of the exposed layers), the dry build's layer table, and the checks that passed."""

    data: Any  # layerprobe.data.pipeline.PreparedData
    spec: Any  # layerprobe.model_fn.ModelSpec
    summary: Any  # layerprobe.estimator.ModelSummary
    exposed: tuple[str, ...]
    checks: tuple[str, ...]


def preflight(c: Mapping[str, Any], validated: bool = False) -> Preflight:
    """Check `c` as far as it can be checked without training. `validated=True` skips the static
    rules when the caller has just checked them (the CLI does, before Hydra makes an output dir)."""
    checks = [] if validated else [_static(c)]
    from layerprobe import estimator as E
    from layerprobe.data.pipeline import check_against_inputs, prepare
    from layerprobe.runner import model_spec, probe_specs

    exposed = tuple(exposed_layers(c))
    data = prepare(c["data"])
    sizes = ", ".join(f"{k} {v}" for k, v in data.sizes().items())
    checks.append(f"data: {data.name} prepared ({sizes} examples)")
    spec = model_spec(c, probe_specs(c, exposed))
    labels = {h.label for h in spec.heads.values()}
    check_against_inputs(data, c["model"]["inputs"], labels)
    checks.append(f"data: every split has the model's inputs ({', '.join(c['model']['inputs'])}) and labels")
    summary = E.dry_run(spec, data, set(exposed))
    checks.append(f"graph: training graph built ({summary.total_params} parameters); losses fit their outputs")
    return Preflight(data, spec, summary, exposed, tuple(checks))


def static_checks(c: Mapping[str, Any]) -> tuple[str, ...]:
    """The checks that need no TensorFlow and no data (`layerprobe validate --static`)."""
    return (_static(c),)


def _static(c: Mapping[str, Any]) -> str:
    validate(c)
    return STATIC_CHECK
