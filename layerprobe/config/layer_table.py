"""The table of tf.keras layer classes and their constructor arguments, read without TensorFlow.

Validation runs before TensorFlow is imported (importing it costs 6-7 s), so the names and
arguments of every `tf.keras.layers` class are kept in `keras_layers.json`. Regenerate it after
changing the TensorFlow pin with `python -m layerprobe.config.layer_table`; a test checks that the
file matches the installed Keras.
"""

from __future__ import annotations

import functools
import inspect
import json
from pathlib import Path
from typing import Any

TABLE_PATH = Path(__file__).with_name("keras_layers.json")  # Keras 2.15: the Estimator engine's
# One table per engine (trainer.engine): Keras 3 renamed, dropped and added layers and arguments.
TABLE_PATHS = {"estimator": TABLE_PATH, "keras": Path(__file__).with_name("keras3_layers.json")}

# Keyword arguments that keras' base Layer accepts through **kwargs (keras 2.15 base_layer.py).
BASE_LAYER_KWARGS = [
    "activity_regularizer",
    "autocast",
    "batch_input_shape",
    "batch_size",
    "dtype",
    "dynamic",
    "implementation",
    "input_dim",
    "input_shape",
    "trainable",
    "weights",
]


# Keyword arguments that Keras 3's base Layer accepts through **kwargs (keras 3.15 layers/layer.py).
BASE_LAYER_KWARGS_3 = ["activity_regularizer", "autocast", "dtype", "input_dim", "input_shape", "trainable"]


@functools.cache
def load_table(engine: str = "estimator") -> dict[str, Any]:
    """{"tensorflow_version": ..., "layers": {ClassName: {"args": [...], "required": [...]}}} of the
    Keras that `engine` (trainer.engine) runs on."""
    return json.loads(TABLE_PATHS[engine].read_text())


def installed_engine() -> str:
    """The engine whose table the installed Keras produces (imports TensorFlow)."""
    import keras

    return "keras" if int(keras.__version__.split(".")[0]) >= 3 else "estimator"


def build_table() -> dict[str, Any]:
    """Read the table off the installed Keras (imports TensorFlow)."""
    import tensorflow as tf

    layers: dict[str, dict[str, list[str]]] = {}
    for name in sorted(dir(tf.keras.layers)):
        cls = getattr(tf.keras.layers, name)
        if not (inspect.isclass(cls) and issubclass(cls, tf.keras.layers.Layer)):
            continue
        if name in {"Layer", "InputLayer", "Wrapper", "AbstractRNNCell"}:
            continue
        params = inspect.signature(cls.__init__).parameters
        args = [p for p, v in params.items() if p != "self" and v.kind != v.VAR_KEYWORD]
        if any(v.kind == v.VAR_KEYWORD for v in params.values()):
            base = BASE_LAYER_KWARGS if installed_engine() == "estimator" else BASE_LAYER_KWARGS_3
            args += [k for k in base if k not in args]
        required = [
            p
            for p, v in params.items()
            if p != "self" and v.default is v.empty and v.kind in (v.POSITIONAL_OR_KEYWORD, v.KEYWORD_ONLY)
        ]
        layers[name] = {"args": sorted(a for a in args if a != "name"), "required": required}
    return {"tensorflow_version": tf.__version__, "layers": layers}


if __name__ == "__main__":  # writes the table of the installed Keras (run once in each venv)
    path = TABLE_PATHS[installed_engine()]
    path.write_text(json.dumps(build_table(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {path}")
