"""A run's record belongs to its own checkpoint. Runs with budgets 20 and 60 share one model_dir (the
step budget is not part of its name), and with keep_checkpoint_max=1 the 60-step run rotates step 20
away: probing, sharding, comparing and reproducing the 20-step run still read its step-20 checkpoint
(kept under `<model_dir>/kept/`), and say so in one line, logging nothing, once that copy is gone too."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from layerprobe.cli.main import main
from layerprobe.compare import _run_view
from layerprobe.data.pipeline import prepare
from layerprobe.errors import LayerprobeError
from layerprobe.reprobe import merge_shards, probe_existing, probe_shard
from layerprobe.reproduce import reproduce
from layerprobe.runner import run
from tests.reference import activations

pytestmark = [pytest.mark.estimator, pytest.mark.integration]  # Keras engine: test_keras_reprobe.py


@pytest.fixture
def two_budgets(tiny, tmp_path):
    """(config, the 20-step run, the 60-step run, a copy of the step-20 checkpoint taken before the
    60-step run rotated it away)."""
    short = tiny("trainer.train_steps=20", "trainer.keep_checkpoint_max=1")
    first = run(short, tmp_path / "r20")
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in Path(first.model_dir).glob("model.ckpt-20.*"):
        shutil.copy(f, copy)
    second = run(tiny("trainer.train_steps=60", "trainer.keep_checkpoint_max=1"), tmp_path / "r60")
    assert second.model_dir == first.model_dir and second.global_step == 60
    assert not Path(first.model_dir, "model.ckpt-20.index").exists()  # rotated away
    return short, first, second, str(copy / "model.ckpt-20")


def _steps(client: MlflowClient, run_id: str) -> set[int]:
    """Every step the run holds a point at."""
    keys = client.get_run(run_id).data.metrics
    return {m.step for k in keys for m in client.get_metric_history(run_id, k)}


def test_the_shorter_run_is_probed_sharded_compared_and_reproduced_at_its_own_checkpoint(two_budgets, tmp_path, capsys):
    c, first, second, copy = two_budgets
    uri = f"tracking.uri={first.tracking_uri}"
    client = MlflowClient(tracking_uri=first.tracking_uri)
    features = prepare(c["data"]).splits["eval"].features
    (at20,) = activations(c, first.model_dir, ["conv2"], features, copy)
    (at60,) = activations(c, first.model_dir, ["conv2"], features)
    assert not np.isclose(at20.mean(), at60.mean(), rtol=1e-3)  # the two checkpoints tell apart

    stats, _ = probe_existing(first.run_id, ["probe.layers=[conv2]", uri], tmp_path / "p")
    np.testing.assert_allclose(stats["conv2"].mean, at20.mean(), rtol=1e-5)
    np.testing.assert_allclose(stats["conv2"].std, at20.std(), rtol=1e-4)
    assert [(m.step, m.value) for m in client.get_metric_history(first.run_id, "probe/conv2/mean")] == [
        (20, pytest.approx(stats["conv2"].mean))
    ]
    assert "probe/conv2/mean" not in client.get_run(second.run_id).data.metrics
    # compare shows the run at its step, with the statistics of its checkpoint (the re-probe's files)
    view = _run_view(first.tracking_uri, first.run_id)
    assert view.step == 20 and view.stats["conv1"]["mean"] == pytest.approx(first.probe["conv1"].mean, rel=1e-9)

    probe_existing(first.run_id, [uri], tmp_path / "all", all_checkpoints=True)  # kept: 20 (its own), 60
    for i in (0, 1):
        probe_shard(first.run_id, ["probe.layers=[conv2]", uri], (i, 2), tmp_path / "states")
    merged, _ = merge_shards(first.run_id, ["probe.layers=[conv2]", uri], tmp_path / "states", tmp_path / "m")
    np.testing.assert_allclose(merged["conv2"].mean, at20.mean(), rtol=1e-5)
    assert max(_steps(client, first.run_id)) == 20  # nothing of step 60 in the 20-step run

    report = reproduce(first.run_id, tmp_path / "re", first.tracking_uri)
    assert report.failures == [] and report.original_checkpoint_now == report.checkpoint[0] != ""

    # Once its kept copy is gone too: one line naming the run, its step and what is kept; nothing logged.
    (kept,) = Path(first.model_dir, "kept").glob("20-*")
    shutil.rmtree(kept)
    held = client.get_run(first.run_id).data.metrics
    capsys.readouterr()
    assert main(["probe", first.run_id, "probe.layers=[conv2]", uri]) == 2
    digest = client.get_run(first.run_id).data.tags["layerprobe.checkpoint_sha256"]
    assert capsys.readouterr().err.strip().splitlines() == [
        f"layerprobe: error: run {first.run_id} was evaluated at step 20 (checkpoint {digest[:12]}), which "
        f"{first.model_dir} no longer keeps (kept steps: 60); nothing was probed or logged"
    ]
    assert client.get_run(first.run_id).data.metrics == held
    with pytest.raises(LayerprobeError, match="was evaluated at step 20"):
        probe_shard(first.run_id, [uri], (0, 2), tmp_path / "states")
