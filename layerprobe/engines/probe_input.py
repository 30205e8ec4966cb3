"""The data source's pipelines as every engine reads them: the train and eval batches the config
asks for, and the probe's pass over a split (batches of (features, labels, keys) and, for the
reservoir, which examples are candidates). Plain tf.data; no engine API."""

from __future__ import annotations

from typing import Any

from layerprobe._tf import tf
from layerprobe.data.keys import sample_rank
from layerprobe.engines.base import PredictRequest
from layerprobe.schema import DataConfig


def one_pass_options() -> Any:
    """tf.data options without the autotuning model's thread, for one-pass reads (evaluate, predict).

    Destroying an iterator waits for that thread, which sleeps out its current optimisation period
    (seconds, growing) before it sees the cancellation: Session.close stalled 0.6-10 s after a third
    of the probe predicts over a generator-fed split (gdb: the main thread in ~RootDataset::Iterator,
    the model thread in Model::OptimizeLoop). AUTOTUNE map parallelism then means one call per core;
    prefetch keeps its own buffer autotuner."""
    options = tf.data.Options()
    options.autotune.enabled = False
    return options


def train_batches(data: Any, data_cfg: DataConfig, seed: int) -> Any:
    """(features, labels) batches of the train split: shuffled with `seed`, repeated, as data.* says."""
    return data.tf_dataset(
        "train",
        training=True,
        batch_size=data_cfg.batch_size,
        seed=seed,
        shuffle_buffer=data_cfg.shuffle_buffer,
        cache=data_cfg.cache,
        prefetch=data_cfg.prefetch,
    )


def eval_batches(data: Any, data_cfg: DataConfig, split: str) -> Any:
    """(features, labels) batches of `split` in order, one pass."""
    ds = data.tf_dataset(split, training=False, batch_size=data_cfg.batch_size, seed=0, cache=data_cfg.cache)
    return ds.with_options(one_pass_options())


def probe_batches(data: Any, request: PredictRequest) -> Any:
    """(features, labels, keys, candidate) batches of the request's split or shard, in order; one
    pass, so never cached. `candidate` (batch,) bool is all False without a reservoir."""
    ds = data.probe_dataset(
        request.split, batch_size=request.batch_size, max_examples=request.max_examples, shard=request.shard
    )
    k = request.reservoir
    if not k:
        return ds.map(lambda f, y, key: (f, y, key, tf.zeros_like(key, tf.bool)))
    ranked = ds.map(lambda f, y, key: (f, y, key, _ranks(key, request.sample_seed)))
    return ranked.scan(tf.fill([k], tf.int64.max), _candidates)


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
    return smallest, (f, y, keys, ranks <= smallest[-1])
