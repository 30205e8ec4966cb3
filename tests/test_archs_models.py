"""Real architectures, built and trained: a Keras application's parameter count and inner activations,
blocks against the same layers written by hand, warm start and a frozen backbone."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from layerprobe.config.loaded import load
from layerprobe.experiment import prepare
from layerprobe.runner import run

pytestmark = pytest.mark.estimator  # applications, blocks and warm start through the Estimator's model_fn

BACKBONE = ["model=tiny_backbone", "data=synthetic_image", "data.params.shape=[32,32,3]", "data.params.size=120"]
RESNET = ["model=small_resnet", "data=synthetic_image", "data.params.size=300"]


def _variables(model_dir: str, step: int | None = None) -> dict[str, np.ndarray]:
    ckpt = tf.train.latest_checkpoint(model_dir) if step is None else f"{model_dir}/model.ckpt-{step}"
    names = [n for n, _ in tf.train.list_variables(ckpt) if "Adam" not in n and n not in ("global_step",)]
    return {n: tf.train.load_variable(ckpt, n) for n in names if not n.startswith("beta")}


@pytest.mark.integration  # builds a Keras application: 10-30 s, the unit tier's whole budget
def test_resnet50_from_config_has_keras_parameter_count(tiny):
    c = tiny("data=synthetic_image", "data.params.shape=[64,64,3]", "data.params.size=8")
    c["model"]["inputs"] = {"image": {"shape": [64, 64, 3], "dtype": "float32"}}
    c["model"]["layers"] = {
        "backbone": {"type": "ResNet50", "include_top": False, "pooling": "avg", "weights": None},
        "logits": {"type": "Dense", "units": 10},
    }
    c["model"]["outputs"] = {}
    c["probe"]["layers"] = ["backbone/conv4_block6_out"]
    rows = {r.name: r for r in prepare(load(c)).summary.rows}  # the dry build only: no training
    ref = tf.keras.applications.ResNet50(weights=None, include_top=False, pooling="avg", input_shape=(64, 64, 3))
    assert rows["backbone"].params == ref.count_params() == 23_587_712
    assert rows["logits"].params == 2048 * 10 + 10
    assert rows["backbone/conv4_block6_out"].output_shape == [4, 4, 1024]
    assert "backbone/conv1_conv/kernel" in rows["backbone"].weight_names


@pytest.mark.integration  # trains
def test_inner_layer_reservoir_equals_a_plain_keras_submodel_on_the_restored_weights(tiny, tmp_path):
    inner = "block_3_expand_relu"
    c = tiny(*BACKBONE, "trainer.train_steps=3", f"probe.layers=[backbone/{inner}]", "probe.reservoir_size=16")
    c["tracking"]["enabled"] = False
    result = run(c, tmp_path / "out")
    x = prepare(load(c))
    state = x.session().run(x.data)
    res = state.layers[f"backbone/{inner}"].reservoir()
    assert res["activations"].shape == (16, 8, 8, 48)

    app = tf.keras.applications.MobileNetV2(
        alpha=0.35, include_top=False, pooling="avg", weights=None, input_shape=(32, 32, 3)
    )
    ckpt = tf.train.latest_checkpoint(result.model_dir)
    app.set_weights([tf.train.load_variable(ckpt, f"backbone/{w.name.split(':')[0]}") for w in app.weights])
    sub = tf.keras.Model(app.inputs, app.get_layer(inner).output)
    images = x.data.splits["eval"].features["image"][res["keys"]]
    np.testing.assert_allclose(res["activations"], sub.predict(images, verbose=0), rtol=1e-4, atol=1e-4)
    moving = tf.train.load_variable(ckpt, "backbone/bn_Conv1/moving_mean")
    assert np.abs(moving).sum() > 0  # the inner BatchNorm updates ran in training


@pytest.mark.integration  # trains
def test_blocks_equal_the_same_layers_written_by_hand(tiny, tmp_path):
    from layerprobe.config.blocks import expand_model

    built = tiny(*RESNET, model_dir=str(tmp_path / "blocks"))
    by_hand = tiny(*RESNET, model_dir=str(tmp_path / "hand"))
    conv = {"type": "Conv2D", "kernel_size": 3, "padding": "same", "use_bias": False}
    layers = {"stem": {"type": "Conv2D", "filters": 16, "kernel_size": 3, "padding": "same", "activation": "relu"}}
    feed = "stem"
    for i in (1, 2):
        p = f"stage1_block{i}_"
        layers[p + "conv1"] = {**conv, "filters": 16, "inputs": feed}
        layers[p + "bn1"] = {"type": "BatchNormalization"}
        layers[p + "relu1"] = {"type": "ReLU"}
        layers[p + "conv2"] = {**conv, "filters": 16}
        layers[p + "bn2"] = {"type": "BatchNormalization"}
        layers[p + "add"] = {"type": "Add", "inputs": [p + "bn2", feed]}
        layers[p + "out"] = {"type": "ReLU"}
        feed = p + "out"
    down = "stage2_down_"
    layers[down + "conv1"] = {**conv, "filters": 32, "strides": 2}
    layers[down + "bn1"] = {"type": "BatchNormalization"}
    layers[down + "relu1"] = {"type": "ReLU"}
    layers[down + "conv2"] = {**conv, "filters": 32}
    layers[down + "bn2"] = {"type": "BatchNormalization"}
    layers[down + "proj"] = {**conv, "filters": 32, "kernel_size": 1, "strides": 2, "inputs": feed}
    layers[down + "add"] = {"type": "Add", "inputs": [down + "bn2", down + "proj"]}
    layers[down + "out"] = {"type": "ReLU"}
    for name in ("conv1", "bn1", "relu1", "conv2", "bn2"):
        layers["stage2_" + name] = dict(expand_model(built["model"])["layers"]["stage2_" + name])
    layers["stage2_add"] = {"type": "Add", "inputs": ["stage2_bn2", down + "out"]}
    layers["stage2_out"] = {"type": "ReLU"}
    layers["gap"] = {"type": "GlobalAveragePooling2D"}
    layers["logits"] = {"type": "Dense", "units": 10}
    by_hand["model"] = {k: v for k, v in by_hand["model"].items() if k != "blocks"} | {"layers": layers}
    outs = []
    for c, name in ((built, "blocks"), (by_hand, "hand")):
        c["tracking"]["enabled"] = False
        c["probe"]["layers"] = ["stage2_add"]
        c["probe"]["reservoir_size"] = 8
        outs.append(run(c, tmp_path / f"out_{name}"))
    a, b = _variables(outs[0].model_dir), _variables(outs[1].model_dir)
    assert sorted(a) == sorted(b) and "stage1_block2_conv1/kernel" in a
    for n in a:
        np.testing.assert_array_equal(a[n], b[n], err_msg=n)
    assert outs[0].eval_metrics == outs[1].eval_metrics
    assert outs[0].probe_metrics == outs[1].probe_metrics


@pytest.mark.integration  # trains
def test_warm_start_equals_the_source_at_step_0_and_a_frozen_backbone_stays_bitwise(tiny, tmp_path):
    source = tiny(*RESNET, model_dir=str(tmp_path / "source"))
    source["tracking"]["enabled"] = source["probe"]["enabled"] = False
    run(source, tmp_path / "out_source")
    src = _variables(str(tmp_path / "source"))

    warm = tiny(*RESNET, "trainer.warm_start.source=" + str(tmp_path / "source"), model_dir=str(tmp_path / "warm"))
    for instance in ("stage1", "stage2_down", "stage2"):
        warm["model"]["layers"][instance]["trainable"] = False
    warm["model"]["layers"]["stem"]["trainable"] = False
    warm["trainer"]["warm_start"]["variables"] = "(stem|stage).*"  # the head starts fresh
    warm["tracking"]["enabled"] = warm["probe"]["enabled"] = False
    run(warm, tmp_path / "out_warm")
    at0, after = _variables(str(tmp_path / "warm"), 0), _variables(str(tmp_path / "warm"))
    backbone = [n for n in src if n.startswith(("stem", "stage"))]
    assert len(backbone) == 2 + 4 * (2 + 2 * 4) + 1  # stem kernel+bias; 4 blocks of 2 convs, 2 BNs (4 each); proj
    for n in backbone:
        np.testing.assert_array_equal(at0[n], src[n], err_msg=n)  # warm: the source's values at step 0
        np.testing.assert_array_equal(after[n], src[n], err_msg=n)  # frozen: bitwise unchanged by training
    assert not np.array_equal(at0["logits/kernel"], src["logits/kernel"])  # not warm-started
    assert not np.array_equal(after["logits/kernel"], at0["logits/kernel"])  # the head trained
