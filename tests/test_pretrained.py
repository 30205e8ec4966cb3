"""Pretrained weights from Keras's own cache (`weights: imagenet`) and saved models as one layer
(`type: model_file`), on the engine of this venv.

Keras reads its cache directory when it is imported (Keras 3: KERAS_HOME; Keras 2: ~/.keras), so the
runs that use a cache of the test's own are processes with HOME and KERAS_HOME in tmp_path. The
weights file Keras finds there is written by the test from a `weights=None` model of the same
architecture under the exact name Keras asks for; every process has a proxy on a closed loopback
port, so no test reaches the internet.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from layerprobe.errors import ConfigError
from tests.conftest import ENGINE, KERAS3, plain

ROOT = Path(__file__).resolve().parents[1]
# MobileNetV2's imagenet file for alpha 0.35 without its top: the name Keras asks for at any input
# size that has no file of its own (32x32 takes the 224 file; the weights' shapes do not depend on it)
WANTED = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"
BACKBONE = ["model=tiny_backbone", "data=synthetic_image", "data.params.shape=[32,32,3]", "data.params.size=32"]
CLOSED = "http://127.0.0.1:9"  # the discard port: nothing listens, a download fails at once


def _env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "home"
    (home / ".keras").mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, HOME=str(home), KERAS_HOME=str(home / ".keras"), PYTHONPATH=str(ROOT))
    env.update(https_proxy=CLOSED, http_proxy=CLOSED, HTTPS_PROXY=CLOSED, HTTP_PROXY=CLOSED, no_proxy="")
    return env


def _layerprobe(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    args = [
        *BACKBONE,
        f"trainer.engine={ENGINE}",
        "trainer=quick",
        f"trainer.model_dir={tmp_path / 'model'}",
        f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
        "probe.plots=false",
        *overrides,
    ]
    cmd = [sys.executable, "-m", "layerprobe", *args]
    return subprocess.run(cmd, cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=600)


def _keras():  # the Keras of this venv, as the engine uses it
    import tensorflow as tf

    return tf.keras


def _mobilenet(seed: int):
    keras = _keras()
    keras.utils.set_random_seed(seed)
    m = keras.applications.MobileNetV2(
        alpha=0.35, include_top=False, pooling="avg", weights=None, input_shape=(32, 32, 3)
    )
    rng = np.random.default_rng(seed)  # every weight off its initial value: a match is a load
    m.set_weights([w + rng.normal(0, 0.05, w.shape).astype(w.dtype) for w in m.get_weights()])
    return m


def _save_legacy_h5(model, path: Path) -> None:
    """The layout of Keras's imagenet files (by layer name): Keras 2's save_weights; Keras 3 writes it
    for a whole model saved as .h5."""
    if KERAS3:
        model.save(str(path))
    else:
        model.save_weights(str(path))


def _only_run_tags(db: Path) -> dict[str, str]:
    with sqlite3.connect(db) as con:
        return dict(con.execute("SELECT key, value FROM tags"))


@pytest.mark.integration  # two processes, trains one step
def test_imagenet_weights_are_the_file_in_keras_cache_and_the_run_records_it(tmp_path):
    import tensorflow as tf

    from layerprobe.provenance import file_digest

    app = _mobilenet(seed=3)
    cached = tmp_path / "home" / ".keras" / "models" / WANTED
    cached.parent.mkdir(parents=True)
    _save_legacy_h5(app, cached)
    r = _layerprobe(
        tmp_path,
        "model.layers.backbone.weights=imagenet",
        "+model.layers.backbone.trainable=false",  # frozen: the checkpoint keeps the loaded values
        "trainer.train_steps=1",
        "probe.enabled=false",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    ckpt = tf.train.latest_checkpoint(str(tmp_path / "model"))
    for w in app.weights:
        name = "backbone/" + (getattr(w, "path", None) or w.name.split(":")[0])
        name = name.replace("depthwise/kernel", "depthwise/depthwise_kernel")  # Keras 3's name, the key of Keras 2
        np.testing.assert_array_equal(tf.train.load_variable(ckpt, name), w.numpy(), err_msg=name)
    tags = _only_run_tags(tmp_path / "mlflow.db")
    assert tags["layerprobe.weights.backbone"].endswith("/keras-applications/mobilenet_v2/" + WANTED)
    assert tags["layerprobe.weights.backbone.file"] == str(cached)
    assert tags["layerprobe.weights.backbone.sha256"] == file_digest(str(cached))


@pytest.mark.integration  # a process
def test_imagenet_weights_offline_are_one_line_naming_the_file_the_cache_and_the_alternative(tmp_path):
    r = _layerprobe(tmp_path, "model.layers.backbone.weights=imagenet")
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1, r.stderr[-3000:]
    cache = tmp_path / "home" / ".keras" / "models"
    assert lines[0].startswith(f"layerprobe: error: model.layers.backbone.weights: Keras could not download {WANTED} (")
    assert f"): put that file into {cache}, or give `weights: <path>` of a local weights file. " in lines[0]
    assert lines[0].endswith("Received: 'imagenet'")
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "model").exists()  # before a run exists


def test_keras_preprocess_equals_the_familys_preprocess_input(tmp_path):
    from layerprobe.data.transforms import apply

    keras = _keras()
    x = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    for family in ("mobilenet_v2", "resnet50", "efficientnet", "vgg16"):
        t = [{"name": "keras_preprocess", "family": family, "features": ["image"]}]
        f, _ = apply(t, {}, {"image": x}, {}, lo=0, hi=1, training=False, seed=0)
        want = getattr(keras.applications, family).preprocess_input(x.copy())
        np.testing.assert_allclose(np.asarray(f["image"]), np.asarray(want), rtol=1e-6, err_msg=family)


def test_the_preprocess_families_are_this_keras_ones():
    from layerprobe.data.checks import PREPROCESS_FAMILIES

    apps = _keras().applications
    installed = {n for n in dir(apps) if n[:1].islower() and hasattr(getattr(apps, n), "preprocess_input")}
    keras2_only = {"regnet", "resnet_rs"}  # Keras 3 dropped them: the transform names this Keras then
    assert installed == set(PREPROCESS_FAMILIES) - (keras2_only if KERAS3 else set())


def test_an_unknown_preprocess_family_is_one_line_with_did_you_mean():
    from layerprobe.config.loaded import load

    c = plain([*BACKBONE, "+data.transforms=[{name: keras_preprocess, family: mobilenetv2}]"])
    with pytest.raises(ConfigError) as e:
        load(c)
    assert str(e.value).startswith(
        "data.transforms[0].family: unknown application family. Received: 'mobilenetv2'. Did you mean 'mobilenet_v2'?"
    )


def _small_model(keras):
    keras.utils.set_random_seed(1)
    i = keras.Input((8, 8, 1), name="pixels")
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv_a")(i)
    x = keras.layers.BatchNormalization(name="bn_a")(x)
    x = keras.layers.Flatten(name="flat")(x)
    x = keras.layers.Dense(6, activation="relu", name="dense_1")(x)
    m = keras.Model(i, keras.layers.Dense(3, name="dense_2")(x))
    rng = np.random.default_rng(5)
    m.set_weights([w + rng.normal(0, 0.1, w.shape).astype(w.dtype) for w in m.get_weights()])
    return m


def _saved_forms(tmp_path: Path, model) -> list[Path]:
    forms = [tmp_path / "m.keras", tmp_path / "m.h5"]
    for p in forms:
        model.save(str(p))
    if not KERAS3:  # Keras 3 neither writes nor loads a SavedModel as a Keras model
        model.save(str(tmp_path / "sm"), save_format="tf")
        forms.append(tmp_path / "sm")
    return forms


@pytest.mark.integration  # builds and runs the model per file
def test_a_model_file_layer_has_the_saved_models_inner_activations(tiny, tmp_path, monkeypatch):
    from layerprobe.config.loaded import load
    from layerprobe.data.digests import path_digest
    from layerprobe.experiment import prepare

    monkeypatch.chdir(tmp_path)  # the converted files are cached under ./.cache
    keras = _keras()
    saved = _small_model(keras)
    x = np.random.default_rng(2).normal(size=(5, 8, 8, 1)).astype("float32")
    want = keras.Model(saved.inputs, [saved.get_layer("dense_1").output, saved.get_layer("bn_a").output])(x)
    for form in _saved_forms(tmp_path, saved):
        c = tiny("data=digits", f"trainer.engine={ENGINE}", model_dir=str(tmp_path / f"m-{form.name}"))
        c["model"]["inputs"] = {"image": {"shape": [8, 8, 1], "dtype": "float32"}}
        c["model"]["layers"] = {
            "mymodel": {"type": "model_file", "path": str(form)},
            "logits": {"type": "Dense", "units": 10},
        }
        c["model"]["outputs"] = {}
        c["probe"]["layers"] = ["mymodel/dense_1", "mymodel/bn_a"]
        xp = prepare(load(c))
        assert xp.exposed == ("mymodel/bn_a", "mymodel/dense_1")
        ws = xp.summary.sources[0]
        assert ws.origin == str(form.resolve()) and ws.path == "model.layers.mymodel.path"
        assert ws.sha256 == path_digest(form)
        _assert_inner_equal(c, form, x, [np.asarray(w) for w in want])


def _assert_inner_equal(c, form, x, want) -> None:
    """The graph built from the config, started from the model file's weights, gives the saved
    model's own inner activations on the same inputs."""
    from layerprobe.config.loaded import load
    from layerprobe.engines.spec import model_spec
    from layerprobe.graph import build
    from layerprobe.graph.keys import model_weight_keys, variables
    from layerprobe.graph.warm import assign_from, checkpoint_of

    keras = _keras()
    spec = model_spec(load(c))
    if KERAS3:
        inputs = {"image": keras.Input((8, 8, 1), name="image")}
        g = build(spec.layers, inputs, training=False, keras=keras)
        keys = model_weight_keys(g.layers.values())
        assign_from(g.warm[0], {keys[id(v)]: v for layer in g.layers.values() for v in variables(layer)})
        sub = keras.Model(inputs, [g.tensors["mymodel/dense_1"], g.tensors["mymodel/bn_a"]])
        got = [np.asarray(t) for t in sub({"image": x})]
    else:
        import tensorflow as tf

        with tf.Graph().as_default():
            g = build(spec.layers, {"image": tf.constant(x)}, training=False, keras=keras)
            layer_vars = {v.name.split(":")[0]: v for layer in g.layers.values() for v in variables(layer)}
            tf.compat.v1.train.init_from_checkpoint(
                checkpoint_of(g.warm[0]),
                {k: layer_vars[v] for k, v in _assignment(g.warm[0], layer_vars).items()},
            )
            with tf.compat.v1.Session() as s:
                s.run(tf.compat.v1.global_variables_initializer())
                got = s.run([g.tensors["mymodel/dense_1"], g.tensors["mymodel/bn_a"]])
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=str(form))


