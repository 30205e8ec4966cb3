"""The one place TensorFlow is imported for the engine, with a clear word when it cannot work."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF's C++ start-up chatter hides our output

import tensorflow as tf  # noqa: E402

SUPPORTED = ((2, 13), (2, 15))  # tf.estimator was removed in TensorFlow 2.16


def _check() -> None:
    version = tuple(int(p) for p in tf.__version__.split(".")[:2])
    if not (SUPPORTED[0] <= version <= SUPPORTED[1]) or not hasattr(tf, "estimator"):
        raise ImportError(
            f"layerprobe's Estimator engine needs TensorFlow 2.13-2.15 with tensorflow-estimator "
            f"(tf.estimator was removed in 2.16), but TensorFlow {tf.__version__} is installed: "
            f"run `make venv` or `pip install -c constraints.txt -e .`."
        )


_check()
tf.get_logger().setLevel("ERROR")

__all__ = ["tf"]
