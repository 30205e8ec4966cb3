"""input_fns for the Estimator: the data source's tf.data pipelines, shaped as the Estimator wants."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from layerprobe._tf import tf
from layerprobe.data.pipeline import dataset
from layerprobe.engines.base import PredictRequest

# The Estimator drops labels in PREDICT, so the probe input_fn carries them as features under this key.
LABEL_FEATURE = "__probe_label__"
SAMPLE_FEATURE = "__probe_in_sample__"  # (batch,) bool: the example is in the reservoir sample
INDEX_FEATURE = "__probe_index__"  # (batch,) int64: the example's index in the probed split


def _options_without_autotune_model() -> Any:
    """tf.data options without the autotuning model's thread, for one-pass reads (evaluate, predict).

    Destroying an iterator waits for that thread, which sleeps out its current optimisation period
    (seconds, growing) before it sees the cancellation: Session.close stalled 0.6-10 s after a third
    of the probe predicts over a generator-fed split (gdb: the main thread in ~RootDataset::Iterator,
    the model thread in Model::OptimizeLoop). AUTOTUNE map parallelism then means one call per core;
    prefetch keeps its own buffer autotuner."""
    options = tf.data.Options()
    options.autotune.enabled = False
    return options


_NO_AUTOTUNE_MODEL = _options_without_autotune_model()


def train_input_fn(data: Any, data_cfg: Mapping[str, Any], seed: int) -> Callable[[], Any]:
    return lambda: dataset(
        data,
        "train",
        training=True,
        batch_size=data_cfg["batch_size"],
        seed=seed,
        shuffle_buffer=data_cfg["shuffle_buffer"],
        cache=data_cfg["cache"],
        prefetch=data_cfg["prefetch"],
    )


def eval_input_fn(data: Any, data_cfg: Mapping[str, Any], split: str = "eval") -> Callable[[], Any]:
    return lambda: dataset(
        data, split, training=False, batch_size=data_cfg["batch_size"], seed=0, cache=data_cfg["cache"]
    ).with_options(_NO_AUTOTUNE_MODEL)


def predict_input_fn(data: Any, request: PredictRequest) -> Callable[[], Any]:
    """Features of the split plus, as extra features, the label and the reservoir sample mask
    (the Estimator hands PREDICT no labels)."""
    sample, label, batch_size = request.sample, request.label, request.batch_size

    def input_fn() -> Any:
        # One pass: a cache would only hold the whole split in memory and never be read again.
        ds = dataset(
            data,
            request.split,
            training=False,
            batch_size=batch_size,
            seed=0,
            max_examples=request.max_examples,
            cache=False,
        )
        if sample is not None:  # not shuffled: the i-th example of the split is example i
            extra = tf.data.Dataset.from_tensor_slices((sample, np.arange(len(sample), dtype=np.int64)))
            ds = tf.data.Dataset.zip((ds, extra.batch(batch_size)))
            ds = ds.map(lambda fy, s: ({**fy[0], SAMPLE_FEATURE: s[0], INDEX_FEATURE: s[1]}, fy[1]))
        ds = ds.map(lambda f, y: f) if label is None else ds.map(lambda f, y: {**f, LABEL_FEATURE: y[label]})
        return ds.with_options(_NO_AUTOTUNE_MODEL)

    return input_fn
