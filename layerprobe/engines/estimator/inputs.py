"""input_fns for the Estimator: the data source's tf.data pipelines, shaped as the Estimator wants."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from layerprobe._tf import tf
from layerprobe.data.keys import sample_rank
from layerprobe.data.pipeline import dataset
from layerprobe.engines.base import PredictRequest

# The Estimator drops labels in PREDICT, so the probe input_fn carries them as features under this key.
LABEL_FEATURE = "__probe_label__"
SAMPLE_FEATURE = "__probe_in_sample__"  # (batch,) bool: the example is a candidate for the reservoir
INDEX_FEATURE = "__probe_index__"  # (batch,) int64: the example's stable key (data.keys)


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
    """Features of the split (or its shard) plus, as extra features, the label and, for the reservoir,
    each example's key and whether it is a candidate (the Estimator hands PREDICT no labels)."""
    label, k = request.label, request.reservoir

    def input_fn() -> Any:
        # One pass, no cache: a cache would only hold the whole split in memory and never be read again.
        ds = data.probe_dataset(
            request.split, batch_size=request.batch_size, max_examples=request.max_examples, shard=request.shard
        )
        if k:
            ranked = ds.map(lambda f, y, key: (f, y, key, _ranks(key, request.sample_seed)))
            ds = ranked.scan(tf.fill([k], tf.int64.max), _candidates)
        else:
            ds = ds.map(lambda f, y, key: (f, y))
        ds = ds.map(lambda f, y: f) if label is None else ds.map(lambda f, y: {**f, LABEL_FEATURE: y[label]})
        return ds.with_options(_NO_AUTOTUNE_MODEL)

    return input_fn


def _ranks(keys: Any, seed: int) -> Any:
    ranks = tf.numpy_function(lambda k: sample_rank(k, seed), [keys], tf.int64, stateful=False)
    return tf.ensure_shape(ranks, keys.shape)


def _candidates(kept: Any, batch: Any) -> tuple[Any, Any]:
    """Scan step: `kept` (k,) the smallest ranks so far. An example is a candidate when its rank is
    among the k smallest seen up to its batch, so every example of the final k smallest (over the
    split, or over any number of shards) is one; about k * (1 + ln(examples / k)) are sent to the host."""
    f, y, keys, ranks = batch
    k = tf.shape(kept)[0]
    smallest = -tf.math.top_k(-tf.concat([kept, ranks], 0), k, sorted=True).values
    features = {**f, SAMPLE_FEATURE: ranks <= smallest[-1], INDEX_FEATURE: keys}
    return smallest, (features, y)
