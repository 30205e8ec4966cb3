"""The engine seam (engines.base.Engine), one suite for every engine: each venv runs it for the engine
its TensorFlow has (conftest.ENGINE), so both engines answer the same questions the same way."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from layerprobe.config import compose
from layerprobe.config.loaded import load
from layerprobe.config.names import LOSSES, METRICS, OPTIMIZERS
from layerprobe.engines import ENGINES
from tests.conftest import ENGINE

pytestmark = pytest.mark.integration


def _model_module() -> object:
    package = ENGINES[ENGINE].partition(":")[0].rpartition(".")[0]
    return importlib.import_module(f"{package}.{'model_fn' if ENGINE == 'estimator' else 'model'}")


def test_the_engine_implements_every_loss_metric_and_optimizer_name_and_no_other():
    module = _model_module()
    assert set(module.LOSSES) == set(LOSSES)  # type: ignore[attr-defined]
    assert set(module.METRICS) == set(METRICS)  # type: ignore[attr-defined]
    assert set(module.OPTIMIZERS) == set(OPTIMIZERS)  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained to step 6 with a checkpoint every 3 steps, through the runner."""
    from layerprobe.runner import run

    tmp = tmp_path_factory.mktemp("contract")
    c = load(
        compose(
            [
                "model=tiny_cnn",
                "trainer=quick",
                f"trainer.engine={ENGINE}",
                "trainer.train_steps=6",
                "trainer.save_checkpoints_steps=3",
                f"trainer.model_dir={tmp / 'model'}",
                "tracking.enabled=false",
                "probe.enabled=false",
            ]
        )
    )
    result = run(c, tmp / "out")
    from layerprobe.experiment import prepare

    return c, prepare(c, result.model_dir)


def test_checkpoints_are_listed_by_step_and_found_by_step(trained):
    _, x = trained
    kept = x.engine.checkpoints()
    steps = [k.step for k in kept]
    assert steps == sorted(steps) and steps[-1] == 6 and 3 in steps
    assert x.engine.latest() == kept[-1]
    assert x.engine.at_step(3) == next(k for k in kept if k.step == 3)
    assert x.engine.at_step(4) is None


def test_a_checkpoint_holds_every_weight_of_the_layer_table_under_its_row_key(trained):
    _, x = trained
    names = x.engine.variable_names(x.engine.latest())
    weights = [w for r in x.summary.rows for w in r.weight_names]
    assert weights and set(weights) <= names
    assert "conv1/kernel" in names


def test_digests_tell_checkpoints_apart_and_repeat(trained):
    _, x = trained
    latest, earlier = x.engine.latest(), x.engine.at_step(3)
    assert x.engine.digest(latest) == x.engine.digest(latest)
    assert x.engine.digest(latest) != x.engine.digest(earlier)
    assert len(x.engine.digest(latest)) == 64


def test_evaluating_an_earlier_checkpoint_reads_that_checkpoint(trained):
    _, x = trained
    at3 = x.engine.evaluate(x.data, "eval", x.engine.at_step(3).path)
    at6 = x.engine.evaluate(x.data, "eval", x.engine.latest().path)
    assert at3["global_step"] == 3 and at6["global_step"] == 6
    assert not np.isclose(at3["loss"], at6["loss"], rtol=0, atol=1e-9)
