"""The paths built on the engine seam, on the Keras engine (.venv-keras): training dynamics, sharded
probing, Optuna sweeps with pruning, blocks, applications and warm start.

The Estimator's tests of dynamics and shards are collected here again, unchanged, with `tiny` composing
`trainer.engine=keras`: the same assertions hold on both engines.
"""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.keras, pytest.mark.integration]


@pytest.fixture
def tiny(tiny):
    """conftest's tiny configs, trained and probed by the Keras engine."""

    def make(*overrides: str, model_dir: str | None = None):
        return tiny("trainer.engine=keras", *overrides, model_dir=model_dir)

    return make


# ---- training dynamics: points at >= 3 steps, the last one equal to a probe after training ----
from tests.test_dynamics import (  # noqa: E402
    test_a_resumed_run_continues_the_series,
    test_metrics_at_three_steps_and_the_last_equals_a_probe_after_training,
    trained,
)

# ---- sharded probing: 2 shards merged == 1 process ----
from tests.test_shard import test_two_shards_of_an_in_memory_split_merge_to_one_pass  # noqa: E402

__all__ = [
    "test_a_resumed_run_continues_the_series",
    "test_metrics_at_three_steps_and_the_last_equals_a_probe_after_training",
    "test_two_shards_of_an_in_memory_split_merge_to_one_pass",
    "trained",
]


# ---- sweeps: an Optuna study whose pruner hears the Keras engine's evaluation at each checkpoint ----


def test_an_optuna_sweep_prunes_a_bad_learning_rate_at_its_first_checkpoint(tmp_path, monkeypatch):
    """test_optuna's pruning test with every job on the Keras engine: trial 1 reports step 10 only."""
    from tests import test_optuna

    monkeypatch.setattr(test_optuna, "OPTUNA", [*test_optuna.OPTUNA, "trainer.engine=keras"])
    test_optuna.test_a_bad_learning_rate_is_pruned_at_its_first_checkpoint(tmp_path)
    from mlflow.tracking import MlflowClient

    _, children = test_optuna.children_of_sweep(tmp_path)
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert {client.get_run(c.info.run_id).data.tags["layerprobe.engine"] for c in children} == {"keras"}
