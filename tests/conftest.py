"""Shared fixtures: configs composed through Hydra exactly as the CLI composes them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from layerprobe.config import compose  # noqa: E402


def plain(overrides: list[str]) -> dict[str, Any]:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(compose(overrides), resolve=True)  # type: ignore[return-value]


@pytest.fixture
def tiny(tmp_path: Path):
    """A composer for tiny, fast configs whose model_dir and MLflow store live in tmp_path."""

    def make(*overrides: str, model_dir: str | None = None) -> dict[str, Any]:
        base = [
            "model=tiny_cnn",
            "trainer=quick",
            f"trainer.model_dir={model_dir or tmp_path / 'model'}",
            f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
            "probe.plots=false",
        ]
        return plain(base + list(overrides))

    return make
