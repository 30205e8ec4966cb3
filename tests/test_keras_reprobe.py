"""Reprobe, reproduce and a run's own checkpoint on the Keras engine (.venv-keras): the Estimator's
tests of them collected again with `tiny` composing `trainer.engine=keras` (tests/test_keras_paths.py's fixture)."""

from __future__ import annotations

import pytest

from tests.test_keras_paths import tiny
from tests.test_own_checkpoint import (
    test_the_shorter_run_is_probed_sharded_compared_and_reproduced_at_its_own_checkpoint,
    two_budgets,
)
from tests.test_reprobe import (
    test_a_reprobe_keeps_the_runs_header_dynamics_and_the_layers_it_leaves_out,
    test_probe_a_logged_run_on_a_layer_not_exposed_in_training,
    test_probe_a_model_dir_through_the_cli,
    trained,
)
from tests.test_reproduce import (
    logged,
    test_reproduce_fails_when_the_checkpoint_was_tampered_with,
    test_reproduce_of_a_run_is_bitwise,
    test_same_config_gives_identical_checkpoint_files_and_another_seed_does_not,
)

pytestmark = [pytest.mark.keras, pytest.mark.integration]

__all__ = [
    "logged",
    "test_a_reprobe_keeps_the_runs_header_dynamics_and_the_layers_it_leaves_out",
    "test_probe_a_logged_run_on_a_layer_not_exposed_in_training",
    "test_probe_a_model_dir_through_the_cli",
    "test_reproduce_fails_when_the_checkpoint_was_tampered_with",
    "test_reproduce_of_a_run_is_bitwise",
    "test_same_config_gives_identical_checkpoint_files_and_another_seed_does_not",
    "test_the_shorter_run_is_probed_sharded_compared_and_reproduced_at_its_own_checkpoint",
    "tiny",
    "trained",
    "two_budgets",
]
