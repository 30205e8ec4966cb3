"""input_fns for the Estimator: the data source's tf.data pipelines, shaped as the Estimator wants."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from layerprobe.engines.base import PredictRequest
from layerprobe.engines.probe_input import eval_batches, one_pass_options, probe_batches, train_batches
from layerprobe.schema import DataConfig

# The Estimator drops labels in PREDICT, so the probe input_fn carries them as features under this key.
LABEL_FEATURE = "__probe_label__"
SAMPLE_FEATURE = "__probe_in_sample__"  # (batch,) bool: the example is a candidate for the reservoir
INDEX_FEATURE = "__probe_index__"  # (batch,) int64: the example's stable key (data.keys)


_NO_AUTOTUNE_MODEL = one_pass_options()


def train_input_fn(data: Any, data_cfg: DataConfig, seed: int) -> Callable[[], Any]:
    return lambda: train_batches(data, data_cfg, seed)


def eval_input_fn(data: Any, data_cfg: DataConfig, split: str = "eval") -> Callable[[], Any]:
    return lambda: eval_batches(data, data_cfg, split)


def predict_input_fn(data: Any, request: PredictRequest) -> Callable[[], Any]:
    """Features of the split (or its shard) plus, as extra features, the label and, for the reservoir,
    each example's key and whether it is a candidate (the Estimator hands PREDICT no labels)."""
    label = request.label

    def input_fn() -> Any:
        ds = probe_batches(data, request).map(
            lambda f, y, key, candidate: ({**f, SAMPLE_FEATURE: candidate, INDEX_FEATURE: key}, y)
        )
        ds = ds.map(lambda f, y: f) if label is None else ds.map(lambda f, y: {**f, LABEL_FEATURE: y[label]})
        return ds.with_options(_NO_AUTOTUNE_MODEL)

    return input_fn
