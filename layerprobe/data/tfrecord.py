"""Sources that need TensorFlow to read: TFRecord files and prepared TensorFlow Datasets.

Both are read once into named numpy arrays, like every other source, so that splits, fitted
statistics and the data digest work the same way. Found by name through `registry`.
"""

from __future__ import annotations

import glob
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from layerprobe._tf import tf
from layerprobe.data.arrays import ArraySet, known_params, required
from layerprobe.data.checks import require_tfds
from layerprobe.data.records import check_keys, tf_message
from layerprobe.errors import ConfigError

RECORD_DTYPES = {"float32": tf.float32, "int64": tf.int64}  # what tf.train.Example stores as numbers
SPEC_KEYS = ("dtype", "shape", "var_len", "length", "default")
COMPRESSION = ("", "GZIP", "ZLIB")


def read_tfrecord(params: Mapping[str, Any]) -> ArraySet:
    """params = {path (file, glob or list), compression, features: {name: spec}, labels: {name: spec}}.
    A spec is {dtype: float32|int64, shape: [..]} for a fixed-length value, or
    {dtype, var_len: true, length: N, default: 0}: a variable-length list padded with `default` to N."""
    known_params("tfrecord", params, ("path", "compression", "features", "labels"))
    files = files_of(required(params, "path"), "data.params.path")
    compression = params.get("compression") or ""
    if compression not in COMPRESSION:
        raise ConfigError("data.params.compression", compression, "unknown compression", COMPRESSION)
    specs: dict[str, tuple[str, Mapping[str, Any]]] = {}  # name -> (config path, spec)
    for group in ("features", "labels"):
        for name, spec in (params.get(group) or {}).items():
            specs[name] = (f"data.params.{group}.{name}", spec)
    if not params.get("features"):
        raise ConfigError(
            "data.params.features", params.get("features"), "declare at least one feature: {name: {dtype, shape}}"
        )
    parse = {name: _feature(path, spec) for name, (path, spec) in specs.items()}

    ds = tf.data.TFRecordDataset(files, compression_type=compression).batch(1024)
    ds = ds.map(lambda records: tf.io.parse_example(records, parse))
    chunks: dict[str, list[np.ndarray]] = {name: [] for name in specs}
    try:
        for batch in ds:
            for name, value in batch.items():
                path, spec = specs[name]
                if spec.get("var_len"):
                    chunks[name].append(_pad(path, tf.sparse.to_dense(value, spec.get("default", 0)).numpy(), spec))
                else:
                    chunks[name].append(value.numpy())
    except (tf.errors.InvalidArgumentError, tf.errors.DataLossError) as e:
        raise _record_error(e, specs, files) from None
    arrays = {
        name: np.concatenate(parts) if parts else np.zeros((0, *_shape(specs[name][1])), specs[name][1]["dtype"])
        for name, parts in chunks.items()
    }
    return ArraySet({n: arrays[n] for n in params["features"]}, {n: arrays[n] for n in params.get("labels") or {}})


def files_of(raw: Any, where: str) -> list[str]:
    """The files a path, a glob or a list of them name, in sorted order per pattern; `where` is the
    config path an error names."""
    patterns = raw if isinstance(raw, list) else [raw]
    files: list[str] = []
    for pattern in patterns:
        found = sorted(glob.glob(str(pattern))) if any(ch in str(pattern) for ch in "*?[") else [str(pattern)]
        if not found or not all(Path(f).is_file() for f in found):
            raise ConfigError(where, str(pattern), "no such file" if found else "no file matches")
        files += found
    return files


def _feature(path: str, spec: Any) -> Any:
    check_keys(path, spec, SPEC_KEYS, "{dtype: float32|int64, shape: [...]} or {dtype, var_len: true, length: N}")
    dtype = spec.get("dtype")
    if dtype not in RECORD_DTYPES:
        raise ConfigError(f"{path}.dtype", dtype, "a tf.train.Example number is float32 or int64", RECORD_DTYPES)
    if spec.get("var_len"):
        length = spec.get("length")
        if not isinstance(length, int) or isinstance(length, bool) or length <= 0:
            raise ConfigError(f"{path}.length", length, "a var_len feature needs the positive length it is padded to")
        return tf.io.VarLenFeature(RECORD_DTYPES[dtype])
    return tf.io.FixedLenFeature(_shape(spec), RECORD_DTYPES[dtype])


def _shape(spec: Mapping[str, Any]) -> list[int]:
    return [int(spec["length"])] if spec.get("var_len") else list(spec.get("shape") or [])


def _pad(path: str, dense: np.ndarray, spec: Mapping[str, Any]) -> np.ndarray:
    length = int(spec["length"])
    if dense.shape[1] > length:
        raise ConfigError(f"{path}.length", length, f"a record holds {dense.shape[1]} values, more than length")
    return np.pad(dense, ((0, 0), (0, length - dense.shape[1])), constant_values=spec.get("default", 0))


def _record_error(e: Exception, specs: Mapping[str, tuple[str, Any]], files: list[str]) -> ConfigError:
    message = tf_message(e)
    found = re.search(r"(?:Key|Feature): (\w+)", message)
    if found and found.group(1) in specs:
        path, spec = specs[found.group(1)]
        return ConfigError(path, dict(spec), f"does not match the records ({message})")
    return ConfigError(
        "data.params.path", files[0] if len(files) == 1 else files, f"cannot be read as records ({message})"
    )


def read_tfds(params: Mapping[str, Any]) -> ArraySet:
    """params = {name, split, data_dir, features: {feature: tfds key}, labels: {label: tfds key}}."""
    require_tfds()
    import tensorflow_datasets as tfds

    known_params("tfds", params, ("name", "split", "data_dir", "features", "labels"))
    name = required(params, "name")
    split, data_dir = params.get("split", "train"), params.get("data_dir")
    features = dict(params.get("features") or {"image": "image"})
    labels = dict(params.get("labels") or {"label": "label"})
    try:  # download=False: a set that is not on disk is an error, never a download
        ds = tfds.load(name, split=split, data_dir=data_dir, download=False, try_gcs=False)
    except Exception as e:  # tfds raises several types for "not prepared"
        where = data_dir or "~/tensorflow_datasets"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        rule = f"is not prepared in {where} and layerprobe never downloads ({first})"
        raise ConfigError("data.params.name", name, rule) from None
    keys = {**features, **labels}
    chunks: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    for batch in tfds.as_numpy(ds.batch(1024)):
        for out, key in keys.items():
            if key not in batch:
                group = "features" if out in features else "labels"
                raise ConfigError(f"data.params.{group}.{out}", key, f"{name} has no such key", batch)
            chunks[out].append(batch[key])
    arrays = {k: np.concatenate(v) for k, v in chunks.items()}
    return ArraySet({k: arrays[k] for k in features}, {k: arrays[k] for k in labels})
