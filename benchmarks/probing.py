"""The probe phase on the 3-conv CNN: vs a bare predict, vs the naive per-example pattern, and scaling."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.configs import CNN_LAYERS, CONVS, cnn_config
from benchmarks.measure import PeakRSS
from layerprobe.config.loaded import load


class ProbeBench:
    """One trained model_dir, reused by every measurement; data prepared once per size."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.model_dir = str(workdir / "model")
        self._data: tuple[int, Any] | None = None
        self._runs = 0

    def data(self, examples: int) -> Any:
        from layerprobe.data.pipeline import prepare

        if self._data is None or self._data[0] != examples:
            self._data = None  # free the previous size first
            self._data = (examples, prepare(cnn_config(examples, self.model_dir)["data"]))
        return self._data[1]

    def train(self, examples: int) -> float:
        """A few steps: probing does not need a good model, only a checkpoint."""
        c = cnn_config(examples, self.model_dir)
        t = time.perf_counter()
        _engine(c, self.model_dir).train(self.data(examples), c["trainer"]["train_steps"])
        return time.perf_counter() - t

    def probe(self, examples: int, exposed: Sequence[str] = CONVS, extras: bool = False) -> float:
        """Wall seconds of the probe phase exactly as `runner.run` times it (the probe session's pass, the
        merge, stats.json and reservoir.npz); plots and analysis off unless `extras`."""
        from layerprobe.artifacts import probe_outcome
        from layerprobe.experiment import Experiment
        from layerprobe.provenance import exposed_layers

        c = cnn_config(examples, self.model_dir, exposed)
        c["probe"]["plots"] = c["probe"]["analysis"] = extras
        data = self.data(examples)
        cfg = load(c)
        names = tuple(exposed_layers(cfg))
        engine = _engine(c, self.model_dir)
        cold(engine)
        x = Experiment(cfg, data, engine.spec, engine, engine.summary(data, set(names)), names)
        self._runs += 1
        t = time.perf_counter()
        state = x.session().run(data)
        stats = probe_outcome(cfg, state, x.summary, self.workdir / f"probe{self._runs}").stats
        seconds = time.perf_counter() - t
        if stats[names[0]].examples != examples:
            raise RuntimeError(f"probed {stats[names[0]].examples} examples, expected {examples}")
        return seconds

    def bare(self, examples: int) -> float:
        """An Estimator predict returning only the logits, over the same input_fn and batch size."""
        c = cnn_config(examples, self.model_dir)
        data = self.data(examples)
        est = _engine(c, self.model_dir).estimator()
        input_fn = _probe_input_fn(data, c)
        t = time.perf_counter()
        n = sum(len(item["logits"]) for item in est.predict(input_fn, yield_single_examples=False))
        seconds = time.perf_counter() - t
        if n != examples:
            raise RuntimeError(f"predicted {n} examples, expected {examples}")
        return seconds

    def naive(self, examples: int) -> tuple[float, float, int]:
        """The classic StackOverflow pattern; returns (wall seconds, of which numpy statistics, peak RSS
        growth in bytes)."""
        c = cnn_config(examples, self.model_dir)
        input_fn = _probe_input_fn(self.data(examples), c)
        est = _naive_estimator(self.model_dir)
        with PeakRSS() as mem:
            t = time.perf_counter()
            kept: dict[str, list[np.ndarray]] = {n: [] for n in CONVS}
            for example in est.predict(input_fn, yield_single_examples=True):  # one dict per example
                for name in CONVS:
                    kept[name].append(example[name])
            t_stats = time.perf_counter()
            stats = {name: naive_stats(np.stack(kept.pop(name))) for name in CONVS}
            seconds = time.perf_counter() - t
            stats_seconds = time.perf_counter() - t_stats
        if stats["conv1"]["examples"] != examples:
            raise RuntimeError("the naive pattern lost examples")
        return seconds, stats_seconds, mem.growth