def _assignment(ws, layer_vars):
    from layerprobe.graph.warm import assignment, checkpoint_of

    return assignment(ws, checkpoint_of(ws), {n: v.shape.as_list() for n, v in layer_vars.items()})


def _model_file_config(path: str, engine: str = ENGINE, **extra) -> dict:
    c = plain(["model=tiny_cnn", "data=digits", f"trainer.engine={engine}"])
    c["model"]["inputs"] = {"image": {"shape": [8, 8, 1], "dtype": "float32"}}
    c["model"]["layers"] = {
        "mymodel": {"type": "model_file", "path": path, **extra},
        "logits": {"type": "Dense", "units": 10},
    }
    c["model"]["outputs"] = {}
    return c


def test_each_bad_model_file_is_one_line(tmp_path):
    from layerprobe.config.loaded import load

    saved_model = tmp_path / "sm"
    saved_model.mkdir()
    (saved_model / "saved_model.pb").write_bytes(b"")
    cases = [
        (
            _model_file_config(str(tmp_path / "nowhere.keras")),
            "model.layers.mymodel.path: not an existing .keras or .h5 file, nor a SavedModel directory "
            f"(with saved_model.pb). Received: '{tmp_path / 'nowhere.keras'}'",
        ),
        (
            _model_file_config(str(saved_model), engine="keras"),
            "model.layers.mymodel.path: Keras 3 (trainer.engine=keras) loads .keras and .h5 files only: save the "
            f"model as .keras. Received: '{saved_model}'",
        ),
        (
            _model_file_config(str(saved_model), engine="estimator", weights="imagenet"),
            "model.layers.mymodel.weights: model_file takes no argument 'weights'. Received: 'weights'. Allowed: "
            "path, trainable",
        ),
    ]
    for c, line in cases:
        with pytest.raises(ConfigError) as e:
            load(c)
        assert str(e.value) == line


