"""The Keras engine (trainer.engine=keras) on .venv-keras: training with `fit`, checkpoints and resume,
bitwise reruns, evaluation keys, and probe statistics equal to a plain Keras 3 model on its weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.keras, pytest.mark.integration]

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from layerprobe.config.loaded import load  # noqa: E402
from layerprobe.data.pipeline import prepare  # noqa: E402
from layerprobe.graph import build  # noqa: E402
from layerprobe.runner import run  # noqa: E402


def keras3_activations(c: dict, model_dir: str, layers: list[str], features: dict) -> list[np.ndarray]:
    """The other way: a plain Keras 3 model of the config's layers, every weight read by its path
    (`conv1/kernel`) from model_dir's latest checkpoint, predicted with Keras' own loop."""
    inputs = {n: keras.Input(tuple(s["shape"]), name=n) for n, s in c["model"]["inputs"].items()}
    graph = build(c["model"]["layers"], inputs, training=None, keras=keras)
    ckpt = tf.train.latest_checkpoint(model_dir)
    for layer in graph.layers.values():
        layer.set_weights([tf.train.load_variable(ckpt, w.path) for w in layer.weights])
    model = keras.Model(inputs, [graph.tensors[n] for n in layers])
    out = model.predict(features, batch_size=256, verbose=0)
    return out if isinstance(out, list) else [out]


def assert_stats_equal_numpy(s, x: np.ndarray) -> None:
    flat = x.reshape(-1, x.shape[-1]).astype(np.float64)
    assert s.count == flat.size
    np.testing.assert_allclose(s.mean, flat.mean(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(s.std, flat.std(), rtol=1e-5)
    np.testing.assert_allclose([s.min, s.max], [flat.min(), flat.max()], rtol=1e-5, atol=1e-6)
    assert s.zero_fraction == pytest.approx((flat == 0).mean(), abs=1e-6)
    np.testing.assert_allclose(s.unit_mean, flat.mean(0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(s.unit_std, flat.std(0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(s.unit_max, flat.max(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(s.unit_active_fraction, (flat > 0).mean(0), atol=1e-6)
    l2 = np.sqrt((x.reshape(len(x), -1).astype(np.float64) ** 2).sum(1)).mean()
    np.testing.assert_allclose(s.mean_l2_norm, l2, rtol=1e-5)
    np.testing.assert_allclose(
        list(s.percentiles.values()), np.percentile(flat, [1, 5, 50, 95, 99]), rtol=0.01, atol=1e-6
    )


def test_probe_statistics_equal_a_plain_keras_model_on_the_engines_weights(tiny, tmp_path):
    c = tiny("trainer.engine=keras", "probe.reservoir_size=5", "probe.batch_size=50")
    result = run(c, tmp_path / "out")
    assert result.global_step == 20
    ev = prepare(c["data"]).splits["eval"]
    conv1, logits = keras3_activations(c, result.model_dir, ["conv1", "logits"], ev.features)
    for name, x in (("conv1", conv1), ("logits", logits)):
        assert result.probe[name].examples == ev.size == 359
        assert_stats_equal_numpy(result.probe[name], x)
    sample = np.load(Path(result.output_dir) / "probe" / "conv1" / "reservoir.npz")
    assert sample["activations"].shape == (5, 8, 8, 4)
    # the evaluation the runner logged is the plain model's accuracy on the eval split
    accuracy = (logits.argmax(-1) == ev.labels["label"]).mean()
    assert result.eval_metrics["eval/accuracy"] == pytest.approx(accuracy, abs=1e-6)


@pytest.mark.parametrize("model", ["sequence_lstm", "tabular_two_heads"])
def test_seed_models_train_and_probe_like_a_plain_keras_model(tiny, tmp_path, model):
    data = {"sequence_lstm": "synthetic_sequence", "tabular_two_heads": "synthetic_tabular"}[model]
    c = tiny("trainer.engine=keras", f"model={model}", f"data={data}", "probe.reservoir_size=0")
    result = run(c, tmp_path / "out")
    ev = prepare(c["data"]).splits["eval"]
    exposed = sorted(result.probe)
    for name, x in zip(exposed, keras3_activations(c, result.model_dir, exposed, ev.features)):
        assert_stats_equal_numpy(result.probe[name], x)
    heads = c["model"]["outputs"]
    want = {"eval/loss"} | {
        f"eval/{h}/{m}" if len(heads) > 1 else f"eval/{m}" for h, o in heads.items() for m in o["metrics"]
    }
    assert set(result.eval_metrics) == want


def test_checkpoints_every_n_steps_resume_and_bitwise_reruns(tiny, tmp_path):
    from layerprobe.experiment import prepare as prepare_experiment

    c = tiny("trainer.engine=keras", "trainer.save_checkpoints_steps=5", "trainer.keep_checkpoint_max=10")
    x = prepare_experiment(load(c))
    assert x.engine.train(x.data, 10) == 10
    assert [k.step for k in x.engine.checkpoints()] == [5, 10]
    assert tf.train.load_variable(x.engine.checkpoints()[-1].path, "conv1/kernel").shape == (3, 3, 1, 4)
    # a new engine over the same model_dir (a killed and restarted run) resumes from step 10
    again = prepare_experiment(load(c))
    assert again.engine.train(again.data, 20) == 20
    assert [k.step for k in again.engine.checkpoints()] == [5, 10, 15, 20]
    # the same config in a fresh model_dir, run twice: bitwise equal weights and metrics
    finals = []
    for d in ("r1", "r2"):
        c2 = tiny("trainer.engine=keras", model_dir=str(tmp_path / d))
        y = prepare_experiment(load(c2))
        y.engine.train(y.data, 20)
        finals.append((tf.train.load_variable(y.engine.model_dir, "conv2/kernel"), y.engine.evaluate(y.data)))
    np.testing.assert_array_equal(finals[0][0], finals[1][0])
    assert finals[0][1] == finals[1][1]


def test_dropout_trains_and_predicts_in_the_right_mode(tiny, tmp_path):
    from layerprobe.engines.keras.model import build_model
    from layerprobe.engines.spec import model_spec

    c = tiny("trainer.engine=keras")
    layers = c["model"]["layers"]
    layers["drop"] = {"type": "Dropout", "rate": 0.5, "inputs": "gap"}
    layers["logits"]["inputs"] = "drop"
    c["model"]["layers"] = {k: layers[k] for k in ["conv1", "pool1", "conv2", "gap", "drop", "logits"]}
    model, graph = build_model(model_spec(load(c)), keras)
    sub = keras.Model(model.inputs, [graph.tensors["gap"], graph.tensors["drop"]])
    ones = np.ones((256, 8, 8, 1), np.float32)
    share = {}
    for training in (True, False):
        before, after = (t.numpy() for t in sub(ones, training=training))
        share[training] = float(((after == 0) & (before != 0)).sum() / max((before != 0).sum(), 1))
    assert 0.4 < share[True] < 0.6 and share[False] == 0.0


def test_run_logs_the_engine_and_exports_a_saved_model(tiny, tmp_path):
    from mlflow.tracking import MlflowClient

    c = tiny("trainer.engine=keras")
    result = run(c, tmp_path / "out")
    r = MlflowClient(tracking_uri=result.tracking_uri).get_run(result.run_id)
    assert r.info.status == "FINISHED"
    assert r.data.params["trainer.engine"] == "keras"
    assert r.data.tags["layerprobe.engine"] == "keras" and r.data.tags["keras.version"].startswith("3.")
    assert r.data.tags["tensorflow.version"] == tf.__version__ and tf.__version__ >= "2.16"
    assert r.data.metrics["probe/conv1/mean"] == pytest.approx(result.probe["conv1"].mean)
    assert "train/loss" in r.data.metrics
    saved = next((Path(result.output_dir) / "saved_model").iterdir())
    loaded = tf.saved_model.load(str(saved))  # kept: its functions reference its variables
    served = loaded.serve({"image": np.zeros((2, 8, 8, 1), np.float32)})
    assert served["logits"].shape == (2, 10)
    assert json.loads((Path(result.output_dir) / "probe" / "conv1" / "stats.json").read_text())["mean"] == (
        pytest.approx(result.probe["conv1"].mean)
    )


def test_a_keras_run_is_probed_again_on_a_layer_not_exposed_in_training(tiny, tmp_path):
    from layerprobe.reprobe import probe_existing

    c = tiny("trainer.engine=keras")
    result = run(c, tmp_path / "out")
    assert "conv2" not in result.probe
    stats, run_id = probe_existing(
        result.run_id, ["probe.layers=[conv2]", f"tracking.uri={result.tracking_uri}"], tmp_path / "again"
    )
    assert run_id == result.run_id and set(stats) == {"conv1", "conv2", "logits"}
    ev = prepare(c["data"]).splits["eval"]
    (conv2,) = keras3_activations(c, result.model_dir, ["conv2"], ev.features)
    assert_stats_equal_numpy(stats["conv2"], conv2)


def test_the_engines_pages_commands_run(tmp_path):
    """The Engines page's `layerprobe trainer.engine=keras ...` lines, each shortened to a few steps."""
    import subprocess
    import sys

    from tests.docs import commands, page

    lines = [c for c in commands("layerprobe", [page("engines.md")]) if "trainer.engine=keras" in c]
    assert "layerprobe trainer.engine=keras" in lines  # the page shows the engine's default experiment
    quick = ["trainer.train_steps=10", "probe.max_examples=100", f"tracking.uri=sqlite:///{tmp_path / 'm.db'}"]
    for line in lines:
        args = [*line.split()[1:], *quick]
        r = subprocess.run(
            [sys.executable, "-m", "layerprobe", *args], capture_output=True, text=True, timeout=600, cwd=tmp_path
        )
        assert r.returncode == 0, r.stderr[-3000:]
        assert "eval/accuracy" in r.stdout + r.stderr


