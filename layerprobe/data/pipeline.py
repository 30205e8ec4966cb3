"""Declared data -> tf.data pipelines behind Estimator input_fns."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from layerprobe._tf import tf
from layerprobe.data.sources import ArraySet, load, split_indices
from layerprobe.errors import ConfigError

# Arrays above this go through a chunked generator instead of graph constants (2 GB proto limit).
CONSTANT_BYTES_LIMIT = 64 << 20


@dataclass(frozen=True)
class PreparedData:
    """The splits as arrays plus what the transforms learnt from the train split."""

    name: str
    splits: dict[str, ArraySet]
    transforms: list[dict[str, Any]]
    fitted: dict[str, Any] = field(default_factory=dict)  # e.g. normalize mean/std, from train only
    digest: str = ""

    def sizes(self) -> dict[str, int]:
        return {k: v.size for k, v in self.splits.items()}


TRANSFORMS = ("scale", "normalize", "cast", "reshape", "clip", "random_noise", "random_flip")
TRAIN_ONLY = ("random_noise", "random_flip")


def prepare(data_cfg: Mapping[str, Any]) -> PreparedData:
    """Load the source, split it, check the transforms and fit their statistics on train."""
    arrays = load(data_cfg["source"], data_cfg.get("params") or {})
    split = data_cfg["splits"]
    idx = split_indices(arrays.size, split["eval_fraction"], split["seed"])
    splits = {name: arrays.take(i) for name, i in idx.items()}
    transforms = [dict(t) for t in data_cfg.get("transforms") or []]
    fitted: dict[str, Any] = {}
    for i, t in enumerate(transforms):
        path = f"data.transforms[{i}]"
        name = t.get("name")
        if name not in TRANSFORMS:
            raise ConfigError(f"{path}.name", name, "unknown transform", TRANSFORMS)
        for feat in t.get("features") or []:
            if feat not in arrays.features:
                raise ConfigError(f"{path}.features", feat, "no such feature", arrays.features)
        if name == "normalize":  # statistics of the train split only: eval must not leak into them
            for feat in _targets(t, splits["train"]):
                x = splits["train"].features[feat].astype(np.float64)
                if not np.isfinite(x).all():
                    raise ConfigError(f"{path}", feat, "normalize cannot take NaN or Inf in the data")
                axes = tuple(range(x.ndim - 1))  # per last-axis unit
                fitted[f"{i}/{feat}/mean"] = x.mean(axis=axes).astype(np.float32)
                fitted[f"{i}/{feat}/std"] = np.maximum(x.std(axis=axes), 1e-6).astype(np.float32)
    for name, part in splits.items():
        if part.size == 0:
            raise ConfigError("data.splits", name, "split is empty")
    return PreparedData(data_cfg["name"], splits, transforms, fitted, arrays.digest())


def _targets(t: Mapping[str, Any], part: ArraySet) -> list[str]:
    names = t.get("features")
    if names:
        return list(names)
    return [k for k, v in part.features.items() if np.issubdtype(v.dtype, np.floating)]


def _apply(data: PreparedData, training: bool, seed: int) -> Callable[[dict, dict], tuple[dict, dict]]:
    example = next(iter(data.splits.values()))

    def fn(features: dict, labels: dict) -> tuple[dict, dict]:
        features = dict(features)
        for i, t in enumerate(data.transforms):
            name = t["name"]
            if name in TRAIN_ONLY and not training:
                continue
            for feat in _targets(t, example):
                x = features[feat]
                if name == "scale":
                    x = x * float(t.get("factor", 1.0))
                elif name == "normalize":
                    x = (x - data.fitted[f"{i}/{feat}/mean"]) / data.fitted[f"{i}/{feat}/std"]
                elif name == "cast":
                    x = tf.cast(x, t.get("dtype", "float32"))
                elif name == "reshape":
                    x = tf.reshape(x, list(t["shape"]))
                elif name == "clip":
                    x = tf.clip_by_value(x, float(t["min"]), float(t["max"]))
                elif name == "random_noise":
                    x = x + tf.random.normal(tf.shape(x), stddev=float(t.get("stddev", 0.1)), seed=seed + i)
                elif name == "random_flip":
                    x = tf.image.random_flip_left_right(x, seed=seed + i)
                features[feat] = x
        return features, labels

    return fn


def dataset(
    data: PreparedData,
    split: str,
    *,
    training: bool,
    batch_size: int,
    seed: int,
    shuffle_buffer: int = 0,
    cache: bool = True,
    prefetch: int = -1,
    max_examples: int | None = None,
) -> tf.data.Dataset:
    """Batches of (features, labels) dicts; training shuffles (seeded) and repeats forever."""
    part = data.splits[split]
    if max_examples is not None:
        part = part.take(np.arange(min(max_examples, part.size)))
    tensors = (part.features, part.labels)
    nbytes = sum(a.nbytes for group in tensors for a in group.values())
    if nbytes <= CONSTANT_BYTES_LIMIT:
        ds = tf.data.Dataset.from_tensor_slices(tensors)
    else:
        ds = _chunked(part)
    ds = ds.map(_apply(data, training, seed), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if cache and not any(t["name"] in TRAIN_ONLY for t in data.transforms):
        ds = ds.cache()
    if training:
        ds = ds.shuffle(shuffle_buffer or part.size, seed=seed, reshuffle_each_iteration=True).repeat()
    ds = ds.batch(batch_size)
    return ds.prefetch(tf.data.AUTOTUNE if prefetch < 0 else prefetch)


def _chunked(part: ArraySet, chunk: int = 1024) -> tf.data.Dataset:
    def gen():
        for start in range(0, part.size, chunk):
            sl = slice(start, start + chunk)
            yield {k: v[sl] for k, v in part.features.items()}, {k: v[sl] for k, v in part.labels.items()}

    def spec(group: dict[str, np.ndarray]) -> dict[str, tf.TensorSpec]:
        return {k: tf.TensorSpec((None, *v.shape[1:]), tf.as_dtype(v.dtype)) for k, v in group.items()}

    ds = tf.data.Dataset.from_generator(gen, output_signature=(spec(part.features), spec(part.labels)))
    return ds.unbatch()


def check_against_inputs(data: PreparedData, model_inputs: Mapping[str, Any], labels_needed: set[str]) -> None:
    """Each declared model input must be a feature of matching shape and dtype, in every split."""
    for split in data.splits:
        ds = dataset(data, split, training=False, batch_size=1, seed=0, max_examples=1)
        feats, labels = ds.element_spec
        for name, spec in model_inputs.items():
            if name not in feats:
                raise ConfigError(f"model.inputs.{name}", name, f"the {split} split has no such feature", feats)
            found = feats[name]
            expected = [None, *spec["shape"]]
            if found.shape.as_list() != expected or found.dtype.name != spec.get("dtype", "float32"):
                raise ConfigError(
                    f"model.inputs.{name}",
                    f"{found.dtype.name}{found.shape.as_list()[1:]}",
                    f"the {split} split's feature differs from the declared "
                    f"{spec.get('dtype', 'float32')}{list(spec['shape'])}",
                )
        for name in sorted(labels_needed):
            if name not in labels:
                raise ConfigError("model.outputs", name, f"the {split} split has no such label", labels)
