"""Reference computations "the other way": a plain tf.keras.Model carrying the trained weights."""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from layerprobe.graph import build
from layerprobe.graph.keys import weight_keys


def keras_model(c: dict[str, Any], model_dir: str, layers: list[str], checkpoint: str | None = None) -> tf.keras.Model:
    """tf.keras.Model(inputs, [layer outputs]) with every weight loaded from `checkpoint` (a prefix;
    default: model_dir's latest)."""
    inputs = {n: tf.keras.Input(tuple(s["shape"]), name=n) for n, s in c["model"]["inputs"].items()}
    graph = build(c["model"]["layers"], inputs, training=False, keras=tf.keras)
    ckpt = checkpoint or tf.train.latest_checkpoint(model_dir)
    for layer in graph.layers.values():
        keys = weight_keys(layer)  # Keras 2's names and Keras 3's paths alike
        layer.set_weights([tf.train.load_variable(ckpt, keys[id(w)]) for w in layer.weights])
    return tf.keras.Model(inputs, [graph.tensors[n] for n in layers])


def activations(
    c: dict[str, Any], model_dir: str, layers: list[str], features: dict[str, np.ndarray], checkpoint: str | None = None
) -> list:
    out = keras_model(c, model_dir, layers, checkpoint).predict(features, batch_size=256, verbose=0)
    return out if isinstance(out, list) else [out]
