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


# Which stack runs the tests: `make test` (.venv, TensorFlow 2.15, Estimator) or `make test-keras`
# (.venv-keras, TensorFlow 2.21, Keras 3). Read from package metadata: no TensorFlow import.
def _keras_major() -> int:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return int(version("keras").split(".")[0])
    except PackageNotFoundError:
        return 0


KERAS3 = _keras_major() >= 3
ENGINE = "keras" if KERAS3 else "estimator"  # the engine a test that runs on both stacks trains with

# A test declares the stack it needs where it is written, never in a list here: `estimator` (the
# Estimator engine or its TensorFlow 2.15) and `keras` (Keras 3 on TensorFlow >= 2.16), each a marker on
# the test or in the module's `pytestmark`.


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("estimator") and KERAS3:
            item.add_marker(pytest.mark.skip(reason="needs the Estimator's TensorFlow 2.15: `make test`"))
        if item.get_closest_marker("keras") and not KERAS3:
            item.add_marker(pytest.mark.skip(reason="needs Keras 3 on TensorFlow >= 2.16: `make test-keras`"))


def _declares_estimator(path: Path) -> bool:
    """Whether a test module's own `pytestmark` names `pytest.mark.estimator`, read without importing it."""
    import ast

    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets):
            return any(isinstance(n, ast.Attribute) and n.attr == "estimator" for n in ast.walk(node.value))
    return False


def pytest_ignore_collect(collection_path: Path, config) -> bool | None:
    """On .venv-keras a module marked `estimator` as a whole is not even collected: some import the
    Estimator engine at module level, which stops (one line) on TensorFlow 2.21."""
    if KERAS3 and collection_path.suffix == ".py" and collection_path.name.startswith("test_"):
        return _declares_estimator(collection_path) or None
    return None
