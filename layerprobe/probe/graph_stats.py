"""Per-batch activation summaries built in the TensorFlow graph (the only TF module of the probe).

Everything returned is O(units) or O(sketch buckets) per batch, never O(examples), except the
sampled examples' raw activations (`reservoir_size` examples over the whole split).

Two paths give the same outputs: the fused C++ op (probe/fused, one pass over the layer, the default
where its library loads) and the pure-TensorFlow ops below (the fallback, and the fused op's reference).
On the TensorFlow path, a batch whose per-unit sums are finite (the common case) takes a branch
without masks or masked copies; only a batch holding NaN or Inf pays for them. The quantile sketch is
one bit shift and one bincount over the batch, and also gives the zero count. Extremes and counts
reduce per example first (faster on CPU); column sums of a wide matrix go through a matmul.
benchmarks/opcost.py times each.

Both paths give the same bits whatever the thread count and the load. The fused op fixes its own
partition (summaries.cc). Here, TensorFlow's CPU kernels sum each column of a matrix in one thread, but
a sum to one number (a full reduction, which is what a column sum of a one-unit layer becomes) is cut
into as many parts as there are intra-op threads (seen: unit_m2 of a (1M, 1) layer differed between 1
and 8 threads, with op determinism on too). So every floating-point sum over rows goes through
`_fixed_sum`: blocks of a fixed number of rows, each summed alone, then the few block sums. Counts are
sums of whole numbers, exact in any order below 2**24 per batch; the spatial sums' matmul gave the same
bits with 1 and 8 threads (tests/test_determinism.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from layerprobe._tf import tf
from layerprobe.probe.fused import kernel as fused
from layerprobe.probe.sketch import SketchLayout


@dataclass(frozen=True)
class LayerProbeSpec:
    """How one exposed layer is summarised."""

    name: str
    layout: SketchLayout
    active_threshold: float = 0.0
    bounds: tuple[float, float] | None = None  # (lo, hi) of a bounded activation, for saturation
    saturation_margin: float = 0.01
    reservoir_size: int = 0
    # "fused" or "tf": the path of the summaries, part of the spec so that graphs and traced functions
    # kept per equal outputs never mix paths (probe_specs decides it once); "": decided at build
    kernel: str = ""


def batch_summaries(
    x: tf.Tensor,
    spec: LayerProbeSpec,
    labels: tf.Tensor | None = None,
    sample: tuple[tf.Tensor, tf.Tensor] | None = None,
) -> dict[str, tf.Tensor]:
    """Reductions of one batch of one layer's output x: (batch, ..., units).

    `sample` = (in_sample (batch,) bool, example index (batch,)): the examples drawn for the
    reservoir, whose raw activations (and labels) are returned whole.

    Exact zeros are not counted here: the host reads them off the sketch's zero slots (see
    LayerAccumulator.update).
    """
    x = tf.cast(x, tf.float32)
    if x.shape.rank == 1:
        x = x[:, None]
    if (spec.kernel or fused.choose()) == "fused":
        out = fused.summaries(x, spec.layout.shift, spec.layout.size, spec.active_threshold, _saturation(spec))
    else:
        out = _tf_summaries(x, spec)
    out["examples"] = tf.shape(x)[0]
    if spec.reservoir_size > 0 and sample is not None:
        in_sample, index = sample
        out["res_keys"] = tf.boolean_mask(index, in_sample)
        out["res_values"] = tf.boolean_mask(x, in_sample)
        if labels is not None:
            out["res_labels"] = tf.boolean_mask(labels, in_sample)
    return out


def _saturation(spec: LayerProbeSpec) -> tuple[float, float] | None:
    """(lo, hi): values at or below lo, or at or above hi, are saturated; None without bounds."""
    if spec.bounds is None:
        return None
    lo, hi = spec.bounds
    m = spec.saturation_margin * (hi - lo)
    return lo + m, hi - m


def _tf_summaries(x: tf.Tensor, spec: LayerProbeSpec) -> dict[str, tf.Tensor]:
    """The pure-TensorFlow path: one op per statistic (the fused kernel's reference, and its fallback)."""
    units = x.shape[-1]
    batch = tf.shape(x)[0]
    flat = tf.reshape(x, [-1, units])  # (batch * positions, units)
    per_example = tf.reshape(x, [batch, -1])
    unit_sum = _fixed_sum(flat)

    def spatial(rows: tf.Tensor) -> dict[str, tf.Tensor]:
        """(height, width, units) sums over the batch, for the mean-activation image: a (1, batch)
        ones matmul, faster than a column reduce of the wide (batch, h*w*units) matrix."""
        if x.shape.rank != 4:
            return {}
        return {"spatial_sum": tf.reshape(tf.matmul(tf.ones([1, batch], tf.float32), rows), tf.shape(x)[1:])}

    def all_finite() -> dict[str, tf.Tensor]:
        count = tf.cast(tf.shape(flat)[0], tf.float32)
        return {
            "unit_count": tf.fill([units], count),
            "unit_sum": unit_sum,
            "unit_m2": _fixed_sum(tf.math.squared_difference(flat, unit_sum / count)),
            "unit_max": _two_stage(tf.reduce_max, x, units),
            "unit_min": _two_stage(tf.reduce_min, x, units),
            "unit_active": _two_stage(tf.reduce_sum, tf.cast(x > spec.active_threshold, tf.float32), units),
            "l2_sum": _fixed_sum(tf.sqrt(tf.reduce_sum(tf.square(per_example), axis=1, keepdims=True)))[0],
            "nans": tf.constant(0.0),
            "infs": tf.constant(0.0),
            **spatial(per_example),
        }

    def masked() -> dict[str, tf.Tensor]:
        finite = tf.math.is_finite(flat)
        zeros = tf.zeros_like(flat)
        clean = tf.where(finite, flat, zeros)
        count = tf.reduce_sum(tf.cast(finite, tf.float32), axis=0)
        clean_sum = _fixed_sum(clean)
        deviation = tf.where(finite, clean - clean_sum / tf.maximum(count, 1.0), zeros)
        return {
            "unit_count": count,
            "unit_sum": clean_sum,
            "unit_m2": _fixed_sum(tf.square(deviation)),
            "unit_max": tf.reduce_max(tf.where(finite, flat, zeros - float("inf")), axis=0),
            "unit_min": tf.reduce_min(tf.where(finite, flat, zeros + float("inf")), axis=0),
            # of the finite values, like the count it is divided by (+Inf is not counted active)
            "unit_active": tf.reduce_sum(tf.cast(finite & (flat > spec.active_threshold), tf.float32), axis=0),
            "l2_sum": _fixed_sum(tf.norm(tf.reshape(clean, [batch, -1]), axis=1, keepdims=True))[0],
            "nans": tf.reduce_sum(tf.cast(tf.math.is_nan(flat), tf.float32)),
            "infs": tf.reduce_sum(tf.cast(tf.math.is_inf(flat), tf.float32)),
            **spatial(tf.reshape(clean, [batch, -1])),
        }

    # NaN and Inf propagate into the per-unit sums, so finite sums mean a batch without them (a sum
    # that overflows float32 takes the masked branch too, which is exact for finite values as well).
    out = tf.cond(tf.reduce_all(tf.math.is_finite(unit_sum)), all_finite, masked)
    out["sketch"] = sketch_counts(flat, spec.layout)
    saturation = _saturation(spec)
    if saturation is not None:
        lo, hi = saturation
        out["saturated"] = tf.reduce_sum(tf.cast((flat >= hi) | (flat <= lo), tf.float32))
    return out


# Rows per block of `_fixed_sum`. A full reduction this small stays in one thread (Eigen's cost model
# splits one only from ~100k values: seen at 200k, not at 50k), and so do the n // ROWS + 1 block sums
# of any batch below ~200M rows.
ROWS = 4096


def _fixed_sum(rows: tf.Tensor) -> tf.Tensor:
    """The column sums of rows: (n, units), in an order set by n alone: blocks of ROWS rows (each summed
    by one thread, a column or a row at a time), then the n // ROWS + 1 block sums."""
    units = rows.shape[-1]
    whole = tf.shape(rows)[0] // ROWS * ROWS
    blocks = tf.reduce_sum(tf.reshape(rows[:whole], [-1, ROWS, units]), axis=1)  # (n // ROWS, units)
    rest = tf.reduce_sum(rows[whole:], axis=0, keepdims=True)  # (1, units)
    return tf.reduce_sum(tf.concat([blocks, rest], axis=0), axis=0)


def _two_stage(reduce: Any, x: tf.Tensor, units: int) -> tf.Tensor:
    """reduce over every axis but the last, per example first: TensorFlow's CPU kernels reduce
    (batch, positions, units) over positions, then over the batch, faster than in one go."""
    per_example = reduce(tf.reshape(x, [tf.shape(x)[0], -1, units]), axis=1)
    return reduce(per_example, axis=0)


def sketch_counts(values: tf.Tensor, layout: SketchLayout) -> tf.Tensor:
    """Bucket counts of the sketch (layout in sketch.py): one bit shift and one bincount per batch.

    The float32 bits read as uint32 and shifted put the sign bit on top: negative values land
    `per_sign` slots above the positive ones, as the layout wants. Inf and NaN land in exponent-255
    slots, which the host ignores; no mask is needed.
    """
    bits = tf.bitcast(tf.reshape(values, [-1]), tf.uint32)
    slot = tf.bitcast(tf.bitwise.right_shift(bits, tf.constant(layout.shift, tf.uint32)), tf.int32)
    # The raw op: tf.math.bincount adds a reduce_max over the slots to size its output (~1 ms a batch
    # here); every slot is below layout.size by construction.
    return tf.raw_ops.Bincount(arr=slot, size=layout.size, weights=tf.zeros([0], tf.int32))
