"""A whole Keras model as one layer: a Keras application (`type: ResNet50`) or a user's function
returning a Keras model (`type: mypkg.models.backbone`).

The model is made once (its layers, and so its variables, under the layer's name: checkpoint keys
`backbone/conv1_conv/kernel`), then called on the graph's tensor through a functional twin whose
outputs are every inner layer's output. That call is the only path from the graph's input, so the
inner tensors (`backbone/conv4_block6_out`) are exactly the model's activations, and only fetched
tensors cost anything. The BatchNorm updates taken are those this call created: the model's own
`updates` also hold the ones made on its construction placeholder, which nothing feeds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from layerprobe.config.applications import KERAS_WEIGHTS, application_name
from layerprobe.errors import ConfigError, first_line
from layerprobe.graph.pretrained import ModelFile, Weights, fetch


@dataclass
class Nested:
    """One call of a nested model: its output, its inner layers' outputs and layers by
    `<name>/<inner>`, and the update ops of this call."""

    model: Any
    output: Any
    inner_tensors: dict[str, Any] = field(default_factory=dict)
    inner_layers: dict[str, Any] = field(default_factory=dict)
    updates: list[Any] = field(default_factory=list)
    weights: Weights | None = None  # initial weights from a file (an application's, a saved model's)


def model_constructor(type_name: str, keras: Any) -> Callable[..., Any] | None:
    """The constructor of a Keras application named by `type_name`, else None."""
    name = application_name(type_name)
    return getattr(keras.applications, name, None) if name else None


def call_nested(
    name: str, path: str, make: Callable[..., Any], args: Mapping[str, Any], x: Any, training: bool, keras: Any
) -> Nested:
    """Make the model with `args` (input shape from `x`; its weights, if any, are a file the warm start
    reads) and call it on `x`."""
    import tensorflow as tf

    kwargs = {k: v for k, v in args.items() if k not in ("trainable", "weights")}
    kwargs["input_shape"] = tuple(list(x.shape)[1:])  # TensorShape (Keras 2) and tuple (Keras 3) alike
    application, given, weights = model_constructor_is_application(make, keras), args.get("weights"), None
    if application:
        kwargs["weights"] = None  # weights are read through a checkpoint (graph.warm), not by Keras
    if isinstance(make, ModelFile):
        weights = make.weights
    elif application and given in KERAS_WEIGHTS:  # Keras's own file, from its cache or downloaded by Keras now
        weights = fetch(f"{path}.weights", make, kwargs, given, keras)
    elif given:  # a weights file, of an application or of a user's model function
        weights = Weights(given, given)
    # Keras 3 names a variable by its own name scope (keras.name_scope), Keras 2 by TensorFlow's
    scope = getattr(keras, "name_scope", None) or tf.name_scope
    try:
        with scope(name):  # variables: <name>/<inner layer>/<weight>
            model = make(**kwargs)
    except Exception as e:  # noqa: BLE001 - the model's arguments caused it
        raise ConfigError(path, dict(args), f"the model rejected its arguments: {first_line(e)}") from None
    if not isinstance(model, keras.Model):
        raise ConfigError(f"{path}.type", getattr(make, "__name__", make), "must return a Keras model")
    _rename(model, name)
    if "trainable" in args:
        model.trainable = bool(args["trainable"])
    inner = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    before = {id(u) for layer in inner for u in _updates(layer)}
    twin = keras.Model(model.inputs, [layer.output for layer in inner], name=name)
    with tf.name_scope(name):
        outs = twin(x, training=training)
    outs = outs if isinstance(outs, list) else [outs]
    nested = Nested(model, outs[inner.index(_output_layer(model, inner))], weights=weights)
    for layer, t in zip(inner, outs):
        nested.inner_tensors[f"{name}/{layer.name}"] = t
        nested.inner_layers[f"{name}/{layer.name}"] = layer
    nested.updates = [u for layer in inner for u in _updates(layer) if id(u) not in before]
    return nested


def _updates(layer: Any) -> list[Any]:
    # Keras 3 layers have no `updates`: fit applies BatchNorm's moving averages itself
    return list(getattr(layer, "updates", ()))


def _rename(model: Any, name: str) -> None:
    """Keras 2 keeps a model's name in `_name` behind a read-only property; Keras 3 in `name`."""
    try:
        model.name = name
    except AttributeError:
        model._name = name


def model_constructor_is_application(make: Callable[..., Any], keras: Any) -> bool:
    return getattr(keras.applications, getattr(make, "__name__", ""), None) is make


def _output_layer(model: Any, inner: list[Any]) -> Any:
    if len(model.outputs) != 1:
        raise ConfigError(f"model.layers.{model.name}", len(model.outputs), "a nested model must have one output")
    out = model.outputs[0]
    return next(layer for layer in reversed(inner) if layer.output is out)
