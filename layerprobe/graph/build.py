"""Layer specs (block-expanded) -> Keras functional tensors. Knows nothing of engines.

The Keras namespace is a parameter (the engine passes its own: tf.keras for the Estimator
engine), so another Keras plugs in without a change here. Every layer is created with its config
name, so checkpoint keys (`conv1/kernel`) do not depend on build order (automatic names such as
`dense_1` broke restores when the order changed).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from layerprobe.config.applications import MODEL_FILE
from layerprobe.config.validate import RESERVED_LAYER_KEYS
from layerprobe.errors import ConfigError, first_line
from layerprobe.graph.applications import call_nested, model_constructor
from layerprobe.graph.keys import variables, weight_keys
from layerprobe.graph.pretrained import ModelFile
from layerprobe.graph.warm import WarmStart


@dataclass(frozen=True)
class Graph:
    tensors: dict[str, Any]  # every model input and layer output by name, nested models' inner ones too
    layers: dict[str, Any]  # name -> Keras layer, in config order
    inner: dict[str, Any] = field(default_factory=dict)  # `<model layer>/<inner name>` -> inner Keras layer
    updates: list[Any] = field(default_factory=list)  # what a training step must run (BatchNorm moving stats)
    warm: list[WarmStart] = field(default_factory=list)  # weights files of nested models, read at init


def resolve_layer_class(path: str, type_name: str, keras: Any) -> Any:
    """A Keras layers class by name (from the `keras` namespace), a Keras application's constructor,
    or a user's Layer class or model-returning function by dotted path (importable from the working
    directory too)."""
    make = model_constructor(type_name, keras)
    if make is not None:
        return make
    if "." not in type_name:
        cls = getattr(keras.layers, type_name, None)
    else:
        import os
        import sys

        if os.getcwd() not in sys.path:  # `layerprobe` (the console script) does not put it there
            sys.path.append(os.getcwd())
        module_name, _, cls_name = type_name.rpartition(".")
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            raise ConfigError(path, type_name, f"cannot import module {module_name!r} ({e})") from None
        cls = getattr(module, cls_name, None)
        if inspect.isfunction(cls):
            return cls
    if not (inspect.isclass(cls) and issubclass(cls, keras.layers.Layer)):
        raise ConfigError(path, type_name, "is not a tf.keras Layer class or a function returning a Keras model")
    return cls


def _shape_of(x: Any) -> Any:
    if isinstance(x, (list, tuple)):
        return [_shape_of(t) for t in x]
    return list(x.shape)  # TensorShape (Keras 2) and tuple (Keras 3) alike


def build(layers: Mapping[str, Mapping[str, Any]], inputs: Mapping[str, Any], training: bool, keras: Any) -> Graph:
    """Create and call every layer in order; a layer's `inputs` defaults to the previous layer."""
    graph = Graph(dict(inputs), {})
    tensors, built = graph.tensors, graph.layers
    previous = next(iter(inputs)) if len(inputs) == 1 else None
    for name, spec in layers.items():
        path = f"model.layers.{name}"
        args = {k: v for k, v in spec.items() if k not in RESERVED_LAYER_KEYS}
        if spec["type"] == MODEL_FILE:
            cls: Any = ModelFile(f"{path}.path", args.pop("path"), keras)
        else:
            cls = resolve_layer_class(f"{path}.type", spec["type"], keras)
        names = spec.get("inputs") or [previous]
        names = [names] if isinstance(names, str) else list(names)
        if inspect.isfunction(cls) or not isinstance(cls, type):  # a whole model as one layer
            _add_nested(graph, name, path, cls, args, [tensors[n] for n in names], training, keras)
            previous = name
            continue
        try:
            layer = cls(name=name, **args)
        except Exception as e:  # noqa: BLE001 - whatever Keras raises here, the layer's config caused it
            raise ConfigError(path, args, f"{spec['type']} rejected its arguments: {first_line(e)}") from None
        x = [tensors[n] for n in names]
        x_in = x[0] if len(x) == 1 else x
        kwargs = {"training": training} if "training" in inspect.signature(layer.call).parameters else {}
        try:
            y = layer(x_in, **kwargs)
        except Exception as e:  # noqa: BLE001 - e.g. IndexError for an `axis` the input does not have
            rule = f"{spec['type']} cannot take input shape {_shape_of(x_in)} from {names}: {first_line(e)}"
            raise ConfigError(path, _shape_of(x_in), rule) from None
        if isinstance(y, (list, tuple)):
            raise ConfigError(path, spec["type"], "layers with several outputs are not supported; expose one")
        tensors[name] = y
        built[name] = layer
        # BatchNorm moving averages are not in UPDATE_OPS under tf.keras 2; Keras 3 layers have no
        # `updates` (fit applies them itself)
        graph.updates.extend(getattr(layer, "updates", ()))
        previous = name
    return graph


def _add_nested(
    graph: Graph, name: str, path: str, make: Any, args: dict[str, Any], x: list[Any], training: bool, keras: Any
) -> None:
    if len(x) != 1:
        raise ConfigError(f"{path}.inputs", len(x), "a nested model takes one input")
    nested = call_nested(name, path, make, args, x[0], training, keras)
    graph.tensors[name] = nested.output
    graph.layers[name] = nested.model
    graph.tensors.update(nested.inner_tensors)
    graph.inner.update(nested.inner_layers)
    graph.updates.extend(nested.updates)
    if nested.weights is not None:
        order = tuple(
            (layer.name, tuple(weight_keys(layer)[id(w)] for w in variables(layer)))
            for layer in nested.inner_layers.values()
            if variables(layer)
        )
        where = f"{path}.path" if isinstance(make, ModelFile) else f"{path}.weights"
        w = nested.weights
        ws = WarmStart(where, w.file, f"{name}/.*", scope=name, layer_order=order, origin=w.origin, sha256=w.sha256)
        graph.warm.append(ws)
