"""One experiment's parts, made from a validated config: data source, model spec, engine, layer table.

The runner, reprobe and the benchmarks all start here, so none of them repeats the sequence.
Everything that can fail on the user's input fails here, before a run or a model_dir exists.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from layerprobe.config.archs import resolve_exposed
from layerprobe.config.loaded import Config
from layerprobe.engines import make_engine
from layerprobe.engines.base import Engine, ModelSummary
from layerprobe.engines.spec import ModelSpec, model_spec
from layerprobe.probe.session import ProbeSession
from layerprobe.provenance import exposed_layers, training_digest
from layerprobe.schema import TrainerConfig


@dataclass(frozen=True)
class Experiment:
    c: Config
    data: Any  # the prepared data source
    spec: ModelSpec
    engine: Engine
    summary: ModelSummary
    exposed: tuple[str, ...]

    def session(self) -> ProbeSession:
        label = next(iter(self.spec.heads.values())).label
        return ProbeSession(self.c, self.engine, self.exposed, label)


def model_dir_for(c: Config) -> str:
    """trainer.model_dir, else models/<model name>-<training digest>: the same command resumes."""
    if c.trainer.model_dir:
        return str(c.trainer.model_dir)
    return str(Path("models") / f"{c.model.name}-{training_digest(c)[:12]}")


def prepare(c: Config, model_dir: str | None = None, exposed: Sequence[str] | None = None) -> Experiment:
    """Load the data, check it against the model's inputs and labels, and build the graph once."""
    from layerprobe.data.pipeline import check_against_inputs, check_classes
    from layerprobe.data.pipeline import prepare as prepare_data

    requested = tuple(exposed_layers(c) if exposed is None else exposed)
    data = prepare_data(c.data)
    spec = model_spec(c)
    check_against_inputs(data, spec.inputs, {h.label for h in spec.heads.values()})
    check_classes(data, spec.classifiers(), c.data.num_classes)
    engine = make_engine(spec, model_dir or model_dir_for(c), with_warm_start_dir(c), c.data)
    summary = engine.summary(data, set(requested))
    # Inner layers of nested models and glob patterns resolve against the built model's names.
    names = tuple(resolve_exposed(requested, [r.name for r in summary.rows]))
    rows = [replace(r, exposed=r.name in names) for r in summary.rows if "/" not in r.name or r.name in names]
    return Experiment(c, data, spec, engine, ModelSummary(rows, summary.sources), names)


def with_warm_start_dir(c: Config) -> TrainerConfig:
    """The trainer config, with a warm start from an MLflow run id replaced by that run's model_dir."""
    from layerprobe.config.archs import RUN_ID

    t = c.trainer
    source = t.warm_start.source
    if not source or Path(source).exists() or not RUN_ID.match(source):
        return t
    from layerprobe import tracking
    from layerprobe.errors import ConfigError

    uri = tracking.resolve_uri(c.tracking.uri)
    try:
        model_dir = tracking.run_tags(uri, source).get("model_dir")
    except tracking.RunNotFound as e:
        store = f"the tracking store {uri} (tracking.uri)"
        rule = (
            f"neither a file or directory nor a run in {store}"
            if e.store_exists
            else f"no such file or directory, and {store} does not exist"
        )
        raise ConfigError("trainer.warm_start.source", source, rule) from None
    except Exception as e:  # noqa: BLE001 - the store's own error, folded to one line
        raise ConfigError("trainer.warm_start.source", source, f"cannot read this run from {uri}: {e}") from None
    if not model_dir:
        raise ConfigError("trainer.warm_start.source", source, "the run records no model_dir")
    return dataclasses.replace(t, warm_start=dataclasses.replace(t.warm_start, source=model_dir))
