"""Declared data -> a `DataSource` and its tf.data pipelines behind the Estimator's input_fns.

`prepare` reads the source named by `data.source` (found through `registry`), splits, checks and fits
it, and returns a `memory.InMemorySource`; everything downstream asks only what `DataSource` offers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from layerprobe._tf import tf
from layerprobe.data.checks import check_data_config
from layerprobe.data.fitting import check_and_fit, check_labels
from layerprobe.data.memory import InMemorySource
from layerprobe.data.registry import resolve, stream_target
from layerprobe.data.source import DataSource
from layerprobe.data.splits import load_splits
from layerprobe.errors import ConfigError
from layerprobe.schema import DataConfig, data_config

PreparedData = InMemorySource  # the name the engine knows; new code takes a DataSource


def prepare(data_cfg: DataConfig | Mapping[str, Any]) -> InMemorySource:
    """Load the source, split it, check labels and transforms, fit statistics on train only.
    A streaming source (`registry.stream_target`) does the same without loading, and is returned as is:
    typed as the in-memory class only until the engine asks no more than `DataSource` offers.
    `data_cfg`: the loaded config's `data`, or a mapping (checked, then typed here)."""
    if not isinstance(data_cfg, DataConfig):
        check_data_config(data_cfg)
        data_cfg = data_config(data_cfg)
    target = stream_target(data_cfg.source, data_cfg.params)
    if target is not None:
        return resolve(target)(data_cfg)  # type: ignore[no-any-return]
    splits, digest = load_splits(data_cfg)
    for name, part in splits.items():
        if part.size == 0:
            raise ConfigError("data.splits", name, "split is empty")
    check_labels(splits, data_cfg.num_classes)
    transforms = [dict(t) for t in data_cfg.transforms]
    fitted = check_and_fit(transforms, splits)
    return InMemorySource(
        data_cfg.name,
        splits,
        transforms,
        fitted,
        digest,
        shuffle_seed=data_cfg.shuffle_seed,
        repeat=data_cfg.repeat,
        cache_dir=data_cfg.cache_dir,
    )


def dataset(
    data: DataSource,
    split: str,
    *,
    training: bool,
    batch_size: int,
    seed: int,
    shuffle_buffer: int = 0,
    cache: bool | str = True,
    prefetch: int = -1,
    max_examples: int | None = None,
) -> tf.data.Dataset:
    """`data.tf_dataset(...)`, kept for the callers that predate the DataSource seam."""
    return data.tf_dataset(
        split,
        training=training,
        batch_size=batch_size,
        seed=seed,
        max_examples=max_examples,
        shuffle_buffer=shuffle_buffer,
        cache=cache,
        prefetch=prefetch,
    )


def check_against_inputs(data: DataSource, model_inputs: Mapping[str, Any], labels_needed: set[str]) -> None:
    """Each declared model input must be a feature of matching shape and dtype, in every split."""
    for split in data.split_names():
        ds = data.tf_dataset(split, training=False, batch_size=1, seed=0, max_examples=1, cache=False)
        feats, labels = ds.element_spec
        for name, spec in model_inputs.items():
            if name not in feats:
                raise ConfigError(f"model.inputs.{name}", name, f"the {split} split has no such feature", feats)
            found = feats[name]
            dtype, shape = spec.get("dtype", "float32"), list(spec["shape"])
            got_dtype, got_shape = found.dtype.name, found.shape.as_list()[1:]
            if (got_dtype, got_shape) != (dtype, shape):
                fixes = [f"model.inputs.{name}.shape={_listed(got_shape)}"] * (got_shape != shape)
                fixes += [f"model.inputs.{name}.dtype={got_dtype}"] * (got_dtype != dtype)
                rule = (
                    f"the model declares {dtype}{shape} but feature {name!r} of the {split} split is "
                    f"{got_dtype}{got_shape}; to take it as it is, set {' '.join(fixes)}"
                )
                raise ConfigError(f"model.inputs.{name}", f"{got_dtype}{got_shape}", rule)
        for name in sorted(labels_needed):
            if name not in labels:
                raise ConfigError("model.outputs", name, f"the {split} split has no such label", labels)


def _listed(shape: list[Any]) -> str:
    """A shape as a command-line override writes it: [32,32,3]."""
    return "[" + ",".join(str(d) for d in shape) + "]"


def check_classes(data: DataSource, heads: Iterable[tuple[str, str, int]], declared: int | None) -> None:
    """Every classification head has an output per class of its label, before anything trains (a
    label past the last output fails only in the first training step, deep inside TensorFlow).
    heads: (label, the config path of the head's class count, that count); `declared`: data.num_classes.
    The data's classes: data.num_classes when set, else what the source knows (`label_classes`)."""
    known = data.label_classes()
    if declared is not None:
        for found in known.values():
            if found.count > declared:
                rule = (
                    f"the data has more classes than declared: {found.known_from}; "
                    f"set data.num_classes={found.count} (or null: counted from the data)"
                )
                raise ConfigError("data.num_classes", declared, rule)
    for label, path, outputs in heads:
        if declared is not None:
            classes, where = declared, "data.num_classes"
        elif label in known:
            classes, where = known[label].count, known[label].known_from
        else:
            continue  # a stream without data.num_classes: its labels are not counted
        if outputs < classes:
            rule = (
                f"a classification head needs one output per class, and label {label!r} has {classes} "
                f"classes ({where}); set {path}={classes}"
            )
            raise ConfigError(path, outputs, rule)