def test_imagenet_in_a_config_file_stays_a_name_not_a_path(tmp_path, monkeypatch):
    from omegaconf import OmegaConf

    from layerprobe.config import compose

    (tmp_path / "mine" / "model").mkdir(parents=True)
    text = (ROOT / "conf" / "model" / "frozen_backbone.yaml").read_text().replace("weights: null", "weights: imagenet")
    (tmp_path / "mine" / "model" / "pretrained.yaml").write_text(text)
    monkeypatch.chdir(tmp_path)
    c = OmegaConf.to_container(compose(["model=pretrained"], config_dir=str(tmp_path / "mine")), resolve=True)
    assert c["model"]["layers"]["backbone"]["weights"] == "imagenet"  # type: ignore[index]


def test_a_model_file_saved_anew_under_the_same_path_trains_in_another_model_dir(tmp_path):
    """The model_dir's name hashes the file's bytes: a re-saved model never resumes the old one's checkpoints."""
    from layerprobe.config.loaded import load
    from layerprobe.experiment import model_dir_for

    saved = tmp_path / "m.keras"
    c = _model_file_config(str(saved))
    c["trainer"]["model_dir"] = None
    saved.write_bytes(b"the first model")
    first = model_dir_for(load(c))
    saved.write_bytes(b"the model trained again")
    assert model_dir_for(load(c)) != first
    saved.write_bytes(b"the first model")
    assert model_dir_for(load(c)) == first


