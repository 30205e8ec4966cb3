"""User layer classes for tests, reached through a dotted `type` path in a config."""

from __future__ import annotations

import tensorflow as tf


class Corrupt(tf.keras.layers.Layer):
    """Passes its input through, with NaN where it is above `nan_above` and +Inf below `inf_below`."""

    def __init__(self, nan_above: float = 0.9, inf_below: float = -0.9, **kwargs) -> None:
        super().__init__(**kwargs)
        self.nan_above = nan_above
        self.inf_below = inf_below

    def call(self, x: tf.Tensor) -> tf.Tensor:
        x = tf.where(x > self.nan_above, tf.fill(tf.shape(x), float("nan")), x)
        return tf.where(x < self.inf_below, tf.fill(tf.shape(x), float("inf")), x)
