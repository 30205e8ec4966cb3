"""Names a config may use for losses, metrics, optimizers and distribution strategies; the engines
implement them (`layerprobe.engines.estimator.model_fn`)."""

from __future__ import annotations

import re

LOSSES = ("sparse_softmax_cross_entropy", "sigmoid_cross_entropy", "mean_squared_error")
METRICS = ("accuracy", "mean_absolute_error", "root_mean_squared_error")
OPTIMIZERS = ("adam", "sgd", "momentum", "rmsprop", "adagrad")
ENGINES = ("estimator", "keras")  # trainer.engine; engines.ENGINES maps them to classes
STRATEGIES = ("none", "mirrored", "multi_worker_mirrored", "parameter_server")  # trainer.distribute

# A layer name becomes a file name and a metric key, so it is kept to identifier characters.
SAFE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")
SAFE_NAME_RULE = "must match [A-Za-z][A-Za-z0-9_]* (it becomes a file name and a metric key)"
