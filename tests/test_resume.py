"""The step budget: raising trainer.train_steps continues the same model_dir; a budget below what the
model_dir holds is read at its own checkpoint, never past it (docs/getting-started.md, "Where results go")."""

from __future__ import annotations

import logging

import pytest
from mlflow.tracking import MlflowClient

from layerprobe.config.loaded import load
from layerprobe.errors import LayerprobeError
from layerprobe.experiment import model_dir_for
from layerprobe.runner import run

pytestmark = [pytest.mark.estimator, pytest.mark.integration]  # resumes with the Estimator engine


@pytest.fixture
def hashed(tiny, tmp_path, monkeypatch):
    """Tiny configs whose model_dir is the default one, models/<model>-<training digest>, in tmp_path."""
    monkeypatch.chdir(tmp_path)
    return lambda *o: tiny("trainer.model_dir=null", "probe.analysis=false", *o)


def _loss_steps(result):
    client = MlflowClient(tracking_uri=result.tracking_uri)
    return [m.step for m in client.get_metric_history(result.run_id, "train/loss")]


def test_raising_train_steps_continues_the_same_model_dir(hashed, tmp_path, caplog):
    first = run(hashed("trainer.train_steps=20"), tmp_path / "a")
    c40 = hashed("trainer.train_steps=40")
    assert model_dir_for(load(c40)) == first.model_dir  # the budget is not part of the model_dir's name
    second = run(c40, tmp_path / "b")
    assert (second.model_dir, second.global_step) == (first.model_dir, 40)
    assert _loss_steps(first) == [10, 20]
    assert _loss_steps(second) == [30, 40]  # steps 21-40 only: training went on from step 20
    with caplog.at_level(logging.INFO, logger="layerprobe.runner"):
        third = run(c40, tmp_path / "c")
    assert third.global_step == 40 and _loss_steps(third) == []
    assert "checkpoint at step 40 >= trainer.train_steps=40: training skipped" in caplog.text
    assert third.eval_metrics == second.eval_metrics


def test_a_smaller_budget_reads_its_own_checkpoint_not_the_latest(hashed, tmp_path, caplog):
    at20 = run(hashed("trainer.train_steps=20"), tmp_path / "a")
    run(hashed("trainer.train_steps=30"), tmp_path / "b")  # the shared model_dir now holds step 30
    with caplog.at_level(logging.INFO, logger="layerprobe.runner"):
        again = run(hashed("trainer.train_steps=20"), tmp_path / "c")  # e.g. a parallel sweep job
    assert again.global_step == 20
    assert "checkpoint at step 30 >= trainer.train_steps=20: training skipped" in caplog.text
    assert again.eval_metrics == at20.eval_metrics  # evaluated at the step-20 checkpoint, bitwise
    assert again.probe_metrics == at20.probe_metrics
    client = MlflowClient(tracking_uri=again.tracking_uri)
    assert (
        client.get_run(again.run_id).data.tags["layerprobe.checkpoint_sha256"]
        == (client.get_run(at20.run_id).data.tags["layerprobe.checkpoint_sha256"])
    )


def test_a_budget_whose_checkpoint_is_gone_is_one_line_before_any_run(hashed, tmp_path):
    first = run(hashed("trainer.train_steps=30"), tmp_path / "a")
    with pytest.raises(LayerprobeError) as e:
        run(hashed("trainer.train_steps=15"), tmp_path / "b")
    client = MlflowClient(tracking_uri=first.tracking_uri)
    assert len(client.search_runs([first.experiment_id])) == 1  # no FAILED run was started for it
    assert str(e.value).startswith("trainer.train_steps: ")
    assert "is trained to step 30 and keeps no checkpoint at step 15 (kept: " in str(e.value)
    assert "\n" not in str(e.value)
