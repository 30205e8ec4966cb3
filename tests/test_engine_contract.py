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


def test_a_kept_checkpoint_outlives_its_rotation_and_is_found_by_step_and_digest(trained, tmp_path):
    """What a run's probe reads after a later run continued its model_dir (tests/test_own_checkpoint.py)."""
    import shutil

    from layerprobe.engines import make_engine

    c, x = trained
    model_dir = tmp_path / "model"
    shutil.copytree(x.engine.model_dir, model_dir)  # the module's model_dir stays as the other tests read it
    engine = make_engine(x.spec, str(model_dir), c.trainer, c.data)
    at3 = engine.at_step(3)
    digest, before = engine.digest(at3), engine.evaluate(x.data, "eval", at3.path)
    kept = engine.keep(at3)
    assert engine.keep(at3) == kept and engine.keep(kept) == kept  # made once
    assert kept.step == 3 and kept.path.startswith(str(model_dir / "kept" / f"3-{digest[:16]}"))
    assert engine.digest(kept) == digest
    # rotation, as a Saver with keep_checkpoint_max=1 does it: files deleted, the state file rewritten
    for f in model_dir.glob("model.ckpt-3.*"):
        f.unlink()
    (model_dir / "checkpoint").write_text(
        'model_checkpoint_path: "model.ckpt-6"\nall_model_checkpoint_paths: "model.ckpt-6"\n'
    )
    assert [k.step for k in engine.checkpoints()] == [3, 6] and engine.latest().step == 6
    assert engine.at_step(3) == kept == engine.at_step(3, digest)
    assert engine.at_step(3, "0" * 64) is None  # another model's step 3 is not this run's
    assert engine.evaluate(x.data, "eval", kept.path) == before
