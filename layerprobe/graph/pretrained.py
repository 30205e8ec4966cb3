"""Weights from outside the config as local files the warm start reads (graph.warm): a Keras
application's named weights (`weights: imagenet`) and a saved Keras model (`type: model_file`).

layerprobe downloads nothing itself. Which file an application wants depends on the application and
its arguments (`mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5`), so the
application is made once with `weights="imagenet"` while Keras's `get_file` is wrapped: Keras fetches
the file into its own cache (or finds it there), the wrapper records the file and its origin, and stops
the constructor before it loads the file (the warm start loads it, by layer name, into the graph).

A saved model is loaded once by the engine's Keras and kept as its architecture (JSON) and its weights
by layer (an .h5 file in the layout the warm start reads), cached under .cache/layerprobe/models by the
file's digest: the graph rebuilds the architecture inside its own scope and starts from those weights.
Loading needs eager execution, which the Estimator's model_fn is not in: it runs in a worker thread
(TensorFlow's default graph is per thread).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import sys
import warnings
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any, TypeVar

from layerprobe.data.digests import path_digest
from layerprobe.errors import ConfigError, first_line

log = logging.getLogger(__name__)
MODELS_CACHE = Path(".cache/layerprobe/models")
KERAS_VERSION = version("keras")  # tf.keras 2.15 has no __version__
T = TypeVar("T")


@dataclass(frozen=True)
class Weights:
    """A nested model's initial weights: the local file the warm start reads and where it came from."""

    file: str
    origin: str  # the URL Keras downloaded from, or the file or directory the user gave
    sha256: str = ""  # of the file Keras fetched, or of the saved model (a directory: all its files)


class _Fetched(Exception):
    """Stops an application's constructor once Keras has the weights file."""


_FETCHED: dict[str, Weights] = {}  # per process: the model_fn is called for every mode


def fetch(path: str, make: Callable[..., Any], kwargs: Mapping[str, Any], weights: str, keras: Any) -> Weights:
    """The weights file Keras's own `get_file` has (in its cache, downloaded if needed) for the
    application `make(**kwargs, weights=weights)`; one ConfigError at `path` when it cannot get it."""
    key = json.dumps([getattr(make, "__name__", ""), kwargs, weights, KERAS_VERSION, cache_dir()], default=str)
    if key not in _FETCHED:
        _FETCHED[key] = _outside_graph(lambda: _fetch(path, make, kwargs, weights, keras))
    return _FETCHED[key]


def _fetch(path: str, make: Callable[..., Any], kwargs: Mapping[str, Any], weights: str, keras: Any) -> Weights:
    module: Any = sys.modules[keras.utils.get_file.__module__]  # where the applications look `get_file` up
    real = module.get_file
    asked: dict[str, Any] = {}

    def recording_get_file(*args: Any, **kw: Any) -> Any:
        asked.update(inspect.signature(real).bind(*args, **kw).arguments)
        try:
            asked["path"] = real(*args, **kw)
        except Exception as e:  # noqa: BLE001 - whatever stopped the download, it is reported below
            asked["error"] = e
        raise _Fetched

    module.get_file = recording_get_file
    try:
        with warnings.catch_warnings(record=True) as said:  # e.g. which input size's file it takes
            warnings.simplefilter("always")
            make(**{**kwargs, "weights": weights})
    except _Fetched:
        pass
    except Exception as e:  # noqa: BLE001 - Keras's rule for these weights (e.g. the alpha values it has)
        raise ConfigError(path, weights, f"Keras refused these weights: {first_line(e)}") from None
    finally:
        module.get_file = real
    if "path" not in asked and "error" not in asked:
        raise ConfigError(path, weights, "the application asked Keras for no weights file")
    fname = asked.get("fname") or os.path.basename(str(asked.get("origin")))
    if "error" in asked:
        where = os.path.join(cache_dir(asked.get("cache_dir")), asked.get("cache_subdir", "datasets"))
        reason = first_line(asked["error"]).replace(f" on {asked.get('origin')}", "")  # the URL: too long here
        rule = (
            f"Keras could not download {fname} ({reason}): put that file into {where}, "
            "or give `weights: <path>` of a local weights file"
        )
        raise ConfigError(path, weights, rule)
    for w in said:
        log.info("%s: %s", path, w.message)
    return Weights(str(asked["path"]), str(asked["origin"]), path_digest(asked["path"]))