def test_a_diverging_loss_stops_training_with_one_sentence_and_keeps_the_last_checkpoint(tiny):
    from layerprobe.errors import TrainingDiverged
    from layerprobe.experiment import prepare as prepare_experiment

    c = tiny("trainer.engine=keras", "trainer.optimizer.name=sgd", "trainer.save_checkpoints_steps=1")
    x = prepare_experiment(load(c))
    x.engine.train(x.data, 2)
    c["trainer"]["optimizer"]["learning_rate"] = 1e30
    y = prepare_experiment(load(c))
    with pytest.raises(TrainingDiverged) as e:
        y.engine.train(y.data, 20)
    assert "Lower trainer.optimizer.learning_rate" in str(e.value) and "\n" not in str(e.value)
    assert y.engine.checkpoints()[-1].step < int(str(e.value).split("at global step ")[1].split(";")[0])


def test_a_layer_that_cannot_take_its_input_is_one_line_before_model_dir_exists(tiny, tmp_path):
    from layerprobe.errors import ConfigError
    from layerprobe.experiment import prepare as prepare_experiment

    c = tiny("trainer.engine=keras", "+model.layers.conv2.inputs=gap")
    c["model"]["layers"] = {k: c["model"]["layers"][k] for k in ["conv1", "pool1", "gap", "conv2", "logits"]}
    c["model"]["layers"]["logits"]["inputs"] = "conv2"
    with pytest.raises(ConfigError) as e:
        prepare_experiment(load(c))
    assert str(e.value).startswith("model.layers.conv2: Conv2D cannot take input shape [None, 4] from ['gap']")
    assert "\n" not in str(e.value) and not (tmp_path / "model").exists()
