"""The data source's tf.data pipelines, shaped as Keras `fit` and the engine's predict loop want them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from layerprobe._tf import tf
from layerprobe.engines.base import PredictRequest
from layerprobe.engines.spec import ModelSpec


def _one_pass_options() -> Any:
    """tf.data options without the autotuning model's thread, for one-pass reads (evaluate, predict):
    destroying an iterator waits for that thread (see engines/estimator/inputs.py for the measurement)."""
    options = tf.data.Options()
    options.autotune.enabled = False
    return options


def _features(spec: ModelSpec, f: Mapping[str, Any]) -> dict[str, Any]:
    """The model's inputs only, in their declared dtypes (the Estimator engine casts the same way)."""
    return {n: tf.cast(f[n], s.get("dtype", "float32")) for n, s in spec.inputs.items()}


def fit_dataset(spec: ModelSpec, data: Any, data_cfg: Mapping[str, Any], seed: int) -> Any:
    """(features, {output layer: label}) batches of the train split, shuffled with `seed`."""
    ds = data.tf_dataset(
        "train",
        training=True,
        batch_size=data_cfg["batch_size"],
        seed=seed,
        shuffle_buffer=data_cfg["shuffle_buffer"],
        cache=data_cfg["cache"],
        prefetch=data_cfg["prefetch"],
    )
    return ds.map(lambda f, y: (_features(spec, f), {n: y[h.label] for n, h in spec.heads.items()}))


def eval_dataset(spec: ModelSpec, data: Any, data_cfg: Mapping[str, Any], split: str) -> Any:
    """(features, labels by label name) batches of `split`, in order."""
    ds = data.tf_dataset(split, training=False, batch_size=data_cfg["batch_size"], seed=0, cache=data_cfg["cache"])
    return ds.map(lambda f, y: (_features(spec, f), y)).with_options(_one_pass_options())


def predict_dataset(spec: ModelSpec, data: Any, request: PredictRequest) -> Any:
    """(features, label or 0, (in sample, example index)) batches of the request's split, in order;
    one pass, so never cached."""
    ds = data.tf_dataset(
        request.split,
        training=False,
        batch_size=request.batch_size,
        seed=0,
        max_examples=request.max_examples,
        cache=False,
    )
    label = request.label
    ds = ds.map(lambda f, y: (_features(spec, f), y[label] if label is not None else tf.constant(0)))
    if request.sample is not None:  # not shuffled: the i-th example of the split is example i
        index = np.arange(len(request.sample), dtype=np.int64)
        extra = tf.data.Dataset.from_tensor_slices((request.sample, index)).batch(request.batch_size)
        ds = tf.data.Dataset.zip((ds, extra)).map(lambda fy, s: (fy[0], fy[1], s))
    else:
        ds = ds.map(lambda f, y: (f, y, (tf.constant(False), tf.constant(0, tf.int64))))
    return ds.with_options(_one_pass_options())
