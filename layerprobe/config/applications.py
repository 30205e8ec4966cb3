"""Keras applications (prebuilt models) as one layer: their names and arguments, read without TensorFlow.

`type: ResNet50` (or `tf.keras.applications.ResNet50`, `keras.applications.ResNet50`) makes the whole
model one layer of the graph; its input shape comes from the graph. The table of constructors and
their arguments is `keras_applications.json`, regenerated from the installed Keras with
`python -m layerprobe.config.applications` (a test fails when it drifts). `weights` takes what Keras
takes: null, `imagenet` (Keras downloads it into its own cache, see graph.pretrained) or a local file.

`type: model_file` is a saved Keras model (`.keras`, `.h5`, a SavedModel directory) as one layer.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from layerprobe.errors import ConfigError

TABLE_PATH = Path(__file__).with_name("keras_applications.json")
PREFIXES = ("tf.keras.applications.", "tensorflow.keras.applications.", "keras.applications.")
# Set from the graph, never by the config: the input is the previous layer's output.
FROM_GRAPH = ("input_tensor", "input_shape")
POOLINGS = (None, "avg", "max")
KERAS_WEIGHTS = ("imagenet",)  # the named weights every Keras application takes besides null and a file
MODEL_FILE = "model_file"
MODEL_FILE_ARGS = ("path", "trainable")
MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")  # or a SavedModel directory (Keras 2 only)


@functools.lru_cache(maxsize=1)
def load_table() -> dict[str, Any]:
    """{"tensorflow_version": ..., "applications": {Name: {"args": [...]}}}."""
    return json.loads(TABLE_PATH.read_text())


def application_name(type_name: str) -> str | None:
    """The constructor's name when `type_name` names a Keras application, else None."""
    for prefix in PREFIXES:
        if type_name.startswith(prefix):
            return type_name[len(prefix) :]
    return type_name if type_name in load_table()["applications"] else None


def check_application(path: str, type_name: str, args: Mapping[str, Any]) -> None:
    """One ConfigError for an unknown application, an unknown argument or a weights value that would
    download."""
    name = application_name(type_name)
    table = load_table()["applications"]
    if name not in table:
        raise ConfigError(f"{path}.type", name, f"unknown Keras application ({type_name})", table)
    known = [a for a in table[name]["args"] if a not in FROM_GRAPH] + ["trainable"]
    for arg in args:
        if arg in FROM_GRAPH:
            raise ConfigError(f"{path}.{arg}", args[arg], "the input of an application is its `inputs` in the graph")
        if arg not in known:
            raise ConfigError(f"{path}.{arg}", arg, f"{name} takes no argument {arg!r}", known)
    check_weights(f"{path}.weights", args.get("weights"))
    if "pooling" in args and args["pooling"] not in POOLINGS:
        raise ConfigError(f"{path}.pooling", args["pooling"], "unknown pooling", ["null", "avg", "max"])
    for key in ("include_top", "trainable"):
        if key in args and not isinstance(args[key], bool):
            raise ConfigError(f"{path}.{key}", args[key], "must be true or false")


def check_weights(path: str, weights: Any) -> None:
    """null, a name Keras downloads (`imagenet`: fetched when the model is built) or an existing file."""
    if weights is None or weights in KERAS_WEIGHTS:
        return
    if not isinstance(weights, str) or not Path(weights).is_file():
        rule = "give null, imagenet (Keras downloads it once into its cache) or the path of a local weights file"
        raise ConfigError(path, weights, rule)


def check_model_file(path: str, args: Mapping[str, Any], engine: str) -> None:
    """`{type: model_file, path: ...}`: a .keras or .h5 file, or a SavedModel directory (Keras 2)."""
    for arg in args:
        if arg not in MODEL_FILE_ARGS:
            raise ConfigError(f"{path}.{arg}", arg, f"{MODEL_FILE} takes no argument {arg!r}", MODEL_FILE_ARGS)
    given = args.get("path")
    if not isinstance(given, str) or not given:
        raise ConfigError(f"{path}.path", given, "give the saved Keras model (.keras, .h5 or a SavedModel directory)")
    p = Path(given)
    saved_model = p.is_dir() and (p / "saved_model.pb").is_file()
    if not (saved_model or (p.is_file() and p.suffix in MODEL_SUFFIXES)):
        rule = "not an existing .keras or .h5 file, nor a SavedModel directory (with saved_model.pb)"
        raise ConfigError(f"{path}.path", given, rule)
    if saved_model and engine == "keras":
        rule = "Keras 3 (trainer.engine=keras) loads .keras and .h5 files only: save the model as .keras"
        raise ConfigError(f"{path}.path", given, rule)
    if not isinstance(args.get("trainable", True), bool):
        raise ConfigError(f"{path}.trainable", args["trainable"], "must be true or false")


def build_table() -> dict[str, Any]:
    """Read the table off the installed Keras (imports TensorFlow)."""
    import tensorflow as tf

    apps: dict[str, dict[str, list[str]]] = {}
    for name in sorted(dir(tf.keras.applications)):
        fn = getattr(tf.keras.applications, name)
        if not name[:1].isupper() or not callable(fn) or inspect.isclass(fn):
            continue
        params = inspect.signature(fn).parameters
        args = [p for p, v in params.items() if v.kind not in (v.VAR_KEYWORD, v.VAR_POSITIONAL)]
        apps[name] = {"args": sorted(args)}
    return {"tensorflow_version": tf.__version__, "applications": apps}


if __name__ == "__main__":
    TABLE_PATH.write_text(json.dumps(build_table(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {TABLE_PATH}")
