"""Config: schemas, the shipped config directory, composition and validation. No TensorFlow."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from layerprobe.errors import LayerprobeError

ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = ROOT / "conf"
# Named experiments (the config group `experiments`) and their baselines; tests point it elsewhere.
EXPERIMENTS_DIR = Path(os.environ.get("LAYERPROBE_EXPERIMENTS_DIR") or ROOT / "experiments")


class OverrideError(LayerprobeError):
    """Hydra could not compose the config from the overrides given."""


def compose(overrides: Sequence[str] = (), config_name: str = "config") -> Any:
    """The composed DictConfig, as the CLI would build it (for subcommands and tests)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException
    from yaml import YAMLError

    from layerprobe.config.schema import register_configs

    try:
        register_configs()
        _check_experiments(overrides)
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            return hydra_compose(config_name, overrides=list(overrides))
    except (HydraException, OmegaConfBaseException, YAMLError) as e:
        raise OverrideError(_name_bad_override(overrides) or one_line_hydra_error(e)) from None


def _check_experiments(overrides: Sequence[str]) -> None:
    """`experiments` is an optional group, so Hydra silently ignores a name it does not hold."""
    known = sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.yaml") if not p.name.endswith(".baseline.yaml"))
    for o in overrides:
        key, _, value = o.partition("=")
        if key.lstrip("+") != "experiments" or value in ("", "null"):
            continue
        for name in value.split(","):
            if name not in known:
                from layerprobe.errors import ConfigError

                raise ConfigError("experiments", name, f"no such experiment in {EXPERIMENTS_DIR}", known)


def _name_bad_override(overrides: Sequence[str]) -> str | None:
    """Hydra's grammar errors do not say which override they are about: find it."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    for o in overrides:
        try:
            parser.parse_override(o)
        except HydraException as e:
            return f"cannot parse override {o!r}: {one_line_hydra_error(e)}"
    return None


def one_line_hydra_error(e: BaseException) -> str:
    """Hydra's multi-line messages folded to one line, without the object_type/full_key noise."""
    text = str(e)
    cause = e.__cause__ or e.__context__
    if cause is not None and str(cause).strip() and str(cause).strip() not in text:
        text += "\n" + str(cause)  # "Error merging override x=abc" alone hides why
    text = text.split("Config search path:", 1)[0]  # the search path is noise for a missing option
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    keep = [
        ln for ln in lines if not ln.startswith(("object_type", "full_key", "reference_type", "Set the environment"))
    ]
    return "; ".join(keep)
