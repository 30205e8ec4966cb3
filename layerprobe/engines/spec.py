"""What every engine builds from the config: the model's inputs, layers, heads and optimizer.

No TensorFlow here: validation and the CLI read it without importing an engine.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from layerprobe.config.loaded import Config
from layerprobe.errors import ConfigError
from layerprobe.schema import HeadSpec, ModelConfig


@dataclass(frozen=True)
class Head:
    label: str
    loss: str
    weight: float
    metrics: tuple[str, ...]
    # a classification head's outputs and where the config sets them (`model.layers.logits.units`);
    # None when the output layer does not say (its shape is known only once built)
    classes: tuple[str, int] | None = None


@dataclass(frozen=True)
class ModelSpec:
    """Everything an engine needs to build, train and predict the model, built from the config."""

    inputs: Mapping[str, Mapping[str, Any]]  # name -> {shape, dtype}
    layers: Mapping[str, Mapping[str, Any]]  # name -> layer spec, in order
    heads: Mapping[str, Head]  # output layer name -> head
    optimizer: str
    learning_rate: float
    seed: int
    raw: tuple[str, ...] = ()  # PREDICT returns these layers' whole outputs (default: the heads)

    def classifiers(self) -> list[tuple[str, str, int]]:
        """(label, config path of the class count, the count) of each head whose layer says its count."""
        return [(h.label, *h.classes) for h in self.heads.values() if h.classes is not None]


def heads_from_config(model: ModelConfig) -> dict[str, Head]:
    """model.outputs; none declared: the last layer with the schema's default head."""
    outputs = model.outputs or {list(model.layers)[-1]: HeadSpec()}
    return {
        name: Head(
            h.label,
            h.loss,
            float(h.weight),
            tuple(h.metrics),
            _classes(name, model.layers.get(name) or {}) if h.loss == CLASSIFICATION else None,
        )
        for name, h in outputs.items()
    }


CLASSIFICATION = "sparse_softmax_cross_entropy"  # one output (logit) per class; labels are class indices
# the constructor argument that sets a layer's outputs: Dense and most layers, or a Keras application's top
OUTPUTS_ARGS = ("units", "classes")


def _classes(name: str, layer: Mapping[str, Any]) -> tuple[str, int] | None:
    arg = next((a for a in OUTPUTS_ARGS if isinstance(layer.get(a), int) and not isinstance(layer[a], bool)), None)
    if arg == "classes" and not layer.get("include_top", True):  # an application without its top
        return None
    return None if arg is None else (f"model.layers.{name}.{arg}", layer[arg])


def model_spec(c: Config, raw: tuple[str, ...] = ()) -> ModelSpec:
    """The engine's view of the (block-expanded) model."""
    return ModelSpec(
        inputs={n: {"shape": list(i.shape), "dtype": i.dtype} for n, i in c.model.inputs.items()},
        layers=c.model.layers,
        heads=heads_from_config(c.model),
        optimizer=c.trainer.optimizer.name,
        learning_rate=float(c.trainer.optimizer.learning_rate),
        seed=c.trainer.seed,
        raw=raw,
    )


def check_output(name: str, head: Head, shape: list[Any]) -> None:
    """The head's loss must fit its output's shape (`shape`: with the batch axis), on every engine:
    a class loss needs (batch, classes); a value loss one value per example."""
    path = f"model.outputs.{name}.loss"
    if head.loss == "sparse_softmax_cross_entropy":
        if len(shape) != 2:
            raise ConfigError(path, head.loss, f"needs an output of shape (batch, classes); {name} gives {shape}")
    elif shape[-1] != 1 and len(shape) > 1:
        raise ConfigError(path, head.loss, f"needs one output value per example; {name} gives {shape}")


def metric_key(heads: Mapping[str, Head], head_name: str, metric: str) -> str:
    """An eval metric's key on every engine: `accuracy` for one head, `<head>/accuracy` for several."""
    return metric if len(heads) == 1 else f"{head_name}/{metric}"
