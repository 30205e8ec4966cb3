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

# Test modules (and single tests) that drive the Estimator engine or its TensorFlow 2.15: marked
# `estimator` here in one list rather than in each file, so the two environments' split is visible.
# A test named without its parameters covers all of them.
ESTIMATOR_ONLY = {
    # train, resume, reprobe or reproduce with the default engine, or read its graph
    "test_engine.py",
    "test_resume.py",
    "test_reprobe.py",
    "test_reproduce.py",
    "test_faults.py",
    "test_distributed.py",  # tf.estimator's strategies and TF_CONFIG clusters
    "test_sweeps.py",
    "test_bench_smoke.py",  # `make bench` measures the Estimator engine
    "test_readme.py",  # the README's commands run on `make venv`
    "test_probe_layers.py",
    "test_optuna.py",  # sweeps and pruning train with the default engine (and optuna is a `sweeps` extra)
    "test_shard.py",
    "test_archs_models.py",  # applications, blocks and warm start through the Estimator's model_fn
    "test_archs_warm.py",
    "test_archs_pretrained.py",
    "test_archs.py::test_applications_table_matches_the_installed_keras",  # tf.keras 2.15's applications
    "test_archs.py::test_an_inner_layer_that_does_not_exist_is_refused_in_the_dry_build_with_did_you_mean",
    "test_archs.py::test_a_pattern_over_inner_layers_resolves_in_the_dry_build",
    "test_data_images.py::test_a_whole_run_on_an_image_folder",
    "test_dynamics.py",
    "test_compare.py",
    "test_fuzz.py::test_the_unmutated_bases_build",
    "test_tracking.py::test_a_2x2_sweep_is_one_parent_with_four_children",
    "test_tracking.py::test_a_failing_job_is_failed_and_the_others_finish",
    "test_tracking.py::test_a_run_logged_to_a_real_tracking_server_reads_back_whole",
    "test_tracking.py::test_an_unreachable_store_is_one_line_before_training",
    "test_tracking.py::test_a_store_that_answers_health_but_fails_the_run_is_one_line_before_training",
    "test_bad_inputs.py::test_bad_config_is_one_line_exit_2_and_leaves_nothing",
    "test_bad_inputs.py::test_validate_refuses_every_data_and_graph_case_a_run_refuses",
    "test_validate.py::test_validate_runs_the_deep_checks_and_names_them",
    "test_validate.py::test_validate_refuses_what_the_run_would_refuse",
    "test_validate.py::test_layer_table_matches_installed_keras",  # Keras 3's: test_keras_engine_config
    "test_locks.py::test_a_run_whose_model_dir_is_locked_is_one_line_and_exit_2",
    "test_data_stream.py::test_a_whole_run_trains_evaluates_and_probes_on_a_stream",
    "test_data_tfds.py::test_a_whole_run_trains_probes_and_logs_the_tfds_digest",  # the default engine
    "test_data_tfds.py::test_bad_input_is_one_line_exit_2_and_leaves_nothing",  # through a default-engine run
    "test_data_tfds.py::test_two_probe_shards_of_a_trained_run_merge_to_the_one_pass",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        module = Path(str(item.fspath)).name
        if module in ESTIMATOR_ONLY or f"{module}::{item.originalname}" in ESTIMATOR_ONLY:
            item.add_marker(pytest.mark.estimator)
        if item.get_closest_marker("estimator") and KERAS3:
            item.add_marker(pytest.mark.skip(reason="needs the Estimator's TensorFlow 2.15: `make test`"))
        if item.get_closest_marker("keras") and not KERAS3:
            item.add_marker(pytest.mark.skip(reason="needs Keras 3 on TensorFlow >= 2.16: `make test-keras`"))


# On .venv-keras the whole Estimator-only modules are not even collected: some import the Estimator
# engine at module level, which stops (one line) on TensorFlow 2.21.
collect_ignore = sorted(m for m in ESTIMATOR_ONLY if "::" not in m) if KERAS3 else []
