"""The Estimator engine (TensorFlow 2.13-2.15): import `engine.EstimatorEngine` through `layerprobe.engines`."""

from layerprobe._tf import require_estimator

require_estimator()  # on TensorFlow >= 2.16 every module below would fail on tf.estimator
