"""Static checks of a data config: what can be said without reading data or importing TensorFlow.

`layerprobe validate` and `prepare` both run them; what needs the data (files, columns, shapes,
label ranges, NaNs) is checked by `prepare`, still before any training.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from typing import Any

from layerprobe.data.registry import STREAMABLE, check_name, stream_target
from layerprobe.errors import ConfigError

# Transform name -> (arguments it takes besides name/features/labels, arguments it requires).
TRANSFORMS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "cast": (("dtype",), ("dtype",)),
    "scale": (("factor", "offset"), ()),  # x * factor + offset
    "normalize": (("mean", "std", "fit"), ()),  # given mean/std, else fitted on the train split
    "reshape": (("shape",), ("shape",)),  # per example, without the batch axis
    "one_hot": (("depth",), ("depth",)),
    "clip": (("min", "max"), ()),
    "fill_nan": (("value",), ()),
    "random_flip": (("mode",), ()),
    "random_crop": (("padding",), ()),  # zero-pad each side, then crop back to the original size
    "random_noise": (("stddev",), ()),
    "select": ((), ()),  # keep only the named features (and labels, when named)
    "rename": ((), ()),  # features: {old: new}, labels: {old: new}
    "keras_preprocess": (("family",), ("family",)),  # a Keras application family's own preprocess_input
}
# keras.applications modules with a `preprocess_input` (tf.keras 2.15; Keras 3 lacks regnet and resnet_rs)
PREPROCESS_FAMILIES = (
    "convnext", "densenet", "efficientnet", "efficientnet_v2", "imagenet_utils", "inception_resnet_v2",
    "inception_v3", "mobilenet", "mobilenet_v2", "mobilenet_v3", "nasnet", "regnet", "resnet", "resnet50",
    "resnet_rs", "resnet_v2", "vgg16", "vgg19", "xception",
)  # fmt: skip
TRAIN_ONLY = ("random_flip", "random_crop", "random_noise")  # augmentation: never on eval or probe data
CAST_DTYPES = ("float16", "float32", "float64", "int32", "int64", "uint8", "bool")
FLIP_MODES = ("horizontal", "vertical", "both")
SPLIT_METHODS = ("fraction", "range", "files")
STREAM_SPLIT_METHODS = ("fraction", "files")  # a stream has no row numbers to cut at
CACHE_MODES = ("memory", "file", "none")
FIT_ON = ("train",)


def is_user_function(name: Any) -> bool:
    """`mypkg.mod.fn`: a user's own transform, imported when the data is prepared."""
    return isinstance(name, str) and "." in name


def check_data_config(data: Mapping[str, Any]) -> None:
    """Raise ConfigError for the first static rule the data config breaks."""
    source = data.get("source")
    check_name(source)
    if source == "tfds":
        require_tfds()
    _positive_int("data.batch_size", data.get("batch_size"))
    _int_at_least("data.shuffle_buffer", data.get("shuffle_buffer", 0), 0)
    prefetch = data.get("prefetch", -1)
    _int_at_least("data.prefetch", prefetch, -1)
    if data.get("repeat") is not None:
        _positive_int("data.repeat", data["repeat"])
    if data.get("num_classes") is not None:
        _positive_int("data.num_classes", data["num_classes"])
    if data.get("shuffle_seed") is not None:
        _int_at_least("data.shuffle_seed", data["shuffle_seed"], 0)
    if not isinstance(data.get("skip_corrupt", False), bool):
        raise ConfigError("data.skip_corrupt", data["skip_corrupt"], "must be true or false")
    stream = (data.get("params") or {}).get("stream", False)
    if source in STREAMABLE and not isinstance(stream, bool):
        raise ConfigError("data.params.stream", stream, "must be true or false")
    cache = data.get("cache", "memory")
    if cache not in CACHE_MODES:
        raise ConfigError("data.cache", cache, "unknown cache", CACHE_MODES)
    if cache == "file" and not data.get("cache_dir"):
        raise ConfigError("data.cache_dir", data.get("cache_dir"), "cache: file needs a directory")
    check_splits(data.get("splits") or {})
    method = (data.get("splits") or {}).get("method", "fraction")
    if stream_target(source, data.get("params") or {}) is not None and method not in STREAM_SPLIT_METHODS:
        rule = f"{source} is split by its files or by a seeded hash of each record, not by row ranges"
        raise ConfigError("data.splits.method", method, rule, STREAM_SPLIT_METHODS)
    transforms = data.get("transforms") or []
    if not isinstance(transforms, list):
        raise ConfigError("data.transforms", transforms, "must be a list of {name: ..., ...} mappings")
    for i, t in enumerate(transforms):
        check_transform(f"data.transforms[{i}]", t)


def require_tfds() -> None:
    if importlib.util.find_spec("tensorflow_datasets") is None:
        raise ConfigError(
            "data.source",
            "tfds",
            "needs tensorflow-datasets, which is not installed (pip install 'layerprobe[tfds]', then "
            "prepare the data set once; layerprobe never downloads)",
        )


