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
        )
        for name, h in outputs.items()
    }


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