@pytest.mark.integration  # a whole run: evaluation, probe, report, store
def test_a_probe_only_run_of_a_model_file_reports_the_saved_models_own_activations(tiny, tmp_path, monkeypatch):
    """trainer.train_steps=0: nothing trains; the run's probe statistics are those of the saved
    model's inner layers over the probe split, and its report is written."""
    from layerprobe.runner import run

    monkeypatch.chdir(tmp_path)
    keras = _keras()
    saved = _small_model(keras)
    saved.save(str(tmp_path / "m.keras"))
    c = tiny("data=digits", f"trainer.engine={ENGINE}", "trainer.train_steps=0")
    c["model"]["inputs"] = {"image": {"shape": [8, 8, 1], "dtype": "float32"}}
    c["model"]["layers"] = {
        "mymodel": {"type": "model_file", "path": str(tmp_path / "m.keras")},
        "logits": {"type": "Dense", "units": 10},
    }
    c["model"]["outputs"] = {}
    c["probe"]["layers"] = ["mymodel/dense_1"]
    result = run(c, tmp_path / "out")

    assert result.global_step == 0 and (Path(result.output_dir) / "probe" / "report.html").is_file()
    from layerprobe.config.loaded import load
    from layerprobe.data.pipeline import prepare as prepare_data

    data = prepare_data(load(c).data)
    saved = keras.models.load_model(str(tmp_path / "m.keras"))  # Keras 2: the run's graphs invalidate older models
    inner = keras.Model(saved.inputs, saved.get_layer("dense_1").output)
    batches = data.probe_dataset(c["probe"]["split"], batch_size=64, max_examples=c["probe"]["max_examples"])
    acts = np.concatenate([np.asarray(inner(f["image"])) for f, _, _ in batches])
    np.testing.assert_allclose(result.probe_metrics["probe/mymodel/dense_1/mean"], acts.mean(), rtol=1e-4)
    np.testing.assert_allclose(result.probe_metrics["probe/mymodel/dense_1/max"], acts.max(), rtol=1e-5)
