"""Predict at several checkpoints with one graph and one session: restore, then one pass each.

`Estimator.predict` builds the graph, starts a session and restores for every call (~0.5-1 s on the
digits CNN, most of a small probe pass); the training-dynamics points probe the same subset at several
checkpoints, so the engine keeps one of these per (request, extra outputs) and only restores between
them. The graph is the Estimator's PREDICT graph (the same model_fn, input_fn and seed), so a pass
here gives the values `Estimator.predict` gives at the same checkpoint.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import Any

import numpy as np

from layerprobe._tf import tf
from layerprobe.engines.base import ExtraOutputs, PredictRequest
from layerprobe.engines.estimator.inputs import predict_input_fn
from layerprobe.engines.estimator.model_fn import ModeKeys, make_model_fn
from layerprobe.engines.spec import ModelSpec


def same_request(a: tuple[Any, PredictRequest, ExtraOutputs], b: tuple[Any, PredictRequest, ExtraOutputs]) -> bool:
    """Whether two predict calls (data, request, extra outputs) build the same graph: the same data
    and extra-outputs objects (held, so their ids cannot be reused) and an equal request."""
    (data_a, req_a, extra_a), (data_b, req_b, extra_b) = a, b
    if data_a is not data_b or extra_a is not extra_b:
        return False
    return req_a == req_b  # a frozen dataclass of plain values: split, batch, label, reservoir, shard


class CheckpointPredictor:
    """One PREDICT graph of `spec` over `request`, and a session to run it at any checkpoint."""

    def __init__(self, spec: ModelSpec, data: Any, request: PredictRequest, extra: ExtraOutputs, config: Any) -> None:
        self.graph = tf.Graph()
        with self.graph.as_default():
            tf.compat.v1.set_random_seed(config.tf_random_seed)  # as the Estimator does before model_fn
            tf.compat.v1.train.get_or_create_global_step()
            self.iterator = tf.compat.v1.data.make_initializable_iterator(predict_input_fn(data, request)())
            est_spec = make_model_fn(spec, extra=extra)(self.iterator.get_next(), None, ModeKeys.PREDICT)
            self.outputs = est_spec.predictions
            self.saver = tf.compat.v1.train.Saver()
        self.graph.finalize()
        self.session = tf.compat.v1.Session(graph=self.graph, config=config.session_config)
        weakref.finalize(self, self.session.close)

    def run(self, checkpoint: str) -> Iterator[dict[str, np.ndarray]]:
        """One dict of numpy arrays per batch, the variables restored from `checkpoint`."""
        with self.graph.as_default():  # outside its graph, a Saver takes itself for an eager one
            self.saver.restore(self.session, checkpoint)
        self.session.run(self.iterator.initializer)
        while True:
            try:
                yield self.session.run(self.outputs)
            except tf.errors.OutOfRangeError:
                return
