"""The Estimator contract: `model_fn(features, labels, mode)` for TRAIN / EVAL / PREDICT, nothing else.

PREDICT returns the outputs plus whatever the caller's `extra` callable derives from the built layers
(the probe session's summaries): the model_fn knows nothing of the probe.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from layerprobe._tf import tf
from layerprobe.engines.base import ExtraOutputs, ProbeFeed
from layerprobe.engines.estimator.inputs import INDEX_FEATURE, LABEL_FEATURE, SAMPLE_FEATURE
from layerprobe.engines.spec import Head, ModelSpec, check_output, metric_key
from layerprobe.graph import Graph, build
from layerprobe.graph.keys import variables
from layerprobe.graph.warm import WarmStart, init_from

ModeKeys = tf.estimator.ModeKeys
LOSS_TENSOR = "layerprobe_loss:0"  # the total loss, named so that training hooks can fetch it


def make_model_fn(
    spec: ModelSpec,
    on_build: Callable[[Graph], None] | None = None,
    extra: ExtraOutputs | None = None,
    warm_start: WarmStart | None = None,
) -> Callable[..., tf.estimator.EstimatorSpec]:
    """`on_build` sees the built graph (the layer table is read off it); `extra` adds PREDICT outputs;
    `warm_start` (trainer.warm_start) and the nested models' weights files give initial values."""

    def model_fn(
        features: Mapping[str, tf.Tensor], labels: Mapping[str, tf.Tensor] | None, mode: str
    ) -> tf.estimator.EstimatorSpec:
        # Keras initialisers draw from Python's `random` unless seeded here; the RunConfig graph
        # seed alone gave different checkpoints from run to run.
        tf.keras.utils.set_random_seed(spec.seed)
        inputs = {n: tf.cast(features[n], s["dtype"]) for n, s in spec.inputs.items()}
        graph = build(spec.layers, inputs, training=mode == ModeKeys.TRAIN, keras=tf.keras)
        if mode == ModeKeys.TRAIN:  # initial values only: a model_dir's own checkpoint restores over them
            layer_vars = {v.name.split(":")[0]: v for layer in graph.layers.values() for v in variables(layer)}
            for ws in [*graph.warm, *([warm_start] if warm_start else [])]:
                init_from(ws, layer_vars)
        if on_build is not None:
            on_build(graph)
        outputs = {n: graph.tensors[n] for n in spec.heads}

        if mode == ModeKeys.PREDICT:
            predictions: dict[str, tf.Tensor] = {n: graph.tensors[n] for n in (spec.raw or tuple(spec.heads))}
            if extra is not None:
                sample = (features[SAMPLE_FEATURE], features[INDEX_FEATURE]) if SAMPLE_FEATURE in features else None
                predictions.update(extra(graph.tensors, ProbeFeed(features.get(LABEL_FEATURE), sample)))
            export = {"serving_default": tf.estimator.export.PredictOutput({n: outputs[n] for n in outputs})}
            return tf.estimator.EstimatorSpec(mode, predictions=predictions, export_outputs=export)

        assert labels is not None, "TRAIN and EVAL input_fns return labels"
        loss = tf.constant(0.0)
        metrics: dict[str, Any] = {}
        for name, head in spec.heads.items():
            y = labels[head.label]
            loss += head.weight * _loss(name, head, y, outputs[name])
            for metric in head.metrics:
                metrics[metric_key(spec.heads, name, metric)] = _metric(metric, head, y, outputs[name])
        reg = [r for layer in graph.layers.values() for r in layer.losses]
        if reg:
            loss += tf.add_n(reg)
        loss = tf.identity(loss, name=LOSS_TENSOR.split(":")[0])

        if mode == ModeKeys.EVAL:
            return tf.estimator.EstimatorSpec(mode, loss=loss, eval_metric_ops=metrics)

        # Only trainable weights: `trainable: false` on a layer, block or nested model freezes it.
        var_list = [v for layer in graph.layers.values() for v in layer.trainable_weights]
        with tf.control_dependencies(graph.updates):
            step = tf.compat.v1.train.get_global_step()
            if var_list:
                train_op = _optimizer(spec).minimize(loss, global_step=step, var_list=var_list)
            else:  # everything frozen: training only counts steps (and runs the updates)
                train_op = tf.compat.v1.assign_add(step, 1)
        return tf.estimator.EstimatorSpec(mode, loss=loss, train_op=train_op)

    return model_fn


def _flat(t: tf.Tensor) -> tf.Tensor:
    return tf.reshape(tf.cast(t, tf.float32), [-1])


# config.names -> this engine's objects; the rule on output shapes is engines.spec.check_output
LOSSES: dict[str, Callable[[tf.Tensor, tf.Tensor], tf.Tensor]] = {
    "sparse_softmax_cross_entropy": lambda y, out: tf.compat.v1.losses.sparse_softmax_cross_entropy(
        tf.cast(y, tf.int32), out
    ),
    "sigmoid_cross_entropy": lambda y, out: tf.compat.v1.losses.sigmoid_cross_entropy(_flat(y), _flat(out)),
    "mean_squared_error": lambda y, out: tf.compat.v1.losses.mean_squared_error(_flat(y), _flat(out)),
}
METRICS: dict[str, Callable[[Head, tf.Tensor, tf.Tensor], Any]] = {
    "accuracy": lambda head, y, out: tf.compat.v1.metrics.accuracy(
        tf.cast(tf.reshape(y, [-1]), tf.int64), _predicted_class(head, out)
    ),
    "mean_absolute_error": lambda head, y, out: tf.compat.v1.metrics.mean_absolute_error(_flat(y), _flat(out)),
    "root_mean_squared_error": lambda head, y, out: tf.compat.v1.metrics.root_mean_squared_error(_flat(y), _flat(out)),
}
OPTIMIZERS: dict[str, Callable[[float], tf.compat.v1.train.Optimizer]] = {
    "adam": lambda lr: tf.compat.v1.train.AdamOptimizer(lr),
    "sgd": lambda lr: tf.compat.v1.train.GradientDescentOptimizer(lr),
    "momentum": lambda lr: tf.compat.v1.train.MomentumOptimizer(lr, momentum=0.9),
    "rmsprop": lambda lr: tf.compat.v1.train.RMSPropOptimizer(lr),
    "adagrad": lambda lr: tf.compat.v1.train.AdagradOptimizer(lr),
}


def _predicted_class(head: Head, out: tf.Tensor) -> tf.Tensor:
    if head.loss == "sparse_softmax_cross_entropy":
        return tf.argmax(out, axis=-1, output_type=tf.int64)
    return tf.cast(tf.reshape(out, [-1]) > 0, tf.int64)  # logits: > 0 is class 1


def _loss(name: str, head: Head, y: tf.Tensor, out: tf.Tensor) -> tf.Tensor:
    check_output(name, head, out.shape.as_list())
    return LOSSES[head.loss](y, out)


def _metric(metric: str, head: Head, y: tf.Tensor, out: tf.Tensor) -> Any:
    return METRICS[metric](head, y, out)


def _optimizer(spec: ModelSpec) -> tf.compat.v1.train.Optimizer:
    return OPTIMIZERS[spec.optimizer](spec.learning_rate)
