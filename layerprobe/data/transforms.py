"""The declared transforms as tf.data functions on one example: (features, labels) -> (features, labels).

Random augmentations use stateless ops seeded by (seed, transform index, example visit counter):
the same seed gives the same augmented stream, whatever the number of parallel map calls.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from layerprobe._tf import tf
from layerprobe.data.checks import TRAIN_ONLY, is_user_function
from layerprobe.errors import ConfigError

Example = tuple[dict[str, Any], dict[str, Any]]
NAN_INTOLERANT = ("normalize", "one_hot")  # and casts to a non-float dtype


def user_function(i: int, name: str) -> Callable[..., Example]:
    """Import `package.module.function`; it is called as fn(features, labels, **args) -> (features, labels)."""
    module, _, attr = name.rpartition(".")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"data.transforms[{i}].name", name, f"cannot import this function ({e})") from None
    if not callable(fn):
        raise ConfigError(f"data.transforms[{i}].name", name, "is not a function")
    return fn  # type: ignore[no-any-return]


def targets(t: Mapping[str, Any], features: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """The features and labels one transform acts on; by default every floating-point feature.
    `features` maps names to anything with a `.dtype` (tensors or TensorSpecs)."""
    names = t.get("features")
    feats = list(names) if names is not None else [k for k, v in features.items() if v.dtype.is_floating]
    return feats, list(t.get("labels") or [])


def apply(
    transforms: Sequence[Mapping[str, Any]],
    fitted: Mapping[str, np.ndarray],
    features: Mapping[str, Any],
    labels: Mapping[str, Any],
    *,
    lo: int,
    hi: int,
    training: bool,
    seed: int,
    counter: Any = None,
) -> Example:
    """Transforms lo..hi-1 on one example. Train-only ones are skipped unless training."""
    f, y = dict(features), dict(labels)
    for i in range(lo, hi):
        t = transforms[i]
        name = t["name"]
        if name in TRAIN_ONLY and not training:
            continue
        if is_user_function(name):
            args = {k: v for k, v in t.items() if k != "name"}
            f, y = user_function(i, name)(f, y, **args)
            f, y = dict(f), dict(y)
        elif name == "select":
            f = {k: f[k] for k in t["features"]} if t.get("features") else f
            y = {k: y[k] for k in t["labels"]} if t.get("labels") else y
        elif name == "rename":
            f = {(t.get("features") or {}).get(k, k): v for k, v in f.items()}
            y = {(t.get("labels") or {}).get(k, k): v for k, v in y.items()}
        else:
            feats, labs = targets(t, f)
            for group, names in ((f, feats), (y, labs)):
                for n in names:
                    group[n] = _one(i, t, n, group[n], fitted, seed, counter)
    return f, y


def _preprocess_input(i: int, family: str) -> Callable[[Any], Any]:
    """keras.applications.<family>.preprocess_input of this TensorFlow's Keras."""
    module = getattr(tf.keras.applications, family, None)
    if module is None or not hasattr(module, "preprocess_input"):
        rule = f"the Keras of TensorFlow {tf.__version__} has no application family {family!r} with a preprocess_input"
        raise ConfigError(f"data.transforms[{i}].family", family, rule)
    return module.preprocess_input  # type: ignore[no-any-return]


def _one(
    i: int, t: Mapping[str, Any], feat: str, x: Any, fitted: Mapping[str, np.ndarray], seed: int, counter: Any
) -> Any:
    name = t["name"]
    if name == "cast":
        return tf.cast(x, t["dtype"])
    if name == "scale":
        return x * tf.cast(t.get("factor", 1.0), x.dtype) + tf.cast(t.get("offset", 0.0), x.dtype)
    if name == "normalize":
        mean = tf.constant(fitted[f"{i}/{feat}/mean"], x.dtype)
        return (x - mean) / tf.constant(fitted[f"{i}/{feat}/std"], x.dtype)
    if name == "reshape":
        return tf.reshape(x, list(t["shape"]))
    if name == "one_hot":
        return tf.one_hot(tf.cast(x, tf.int64), int(t["depth"]))
    if name == "clip":
        if t.get("min") is not None:
            x = tf.maximum(x, tf.cast(t["min"], x.dtype))
        if t.get("max") is not None:
            x = tf.minimum(x, tf.cast(t["max"], x.dtype))
        return x
    if name == "fill_nan":
        return tf.where(tf.math.is_nan(x), tf.cast(t.get("value", 0.0), x.dtype), x)
    if name == "keras_preprocess":
        return _preprocess_input(i, t["family"])(tf.cast(x, tf.float32))
    # train-only augmentation: one seed pair per (seed, transform, example visit)
    pair = tf.stack([tf.constant(seed * 1000 + i, tf.int64), tf.cast(counter, tf.int64)])
    if name == "random_noise":
        return x + tf.random.stateless_normal(tf.shape(x), seed=pair, dtype=x.dtype) * float(t.get("stddev", 0.1))
    if name == "random_flip":
        mode = t.get("mode", "horizontal")
        if mode in ("horizontal", "both"):
            x = tf.image.stateless_random_flip_left_right(x, pair)
        if mode in ("vertical", "both"):
            x = tf.image.stateless_random_flip_up_down(x, pair + tf.constant([0, 1 << 40], tf.int64))
        return x
    if name == "random_crop":
        p = int(t.get("padding", 2))
        padded = tf.pad(x, [[p, p], [p, p], [0, 0]])
        return tf.image.stateless_random_crop(padded, tf.shape(x), pair)
    raise NotImplementedError(f"transform {name}: checks.TRANSFORMS lists it but it is not implemented here")
