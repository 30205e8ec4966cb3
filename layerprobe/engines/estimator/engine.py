"""The Estimator engine: the config's Keras graph in a model_fn, trained by tf.estimator.Estimator."""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from layerprobe._tf import tf
from layerprobe.data.pipeline import dataset
from layerprobe.engines.base import (
    BatchSink,
    Checkpoint,
    EvaluationCallback,
    ExtraOutputs,
    ModelDirFiles,
    ModelSummary,
    PassReduction,
    PredictRequest,
    ProgressSink,
    layer_rows,
)
from layerprobe.engines.estimator.hooks import EvaluationListener, ProgressHook, SnapshotHook, StopBeforeFirstStep
from layerprobe.engines.estimator.inputs import eval_input_fn, predict_input_fn, train_input_fn
from layerprobe.engines.estimator.model_fn import ModeKeys, make_model_fn
from layerprobe.engines.estimator.predictor import CheckpointPredictor, CheckpointReducer, same_request, shared
from layerprobe.engines.estimator.strategies import run_config_kwargs, train_in_cluster
from layerprobe.engines.spec import ModelSpec
from layerprobe.errors import LayerprobeError
from layerprobe.graph import Graph
from layerprobe.graph.warm import from_trainer
from layerprobe.schema import DataConfig, TrainerConfig

log = logging.getLogger(__name__)


