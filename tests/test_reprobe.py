"""Probing a finished run without retraining: new layers exposed, results logged into that run."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import yaml
from mlflow.tracking import MlflowClient

from layerprobe.analysis.render import fmt
from layerprobe.data.pipeline import prepare
from layerprobe.errors import LayerprobeError
from layerprobe.reprobe import MODEL_DIR_CONFIG, probe_existing
from layerprobe.runner import run
from tests.hang import HANG_GUARD
from tests.reference import activations

pytestmark = [pytest.mark.estimator, pytest.mark.integration]  # reprobes the Estimator engine's checkpoints


@pytest.fixture
def trained(tiny, tmp_path):
    c = tiny()
    return c, run(c, tmp_path / "train")


def test_probe_a_logged_run_on_a_layer_not_exposed_in_training(trained, tmp_path):
    c, result = trained
    assert "conv2" not in result.probe
    ckpt = tf.train.latest_checkpoint(result.model_dir)
    stats, run_id = probe_existing(
        result.run_id, ["probe.layers=[conv2]", f"tracking.uri={result.tracking_uri}"], tmp_path / "again"
    )
    assert run_id == result.run_id and tf.train.latest_checkpoint(result.model_dir) == ckpt
    assert set(stats) == {"conv1", "conv2", "logits"}
    (conv2,) = activations(c, result.model_dir, ["conv2"], prepare(c["data"]).splits["eval"].features)
    np.testing.assert_allclose(stats["conv2"].mean, conv2.mean(), rtol=1e-5)
    np.testing.assert_allclose(stats["conv2"].std, conv2.std(), rtol=1e-4)
    logged = MlflowClient(tracking_uri=result.tracking_uri).get_run(result.run_id).data
    assert logged.metrics["probe/conv2/mean"] == pytest.approx(stats["conv2"].mean)
    assert logged.tags["layerprobe.reprobed_layers"] == "conv1,conv2,logits"
    # conv1 was probed at the same checkpoint in training: probing it again adds no second point
    # (the training-dynamics points of the subset are dynamics/conv1/mean, docs/dynamics.md)
    client = MlflowClient(tracking_uri=result.tracking_uri)
    assert [m.step for m in client.get_metric_history(result.run_id, "probe/conv1/mean")] == [result.global_step]
    assert [m.step for m in client.get_metric_history(result.run_id, "probe/conv2/mean")] == [result.global_step]


def test_probe_a_model_dir_through_the_cli(trained, tmp_path):
    c, result = trained
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "layerprobe",
            "probe",
            result.model_dir,
            "probe.layers=[gap]",
            "--output-dir",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=HANG_GUARD,
    )
    assert r.returncode == 0, r.stderr
    assert "probe/gap: mean" in r.stdout
    assert (tmp_path / "o" / "probe" / "gap" / "stats.json").is_file()


def test_a_layer_with_new_weights_is_refused(trained, tmp_path):
    c, result = trained
    with pytest.raises(LayerprobeError, match=r"layers \['extra'\] have weights that the checkpoint does not hold"):
        probe_existing(
            result.model_dir, ["+model.layers.extra={type: Dense, units: 3, inputs: gap, expose: true}"], tmp_path
        )


def test_dotted_layer_types_in_a_read_config_need_opt_in(trained, tmp_path):
    c, result = trained
    path = f"{result.model_dir}/{MODEL_DIR_CONFIG}"
    logged = yaml.safe_load(open(path).read())
    logged["model"]["layers"]["gap"]["type"] = "os.system"
    open(path, "w").write(yaml.safe_dump(logged))
    with pytest.raises(LayerprobeError, match=r"imports user code \(model.layers.gap.type=os.system\)"):
        probe_existing(result.model_dir, [], tmp_path)


def _section(html: str, anchor: str) -> str:
    return html.split(f'id="{anchor}">', 1)[1].split("<h2 ", 1)[0]


def test_a_reprobe_keeps_the_runs_header_dynamics_and_the_layers_it_leaves_out(trained, tmp_path):
    c, result = trained
    before = (tmp_path / "train" / "probe" / "report.html").read_text()
    probe_existing(
        result.run_id,
        ["model.layers.conv1.expose=false", "probe.layers=[gap]", f"tracking.uri={result.tracking_uri}"],
        tmp_path / "again",
    )
    client = MlflowClient(tracking_uri=result.tracking_uri)
    html = open(client.download_artifacts(result.run_id, "probe/report.html", str(tmp_path / "dl"))).read()
    html = html.replace("<wbr>", "")  # line-break opportunities in long values
    assert f'<tr><th>run id</th><td class="key">{result.run_id}</td></tr>' in html
    assert '<tr><th>overrides</th><td class="key">' in html and "<tr><th>eval/accuracy</th>" in html
    assert f'<tr><th>step</th><td class="key">{result.global_step}</td></tr>' in html
    assert '<tr><th>re-probed</th><td class="key">gap, logits</td></tr>' in html
    assert f"step {result.global_step}</title>" in html
    # the run's training dynamics, as its own report showed them (read back from dynamics.json)
    assert "No probe points during training" not in html
    assert _section(html, "dynamics") == _section(before, "dynamics")
    assert f"at steps 0, 10, {result.global_step}." in _section(html, "dynamics")
    # what the re-probe measured is new; conv1, left out, keeps its section from the run's probe
    sections = dict(re.findall(r'id="layer-\d+">([^<]+)</h2>\n(.*?)(?=<h2 |<footer>)', html, re.S))
    assert list(sections) == ["conv1", "gap", "logits"]  # in model order
    assert "not re-probed" in sections["conv1"] and "not re-probed" not in sections["gap"]
    mean = f'<td class="key">mean</td><td class="num">{fmt(result.probe["conv1"].mean)}</td>'
    assert mean in sections["conv1"]
    # the run keeps the name it was given: its model and the start of its id (docs/mlflow.md, "Run names and the UI")
    assert client.get_run(result.run_id).info.run_name == f"tiny_cnn ({result.run_id[:8]})"
