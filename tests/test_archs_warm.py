"""Weights from elsewhere, with real files and a real store: an application's `weights:` file, a
trainer.warm_start from a Keras .h5 file and from an earlier MLflow run, the one line for a weights
file that does not fit, and the provenance tags each source leaves on the run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from layerprobe import tracking
from layerprobe.config.loaded import load
from layerprobe.errors import ConfigError
from layerprobe.provenance import checkpoint_digest, file_digest, latest_in, warm_start_tags
from layerprobe.runner import run
from tests.test_archs_models import _variables
from tests.test_bad_inputs import assert_clean_failure, run_in_process

pytestmark = pytest.mark.estimator  # warm start through the Estimator's model_fn

BACKBONE = ["model=tiny_backbone", "data=synthetic_image", "data.params.shape=[32,32,3]", "data.params.size=64"]
ONE_STEP = ["trainer.train_steps=1", "trainer.save_checkpoints_steps=1"]


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    """Converted weights files are cached under ./.cache: keep them out of the checkout."""
    monkeypatch.chdir(tmp_path)


def _mobilenet(alpha: float, seed: int) -> tf.keras.Model:
    """The tiny_backbone application made by Keras itself, its weights moved off any initialiser."""
    tf.keras.utils.set_random_seed(seed)
    m = tf.keras.applications.MobileNetV2(
        alpha=alpha, include_top=False, pooling="avg", weights=None, input_shape=(32, 32, 3)
    )
    return _moved(m, seed)


def _moved(model: tf.keras.Model, seed: int) -> tf.keras.Model:
    """Every weight (zero biases too) moved off its initial value, so a match is a load, not luck."""
    rng = np.random.default_rng(seed)
    model.set_weights([w + rng.normal(0, 0.05, w.shape).astype(w.dtype) for w in model.get_weights()])
    return model


@pytest.mark.integration  # trains
def test_an_application_loads_exactly_its_local_weights_file_and_records_it(tiny, tmp_path):
    app = _mobilenet(0.35, seed=7)
    path = tmp_path / "mobilenet.h5"
    app.save_weights(str(path))
    c = tiny(*BACKBONE, *ONE_STEP, f"model.layers.backbone.weights={path}", model_dir=str(tmp_path / "m"))
    c["probe"]["enabled"] = False
    result = run(c, tmp_path / "out")

    at0 = _variables(result.model_dir, 0)
    for w in app.weights:
        name = "backbone/" + w.name.split(":")[0]
        np.testing.assert_array_equal(at0[name], w.numpy(), err_msg=name)
    assert len([n for n in at0 if n.startswith("backbone/")]) == len(app.weights) == 260
    tags = tracking.run_tags(result.tracking_uri, result.run_id)
    assert tags["layerprobe.weights.backbone"] == str(path.resolve())
    assert tags["layerprobe.weights.backbone.sha256"] == file_digest(str(path))


@pytest.mark.integration  # builds a Keras application: 10-30 s, the unit tier's whole budget
def test_a_weights_file_that_does_not_fit_names_the_first_mismatch_and_its_shapes(tiny, tmp_path):
    from layerprobe.preflight import preflight

    path = tmp_path / "wider.h5"
    _mobilenet(0.5, seed=1).save_weights(str(path))  # the same layers, other widths
    c = tiny(*BACKBONE, f"model.layers.backbone.weights={path}", model_dir=str(tmp_path / "m"))
    with pytest.raises(ConfigError) as e:
        preflight(c)
    assert str(e.value) == (
        "model.layers.backbone.weights: variable 'backbone/block_1_project/kernel' has shape [1, 1, 48, 8] here "
        f"and [1, 1, 48, 16] in the source ('backbone/block_1_project/kernel'). Received: '{path}'"
    )
    assert not (tmp_path / "m").exists()  # the dry build, before any run


@pytest.mark.integration  # builds a Keras application: 10-30 s, the unit tier's whole budget
def test_a_weights_file_of_another_model_names_the_first_missing_layer(tiny, tmp_path, capsys):
    path = tmp_path / "other.h5"
    tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(2, name="dense")]).save_weights(str(path))
    work = tmp_path / "work"
    work.mkdir()
    argv = [*BACKBONE, *ONE_STEP, f"model.layers.backbone.weights={path}", "probe.plots=false"]
    argv += [f"trainer.model_dir={work / 'model'}", f"tracking.uri=sqlite:///{work / 'mlflow.db'}"]
    rc, err = run_in_process(argv, capsys)
    expect = ["model.layers.backbone.weights: the file has no weights for layer 'Conv1'", f"Received: '{path}'"]
    assert_clean_failure(rc, err, expect, work)


def _keras_tiny_cnn(seed: int) -> tf.keras.Model:
    """conf/model/tiny_cnn.yaml written in Keras, with the config's layer names."""
    tf.keras.utils.set_random_seed(seed)
    x = inp = tf.keras.Input((8, 8, 1))
    x = tf.keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(x)
    x = tf.keras.layers.MaxPooling2D(name="pool1")(x)
    x = tf.keras.layers.Conv2D(8, 3, activation="relu", name="conv2")(x)
    x = tf.keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return _moved(tf.keras.Model(inp, tf.keras.layers.Dense(10, name="logits")(x)), seed)