def check_splits(s: Mapping[str, Any]) -> None:
    method = s.get("method", "fraction")
    if method not in SPLIT_METHODS:
        raise ConfigError("data.splits.method", method, "unknown split method", SPLIT_METHODS)
    if method == "fraction":
        frac = s.get("eval_fraction")
        if isinstance(frac, bool) or not isinstance(frac, (int, float)) or not 0 < frac < 1:
            raise ConfigError("data.splits.eval_fraction", frac, "must be between 0 and 1 (exclusive)")
        _int_at_least("data.splits.seed", s.get("seed", 0), 0)
    elif method == "range":
        for key in ("train_range", "eval_range"):
            r = s.get(key)
            if not _is_row_range(r):
                raise ConfigError(
                    f"data.splits.{key}",
                    r,
                    "give [start, stop) rows with 0 <= start < stop (stop may be null = the end)",
                )
    elif not s.get("eval_params"):
        raise ConfigError(
            "data.splits.eval_params",
            s.get("eval_params"),
            "method files needs the eval split's params, e.g. {path: eval.csv}",
        )


def check_transform(path: str, t: Any) -> None:
    if not isinstance(t, Mapping) or "name" not in t:
        raise ConfigError(path, t, "a transform is a mapping with at least a `name`")
    name = t["name"]
    if is_user_function(name):
        module, _, fn = name.rpartition(".")
        if not module or not fn.isidentifier():
            raise ConfigError(f"{path}.name", name, "a dotted transform must be 'package.module.function'")
        return
    if name not in TRANSFORMS:
        raise ConfigError(
            f"{path}.name", name, "unknown transform (or give a dotted path to your own function)", TRANSFORMS
        )
    allowed, required = TRANSFORMS[name]
    for arg in t:
        if arg not in ("name", "features", "labels", *allowed):
            raise ConfigError(
                f"{path}.{arg}", arg, f"{name} takes no argument {arg!r}", ("features", "labels", *allowed)
            )
    for arg in required:
        if t.get(arg) is None:
            raise ConfigError(f"{path}.{arg}", None, f"{name} requires {arg!r}")
    for key in ("features", "labels"):
        value = t.get(key)
        if name == "rename":
            if value is not None and not isinstance(value, Mapping):
                raise ConfigError(f"{path}.{key}", value, "rename takes a mapping {old: new}")
        elif value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise ConfigError(f"{path}.{key}", value, "give a list of names")
    if name in ("select", "rename") and not (t.get("features") or t.get("labels")):
        raise ConfigError(path, name, f"{name} needs `features` or `labels`")
    if name == "one_hot" and not (t.get("features") or t.get("labels")):
        raise ConfigError(path, name, "one_hot needs the `features` or `labels` it encodes")
    if name == "normalize":
        fit = t.get("fit", "train")
        if fit not in FIT_ON:
            rule = "statistics are fitted on the train split only: fitting on eval data would leak it into training"
            raise ConfigError(f"{path}.fit", fit, rule, FIT_ON)
        if (t.get("mean") is None) != (t.get("std") is None):
            raise ConfigError(path, "normalize", "give both mean and std, or neither (then they are fitted on train)")
        if t.get("std") is not None and any(s <= 0 for s in _numbers(f"{path}.std", t["std"])):
            raise ConfigError(f"{path}.std", t["std"], "must be > 0")
        if t.get("mean") is not None:
            _numbers(f"{path}.mean", t["mean"])
    elif name == "keras_preprocess" and t["family"] not in PREPROCESS_FAMILIES:
        raise ConfigError(f"{path}.family", t["family"], "unknown application family", PREPROCESS_FAMILIES)
    elif name == "cast" and t["dtype"] not in CAST_DTYPES:
        raise ConfigError(f"{path}.dtype", t["dtype"], "unknown dtype", CAST_DTYPES)
    elif name == "reshape":
        shape = t["shape"]
        if not isinstance(shape, list) or not all(_is_int(d) and (d > 0 or d == -1) for d in shape):
            raise ConfigError(f"{path}.shape", shape, "give the per-example shape as a list of positive integers")
    elif name == "one_hot":
        _positive_int(f"{path}.depth", t["depth"])
    elif name == "clip":
        lo, hi = t.get("min"), t.get("max")
        if lo is None and hi is None:
            raise ConfigError(path, "clip", "give min, max or both")
        if lo is not None and hi is not None and lo > hi:
            raise ConfigError(f"{path}.min", lo, f"must be <= max ({hi})")
    elif name == "random_flip" and t.get("mode", "horizontal") not in FLIP_MODES:
        raise ConfigError(f"{path}.mode", t.get("mode"), "unknown flip mode", FLIP_MODES)
    elif name == "random_crop":
        _positive_int(f"{path}.padding", t.get("padding", 2))
    elif name == "random_noise":
        std = t.get("stddev", 0.1)
        if not isinstance(std, (int, float)) or std < 0:
            raise ConfigError(f"{path}.stddev", std, "must be a number >= 0")


def _numbers(path: str, value: Any) -> list[float]:
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise ConfigError(path, value, "give a number or a list of numbers (one per unit of the last axis)")
    return [float(v) for v in values]


def _is_row_range(r: Any) -> bool:
    """[start, stop) with 0 <= start < stop; stop None = the end."""
    if not isinstance(r, list) or len(r) != 2 or not _is_int(r[0]) or r[0] < 0:
        return False
    return r[1] is None or (_is_int(r[1]) and r[1] > r[0])


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _positive_int(path: str, value: Any) -> None:
    if not _is_int(value) or value <= 0:
        raise ConfigError(path, value, "must be a positive integer")


def _int_at_least(path: str, value: Any, low: int) -> None:
    if not _is_int(value) or value < low:
        raise ConfigError(path, value, f"must be an integer >= {low}")
