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

# A test declares what it needs where it is written, never in a list here: `estimator` (the Estimator
# engine or its TensorFlow 2.15) and `keras` (Keras 3 on TensorFlow >= 2.16) pick the venv;
# `integration` (trains a model or starts a process) and `slow` pick the tier. Each is a marker on the
# test or the module's `pytestmark`; a fixture that trains, opens a real MLflow store or starts a process
# requests the fixture `integration` below, and every test that uses it, directly or through other
# fixtures, is integration too.


@pytest.fixture(scope="session")  # session: module-scoped fixtures request it too
def integration() -> None:
    """Requested by a fixture that trains, opens a real MLflow store or starts a process: every test
    that uses it is marked `integration`."""


def pytest_addoption(parser):
    parser.addoption(
        "--unit",
        action="store_true",
        help="the unit tier (`make test-unit`): leave out integration and slow tests, and fail any test that "
        "still trains (an engine's train), opens an MLflow store or starts a process",
    )


def pytest_collection_modifyitems(config, items):
    unit, left_out = config.getoption("--unit"), []
    for item in items:
        if "integration" in item.fixturenames:  # the closure: fixtures of fixtures too
            item.add_marker(pytest.mark.integration)
        if item.get_closest_marker("estimator") and KERAS3:
            item.add_marker(pytest.mark.skip(reason="needs the Estimator's TensorFlow 2.15: `make test`"))
        if item.get_closest_marker("keras") and not KERAS3:
            item.add_marker(pytest.mark.skip(reason="needs Keras 3 on TensorFlow >= 2.16: `make test-keras`"))
        if unit and (item.get_closest_marker("integration") or item.get_closest_marker("slow")):
            left_out.append(item)
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        gone = set(left_out)
        items[:] = [item for item in items if item not in gone]
    _heaviest_modules_first(items)


def _heaviest_modules_first(items: list[pytest.Item]) -> None:
    """Modules with the most test functions that train or start processes first, each module's tests kept
    together and in order: pytest-xdist (`--dist loadfile`) hands out modules in this order, so the
    long ones start early instead of leaving one worker alone at the end of the run."""

    def heavy(item: pytest.Item) -> bool:
        skipped = item.get_closest_marker("skip") is not None
        return not skipped and any(item.get_closest_marker(m) for m in ("integration", "slow", "combinations"))

    functions: dict[str, set[str]] = {}  # module -> its heavy test functions (a parametrization counts once)
    for item in items:
        module = item.nodeid.split("::")[0]
        functions.setdefault(module, set())
        if heavy(item):
            functions[module].add(item.nodeid.split("[")[0])
    items.sort(key=lambda item: -len(functions[item.nodeid.split("::")[0]]))  # stable: a module's order stays


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


# The unit tier's guard. Selection alone would let the tier rot: a test that starts training without
# its marker would run there, slowly, unnoticed. Under `--unit` every engine's train, opening a real
# MLflow store (seconds of migrations on sqlite; STYLE.md puts the store in the integration tier) and
# every way to start a process (subprocess, fork, exec, os.system) fail instead, for the whole session,
# so a module- or session-scoped fixture is caught too. The error is raised where it starts (pytest's
# Failed is a BaseException: an `except Exception` does not swallow it) and recorded, so a test whose
# code catches even that still fails when it ends.
_UNIT_VIOLATIONS: list[str] = []


def _refusing(what: str):
    def refuse(*args: Any, **kwargs: Any) -> Any:
        _UNIT_VIOLATIONS.append(what)
        pytest.fail(
            f"{what} in the unit tier: mark the test (or its module) `integration`, or have its fixture "
            "request the fixture `integration`",
            pytrace=False,
        )

    return refuse


def _arm_the_unit_guard() -> None:
    import importlib
    import subprocess

    from layerprobe.engines import ENGINES

    for path in ENGINES.values():
        module, _, cls = path.partition(":")
        try:
            engine = getattr(importlib.import_module(module), cls)
        except Exception:  # noqa: BLE001 - an engine that cannot be imported on this stack cannot train either
            continue
        engine.train = _refusing(f"{cls}.train")
    from mlflow.store.tracking.file_store import FileStore
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    for store in (SqlAlchemyStore, FileStore):
        store.__init__ = _refusing(f"opening an MLflow store ({store.__name__})")  # type: ignore[method-assign]
    subprocess.Popen._execute_child = _refusing("starting a process (subprocess)")  # type: ignore[attr-defined]
    for name in ("fork", "forkpty", "system", "posix_spawn", "posix_spawnp", "execv", "execve"):
        if hasattr(os, name):
            setattr(os, name, _refusing(f"starting a process (os.{name})"))


def pytest_configure(config):
    if config.getoption("--unit"):
        _arm_the_unit_guard()


@pytest.fixture(autouse=True)
def _nothing_trained_in_the_unit_tier(request):
    _UNIT_VIOLATIONS.clear()
    failed = request.session.testsfailed
    yield
    if _UNIT_VIOLATIONS and request.session.testsfailed == failed:  # the raise was swallowed
        pytest.fail(f"{_UNIT_VIOLATIONS[0]} in the unit tier (caught by the test's own code)", pytrace=False)
