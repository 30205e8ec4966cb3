"""Declared features of tf.train.Example records -> a per-record parse function (streaming sources).

A spec is {dtype: float32|int64, shape: [...]} (fixed length), {dtype, var_len: true, length: N,
default: 0} (padded to N), or {dtype: string} bytes: kept as a string, or decoded with
`decode: png|jpeg|image` (uint8, `shape: [height, width, channels]`) or `decode: raw` (the bytes of a
tensor of `raw_dtype` and `shape`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from layerprobe._tf import tf
from layerprobe.errors import ConfigError

NUMBER_DTYPES = ("float32", "int64")  # what tf.train.Example stores as numbers
DTYPES = (*NUMBER_DTYPES, "string")
DECODES = ("png", "jpeg", "image", "raw")
RAW_DTYPES = ("uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64")
SPEC_KEYS = ("dtype", "shape", "var_len", "length", "default", "decode", "raw_dtype")


def parser(specs: Mapping[str, tuple[str, Any]]) -> Callable[[Any], dict[str, Any]]:
    """`serialized record -> {name: tensor}` for specs `{name: (config path, spec)}`; checks each spec."""
    wire = {name: _wire(path, spec) for name, (path, spec) in specs.items()}

    def parse(record: Any) -> dict[str, Any]:
        raw = tf.io.parse_single_example(record, wire)
        return {name: _finish(raw[name], spec) for name, (_, spec) in specs.items()}

    return parse


def batch_parser(
    specs: Mapping[str, tuple[str, Any]],
) -> tuple[Callable[[Any], dict[str, Any]], Callable[[dict[str, Any]], dict[str, Any]] | None] | None:
    """(parse, decode): `(batch,) serialized records -> {name: (batch, ...) tensor}` by one
    `parse_example` (faster than a parse per record: BENCHMARKS.md, "Data at scale"), and the
    per-record decode of the images it leaves encoded (None: nothing left), which together give
    `parser`'s values. None when a var_len feature needs the per-record padding. Call `parser`
    first: it checks the specs."""
    if any(spec.get("var_len") for _, spec in specs.values()):
        return None
    wire = {name: _wire(path, spec) for name, (path, spec) in specs.items()}
    images = {name: spec for name, (_, spec) in specs.items() if spec.get("decode") in ("png", "jpeg", "image")}

    def parse(records: Any) -> dict[str, Any]:
        raw = tf.io.parse_example(records, wire)
        return {
            name: raw[name] if name in images else _finish_batch(raw[name], spec) for name, (_, spec) in specs.items()
        }

    def decode(parsed: dict[str, Any]) -> dict[str, Any]:
        return {name: _finish(x, images[name]) if name in images else x for name, x in parsed.items()}

    return parse, decode if images else None


def each_record(fn: Callable[[Any], Any], batch: Any) -> Any:
    """`fn` of one record applied to every record of `batch` (a structure of (batch, ...) tensors), inside
    the caller's `map` of whole batches: one tf.data stage per batch instead of one per record, whose
    per-element cost is what made decoding PNGs record by record slow (BENCHMARKS.md, "Data at scale").
    Vectorized where TensorFlow can (casts, arithmetic: the whole batch at once), a loop over the
    records where it cannot (the image decodes)."""
    return tf.vectorized_map(fn, batch, fallback_to_while_loop=True)


# TensorFlow's wrapping of an op's message: where it ran, the dataset stage, the node, the op
_TF_CONTEXT = re.compile(
    r"\{\{function_node [^}]*\}\}"
    r"|Error in user-defined function passed to \S+ transformation with iterator: \S+: "
    r"|\[\[.*?\]\]"
    r"|\[Op:[^\]]*\](?: name:\S*)?"
)


def tf_message(e: Exception) -> str:
    """A TensorFlow error's own message on one line, without TF's context around it (function and
    node names, dataset stages, op names: they name graph internals and change from call to call)."""
    return " ".join(_TF_CONTEXT.sub(" ", str(getattr(e, "message", e))).split())


def check_keys(path: str, spec: Any, keys: tuple[str, ...], form: str) -> None:
    """A feature spec is a mapping of known keys; `form` shows the user what one looks like."""
    if not isinstance(spec, Mapping):
        raise ConfigError(path, spec, f"a record feature is {form}")
    for key in spec:
        if key not in keys:
            raise ConfigError(f"{path}.{key}", key, "not a key of a record feature", keys)


def _wire(path: str, spec: Any) -> Any:
    """The tf.io feature that reads one declared feature off the wire."""
    check_keys(path, spec, SPEC_KEYS, "{dtype: float32|int64|string, shape: [...], ...}")
    dtype = spec.get("dtype")
    if dtype not in DTYPES:
        raise ConfigError(f"{path}.dtype", dtype, "a tf.train.Example feature is float32, int64 or string", DTYPES)
    decode = spec.get("decode")
    if decode is not None and (dtype != "string" or decode not in DECODES):
        rule = "decode applies to string (bytes) features" if dtype != "string" else "unknown decode"
        raise ConfigError(f"{path}.decode", decode, rule, DECODES)
    if decode is not None and not _is_shape(spec.get("shape")):
        raise ConfigError(f"{path}.shape", spec.get("shape"), f"decode: {decode} needs the decoded shape")
    if decode in ("png", "jpeg", "image") and len(spec["shape"]) != 3:
        raise ConfigError(f"{path}.shape", spec["shape"], "a decoded image is [height, width, channels]")
    if decode == "raw" and spec.get("raw_dtype") not in RAW_DTYPES:
        raise ConfigError(
            f"{path}.raw_dtype", spec.get("raw_dtype"), "decode: raw needs the tensor's dtype", RAW_DTYPES
        )
    if spec.get("var_len"):
        length = spec.get("length")
        if dtype == "string" or not isinstance(length, int) or isinstance(length, bool) or length <= 0:
            raise ConfigError(
                f"{path}.length", length, "a var_len number feature needs the positive length it is padded to"
            )
        return tf.io.VarLenFeature(dtype)
    if dtype == "string":
        return tf.io.FixedLenFeature([], tf.string)
    if spec.get("shape") is not None and not _is_shape(spec["shape"]):
        raise ConfigError(f"{path}.shape", spec["shape"], "give the per-example shape as a list of positive integers")
    return tf.io.FixedLenFeature(list(spec.get("shape") or []), dtype)


def _finish(x: Any, spec: Mapping[str, Any]) -> Any:
    if spec.get("var_len"):
        length = int(spec["length"])
        dense = tf.sparse.to_dense(x, tf.cast(spec.get("default", 0), x.dtype))
        tf.debugging.assert_less_equal(tf.size(dense), length, f"a record holds more values than length {length}")
        padded = tf.pad(dense, [[0, length - tf.size(dense)]], constant_values=tf.cast(spec.get("default", 0), x.dtype))
        return tf.reshape(padded, [length])
    decode = spec.get("decode")
    if decode in ("png", "jpeg", "image"):
        height, width, channels = spec["shape"]
        if decode == "png":
            image = tf.io.decode_png(x, channels=channels)
        elif decode == "jpeg":
            image = tf.io.decode_jpeg(x, channels=channels)
        else:  # any format TensorFlow reads: png, jpeg, gif (first frame), bmp
            image = tf.io.decode_image(x, channels=channels, expand_animations=False)
        return tf.ensure_shape(image, [height, width, channels])
    if decode == "raw":
        return tf.reshape(tf.io.decode_raw(x, spec["raw_dtype"]), spec["shape"])
    return x


def _finish_batch(x: Any, spec: Mapping[str, Any]) -> Any:
    if spec.get("decode") == "raw":
        # (batch, ...): a record of another length is an error, never a different number of examples
        return tf.reshape(tf.io.decode_raw(x, spec["raw_dtype"]), [tf.shape(x)[0], *spec["shape"]])
    return x


def _is_shape(shape: Any) -> bool:
    return isinstance(shape, list) and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)
