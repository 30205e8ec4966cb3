"""The one place TensorFlow is imported, and each engine's guard with a clear word when it cannot work.

The data pipelines and the probe's summaries are plain TensorFlow and run on every supported version;
only the engines need a particular stack: the Estimator engine TensorFlow 2.13-2.15 with
tf.estimator (removed in 2.16), the Keras engine TensorFlow >= 2.16 with Keras 3.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from layerprobe.errors import ConfigError

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF's C++ start-up chatter hides our output


def _installed_minor() -> tuple[int, int]:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    for dist in ("tensorflow-cpu", "tensorflow"):
        try:
            major, minor = dist_version(dist).split(".")[:2]
            return int(major), int(minor)
        except PackageNotFoundError:
            continue
    return 0, 0


def _import_tensorflow() -> Any:
    """TensorFlow >= 2.16 writes two C++ lines at import (absl's "All log messages before
    absl::InitializeLog()" and oneDNN's notice, twice) that neither TF_CPP_MIN_LOG_LEVEL nor
    TF_ENABLE_ONEDNN_OPTS silences; they would precede every one-line error. So the import runs with
    file descriptor 2 on /dev/null there (a Python exception still propagates and prints after)."""
    if _installed_minor() < (2, 16):
        import tensorflow

        return tensorflow
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    return tensorflow


tf = _import_tensorflow()

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
