"""The Keras engine (Keras 3 on TensorFlow >= 2.16): import `engine.KerasEngine` through `layerprobe.engines`."""

from layerprobe._tf import require_keras3

require_keras3()  # on TensorFlow 2.15 tf.keras is Keras 2: one line naming the engine, not a traceback