def cold(engine: Any) -> None:
    """The probe phase as a process's first probe pays it: the Estimator keeps its last reduce graph
    for the next engine of the same model (a sweep's next trial), so drop it; both include the build."""
    if type(engine).__module__.startswith("layerprobe.engines.estimator"):
        from layerprobe.engines.estimator.predictor import forget

        forget()


def as_first_run() -> None:
    """Forget what this process keeps for its next run (the Estimator's reduce graph, the installed-
    package scans), so that a run measured after a warm-up pays what a fresh process's run pays but
    the imports (`make run` is one run in one process)."""
    from layerprobe.engines.estimator.predictor import forget
    from layerprobe.provenance import frozen_requirements
    from layerprobe.tracking.models import pinned_requirements

    forget()
    frozen_requirements.cache_clear()
    pinned_requirements.cache_clear()


def _engine(c: dict[str, Any], model_dir: str) -> Any:
    from layerprobe.engines import make_engine
    from layerprobe.engines.spec import model_spec

    cfg = load(c)
    return make_engine(model_spec(cfg), model_dir, cfg.trainer, cfg.data)


def _probe_input_fn(data: Any, c: dict[str, Any]) -> Any:
    """The probe's input_fn over the eval split (features plus the label), without a sample."""
    from layerprobe.engines.base import PredictRequest
    from layerprobe.engines.estimator.inputs import predict_input_fn

    return predict_input_fn(data, PredictRequest("eval", c["probe"]["batch_size"], "label"))


def _naive_model_fn(features: Any, labels: Any, mode: str) -> Any:
    """The benchmark CNN written by hand, returning whole activations via tf.identity."""
    import tensorflow as tf

    layers = tf.keras.layers
    x = features["image"]
    conv1 = layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1")(x)
    conv2 = layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2")(
        layers.MaxPooling2D(name="pool1")(conv1)
    )
    conv3 = layers.Conv2D(64, 3, padding="same", activation="relu", name="conv3")(
        layers.MaxPooling2D(name="pool2")(conv2)
    )
    logits = layers.Dense(10, name="logits")(layers.GlobalAveragePooling2D(name="gap")(conv3))
    predictions = {
        "logits": logits,
        "conv1": tf.identity(conv1, name="conv1_out"),
        "conv2": tf.identity(conv2, name="conv2_out"),
        "conv3": tf.identity(conv3, name="conv3_out"),
    }
    return tf.estimator.EstimatorSpec(mode, predictions=predictions)


def _naive_estimator(model_dir: str) -> Any:
    import tensorflow as tf

    if set(CNN_LAYERS) != {"conv1", "pool1", "conv2", "pool2", "conv3", "gap", "logits"}:
        raise RuntimeError("benchmarks.configs.CNN_LAYERS changed: update _naive_model_fn to match")
    return tf.estimator.Estimator(_naive_model_fn, model_dir=model_dir)


def naive_stats(a: np.ndarray) -> dict[str, Any]:
    """What layerprobe reports, computed at the end with numpy on every kept activation."""
    flat = a.reshape(-1, a.shape[-1])
    return {
        "examples": len(a),
        "mean": float(flat.mean(dtype=np.float64)),
        "std": float(flat.std(dtype=np.float64)),
        "min": float(flat.min()),
        "max": float(flat.max()),
        "zero_fraction": float((flat == 0).mean()),
        "percentiles": np.percentile(flat, [1, 5, 50, 95, 99]),
        "unit_mean": flat.mean(axis=0, dtype=np.float64),
        "unit_std": flat.std(axis=0, dtype=np.float64),
        "unit_max": flat.max(axis=0),
        "unit_active": (flat > 0).mean(axis=0),
        "mean_l2_norm": float(np.sqrt((a.reshape(len(a), -1).astype(np.float64) ** 2).sum(1)).mean()),
        "histogram": np.histogram(flat, bins=60),
        "spatial_mean": a.mean(axis=0, dtype=np.float64),
    }
