"""Per-batch activation summaries built in the TensorFlow graph (the only TF module of the probe).

Everything returned is O(units) or O(sketch buckets) per batch, never O(examples), except the
sampled examples' raw activations (`reservoir_size` examples over the whole split).
"""

from __future__ import annotations

from dataclasses import dataclass

from layerprobe._tf import tf
from layerprobe.probe.sketch import MAX_VALUE, MIN_VALUE, SketchLayout


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
    finite = tf.math.is_finite(flat)
    finite_f = tf.cast(finite, tf.float32)
    clean = tf.where(finite, flat, tf.zeros_like(flat))
    count = tf.reduce_sum(finite_f, axis=0)
    unit_sum = tf.reduce_sum(clean, axis=0)
    unit_mean = unit_sum / tf.maximum(count, 1.0)
    centred = tf.where(finite, flat - unit_mean, tf.zeros_like(flat))
    out = {
        "examples": batch,
        "unit_count": count,
        "unit_sum": unit_sum,
        "unit_m2": tf.reduce_sum(tf.square(centred), axis=0),
        "unit_max": tf.reduce_max(tf.where(finite, flat, tf.fill(tf.shape(flat), -float("inf"))), axis=0),
        "unit_min": tf.reduce_min(tf.where(finite, flat, tf.fill(tf.shape(flat), float("inf"))), axis=0),
        "unit_active": tf.reduce_sum(tf.cast(flat > spec.active_threshold, tf.float32), axis=0),
        "zeros": tf.reduce_sum(tf.cast(tf.equal(flat, 0.0), tf.float32)),
        "nans": tf.reduce_sum(tf.cast(tf.math.is_nan(flat), tf.float32)),
        "infs": tf.reduce_sum(tf.cast(tf.math.is_inf(flat), tf.float32)),
        "l2_sum": tf.reduce_sum(tf.sqrt(tf.reduce_sum(tf.square(tf.reshape(clean, [batch, -1])), axis=1))),
        "sketch": _sketch_counts(tf.boolean_mask(flat, finite), spec.layout),
    }
    if spec.bounds is not None:
        lo, hi = spec.bounds
        m = spec.saturation_margin * (hi - lo)
        out["saturated"] = tf.reduce_sum(tf.cast((flat >= hi - m) | (flat <= lo + m), tf.float32))
    if x.shape.rank == 4:  # (height, width, units) sum over the batch, for the mean-activation image
        out["spatial_sum"] = tf.reduce_sum(tf.where(tf.math.is_finite(x), x, tf.zeros_like(x)), axis=0)
    if spec.reservoir_size > 0 and sample is not None:
        in_sample, index = sample
        out["res_keys"] = tf.boolean_mask(index, in_sample)
        out["res_values"] = tf.boolean_mask(x, in_sample)
        if labels is not None:
            out["res_labels"] = tf.boolean_mask(labels, in_sample)
    return out


def _sketch_counts(values: tf.Tensor, layout: SketchLayout) -> tf.Tensor:
    """Bucket counts of the sketch (see sketch.py for the layout), one bincount per batch."""
    k = layout.buckets_per_sign
    mag = tf.clip_by_value(tf.abs(values), MIN_VALUE, MAX_VALUE)
    idx = tf.cast(tf.math.ceil(tf.math.log(mag) / layout.log_gamma), tf.int32)
    idx = tf.clip_by_value(idx, layout.min_index, layout.max_index) - layout.min_index
    slot = tf.where(values < 0, idx, idx + k)
    slot = tf.where(tf.abs(values) < MIN_VALUE, tf.fill(tf.shape(slot), 2 * k), slot)
    return tf.math.bincount(slot, minlength=layout.size, maxlength=layout.size)
