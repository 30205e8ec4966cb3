"""Predict at several checkpoints with one graph and one session: restore, then one pass each.

`Estimator.predict` builds the graph, starts a session and restores for every call (~0.5-1 s on the
digits CNN, most of a small probe pass); the training-dynamics points probe the same subset at several
checkpoints, so the engine keeps one of these per (request, extra outputs) and only restores between
them. The graph is the Estimator's PREDICT graph (the same model_fn, input_fn and seed), so a pass
here gives the values `Estimator.predict` gives at the same checkpoint.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from layerprobe._tf import tf
from layerprobe.engines.base import BatchSink, ExtraOutputs, PassReduction, PredictRequest, ProbeFeed
from layerprobe.engines.estimator.inputs import predict_input_fn
from layerprobe.engines.estimator.model_fn import ModeKeys, make_model_fn
from layerprobe.engines.spec import ModelSpec


def same_request(a: tuple[Any, PredictRequest, Any], b: tuple[Any, PredictRequest, Any]) -> bool:
    """Whether two predict calls (data, request, extra outputs) build the same graph: the same data
    object (held, so its id cannot be reused), equal extra outputs (a probe session's equal the last
    session's of the same layers) and an equal request."""
    (data_a, req_a, extra_a), (data_b, req_b, extra_b) = a, b
    if data_a is not data_b or extra_a != extra_b:  # equal extra outputs build equal graphs
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


class CheckpointReducer:
    """One PREDICT graph of `spec` whose `reduction` state lives in local variables: each batch runs
    the fold and assigns the state on the device, and fetches only the fold's small host outputs; the
    state is read once, after the last batch. Restored at any checkpoint, as CheckpointPredictor.

    The graph reads from an iterator made from the structure of its first request's batches, so any
    request whose batches have that structure (another split, another max_examples: the dynamics
    subset, then the whole split; the same data prepared again by the next trial of a sweep) adds only
    its input pipeline to the graph, not another model, fused kernel and session (~0.3-0.9 s a build).
    The process keeps the last one built (`shared`): an engine of another run whose PREDICT graph
    would be the same (a sweep trial of another learning rate) restores into it."""

    def __init__(
        self, spec: ModelSpec, data: Any, request: PredictRequest, reduction: PassReduction, config: Any
    ) -> None:
        self.graph, self.spec, self.reduction, self.config = tf.Graph(), spec, reduction, _config_key(config)
        self.datas: list[Any] = []  # the data objects whose input pipelines the graph holds (held: ids stay)
        self.held = 0  # bytes of in-memory arrays those pipelines keep alive (_held_bytes)
        self.initializers: dict[tuple[int, PredictRequest], Any] = {}
        built: dict[str, Any] = {}

        def extra(tensors: Mapping[str, Any], feed: ProbeFeed) -> dict[str, Any]:
            outputs = reduction.outputs(tensors, feed)
            state = {
                k: tf.compat.v1.Variable(
                    _initial_value(v),
                    trainable=False,
                    collections=[tf.compat.v1.GraphKeys.LOCAL_VARIABLES],
                    name=f"pass_state_{i}",
                )
                for i, (k, v) in enumerate(reduction.initial(outputs).items())
            }
            after, host = reduction.fold({k: v.read_value() for k, v in state.items()}, outputs)
            built["state"] = state
            # Every assign waits for the whole fold: a v1 graph orders nothing else, so an assign that
            # waited only for its own value (a batch count) ran on the step that found the input
            # exhausted, and could run before another layer's fold had read the old value.
            with tf.control_dependencies(tf.nest.flatten([outputs, after])):
                built["update"] = tf.group(*(state[k].assign(v, read_value=False) for k, v in after.items()))
            built["host"] = host
            return {}

        with self.graph.as_default():
            tf.compat.v1.set_random_seed(config.tf_random_seed)  # as the Estimator does before model_fn
            tf.compat.v1.train.get_or_create_global_step()
            first = predict_input_fn(data, request)()
            self.structure = _structure(first)
            self.iterator = tf.compat.v1.data.Iterator.from_structure(*self.structure[:2])
            self.datas.append(data)
            self.held = _held_bytes(data)
            self.initializers[(id(data), request)] = self.iterator.make_initializer(first)
            make_model_fn(spec, extra=extra)(self.iterator.get_next(), None, ModeKeys.PREDICT)
            self.state, self.update, self.host = built["state"], built["update"], built["host"]
            self.reset = tf.compat.v1.variables_initializer(list(self.state.values()))
            self.saver = tf.compat.v1.train.Saver(tf.compat.v1.global_variables())  # not the pass state
        # Whether the seeds matter: a random op the outputs depend on (none in a PREDICT graph of the
        # shipped layers; the initialisers' random ops only initialise, and every pass restores).
        self.seeded = _random_ancestors([self.update, *tf.nest.flatten(self.host)])
        self.session = tf.compat.v1.Session(graph=self.graph, config=config.session_config)
        weakref.finalize(self, self.session.close)

    def fits(self, spec: ModelSpec, reduction: PassReduction, config: Any) -> bool:
        """Whether a run of `spec` would build this graph: the same model, probe outputs and session
        (its optimizer and learning rate take no part in PREDICT; its seeds only when `seeded`)."""
        if reduction != self.reduction or _predict_part(spec, self.seeded) != _predict_part(self.spec, self.seeded):
            return False
        return _relevant(_config_key(config), self.seeded) == _relevant(self.config, self.seeded)

    def serves(self, data: Any, request: PredictRequest) -> bool:
        """Whether this graph can run `request` of `data`: batches of the same structure. Adds the
        request's input pipeline to the graph when they are. A graph holds the pipelines of at most
        MAX_DATA data objects (each may hold its arrays as constants): past that, build anew."""
        if (id(data), request) in self.initializers:
            return True
        known = any(d is data for d in self.datas)
        if not known and (len(self.datas) >= MAX_DATA or self.held + _held_bytes(data) > MAX_HELD_BYTES):
            return False
        with self.graph.as_default():
            ds = predict_input_fn(data, request)()
            if _structure(ds) != self.structure:
                return False
            self.initializers[(id(data), request)] = self.iterator.make_initializer(ds)
        if not known:
            self.datas.append(data)
            self.held += _held_bytes(data)
        return True

    def run(self, checkpoint: str, data: Any, request: PredictRequest, on_batch: BatchSink) -> dict[str, np.ndarray]:
        with self.graph.as_default():
            self.saver.restore(self.session, checkpoint)
        self.session.run([self.initializers[(id(data), request)], self.reset])
        while True:
            try:
                host, _ = self.session.run((self.host, self.update))
            except tf.errors.OutOfRangeError:
                break
            on_batch(host)
        return self.session.run(self.state)  # type: ignore[no-any-return]


# A graph serves at most MAX_DATA data objects and keeps at most MAX_HELD_BYTES of their in-memory arrays
# alive (an in-memory split enters the graph as constants up to 1 MB, else through a generator that holds
# its arrays as long as the graph lives): past either, the next run builds its own graph and the old one
# goes with its engines. Sources that read files hold no arrays.
MAX_DATA = 16
MAX_HELD_BYTES = 256 << 20
_SHARED: list[CheckpointReducer] = []  # the last reducer this process built


def forget() -> None:
    """Drop the reduce graph this process keeps: the next probe builds its own (a benchmark of a
    process's first probe)."""
    _SHARED.clear()


def shared(
    spec: ModelSpec, data: Any, request: PredictRequest, reduction: PassReduction, config: Any
) -> CheckpointReducer:
    """The process's last reducer when it fits and serves (spec, reduction, config, data, request),
    else a new one, kept as the last."""
    if _SHARED and _SHARED[0].fits(spec, reduction, config) and _SHARED[0].serves(data, request):
        return _SHARED[0]
    _SHARED[:] = [CheckpointReducer(spec, data, request, reduction, config)]
    return _SHARED[0]


def _held_bytes(data: Any) -> int:
    """Bytes of the in-memory arrays of `data` (0 for a source that reads files): what a pipeline of it
    may keep alive, counted over every split."""
    splits = getattr(data, "splits", None)
    if not isinstance(splits, Mapping):
        return 0
    groups = [g for part in splits.values() for g in (getattr(part, "features", {}), getattr(part, "labels", {}))]
    return sum(int(getattr(a, "nbytes", 0)) for g in groups for a in g.values())


def _predict_part(spec: ModelSpec, seeded: bool) -> ModelSpec:
    """`spec` as its PREDICT graph sees it."""
    return replace(spec, optimizer="", learning_rate=0.0, seed=spec.seed if seeded else 0)


def _config_key(config: Any) -> tuple[Any, ...]:
    """What of a RunConfig a PREDICT session depends on: its session config and graph seed."""
    session = config.session_config
    return (session.SerializeToString(deterministic=True) if session is not None else b"", config.tf_random_seed)


def _relevant(key: tuple[Any, ...], seeded: bool) -> tuple[Any, ...]:
    return key if seeded else key[:1]


def _random_ancestors(fetches: list[Any]) -> bool:
    """Whether an op with "Random" in its type (stateful or stateless, seeded or not) feeds `fetches`."""
    seen: set[Any] = set()
    todo = [f.op if hasattr(f, "op") else f for f in fetches]
    while todo:
        op = todo.pop()
        if op in seen:
            continue
        seen.add(op)
        if "Random" in op.type or op.type in ("Multinomial", "TruncatedNormal"):
            return True
        todo.extend(t.op for t in op.inputs)
        todo.extend(op.control_inputs)
    return False


def _initial_value(v: np.ndarray) -> Any:
    """A fill for an all-zero state (a sketch is 0.5 MB): as a constant it was copied by every graph
    optimisation pass of the session's first run (~0.3 s for three layers)."""
    return v if v.any() else tf.zeros(v.shape, v.dtype)


def _structure(ds: Any) -> tuple[Any, Any, Any]:
    """(types, shapes, classes) of a dataset's elements, as v1 iterators compare them."""
    d = tf.compat.v1.data
    return d.get_output_types(ds), d.get_output_shapes(ds), d.get_output_classes(ds)
