"""Training backends behind one seam (base.Engine), chosen by name from `trainer.engine`.

The registry names classes by import path, so resolving a name imports nothing until an engine
is actually made (validation and `--help` stay free of TensorFlow).
"""

from __future__ import annotations

import importlib

from layerprobe.engines.base import Engine
from layerprobe.engines.spec import ModelSpec
from layerprobe.errors import ConfigError
from layerprobe.schema import DataConfig, TrainerConfig

ENGINES = {
    "estimator": "layerprobe.engines.estimator.engine:EstimatorEngine",  # TensorFlow 2.13-2.15 (`make venv`)
    "keras": "layerprobe.engines.keras.engine:KerasEngine",  # Keras 3 on TensorFlow >= 2.16 (`make venv-keras`)
}


def make_engine(spec: ModelSpec, model_dir: str, trainer: TrainerConfig, data_cfg: DataConfig) -> Engine:
    """The configured engine (trainer.engine) over model_dir."""
    name = trainer.engine
    if name not in ENGINES:
        raise ConfigError("trainer.engine", name, "is not an engine", sorted(ENGINES))
    module, _, cls = ENGINES[name].partition(":")
    return getattr(importlib.import_module(module), cls)(spec, model_dir, trainer, data_cfg)  # type: ignore[no-any-return]
