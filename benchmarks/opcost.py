"""Where the probe's in-graph time goes: each group of `batch_summaries` outputs timed on its own.

A session runs only the subgraph its fetches need, so fetching one group of keys times that group
(plus what it shares, e.g. the finite mask). The groups are timed on the TensorFlow path (the fused
kernel is one op: any group costs all of it); the fused kernel's whole cost is one row beside them.
The inputs are variables holding ReLU-like activations of the benchmark CNN's exposed layers at the
probe batch size, so no input pipeline is involved.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from benchmarks.configs import CNN_LAYERS, PROBE_BATCH

GROUPS: dict[str, tuple[str, ...]] = {
    "per-unit sum and two-pass m2 (one tf.cond on finite sums: masks only for NaN/Inf batches)": (
        "unit_count",
        "unit_sum",
        "unit_m2",
    ),
    "per-unit max and min": ("unit_max", "unit_min"),
    "per-unit active count": ("unit_active",),
    "NaN / Inf counts (no op on a finite batch)": ("nans", "infs"),
    "per-example L2 norm": ("l2_sum",),
    "quantile sketch, also the zero count (a bit shift and a bincount over every value)": ("sketch",),
    "spatial sum (mean-activation image)": ("spatial_sum",),
    "reservoir (boolean_mask of the sampled examples)": ("res_keys", "res_values", "res_labels"),
}
SHAPES = {"conv1": (32, 32, 16), "conv2": (16, 16, 32), "conv3": (8, 8, 64)}


FUSED_ROW = "all summaries, fused kernel: one op per layer (the default path where its library loads)"
TF_ROW = "all summaries together (what the probe adds per batch)"
PASS_ROW = "reference: one reduce_sum over each exposed layer"


def activations(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """ReLU-like activations of the exposed conv layers, one probe batch each (half exact zeros)."""
    return {n: np.maximum(rng.normal(size=(PROBE_BATCH, *s)), 0).astype(np.float32) for n, s in SHAPES.items()}


@contextlib.contextmanager
def forced_kernel(name: str) -> Iterator[None]:
    """Graphs built inside take this probe path (LAYERPROBE_PROBE_KERNEL), whatever the environment says."""
    from layerprobe.probe.fused.kernel import ENV

    before = os.environ.get(ENV)
    os.environ[ENV] = name
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = before


def _time(sess: Any, fetches: Any, iters: int) -> float:
    """Median milliseconds per session.run, after two warm-up runs."""
    for _ in range(2):
        sess.run(fetches)
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        sess.run(fetches)
        times.append(time.perf_counter() - t)
    return 1000 * float(np.median(times))


def op_costs(
    iters: int, summaries: Callable[..., Mapping[str, Any]] | None = None, fused_kernel: bool | None = None
) -> dict[str, float]:
    """ms per probe batch, summed over the three exposed conv layers, per group; plus references.

    `fused_kernel`: also time the fused kernel; by default when its library loads.
    """
    import tensorflow as tf

    from layerprobe.graph import build
    from layerprobe.probe.fused.kernel import available
    from layerprobe.probe.graph_stats import LayerProbeSpec, batch_summaries
    from layerprobe.probe.sketch import SketchLayout

    fused_kernel = available() if fused_kernel is None else fused_kernel
    summaries = summaries or batch_summaries
    rng = np.random.default_rng(0)
    out: dict[str, float] = {}
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        tf.compat.v1.set_random_seed(0)
        labels = tf.compat.v1.Variable(rng.integers(0, 10, PROBE_BATCH), dtype=tf.int64)
        xs = {n: tf.compat.v1.Variable(a) for n, a in activations(rng).items()}
        image = tf.compat.v1.Variable(rng.normal(size=(PROBE_BATCH, 32, 32, 3)).astype(np.float32))
        graph = build(CNN_LAYERS, {"image": image}, training=False, keras=tf.keras)
        layout = SketchLayout(0.005)
        # the default reservoir of 512 examples over the 20,000 probed: ~7 sampled per batch of 256
        in_sample = tf.compat.v1.Variable(rng.random(PROBE_BATCH) < 512 / 20_000)
        index = tf.compat.v1.Variable(np.arange(PROBE_BATCH), dtype=tf.int64)

        def probed(kernel: str) -> dict[str, Any]:
            with forced_kernel(kernel):
                return {
                    n: summaries(x, LayerProbeSpec(n, layout, reservoir_size=512), labels, (in_sample, index))
                    for n, x in xs.items()
                }

        summ, fused = probed("tf"), probed("fused") if fused_kernel else None
        sess.run(tf.compat.v1.global_variables_initializer())
        out["reference: CNN forward pass to logits (what a bare predict computes)"] = _time(
            sess, graph.tensors["logits"], iters
        )
        out[PASS_ROW] = _time(sess, [tf.reduce_sum(x) for x in xs.values()], iters)
        for group, keys in GROUPS.items():
            out[group] = _time(sess, [s[k] for s in summ.values() for k in keys if k in s], iters)
        out[TF_ROW] = _time(sess, [list(s.values()) for s in summ.values()], iters)
        if fused is not None:
            out[FUSED_ROW] = _time(sess, [list(s.values()) for s in fused.values()], iters)
        fetched = sess.run(summ)
    out["host: LayerAccumulator.update for the 3 layers (numpy merge)"] = _host_ms(fetched, layout, iters)
    return out


def _host_ms(fetched: Mapping[str, Mapping[str, np.ndarray]], layout: Any, iters: int) -> float:
    from layerprobe.probe.accumulate import LayerAccumulator

    accs = {n: LayerAccumulator(n, layout, [1, 5, 50, 95, 99], 60, 512) for n in fetched}
    times = []
    for _ in range(iters + 2):
        t = time.perf_counter()
        for n, acc in accs.items():
            acc.update(dict(fetched[n]))
        times.append(time.perf_counter() - t)
    return 1000 * float(np.median(times[2:]))
