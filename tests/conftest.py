"""Shared fixtures: configs composed through Hydra exactly as the CLI composes them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _absl_handler_to_the_real_stderr() -> None:
    """Hydra's logging setup (an in-process `hydra.main`) closes every logging handler ever made;
    absl's handler, created when TensorFlow is first imported (here: while pytest collects, with
    stderr captured), then closes the stream it was bound to: pytest's capture file. Bound to the
    process's real stderr, it leaves it open (absl never closes sys.__stderr__)."""
    import sys

    import absl.logging

    absl.logging.get_absl_handler().python_handler.stream = sys.__stderr__


_absl_handler_to_the_real_stderr()

from layerprobe.config import compose  # noqa: E402


@pytest.fixture(autouse=True)
def _logging_left_as_found():
    """A test that runs the CLI in-process gets a root handler (basicConfig, Hydra's job logging)
    bound to that test's captured stream, which pytest closes when the test ends: every later log
    line then prints 'Logging error ... I/O operation on closed file'. Undo it after each test."""
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in root.handlers:
        if h not in handlers:
            root.removeHandler(h)
    for h in handlers:
        if h not in root.handlers:
            root.addHandler(h)
    root.setLevel(level)


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
