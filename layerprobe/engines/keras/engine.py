"""The Keras engine: the config's model compiled as a Keras 3 functional model and trained with `fit`."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from layerprobe._tf import tf
from layerprobe.engines.base import (
    BatchSink,
    Checkpoint,
    EvaluationCallback,
    ExtraOutputs,
    ModelDirFiles,
    ModelSummary,
    PassReduction,
    PredictRequest,
    ProbeFeed,
    ProgressSink,
    layer_rows,
)
from layerprobe.engines.interrupt import deferred_interrupt
from layerprobe.engines.keras import checkpoints as ckpt
from layerprobe.engines.keras.callbacks import Checkpoints, Progress, StepBoundary
from layerprobe.engines.keras.inputs import eval_dataset, fit_dataset, predict_dataset
from layerprobe.engines.keras.model import build_model, compile_model, metric_of, total_loss
from layerprobe.engines.spec import ModelSpec, metric_key
from layerprobe.errors import LayerprobeError
from layerprobe.graph import Graph
from layerprobe.graph.keys import model_weight_keys, variables
from layerprobe.graph.warm import assign_from, from_trainer
from layerprobe.schema import DataConfig, TrainerConfig

log = logging.getLogger(__name__)


class KerasEngine(ModelDirFiles):
    """One model_dir trained by Keras 3 `fit` (TensorFlow >= 2.16), checkpointed in the Estimator's format."""

    name = "keras"

    def __init__(self, spec: ModelSpec, model_dir: str, trainer: TrainerConfig, data_cfg: DataConfig) -> None:
        self.spec, self.model_dir, self.trainer, self.data_cfg = spec, model_dir, trainer, data_cfg
        self._built: tuple[Any, Graph, ckpt.Saver] | None = None
        self._predict_fns: dict[Any, Any] = {}

    def _model(self) -> tuple[Any, Graph, ckpt.Saver]:
        """The compiled model (built once per engine), its graph and its checkpoint saver."""
        if self._built is None:
            if self.trainer.deterministic:
                tf.config.experimental.enable_op_determinism()
            model, graph = build_model(self.spec, keras)
            compile_model(model, self.spec, keras)
            self._built = (model, graph, ckpt.Saver(model, self.model_dir, self.trainer.keep_checkpoint_max))
        return self._built

    def _at(self, checkpoint: str | None) -> tuple[Any, Graph, int]:
        """The model with the weights of `checkpoint` (default: the latest) and that checkpoint's step."""
        model, graph, _ = self._model()
        path = checkpoint or tf.train.latest_checkpoint(self.model_dir)
        if path is None:
            raise LayerprobeError(f"model_dir {self.model_dir} holds no checkpoint: train first")
        ckpt.restore_weights(model, path)
        return model, graph, int(tf.train.load_variable(path, "global_step"))

    def summary(self, data: Any, exposed: set[str]) -> ModelSummary:
        model, graph = build_model(self.spec, keras)  # a throwaway model: nothing touches model_dir
        self._warm_start(graph)  # a weights file or warm-start source that does not fit stops here
        rows = layer_rows(graph, exposed)
        del model
        return ModelSummary(rows, tuple(graph.warm))

    def _warm_start(self, graph: Graph, level: int = logging.DEBUG) -> None:
        """Initial values of the nested models' weights files and trainer.warm_start (in that order,
        as the Estimator engine applies them); a model_dir's own checkpoint restores over them."""
        keys = model_weight_keys(graph.layers.values())
        layer_vars = {keys[id(v)]: v for layer in graph.layers.values() for v in variables(layer)}
        for ws in [*graph.warm, *filter(None, [from_trainer(self.trainer)])]:
            assigned = assign_from(ws, layer_vars)
            log.log(level, "warm start: %d variables from %s", len(assigned), ws.source)

    def train(
        self,
        data: Any,
        until_step: int,
        progress: ProgressSink | None = None,
        on_evaluation: EvaluationCallback | None = None,
        snapshots: Sequence[int] = (),
    ) -> int:
        model, _, saver = self._model()
        latest = tf.train.latest_checkpoint(self.model_dir)
        if latest is not None:  # resume: weights, optimizer state and global_step
            saver.restore(latest)
        else:
            self._warm_start(self._model()[1], logging.INFO)
        start = int(model.optimizer.iterations.numpy())
        if start >= until_step:
            if latest is None:  # trained to step 0 (trainer.train_steps=0): the initialised model
                saver.save(start)
            return start
        t = self.trainer
        keras.utils.set_random_seed(t.seed)  # dropout and other random ops of this fit call
        progress_callback = Progress(t.log_every_steps, start, until_step, progress, self.model_dir)
        boundary = StepBoundary()  # a Ctrl-C stops training between two steps
        callbacks = [
            boundary,
            progress_callback,
            Checkpoints(
                saver,
                t.save_checkpoints_steps,
                start,
                until_step,
                (lambda step, path: bool(on_evaluation(step, self.evaluate(data, "eval", path))))
                if on_evaluation
                else None,
                snapshots,
                self.snapshot_dir,
            ),
        ]
        ds = fit_dataset(self.spec, data, self.data_cfg, t.seed)
        # shuffle=False: the data source shuffles (seeded); fit would only warn that it ignores True
        with deferred_interrupt() as boundary.check, progress_callback:
            model.fit(ds, epochs=1, steps_per_epoch=until_step - start, callbacks=callbacks, verbose=0, shuffle=False)
        return int(model.optimizer.iterations.numpy())

    def evaluate(self, data: Any, split: str = "eval", checkpoint: str | None = None) -> dict[str, float]:
        """Loss (mean over batches) and the heads' metrics (over examples), keyed as the Estimator keys them."""
        model, _, step = self._at(checkpoint)
        spec = self.spec
        metrics = {
            metric_key(spec.heads, n, m): (n, h.label, metric_of(m, h, keras))
            for n, h in spec.heads.items()
            for m in h.metrics
        }
        loss_mean = keras.metrics.Mean()

        @tf.function(reduce_retracing=True)
        def one_batch(features: Any, labels: Any) -> None:
            outputs = model(features, training=False)
            loss_mean.update_state(total_loss(model, spec, keras, outputs, labels))
            for head, label, metric in metrics.values():
                metric.update_state(labels[label], outputs[head])

        ds = eval_dataset(spec, data, self.data_cfg, split)
        if self.trainer.eval_steps:
            ds = ds.take(self.trainer.eval_steps)
        for features, labels in ds:
            one_batch(features, labels)
        result = {key: float(m.result()) for key, (_, _, m) in metrics.items()}
        return {"loss": float(loss_mean.result()), **result, "global_step": float(step)}

    def predict(
        self, data: Any, request: PredictRequest, extra: ExtraOutputs, checkpoint: str | None = None
    ) -> Iterator[dict[str, np.ndarray]]:
        model, graph, _ = self._at(checkpoint)
        ds = predict_dataset(self.spec, data, request)
        fn = self._predict_fn(graph, extra, request.label is not None, request.reservoir > 0, ds.element_spec)
        for features, label, sample in ds:
            yield {k: v.numpy() for k, v in fn(features, label, sample).items()}

    def _predict_fn(self, graph: Graph, extra: ExtraOutputs, labelled: bool, sampled: bool, signature: Any) -> Any:
        """A tf.function: a sub-model of every layer's output and, on those tensors, `extra`'s outputs.

        Traced once for the dataset's element spec (batch dimension None, so the last, smaller batch
        needs no second trace: tracing the summaries of three conv layers took ~3 s) and kept per
        (extra, feed, spec): probing checkpoint after checkpoint, or in a new probe session whose
        outputs equal the last one's (SummaryOutputs of the same specs), traces once."""
        key = (extra, labelled, sampled, repr(signature))
        if key not in self._predict_fns:
            self._predict_fns[key] = tf.function(
                self._batch_outputs(graph, extra, labelled, sampled), input_signature=list(signature)
            )
        return self._predict_fns[key]

    def _batch_outputs(self, graph: Graph, extra: ExtraOutputs, labelled: bool, sampled: bool) -> Any:
        """(features, label, sample) -> the raw outputs and `extra`'s, on a sub-model of every layer's
        output (a nested model's inner layers too, `backbone/block_3_expand_relu`: what nothing
        fetches, the tf.function prunes)."""
        inputs = {n: graph.tensors[n] for n in self.spec.inputs}
        sub = keras.Model(inputs, {n: graph.tensors[n] for n in [*graph.layers, *graph.inner]})
        raw = self.spec.raw or tuple(self.spec.heads)

        def outputs(features: Any, label: Any, sample: Any) -> dict[str, Any]:
            tensors = {**features, **sub(features, training=False)}
            out = {n: tensors[n] for n in raw}
            out.update(extra(tensors, ProbeFeed(label if labelled else None, sample if sampled else None)))
            return out

        return outputs

    def reduce(
        self,
        data: Any,
        request: PredictRequest,
        reduction: PassReduction,
        on_batch: BatchSink,
        checkpoint: str | None = None,
    ) -> dict[str, np.ndarray]:
        model, graph, _ = self._at(checkpoint)
        ds = predict_dataset(self.spec, data, request)
        fn, state = self._reduce_fn(graph, reduction, request.label is not None, request.reservoir > 0, ds.element_spec)
        for variable, initial in state.values():
            variable.assign(initial)
        for features, label, sample in ds:
            on_batch({k: v.numpy() for k, v in fn(features, label, sample).items()})
        return {k: variable.numpy() for k, (variable, _) in state.items()}

    def _reduce_fn(
        self, graph: Graph, reduction: PassReduction, labelled: bool, sampled: bool, signature: Any
    ) -> tuple[Any, dict[str, tuple[Any, np.ndarray]]]:
        """A tf.function of one batch that folds `reduction`'s outputs into variables (made at the
        first trace, from the outputs' static shapes) and returns only the host outputs; kept as
        _predict_fn keeps its functions, with its (variable, initial value) pairs."""
        key = ("reduce", reduction, labelled, sampled, repr(signature))
        if key not in self._predict_fns:
            outputs_of = self._batch_outputs(graph, reduction.outputs, labelled, sampled)
            state: dict[str, tuple[Any, np.ndarray]] = {}

            @tf.function(input_signature=list(signature))
            def fn(features: Any, label: Any, sample: Any) -> dict[str, Any]:
                outputs = outputs_of(features, label, sample)
                if not state:  # the first trace makes the variables, outside the function's graph
                    with tf.init_scope():
                        for k, initial in reduction.initial(outputs).items():
                            state[k] = (tf.Variable(initial, trainable=False), initial)
                after, host = reduction.fold({k: v.read_value() for k, (v, _) in state.items()}, outputs)
                for k, (variable, _) in state.items():
                    variable.assign(after[k])
                return host

            fn.get_concrete_function()  # trace now: the variables exist before the first reset
            self._predict_fns[key] = (fn, state)
        return self._predict_fns[key]  # type: ignore[no-any-return]

    def export(self, export_base: str, checkpoint: str | None = None) -> str:
        model, _, _ = self._at(checkpoint)
        path = Path(export_base) / str(int(time.time()))
        model.export(str(path), format="tf_saved_model", verbose=False)
        return str(path)

    def variable_names(self, checkpoint: Checkpoint) -> set[str]:
        return {name for name, _ in tf.train.list_variables(checkpoint.path)}
