"""Checkpoint keys of Keras weights, the same under Keras 2 and Keras 3.

Both engines write a weight under `<layer>/<weight>` (`conv1/kernel`, `backbone/Conv1/kernel`), so a
checkpoint, a warm start or a weights transfer reads the same keys on either engine. Keras 3 renamed
one weight: a depthwise convolution's `depthwise_kernel` is its `kernel`; its key keeps the Keras 2 name.
"""

from __future__ import annotations

from typing import Any

# (layer class, Keras 3 weight name) -> the name Keras 2 (and so every Estimator checkpoint) uses
KERAS2_NAMES = {
    ("DepthwiseConv1D", "kernel"): "depthwise_kernel",
    ("DepthwiseConv2D", "kernel"): "depthwise_kernel",
}


def variable_name(v: Any) -> str:
    """A weight's full name without `:0`: Keras 3's path (its `name` is only `kernel`), Keras 2's name."""
    return str(getattr(v, "path", None) or v.name.split(":")[0])


def variables(layer: Any) -> list[Any]:
    """`layer.weights` that are variables: Keras 2 also lists a lookup layer's table handler there
    (StringLookup's VocabWeightHandler), which has neither name nor shape and is no checkpoint value."""
    return [v for v in layer.weights if hasattr(v, "name") and hasattr(v, "shape")]


def weight_keys(layer: Any) -> dict[int, str]:
    """id(weight) -> checkpoint key for every weight of `layer`, a nested model's inner layers included."""
    keys = {id(v): variable_name(v) for v in variables(layer)}
    flatten = getattr(layer, "_flatten_layers", None)
    for sub in flatten(include_self=True, recursive=True) if flatten else [layer]:
        for v in variables(sub):
            renamed = KERAS2_NAMES.get((type(sub).__name__, v.name))  # Keras 2's names hold the path: no match
            if renamed and id(v) in keys:
                keys[id(v)] = f"{variable_name(v).rpartition('/')[0]}/{renamed}"
    return keys


def model_weight_keys(layers: Any) -> dict[int, str]:
    """weight_keys of every layer in `layers` (a Graph's layers, or a model's)."""
    out: dict[int, str] = {}
    for layer in layers:
        out.update(weight_keys(layer))
    return out
