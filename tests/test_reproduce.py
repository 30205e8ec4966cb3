"""Reproducible experiments: bitwise reruns and `reproduce` of a logged run (the baseline gate: test_check.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import tensorflow as tf
from mlflow.tracking import MlflowClient

from layerprobe.provenance import checkpoint_digest, latest_in
from layerprobe.reproduce import reproduce
from layerprobe.runner import run
from tests.hang import HANG_GUARD

pytestmark = [pytest.mark.estimator, pytest.mark.integration]  # reproduces runs of the Estimator engine


def test_same_config_gives_identical_checkpoint_files_and_another_seed_does_not(tiny, tmp_path):
    digests, metrics = [], []
    for i, seed in enumerate((3, 3, 4)):
        c = tiny(f"trainer.seed={seed}", model_dir=str(tmp_path / f"m{i}"))
        c["tracking"]["enabled"] = False
        r = run(c, tmp_path / f"o{i}")
        digests.append(checkpoint_digest(latest_in(r.model_dir)))
        metrics.append({**r.eval_metrics, **r.probe_metrics})
    assert digests[0] == digests[1] != digests[2]
    assert metrics[0] == metrics[1]  # eval metrics and every probe statistic, bitwise
    assert metrics[0]["eval/loss"] != metrics[2]["eval/loss"]
    assert metrics[0]["probe/conv1/mean"] != metrics[2]["probe/conv1/mean"]


@pytest.fixture
def logged(tiny, tmp_path):
    c = tiny()
    return run(c, tmp_path / "orig")


def test_reproduce_of_a_run_is_bitwise(logged, tmp_path):
    report = reproduce(logged.run_id, tmp_path / "re", logged.tracking_uri)
    assert report.failures == [] and report.environment == {}
    assert report.checkpoint[0] == report.checkpoint[1] != ""
    assert len(report.diffs) > 30 and all(d.exact for d in report.diffs)
    rerun = MlflowClient(tracking_uri=logged.tracking_uri).get_run(report.new_run)
    assert rerun.data.tags["layerprobe.reproduces"] == logged.run_id
    assert "reproduced" in report.text().splitlines()[-1]


def test_reproduce_fails_with_a_readable_diff_when_a_metric_was_tampered_with(logged, tmp_path):
    client = MlflowClient(tracking_uri=logged.tracking_uri)
    client.log_metric(logged.run_id, "eval/accuracy", 0.999, step=20)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "layerprobe",
            "reproduce",
            logged.run_id,
            "--tracking-uri",
            logged.tracking_uri,
            "--output-dir",
            str(tmp_path / "re"),
        ],
        capture_output=True,
        text=True,
        timeout=HANG_GUARD,
    )
    assert r.returncode == 1, r.stderr[-2000:]
    assert "FAIL: eval/accuracy: 0.999 ->" in r.stdout
    assert r.stdout.strip().endswith("NOT reproduced")


def test_reproduce_fails_when_the_checkpoint_was_tampered_with(logged, tmp_path):
    data = Path(tf.train.latest_checkpoint(logged.model_dir) + ".data-00000-of-00001")
    raw = bytearray(data.read_bytes())
    raw[100] ^= 0xFF
    data.write_bytes(bytes(raw))
    report = reproduce(logged.run_id, tmp_path / "re", logged.tracking_uri)
    assert any(f.startswith("the original checkpoint changed since it was logged") for f in report.failures)
