"""Per-batch activation summaries built in the TensorFlow graph (the only TF module of the probe).

Everything returned is O(units) or O(sketch buckets) per batch, never O(examples), except the
sampled examples' raw activations (`reservoir_size` examples over the whole split).

Cost matters here: these ops run beside the forward pass. A batch whose values are all finite (the
common case) takes a branch without masks or masked copies; only a batch holding NaN or Inf pays
for them. The quantile sketch is one bit shift and one bincount over the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

from layerprobe._tf import tf
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


def batch_summaries(
    x: tf.Tensor,
    spec: LayerProbeSpec,
    labels: tf.Tensor | None = None,
    sample: tuple[tf.Tensor, tf.Tensor] | None = None,
) -> dict[str, tf.Tensor]:
    """Reductions of one batch of one layer's output x: (batch, ..., units).

    `sample` = (in_sample (batch,) bool, example index (batch,)): the examples drawn for the
    reservoir, whose raw activations (and labels) are returned whole.
    """
    x = tf.cast(x, tf.float32)
    if x.shape.rank == 1:
        x = x[:, None]
    units = x.shape[-1]
    batch = tf.shape(x)[0]
    flat = tf.reshape(x, [-1, units])  # (batch * positions, units)
    spatial = x.shape.rank == 4  # (height, width, units) sums for the mean-activation image

    def summaries(finite: tf.Tensor | None) -> dict[str, tf.Tensor]:
        """Moments, extremes, norms; `finite` None means every value is finite (no masks needed)."""
        if finite is None:
            clean, count = flat, tf.fill([units], tf.cast(tf.shape(flat)[0], tf.float32))
            highs = lows = flat
        else:
            zeros = tf.zeros_like(flat)
            clean = tf.where(finite, flat, zeros)
            count = tf.reduce_sum(tf.cast(finite, tf.float32), axis=0)
            highs, lows = tf.where(finite, flat, zeros - float("inf")), tf.where(finite, flat, zeros + float("inf"))
        unit_sum = tf.reduce_sum(clean, axis=0)
        deviation = clean - unit_sum / tf.maximum(count, 1.0)
        if finite is not None:
            deviation = tf.where(finite, deviation, tf.zeros_like(flat))
        out = {
            "unit_count": count,
            "unit_sum": unit_sum,
            "unit_m2": tf.reduce_sum(tf.square(deviation), axis=0),
            "unit_max": tf.reduce_max(highs, axis=0),
            "unit_min": tf.reduce_min(lows, axis=0),
            "l2_sum": tf.reduce_sum(tf.norm(tf.reshape(clean, [batch, -1]), axis=1)),
            "nans": tf.constant(0.0) if finite is None else tf.reduce_sum(tf.cast(tf.math.is_nan(flat), tf.float32)),
            "infs": tf.constant(0.0) if finite is None else tf.reduce_sum(tf.cast(tf.math.is_inf(flat), tf.float32)),
        }
        if spatial:
            out["spatial_sum"] = tf.reduce_sum(tf.reshape(clean, tf.shape(x)), axis=0)
        return out

    finite = tf.math.is_finite(flat)
    out = tf.cond(tf.reduce_all(finite), lambda: summaries(None), lambda: summaries(finite))
    out["examples"] = batch
    out["unit_active"] = tf.reduce_sum(tf.cast(flat > spec.active_threshold, tf.float32), axis=0)
    out["zeros"] = tf.reduce_sum(tf.cast(tf.equal(flat, 0.0), tf.float32))
    out["sketch"] = sketch_counts(flat, spec.layout)
    if spec.bounds is not None:
        lo, hi = spec.bounds
        m = spec.saturation_margin * (hi - lo)
        out["saturated"] = tf.reduce_sum(tf.cast((flat >= hi - m) | (flat <= lo + m), tf.float32))
    if spec.reservoir_size > 0 and sample is not None:
        in_sample, index = sample
        out["res_keys"] = tf.boolean_mask(index, in_sample)
        out["res_values"] = tf.boolean_mask(x, in_sample)
        if labels is not None:
            out["res_labels"] = tf.boolean_mask(labels, in_sample)
    return out


def sketch_counts(values: tf.Tensor, layout: SketchLayout) -> tf.Tensor:
    """Bucket counts of the sketch (layout in sketch.py): a bit shift and one bincount per batch.

    Inf and NaN land in exponent-255 slots, which the host ignores; no mask is needed.
    """
    raw = tf.bitcast(tf.reshape(values, [-1]), tf.int32)
    magnitude = tf.bitwise.right_shift(tf.bitwise.bitwise_and(raw, 0x7FFFFFFF), layout.shift)
    slot = magnitude + tf.cast(raw < 0, tf.int32) * layout.per_sign
    return tf.math.bincount(slot, minlength=layout.size, maxlength=layout.size)
