"""RunConfig, Estimator, train / evaluate, and the streaming predict phase that feeds the probe."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from layerprobe._tf import tf
from layerprobe.data.pipeline import PreparedData, dataset
from layerprobe.errors import TrainingDiverged
from layerprobe.graph import Graph
from layerprobe.model_fn import (
    INDEX_FEATURE,
    LABEL_FEATURE,
    LOSS_TENSOR,
    SAMPLE_FEATURE,
    ModeKeys,
    ModelSpec,
    make_model_fn,
)
from layerprobe.probe.accumulate import LayerAccumulator, LayerStats

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LayerRow:
    name: str
    type: str
    output_shape: list[Any]  # per example
    params: int
    exposed: bool
    weight_names: tuple[str, ...] = ()  # checkpoint keys, e.g. conv1/kernel


@dataclass(frozen=True)
class ModelSummary:
    rows: list[LayerRow]

    @property
    def total_params(self) -> int:
        return sum(r.params for r in self.rows)

    def shape_of(self, layer: str) -> list[Any]:
        return next(r.output_shape for r in self.rows if r.name == layer)

    def table(self) -> str:
        lines = [f"{'layer':<16} {'type':<24} {'output shape':<20} {'params':>10}  exposed"]
        for r in self.rows:
            shape = str(tuple(r.output_shape))
            lines.append(f"{r.name:<16} {r.type:<24} {shape:<20} {r.params:>10}  {'yes' if r.exposed else ''}")
        lines.append(f"total parameters: {self.total_params}")
        return "\n".join(lines)


def dry_run(spec: ModelSpec, data: PreparedData, exposed: set[str]) -> ModelSummary:
    """Build the TRAIN graph once in a scratch graph: shape and loss errors surface before any
    model_dir is written, and the layer table comes for free."""
    with tf.Graph().as_default():
        tf.compat.v1.set_random_seed(spec.seed)  # op determinism refuses unseeded random ops
        tf.compat.v1.train.get_or_create_global_step()
        spec_f, spec_l = dataset(data, "train", training=False, batch_size=2, seed=0, max_examples=2).element_spec
        feats = {n: tf.compat.v1.placeholder(s.dtype, s.shape, name=n) for n, s in spec_f.items()}
        labels = {n: tf.compat.v1.placeholder(s.dtype, s.shape, name=n) for n, s in spec_l.items()}
        built: list[Graph] = []
        make_model_fn(spec, on_build=built.append)(feats, labels, ModeKeys.TRAIN)
        graph = built[0]
        rows = []
        for name, layer in graph.layers.items():
            params = int(sum(np.prod(w.shape) for w in layer.weights))
            shape = graph.tensors[name].shape.as_list()[1:]
            weights = tuple(w.name.split(":")[0] for w in layer.weights)
            rows.append(LayerRow(name, type(layer).__name__, shape, params, name in exposed, weights))
    return ModelSummary(rows)


def make_estimator(spec: ModelSpec, model_dir: str, trainer: Mapping[str, Any]) -> tf.estimator.Estimator:
    from layerprobe.distributed import run_config_kwargs

    if trainer.get("deterministic", True):
        tf.config.experimental.enable_op_determinism()
    config = tf.estimator.RunConfig(
        model_dir=model_dir,
        tf_random_seed=trainer["seed"],
        save_checkpoints_steps=trainer["save_checkpoints_steps"],
        save_summary_steps=trainer["log_every_steps"],
        keep_checkpoint_max=trainer["keep_checkpoint_max"],
        log_step_count_steps=trainer["log_every_steps"],
        **run_config_kwargs(trainer),  # trainer.distribute: the strategy, CPU replicas
    )
    return tf.estimator.Estimator(make_model_fn(spec), config=config)


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


def train_input_fn(data: PreparedData, data_cfg: Mapping[str, Any], seed: int) -> Callable[[], Any]:
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


def eval_input_fn(data: PreparedData, data_cfg: Mapping[str, Any], split: str = "eval") -> Callable[[], Any]:
    return lambda: dataset(
        data, split, training=False, batch_size=data_cfg["batch_size"], seed=0, cache=data_cfg["cache"]
    ).with_options(_NO_AUTOTUNE_MODEL)


class ProgressHook(tf.estimator.SessionRunHook):
    """Every `every` steps: a progress line (step, loss, steps/s, ETA) and a record of train/loss and
    train/steps_per_sec, handed to `flush` in batches (never one logging call per step)."""

    def __init__(
        self,
        every: int,
        total_steps: int,
        flush: Callable[[list[tuple[dict[str, float], int]]], None] | None = None,
        flush_every: int = 20,
    ) -> None:
        self.every = every
        self.total = total_steps
        self.flush_fn = flush
        self.flush_every = flush_every
        self.records: list[tuple[dict[str, float], int]] = []

    def begin(self) -> None:
        self.loss = tf.compat.v1.get_default_graph().get_tensor_by_name(LOSS_TENSOR)
        self.step = tf.compat.v1.train.get_global_step()
        self.last: tuple[int, float] | None = None
        self.current = 0

    def after_create_session(self, session: Any, coord: Any) -> None:
        self.current = int(session.run(self.step))

    def before_run(self, run_context: Any) -> Any:
        return tf.estimator.SessionRunArgs({"loss": self.loss, "step": self.step})

    def after_run(self, run_context: Any, run_values: Any) -> None:
        # The global step fetched beside the train op is read before or after its increment (no
        # order between them), so it alone gives one step twice now and then. Each run is one step
        # of this worker; other workers (parameter servers) can only move the step further.
        self.current = max(self.current + 1, int(run_values.results["step"]))
        step, loss = self.current, float(run_values.results["loss"])
        if not np.isfinite(loss):
            raise TrainingDiverged(
                f"training loss became {loss} at global step {step}; the last checkpoint is kept. "
                "Lower trainer.optimizer.learning_rate or check the data for NaN/Inf"
            )
        now = time.perf_counter()
        if self.last is None:
            self.last = (step, now)
            return
        if step % self.every and step < self.total:
            return
        rate = (step - self.last[0]) / max(now - self.last[1], 1e-9)
        self.last = (step, now)
        eta = (self.total - step) / rate if rate > 0 else float("nan")
        log.info("train step %d/%d  loss %.4f  %.1f steps/s  ETA %.0fs", step, self.total, loss, rate, eta)
        self.records.append(({"train/loss": loss, "train/steps_per_sec": rate}, step))
        if len(self.records) >= self.flush_every:
            self._flush()

    def end(self, session: Any) -> None:
        self._flush()

    def _flush(self) -> None:
        if self.records and self.flush_fn is not None:
            self.flush_fn(self.records)
        self.records = []


def train(est: tf.estimator.Estimator, input_fn: Callable[[], Any], steps: int, hooks: list | None = None) -> int:
    """Train up to global step `steps`; a model_dir that is already there resumes. Returns the step."""
    est.train(input_fn, max_steps=steps, hooks=hooks or [])
    return int(est.get_variable_value("global_step"))


def export_saved_model(spec: ModelSpec, model_dir: str, export_base: str) -> str:
    """Export the latest checkpoint as a SavedModel serving the outputs; returns its directory."""

    def receiver() -> Any:  # called by the Estimator inside its own graph
        placeholders = {
            n: tf.compat.v1.placeholder(s.get("dtype", "float32"), [None, *s["shape"]], name=n)
            for n, s in spec.inputs.items()
        }
        return tf.estimator.export.ServingInputReceiver(placeholders, placeholders)

    est = tf.estimator.Estimator(make_model_fn(spec), model_dir=model_dir)
    return est.export_saved_model(export_base, receiver).decode()


def evaluate(est: tf.estimator.Estimator, input_fn: Callable[[], Any], steps: int | None = None) -> dict[str, float]:
    result = est.evaluate(input_fn, steps=steps)
    return {k: float(v) for k, v in result.items()}


def probe_input_fn(
    data: PreparedData,
    split: str,
    batch_size: int,
    label: str | None,
    max_examples: int | None,
    sample: np.ndarray | None = None,
) -> Callable[[], Any]:
    """Features of the probed split plus, as extra features, the label and the reservoir sample mask
    (the Estimator hands PREDICT no labels)."""

    def input_fn() -> Any:
        # One pass: a cache would only hold the whole split in memory and never be read again.
        ds = dataset(data, split, training=False, batch_size=batch_size, seed=0, max_examples=max_examples, cache=False)
        if sample is not None:  # not shuffled: the i-th example of the split is example i
            extra = tf.data.Dataset.from_tensor_slices((sample, np.arange(len(sample), dtype=np.int64)))
            ds = tf.data.Dataset.zip((ds, extra.batch(batch_size)))
            ds = ds.map(lambda fy, s: ({**fy[0], SAMPLE_FEATURE: s[0], INDEX_FEATURE: s[1]}, fy[1]))
        ds = ds.map(lambda f, y: f) if label is None else ds.map(lambda f, y: {**f, LABEL_FEATURE: y[label]})
        return ds.with_options(_NO_AUTOTUNE_MODEL)

    return input_fn


def stream_probe(
    est: tf.estimator.Estimator,
    input_fn: Callable[[], Any],
    accumulators: Mapping[str, LayerAccumulator],
    checkpoint_path: str | None = None,
) -> int:
    """One pass of batch-level predictions into the accumulators; returns the number of batches.

    `yield_single_examples=False`: each item is one batch's summaries, so the host loop runs once
    per batch and never per example.
    """
    batches = 0
    for item in est.predict(input_fn, yield_single_examples=False, checkpoint_path=checkpoint_path):
        per_layer: dict[str, dict[str, np.ndarray]] = {name: {} for name in accumulators}
        for key, value in item.items():
            layer, _, stat = key.partition("/")
            if layer in per_layer and stat:
                per_layer[layer][stat] = value
        for name, acc in accumulators.items():
            acc.update(per_layer[name])
        batches += 1
    return batches


def collect_stats(accumulators: Mapping[str, LayerAccumulator], summary: ModelSummary) -> dict[str, LayerStats]:
    return {name: acc.result(summary.shape_of(name)) for name, acc in accumulators.items()}
