"""The data source's tf.data pipelines, shaped as Keras `fit` and the engine's predict loop want them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from layerprobe._tf import tf
from layerprobe.engines.base import PredictRequest
from layerprobe.engines.probe_input import eval_batches, one_pass_options, probe_batches, train_batches
from layerprobe.engines.spec import ModelSpec
from layerprobe.schema import DataConfig


def _features(spec: ModelSpec, f: Mapping[str, Any]) -> dict[str, Any]:
    """The model's inputs only, in their declared dtypes (the Estimator engine casts the same way)."""
    return {n: tf.cast(f[n], s["dtype"]) for n, s in spec.inputs.items()}


def fit_dataset(spec: ModelSpec, data: Any, data_cfg: DataConfig, seed: int) -> Any:
    """(features, {output layer: label}) batches of the train split, shuffled with `seed`."""
    return train_batches(data, data_cfg, seed).map(
        lambda f, y: (_features(spec, f), {n: y[h.label] for n, h in spec.heads.items()})
    )


def eval_dataset(spec: ModelSpec, data: Any, data_cfg: DataConfig, split: str) -> Any:
    """(features, labels by label name) batches of `split`, in order."""
    return eval_batches(data, data_cfg, split).map(lambda f, y: (_features(spec, f), y))


def predict_dataset(spec: ModelSpec, data: Any, request: PredictRequest) -> Any:
    """(features, label or 0, (reservoir candidate, example key)) batches of the request's split or
    shard, in order; one pass, so never cached."""
    label = request.label
    ds = probe_batches(data, request).map(
        lambda f, y, key, candidate: (
            _features(spec, f),
            y[label] if label is not None else tf.constant(0),
            (candidate, key),
        )
    )
    return ds.with_options(one_pass_options())
