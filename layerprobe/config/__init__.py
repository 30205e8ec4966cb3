"""Config: schemas, the shipped config directory, composition and validation. No TensorFlow."""

from __future__ import annotations

from layerprobe.config.compose import (
    OverrideError,
    compose,
    compose_in,
    hydra_session,
    one_line_hydra_error,
    parse_overrides,
)
from layerprobe.config.paths import CONF_DIR, EXPERIMENTS_DIR, ROOT

__all__ = [
    "CONF_DIR",
    "EXPERIMENTS_DIR",
    "ROOT",
    "OverrideError",
    "compose",
    "compose_in",
    "hydra_session",
    "one_line_hydra_error",
    "parse_overrides",
]
