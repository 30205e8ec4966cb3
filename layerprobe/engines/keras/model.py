"""The config's model as a compiled Keras 3 functional model: layers from graph.build, the heads'
losses and metrics, the optimizer. The names mean what they mean in the Estimator engine's model_fn."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from layerprobe._tf import tf
from layerprobe.engines.spec import Head, ModelSpec, check_output
from layerprobe.graph import Graph, build


def build_model(spec: ModelSpec, keras: Any) -> tuple[Any, Graph]:
    """The functional model (outputs: {output layer: tensor}) and its built graph.

    Seeded before the layers exist: Keras initialisers draw their seeds when they are created."""
    keras.utils.set_random_seed(spec.seed)
    inputs = {n: keras.Input(tuple(s["shape"]), name=n, dtype=s["dtype"]) for n, s in spec.inputs.items()}
    # training=None: each layer follows the model's own call (fit: training, predict: inference), so
    # BatchNorm and Dropout behave as in the Estimator engine's TRAIN and PREDICT graphs.
    graph = build(spec.layers, inputs, training=None, keras=keras)  # type: ignore[arg-type]
    for name, head in spec.heads.items():
        check_output(name, head, list(graph.tensors[name].shape))
    model = keras.Model(inputs, {n: graph.tensors[n] for n in spec.heads}, name="layerprobe")
    return model, graph


# config.names -> this engine's objects; the rule on output shapes is engines.spec.check_output
LOSSES: dict[str, Callable[[Any], Any]] = {
    "sparse_softmax_cross_entropy": lambda keras: keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    "sigmoid_cross_entropy": lambda keras: keras.losses.BinaryCrossentropy(from_logits=True),
    "mean_squared_error": lambda keras: keras.losses.MeanSquaredError(),
}
# Fresh metric objects, named as the Estimator engine names its metrics.
METRICS: dict[str, Callable[[Head, Any], Any]] = {
    "accuracy": lambda head, keras: (
        keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        if head.loss == "sparse_softmax_cross_entropy"
        else keras.metrics.BinaryAccuracy(name="accuracy", threshold=0.0)  # logits: > 0 is class 1
    ),
    "mean_absolute_error": lambda head, keras: keras.metrics.MeanAbsoluteError(name="mean_absolute_error"),
    "root_mean_squared_error": lambda head, keras: keras.metrics.RootMeanSquaredError(name="root_mean_squared_error"),
}
# epsilon and rho as tf.compat.v1.train's, so both engines take the same steps from the same weights.
OPTIMIZERS: dict[str, Callable[[float, Any], Any]] = {
    "adam": lambda lr, keras: keras.optimizers.Adam(lr, epsilon=1e-8),
    "sgd": lambda lr, keras: keras.optimizers.SGD(lr),
    "momentum": lambda lr, keras: keras.optimizers.SGD(lr, momentum=0.9),
    "rmsprop": lambda lr, keras: keras.optimizers.RMSprop(lr, rho=0.9, epsilon=1e-10),
    "adagrad": lambda lr, keras: keras.optimizers.Adagrad(lr, initial_accumulator_value=0.1),
}


def loss_of(head: Head, keras: Any) -> Any:
    return LOSSES[head.loss](keras)


def metric_of(metric: str, head: Head, keras: Any) -> Any:
    return METRICS[metric](head, keras)


def optimizer_of(spec: ModelSpec, keras: Any) -> Any:
    return OPTIMIZERS[spec.optimizer](spec.learning_rate, keras)


def compile_model(model: Any, spec: ModelSpec, keras: Any) -> None:
    """Losses and weights per head, the heads' metrics, the optimizer; eager-free and without XLA
    (jit_compile="auto" would compile on CPU: slower to start and other numbers than the Estimator)."""
    model.compile(
        optimizer=optimizer_of(spec, keras),
        loss={n: loss_of(h, keras) for n, h in spec.heads.items()},
        loss_weights={n: h.weight for n, h in spec.heads.items()},
        metrics={n: [metric_of(m, h, keras) for m in h.metrics] for n, h in spec.heads.items()},
        jit_compile=False,
    )
    model.optimizer.build(model.trainable_variables)  # slots exist before a checkpoint is restored into them


def total_loss(model: Any, spec: ModelSpec, keras: Any, outputs: Any, labels: Any) -> Any:
    """Sum of weight x head loss (labels by label name) plus the layers' regularisation losses."""
    loss = tf.constant(0.0)
    for name, head in spec.heads.items():
        loss += head.weight * loss_of(head, keras)(labels[head.label], outputs[name])
    if model.losses:
        loss += tf.add_n(model.losses)
    return loss
