"""Config: schemas, the shipped config directory, composition and validation. No TensorFlow."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from layerprobe.errors import LayerprobeError

ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = ROOT / "conf"
EXPERIMENTS_DIR = ROOT / "experiments"


class OverrideError(LayerprobeError):
    """Hydra could not compose the config from the overrides given."""


def compose(overrides: Sequence[str] = (), config_name: str = "config") -> Any:
    """The composed DictConfig, as the CLI would build it (for subcommands and tests)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from layerprobe.config.schema import register_configs

    register_configs()
    try:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            return hydra_compose(config_name, overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as e:
        raise OverrideError(one_line_hydra_error(e)) from None


def one_line_hydra_error(e: BaseException) -> str:
    """Hydra's multi-line messages folded to one line, without the object_type/full_key noise."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    keep = [
        ln for ln in lines if not ln.startswith(("object_type", "full_key", "reference_type", "Set the environment"))
    ]
    return "; ".join(keep)
