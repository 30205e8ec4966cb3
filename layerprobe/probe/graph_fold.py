"""The probe's accumulators folded on the device, batch after batch (the in-graph twin of
LayerAccumulator.update): the host reads the state once per pass instead of every batch's summaries.

The fold performs LayerAccumulator.update's float64 operations in the same order (Chan's merge, the
first batch taken as it is), so a pass gives the same bits as merging every batch on the host did;
tests/test_engine_contract.py holds the two equal. Elementwise float64 adds, multiplies and divides are
correctly rounded in numpy and TensorFlow alike; `tf.square` is `delta * delta`, as numpy's `**2`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from layerprobe._tf import tf
from layerprobe.probe.sketch import SketchLayout

UNITS = ("n", "mean", "m2", "max", "min", "active")
_F64 = ("zeros", "nans", "infs", "l2_sum", "saturated", "spatial")


def initial(outputs: Mapping[str, Any], layout: SketchLayout) -> dict[str, np.ndarray]:
    """One layer's state before its first batch, from its batch summaries' static shapes."""
    units = int(outputs["unit_sum"].shape[-1])
    state = {k: np.zeros(units) for k in UNITS}
    state["examples"] = np.zeros((), np.int64)
    state["sketch"] = np.zeros(layout.size, np.int64)
    for k in ("zeros", "nans", "infs", "l2_sum"):
        state[k] = np.zeros(())
    if "saturated" in outputs:
        state["saturated"] = np.zeros(())
    if "spatial_sum" in outputs:
        state["spatial"] = np.zeros(outputs["spatial_sum"].shape.as_list())
    return state


def fold(state: Mapping[str, Any], b: Mapping[str, Any], batches: Any, layout: SketchLayout) -> dict[str, Any]:
    """One layer's state after batch summaries `b`; `batches` (int64 scalar): the batches folded before."""
    first = tf.equal(batches, 0)  # not `==`: in a v1 graph that compares the Tensor objects
    f64 = tf.float64
    n_b = tf.cast(b["unit_count"], f64)
    batch = {
        "n": n_b,
        "mean": tf.cast(b["unit_sum"], f64) / tf.maximum(n_b, 1.0),
        "m2": tf.cast(b["unit_m2"], f64),
        "max": tf.cast(b["unit_max"], f64),
        "min": tf.cast(b["unit_min"], f64),
        "active": tf.cast(b["unit_active"], f64),
    }
    n = state["n"] + n_b
    safe = tf.maximum(n, 1.0)
    delta = batch["mean"] - state["mean"]
    merged = {
        "n": n,
        "mean": state["mean"] + delta * n_b / safe,
        # (m2 + m2_b) + term as the host adds it. Not `m2 + m2_b + term`: grappler rewrites a chain of
        # adds into one AddN, which adds first the input whose buffer it reuses (here the term): 1-ulp
        # differences from the host merge. A sum over a stacked pair is exact in either order.
        "m2": tf.reduce_sum(tf.stack([state["m2"], batch["m2"]]), axis=0) + tf.square(delta) * state["n"] * n_b / safe,
        "max": tf.maximum(state["max"], batch["max"]),
        "min": tf.minimum(state["min"], batch["min"]),
        "active": state["active"] + batch["active"],
    }
    out = {k: tf.where(first, batch[k], merged[k]) for k in UNITS}
    sketch = tf.cast(b["sketch"], tf.int64)
    positive, negative = layout.zero_ranges()  # slices, not a mask: no sketch-sized constant in the graph
    zeros = tf.reduce_sum(sketch[positive]) + tf.reduce_sum(sketch[negative])  # exact zeros, in any order
    out["examples"] = state["examples"] + tf.cast(b["examples"], tf.int64)
    out["sketch"] = state["sketch"] + sketch
    out["zeros"] = state["zeros"] + tf.cast(zeros, f64)
    for k in ("nans", "infs", "l2_sum"):
        out[k] = state[k] + tf.cast(b[k], f64)
    if "saturated" in state:
        out["saturated"] = state["saturated"] + tf.cast(b["saturated"], f64)
    if "spatial" in state:
        out["spatial"] = state["spatial"] + tf.cast(b["spatial_sum"], f64)
    return out