class EstimatorEngine(ModelDirFiles):
    """One model_dir trained and read by tf.estimator (TensorFlow 2.13-2.15)."""

    name = "estimator"

    def __init__(self, spec: ModelSpec, model_dir: str, trainer: TrainerConfig, data_cfg: DataConfig) -> None:
        self.spec, self.model_dir, self.trainer, self.data_cfg = spec, model_dir, trainer, data_cfg
        self._config_kwargs = dict(
            model_dir=model_dir,
            tf_random_seed=trainer.seed,
            save_checkpoints_steps=trainer.save_checkpoints_steps,
            save_summary_steps=trainer.log_every_steps,
            keep_checkpoint_max=trainer.keep_checkpoint_max,
            log_step_count_steps=trainer.log_every_steps,
        )
        self._cluster_kwargs: dict[str, Any] | None = None
        self.warm_start = from_trainer(trainer)  # the Estimator's WarmStartSettings would also warm global_step
        # The last (data, request, extra) predicted at an explicit checkpoint, and its graph.
        self._predictor: tuple[tuple[Any, PredictRequest, ExtraOutputs], CheckpointPredictor] | None = None
        # The graph of the last pass: later passes (the dynamics points, the probe of the whole split,
        # re-probes; the next trial of a sweep, through predictor.shared) restore into it.
        self._reducer: CheckpointReducer | None = None

    @property
    def config(self) -> tf.estimator.RunConfig:
        if self.trainer.deterministic:
            tf.config.experimental.enable_op_determinism()
        if self._cluster_kwargs is None:  # trainer.distribute: the strategy, CPU replicas (made once)
            self._cluster_kwargs = run_config_kwargs(self.trainer)
        return tf.estimator.RunConfig(**self._config_kwargs, **self._cluster_kwargs)

    def estimator(self, extra: ExtraOutputs | None = None) -> tf.estimator.Estimator:
        model_fn = make_model_fn(self.spec, extra=extra, warm_start=self.warm_start)
        return tf.estimator.Estimator(model_fn, config=self.config)

    def summary(self, data: Any, exposed: set[str]) -> ModelSummary:
        with tf.Graph().as_default():
            tf.compat.v1.set_random_seed(self.spec.seed)  # op determinism refuses unseeded random ops
            tf.compat.v1.train.get_or_create_global_step()
            spec_f, spec_l = dataset(data, "train", training=False, batch_size=2, seed=0, max_examples=2).element_spec
            # Placeholders under their own scopes: one named like a layer (a label `target` and an output
            # layer `target`) would take that layer's name scope and move its weights to `target_1/...`.
            feats = {n: tf.compat.v1.placeholder(s.dtype, s.shape, name=f"features/{n}") for n, s in spec_f.items()}
            labels = {n: tf.compat.v1.placeholder(s.dtype, s.shape, name=f"labels/{n}") for n, s in spec_l.items()}
            built: list[Graph] = []
            make_model_fn(self.spec, on_build=built.append, warm_start=self.warm_start)(feats, labels, ModeKeys.TRAIN)
            return ModelSummary(layer_rows(built[0], exposed), tuple(built[0].warm))

    def train(
        self,
        data: Any,
        until_step: int,
        progress: ProgressSink | None = None,
        on_evaluation: EvaluationCallback | None = None,
        snapshots: Sequence[int] = (),
    ) -> int:
        from layerprobe.distributed import role

        t = self.trainer
        progress_hook = ProgressHook(t.log_every_steps, until_step, flush=progress)
        hooks: list[Any] = [progress_hook]
        train_fn = train_input_fn(data, self.data_cfg, t.seed)
        est = self.estimator()
        # The meter hands its records on when training ends in any way: on Ctrl-C no hook's `end` runs.
        with progress_hook.meter:
            if role().in_cluster:
                train_in_cluster(est, train_fn, eval_input_fn(data, self.data_cfg), until_step, hooks)
            else:
                evaluate = functools.partial(self.evaluate, data, "eval")  # (checkpoint path) -> metrics
                listeners = (
                    [EvaluationListener(evaluate, on_evaluation, self.model_dir, until_step)] if on_evaluation else []
                )
                if snapshots:
                    Path(self.snapshot_dir).mkdir(parents=True, exist_ok=True)
                    hooks.append(SnapshotHook(set(snapshots), self.snapshot_dir))
                if until_step == 0:  # the Estimator refuses max_steps=0; the hook stops before step 1
                    hooks.append(StopBeforeFirstStep())
                est.train(train_fn, max_steps=max(until_step, 1), hooks=hooks, saving_listeners=listeners)
        return int(est.get_variable_value("global_step"))

    def evaluate(self, data: Any, split: str = "eval", checkpoint: str | None = None) -> dict[str, float]:
        steps = self.trainer.eval_steps
        result = self.estimator().evaluate(
            eval_input_fn(data, self.data_cfg, split), steps=steps, checkpoint_path=checkpoint
        )
        return {k: float(v) for k, v in result.items()}

    def predict(
        self, data: Any, request: PredictRequest, extra: ExtraOutputs, checkpoint: str | None = None
    ) -> Iterator[dict[str, np.ndarray]]:
        if checkpoint is not None:  # several checkpoints of one request: one graph, restored for each
            key = (data, request, extra)
            if self._predictor is None or not same_request(self._predictor[0], key):
                self._predictor = (key, CheckpointPredictor(self.spec, data, request, extra, self.config))
            yield from self._predictor[1].run(checkpoint)
            return
        # `yield_single_examples=False`: each item is one batch's outputs, so the host loop runs once
        # per batch and never per example.
        est = self.estimator(extra)
        yield from est.predict(predict_input_fn(data, request), yield_single_examples=False, checkpoint_path=checkpoint)

    def reduce(
        self,
        data: Any,
        request: PredictRequest,
        reduction: PassReduction,
        on_batch: BatchSink,
        checkpoint: str | None = None,
    ) -> dict[str, np.ndarray]:
        path = checkpoint or tf.train.latest_checkpoint(self.model_dir)
        if path is None:
            raise LayerprobeError(f"model_dir {self.model_dir} holds no checkpoint: train first")
        reducer, config = self._reducer, self.config
        if reducer is None or not (reducer.fits(self.spec, reduction, config) and reducer.serves(data, request)):
            self._reducer = reducer = shared(self.spec, data, request, reduction, config)
        return reducer.run(path, data, request, on_batch)

    def export(self, export_base: str, checkpoint: str | None = None) -> str:
        spec = self.spec

        def receiver() -> Any:  # called by the Estimator inside its own graph
            placeholders = {
                n: tf.compat.v1.placeholder(s["dtype"], [None, *s["shape"]], name=n) for n, s in spec.inputs.items()
            }
            return tf.estimator.export.ServingInputReceiver(placeholders, placeholders)

        est = tf.estimator.Estimator(make_model_fn(spec), model_dir=self.model_dir)
        return est.export_saved_model(export_base, receiver, checkpoint_path=checkpoint).decode()

    def variable_names(self, checkpoint: Checkpoint) -> set[str]:
        return {name for name, _ in tf.train.list_variables(checkpoint.path)}
