"""The config's model as a compiled Keras 3 functional model: layers from graph.build, the heads'
losses and metrics, the optimizer. The names mean what they mean in the Estimator engine's model_fn."""

from __future__ import annotations

from typing import Any

from layerprobe._tf import tf
from layerprobe.engines.spec import Head, ModelSpec
from layerprobe.errors import ConfigError
from layerprobe.graph import Graph, build


def build_model(spec: ModelSpec, keras: Any) -> tuple[Any, Graph]:
    """The functional model (outputs: {output layer: tensor}) and its built graph.

    Seeded before the layers exist: Keras initialisers draw their seeds when they are created."""
    keras.utils.set_random_seed(spec.seed)
    inputs = {
        n: keras.Input(tuple(s["shape"]), name=n, dtype=s.get("dtype", "float32")) for n, s in spec.inputs.items()
    }
    # training=None: each layer follows the model's own call (fit: training, predict: inference), so
    # BatchNorm and Dropout behave as in the Estimator engine's TRAIN and PREDICT graphs.
    graph = build(spec.layers, inputs, training=None, keras=keras)  # type: ignore[arg-type]
    for name, head in spec.heads.items():
        check_head(name, head, list(graph.tensors[name].shape))
    model = keras.Model(inputs, {n: graph.tensors[n] for n in spec.heads}, name="layerprobe")
    return model, graph


def check_head(name: str, head: Head, shape: list[Any]) -> None:
    """The loss must fit the output's shape (the same rule as the Estimator engine's)."""
    path = f"model.outputs.{name}.loss"
    if head.loss == "sparse_softmax_cross_entropy":
        if len(shape) != 2:
            raise ConfigError(path, head.loss, f"needs an output of shape (batch, classes); {name} gives {shape}")
    elif shape[-1] != 1 and len(shape) > 1:
        raise ConfigError(path, head.loss, f"needs one output value per example; {name} gives {shape}")


def loss_of(head: Head, keras: Any) -> Any:
    if head.loss == "sparse_softmax_cross_entropy":
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    if head.loss == "sigmoid_cross_entropy":
        return keras.losses.BinaryCrossentropy(from_logits=True)
    return keras.losses.MeanSquaredError()


def metric_of(metric: str, head: Head, keras: Any) -> Any:
    """A fresh metric object named as the Estimator engine names the metric."""
    if metric == "accuracy":
        if head.loss == "sparse_softmax_cross_entropy":
            return keras.metrics.SparseCategoricalAccuracy(name=metric)
        return keras.metrics.BinaryAccuracy(name=metric, threshold=0.0)  # logits: > 0 is class 1
    if metric == "mean_absolute_error":
        return keras.metrics.MeanAbsoluteError(name=metric)
    return keras.metrics.RootMeanSquaredError(name=metric)


def optimizer_of(spec: ModelSpec, keras: Any) -> Any:
    # epsilon and rho as tf.compat.v1.train's, so both engines take the same steps from the same weights.
    lr = spec.learning_rate
    return {
        "adam": lambda: keras.optimizers.Adam(lr, epsilon=1e-8),
        "sgd": lambda: keras.optimizers.SGD(lr),
        "momentum": lambda: keras.optimizers.SGD(lr, momentum=0.9),
        "rmsprop": lambda: keras.optimizers.RMSprop(lr, rho=0.9, epsilon=1e-10),
        "adagrad": lambda: keras.optimizers.Adagrad(lr, initial_accumulator_value=0.1),
    }[spec.optimizer]()


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


def metric_key(spec: ModelSpec, head_name: str, metric: str) -> str:
    """`accuracy` for one head, `<head>/accuracy` for several (the Estimator engine's keys)."""
    return metric if len(spec.heads) == 1 else f"{head_name}/{metric}"


def total_loss(model: Any, spec: ModelSpec, keras: Any, outputs: Any, labels: Any) -> Any:
    """Sum of weight x head loss (labels by label name) plus the layers' regularisation losses."""
    loss = tf.constant(0.0)
    for name, head in spec.heads.items():
        loss += head.weight * loss_of(head, keras)(labels[head.label], outputs[name])
    if model.losses:
        loss += tf.add_n(model.losses)
    return loss
