"""What every engine builds from the config: the model's inputs, layers, heads and optimizer.

No TensorFlow here: validation and the CLI read it without importing an engine.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from layerprobe.config.blocks import expand_model
from layerprobe.config.names import LOSSES


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


def heads_from_config(model: Mapping[str, Any]) -> dict[str, Head]:
    outputs = model.get("outputs") or {}
    if not outputs:  # the last layer, classified against `label`
        outputs = {
            list(model["layers"])[-1]: {"label": "label", "loss": LOSSES[0], "weight": 1.0, "metrics": ["accuracy"]}
        }
    return {
        name: Head(
            h.get("label", "label"),
            h.get("loss", LOSSES[0]),
            float(h.get("weight", 1.0)),
            tuple(h.get("metrics", ("accuracy",))),
            _classes(name, model["layers"].get(name) or {}) if h.get("loss", LOSSES[0]) == CLASSIFICATION else None,
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


def model_spec(c: Mapping[str, Any], raw: tuple[str, ...] = ()) -> ModelSpec:
    t = c["trainer"]
    model = expand_model(c["model"])  # block instances -> their layers
    return ModelSpec(
        inputs=model["inputs"],
        layers=model["layers"],
        heads=heads_from_config(model),
        optimizer=t["optimizer"]["name"],
        learning_rate=float(t["optimizer"]["learning_rate"]),
        seed=t["seed"],
        raw=raw,
    )