def cache_dir(given: str | None = None) -> str:
    """Where `get_file` keeps files, as Keras decides: Keras 3 reads KERAS_HOME (when Keras is imported),
    Keras 2 always uses ~/.keras; both fall back to /tmp/.keras when that is not writable."""
    config: Any = sys.modules.get("keras.src.backend.config")  # Keras 3's
    base = given or (config.keras_home() if hasattr(config, "keras_home") else os.path.join("~", ".keras"))
    base = os.path.expanduser(base)
    return base if os.access(base, os.W_OK) else os.path.join("/tmp", ".keras")


class ModelFile:
    """A saved Keras model as a constructor: `make(input_shape=...)` rebuilds its architecture
    (untrained); `weights` holds its trained weights for the warm start."""

    def __init__(self, path: str, source: str, keras: Any) -> None:
        self.path, self.source, self.keras = path, source, keras
        self.architecture, self.weights = _outside_graph(lambda: _converted(path, source, keras))
        self.__name__ = "model_file"

    def __call__(self, input_shape: tuple[Any, ...], **_: Any) -> Any:
        model = self.keras.models.model_from_json(self.architecture.read_text())
        if len(model.inputs) != 1:
            raise ConfigError(
                self.path, self.source, f"a model_file layer takes one input; this model has {len(model.inputs)}"
            )
        theirs = tuple(list(model.inputs[0].shape)[1:])
        if tuple(input_shape) != theirs:
            rule = f"the saved model takes inputs of shape {list(theirs)}; the graph gives it {list(input_shape)}"
            raise ConfigError(self.path, self.source, rule)
        return model


def _converted(path: str, source: str, keras: Any) -> tuple[Path, Weights]:
    """(architecture JSON, weights by layer) of the saved model, made once per file and Keras."""
    import h5py

    digest = path_digest(source)
    key = hashlib.sha256(f"{digest}:{KERAS_VERSION}".encode()).hexdigest()[:20]
    out = MODELS_CACHE / key
    arch, weights = out / "model.json", out / "weights.h5"
    if not (arch.is_file() and weights.is_file()):
        try:
            model = keras.models.load_model(source, compile=False)
        except Exception as e:  # noqa: BLE001 - Keras's own reason (format, custom objects)
            raise ConfigError(path, source, f"Keras {KERAS_VERSION} cannot load this model: {first_line(e)}") from None
        try:
            architecture = model.to_json()
        except Exception as e:  # noqa: BLE001 - a subclassed model has no config to rebuild from
            rule = f"only a functional or Sequential model can be rebuilt here: {first_line(e)}"
            raise ConfigError(path, source, rule) from None
        out.mkdir(parents=True, exist_ok=True)
        inner = [layer for layer in model.layers if layer.weights]
        with h5py.File(weights.with_suffix(".tmp"), "w") as f:  # the layout graph.warm reads: by layer, in order
            f.attrs["layer_names"] = [layer.name.encode() for layer in inner]
            for layer in inner:
                g = f.create_group(layer.name)
                values = layer.get_weights()
                g.attrs["weight_names"] = [str(i).encode() for i in range(len(values))]
                for i, v in enumerate(values):
                    g[str(i)] = v
        weights.with_suffix(".tmp").replace(weights)
        arch.write_text(architecture)
    return arch, Weights(str(weights), str(Path(source).resolve()), digest)


def _outside_graph(fn: Callable[[], T]) -> T:
    """`fn()` executing eagerly: in the Estimator's model_fn (a graph) it runs in a worker thread."""
    import tensorflow as tf

    if tf.executing_eagerly():
        return fn()
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(fn).result()
