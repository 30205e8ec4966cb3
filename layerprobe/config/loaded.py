"""The one config a command runs: checked, block-expanded and typed, once.

A run, a sweep job, a re-probe, `reproduce`, `validate` and the benchmarks all start from `load`:
it takes the composed config (or a run's logged one), applies the rules (`validate`), expands block
instances into plain layers, and returns the schema's dataclasses. Nothing after config/ sees the
config as written except as `Config.written`, the text a run logs and a re-probe reads back.

    c = load(compose(["experiments=small_resnet"]))
    c.trainer.train_steps          # typed: a typo is a mypy error, not a KeyError at step 900
    c.model.layers                 # plain layers: `stage1_block1_conv1`, ... (no block instances)
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from layerprobe.schema import (
    DataConfig,
    LayerprobeConfig,
    ModelConfig,
    ProbeConfig,
    TrackingConfig,
    TrainerConfig,
)

SECTIONS = ("data", "model", "trainer", "probe", "tracking")


@dataclass(frozen=True)
class Config:
    """The schema's sections, typed, with `model.layers` block-expanded (and `model.blocks` empty).

    `written` is the config as composed, block instances as written: what a run logs, what its
    digests cover and what `layerprobe probe RUN` reads back.
    """

    data: DataConfig
    model: ModelConfig
    trainer: TrainerConfig
    probe: ProbeConfig
    tracking: TrackingConfig
    written: Mapping[str, Any]
    _expanded: Mapping[str, Any]  # the block-expanded model as plain containers (for replace)

    def plain(self) -> dict[str, Any]:
        """The sections as plain containers, the model block-expanded: what digests hash."""
        return {name: dataclasses.asdict(getattr(self, name)) for name in SECTIONS}

    def replace(self, **sections: Mapping[str, Any]) -> Config:
        """This config with keys of whole sections changed (`trainer={"model_dir": ...}`), checked
        against the schema's types again; the model (and so its expansion) must stay as it is."""
        if "model" in sections:
            raise ValueError("replace() keeps the model: load a new config to change it")
        written = copy.deepcopy(dict(self.written))
        for name, changes in sections.items():
            written[name] = {**written[name], **changes}
        return _typed(written, self._expanded)


def load(cfg: Any) -> Config:
    """`cfg` (a composed DictConfig, or a plain mapping: a logged config, a test's) checked against
    the rules and typed. Every mistake is one ConfigError naming its config path."""
    from omegaconf import DictConfig

    from layerprobe.config.compose import plain
    from layerprobe.config.validate import validate

    if isinstance(cfg, Config):
        return cfg
    written = plain(cfg) if isinstance(cfg, DictConfig) else copy.deepcopy(dict(cfg))
    written.pop("hydra", None)
    model = validate(written)  # the rules, on the config as written; returns the expanded model
    return _typed(written, {**model, "blocks": {}})


def _typed(written: dict[str, Any], model: Mapping[str, Any]) -> Config:
    """The schema's dataclasses of `written` with its model replaced by the expanded `model`."""
    from omegaconf import OmegaConf

    from layerprobe.schema import schema_error

    with schema_error():
        expanded: dict[Any, Any] = {**written, "model": dict(model)}
        node = OmegaConf.merge(OmegaConf.structured(LayerprobeConfig), expanded)
        typed = OmegaConf.to_object(node)
    assert isinstance(typed, LayerprobeConfig)
    return Config(typed.data, typed.model, typed.trainer, typed.probe, typed.tracking, written, model)
