"""The one place TensorFlow is imported, and each engine's guard with a clear word when it cannot work.

The data pipelines and the probe's summaries are plain TensorFlow and run on every supported version;
only the engines need a particular stack: the Estimator engine TensorFlow 2.13-2.15 with
tf.estimator (removed in 2.16), the Keras engine TensorFlow >= 2.16 with Keras 3.
"""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF's C++ start-up chatter hides our output

import tensorflow as tf  # noqa: E402

from layerprobe.errors import ConfigError  # noqa: E402

ESTIMATOR_TF = ((2, 13), (2, 15))  # tf.estimator was removed in TensorFlow 2.16
KERAS3_TF = (2, 16)  # the first TensorFlow whose tf.keras is Keras 3


def version() -> tuple[int, int]:
    """(major, minor) of the installed TensorFlow."""
    major, minor = tf.__version__.split(".")[:2]
    return int(major), int(minor)


def _check_floor() -> None:
    if version() < ESTIMATOR_TF[0]:
        raise ImportError(f"layerprobe needs TensorFlow >= 2.13, but {tf.__version__} is installed: run `make venv`")


def require_estimator() -> None:
    """ConfigError (trainer.engine) unless this TensorFlow still has tf.estimator."""
    if not (ESTIMATOR_TF[0] <= version() <= ESTIMATOR_TF[1]) or not hasattr(tf, "estimator"):
        raise ConfigError(
            "trainer.engine",
            "estimator",
            f"the Estimator engine needs TensorFlow 2.13-2.15 with tensorflow-estimator (tf.estimator was "
            f"removed in 2.16), but TensorFlow {tf.__version__} is installed: use trainer.engine=keras here, "
            f"or `make venv` (pinned in constraints.txt) for the Estimator",
        )


def require_keras3() -> Any:
    """The Keras 3 module; ConfigError (trainer.engine) unless TensorFlow >= 2.16 with Keras 3 is installed."""
    import keras

    keras_major = int(keras.__version__.split(".")[0])
    if version() < KERAS3_TF or keras_major < 3:
        raise ConfigError(
            "trainer.engine",
            "keras",
            f"the Keras engine needs TensorFlow >= 2.16 with Keras 3, but TensorFlow {tf.__version__} with "
            f"Keras {keras.__version__} is installed: run `make venv-keras` and use .venv-keras/bin/layerprobe, "
            f"or trainer.engine=estimator here",
        )
    return keras


_check_floor()
tf.get_logger().setLevel("ERROR")

__all__ = ["tf", "require_estimator", "require_keras3", "version"]