@pytest.mark.integration  # trains
def test_warm_start_from_a_keras_weights_file(tiny, tmp_path):
    model = _keras_tiny_cnn(seed=3)
    path = tmp_path / "cnn.h5"
    model.save_weights(str(path))
    c = tiny(*ONE_STEP, f"trainer.warm_start.source={path}", model_dir=str(tmp_path / "m"))
    c["trainer"]["warm_start"]["variables"] = "conv.*"  # the head starts fresh
    c["probe"]["enabled"] = False
    result = run(c, tmp_path / "out")

    at0 = _variables(result.model_dir, 0)
    for w in model.weights:
        name = w.name.split(":")[0]
        if name.startswith("conv"):
            np.testing.assert_array_equal(at0[name], w.numpy(), err_msg=name)
        else:
            assert not np.array_equal(at0[name], w.numpy()), name
    tags = tracking.run_tags(result.tracking_uri, result.run_id)
    assert tags["layerprobe.warm_start"] == str(path.resolve())
    assert tags["layerprobe.warm_start.sha256"] == file_digest(str(path))


@pytest.mark.integration  # trains
def test_warm_start_from_an_earlier_run_id_starts_from_its_final_checkpoint(tiny, tmp_path):
    a = tiny(model_dir=str(tmp_path / "a"))
    a["probe"]["enabled"] = False
    first = run(a, tmp_path / "out_a")
    assert first.run_id and first.global_step == 20

    b = tiny(*ONE_STEP, f"trainer.warm_start.source={first.run_id}", model_dir=str(tmp_path / "b"))
    b["probe"]["enabled"] = False
    second = run(b, tmp_path / "out_b")

    src, at0 = _variables(first.model_dir), _variables(second.model_dir, 0)
    assert sorted(src) == sorted(at0) == [f"{n}/{w}" for n in ("conv1", "conv2", "logits") for w in ("bias", "kernel")]
    for n in src:
        np.testing.assert_array_equal(at0[n], src[n], err_msg=n)
    tags = tracking.run_tags(second.tracking_uri, second.run_id)
    assert tags["layerprobe.warm_start.run_id"] == first.run_id
    assert "layerprobe.warm_start" not in tags and "layerprobe.warm_start.sha256" not in tags


def test_provenance_names_each_kind_of_source(tiny, tmp_path):
    model_dir = tmp_path / "src"
    model = _keras_tiny_cnn(seed=0)
    ckpt = tf.train.Checkpoint(model=model).save(str(model_dir / "ckpt"))
    h5 = tmp_path / "w.h5"
    model.save_weights(str(h5))
    run_id = "0123456789abcdef0123456789abcdef"

    def tags(source: str) -> dict[str, str]:
        return warm_start_tags(load(tiny(f"trainer.warm_start.source={source}")))

    assert tags(str(h5)) == {"layerprobe.warm_start": str(h5), "layerprobe.warm_start.sha256": file_digest(str(h5))}
    assert tags(str(model_dir)) == {
        "layerprobe.warm_start": str(model_dir),
        "layerprobe.warm_start.sha256": checkpoint_digest(latest_in(str(model_dir))),
    }
    assert tags(ckpt) == {
        "layerprobe.warm_start": ckpt,
        "layerprobe.warm_start.sha256": checkpoint_digest(ckpt),
    }
    assert checkpoint_digest(latest_in(str(model_dir))) == checkpoint_digest(ckpt) != ""
    assert tags(run_id) == {"layerprobe.warm_start.run_id": run_id}
    assert Path(ckpt + ".index").is_file()
