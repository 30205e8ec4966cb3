"""Real architectures, before training: the applications table, block expansion, and one line for
each bad input (static rules first, then the dry build)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from layerprobe.config.applications import build_table, load_table
from layerprobe.config.blocks import expand_model
from layerprobe.config.validate import validate
from layerprobe.errors import ConfigError
from tests.conftest import plain

RESNET = ["model=small_resnet", "data=synthetic_image", "trainer=quick"]
BACKBONE = ["model=tiny_backbone", "data=synthetic_image", "data.params.shape=[32,32,3]", "data.params.size=64"]


@pytest.mark.estimator  # tf.keras 2.15's applications
def test_applications_table_matches_the_installed_keras():
    assert build_table() == load_table(), "regenerate: python -m layerprobe.config.applications"
    assert {"ResNet50", "MobileNetV2", "EfficientNetB0"} <= set(load_table()["applications"])


def test_blocks_expand_to_readable_names_with_parameters_and_aliases():
    model = expand_model(plain(RESNET)["model"])
    layers = model["layers"]
    assert list(layers)[:9] == [
        "stem",
        "stage1_block1_conv1",
        "stage1_block1_bn1",
        "stage1_block1_relu1",
        "stage1_block1_conv2",
        "stage1_block1_bn2",
        "stage1_block1_add",
        "stage1_block1_out",
        "stage1_block2_conv1",
    ]
    assert layers["stage1_block1_conv1"]["inputs"] == "stem"
    assert layers["stage1_block1_add"]["inputs"] == ["stage1_block1_bn2", "stem"]  # `input`: what it is fed
    assert layers["stage1_block2_add"]["inputs"] == ["stage1_block2_bn2", "stage1_block1_out"]
    assert layers["stage2_down_conv1"] == {
        "type": "Conv2D",
        "filters": 32,
        "kernel_size": 3,
        "strides": 2,
        "padding": "same",
        "use_bias": False,
        "inputs": "stage1_block2_out",
    }
    assert layers["stage2_down_proj"]["inputs"] == "stage1_block2_out"
    assert "blocks" not in model and list(layers)[-2:] == ["gap", "logits"]


def test_a_model_without_blocks_expands_to_itself():
    model = plain(["model=digits_cnn"])["model"]
    assert expand_model(model)["layers"] == model["layers"]


def test_trainable_and_expose_on_an_instance_reach_its_layers():
    c = plain(RESNET)
    c["model"]["layers"]["stage1"].update(trainable=False, expose=True)
    layers = expand_model(c["model"])["layers"]
    assert all(s["trainable"] is False for n, s in layers.items() if n.startswith("stage1_"))
    assert [n for n, s in layers.items() if s.get("expose")] == ["stage1_block1_out", "stage1_block2_out"]
    validate(c)


def _error(c: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as e:
        validate(c)
    return str(e.value)


def _with(edit: Any, overrides: list[str] = RESNET) -> dict[str, Any]:
    c = copy.deepcopy(plain(overrides))
    edit(c)
    return c


@pytest.mark.parametrize(
    ("edit", "line"),
    [
        (
            lambda c: c["model"]["layers"]["stage1"].update(block="basci"),
            "model.layers.stage1.block: unknown block. Received: 'basci'. Did you mean 'basic'? Allowed: basic, down",
        ),
        (
            lambda c: c["model"]["layers"]["stage1"].update(filterz=8),
            "model.layers.stage1.filterz: block 'basic' has no parameter 'filterz'. Received: 'filterz'. "
            "Did you mean 'filters'? Allowed: filters",
        ),
        (
            lambda c: c["model"]["layers"]["stage1"].pop("filters"),
            "model.layers.stage1.filters: block 'basic' requires the parameter 'filters'. Received: None",
        ),
        (
            lambda c: c["model"]["layers"]["stage1"].update(repeat=0),
            "model.layers.stage1.repeat: must be an integer >= 1. Received: 0",
        ),
        (
            lambda c: c["model"]["blocks"]["basic"]["layers"]["conv1"].update(filters="$width"),
            "model.blocks.basic.layers.conv1: refers to an undeclared parameter. Received: '$width'. Allowed: filters",
        ),
        (
            lambda c: c["model"]["layers"]["stage1"].update(filters=-4),
            "model.blocks.basic.layers.conv1.filters (in model.layers.stage1, repeat 1): must be a positive integer. "
            "Received: -4",
        ),
        (
            lambda c: c["probe"].update(layers=["stage9_*"]),
            "probe.layers[0]: the pattern matches no layer of the model. Received: 'stage9_*'.",
        ),
        (
            lambda c: c["probe"].update(layers=["stem/conv"]),
            "probe.layers[0]: only the inner layers of a nested model (a Keras application, a model_file) are named "
            "`<layer>/<inner>`. Received: 'stem/conv'.",
        ),
        (
            lambda c: c["trainer"]["warm_start"].update(source="/nowhere/model"),
            "trainer.warm_start.source: not an existing checkpoint, model_dir or .h5 weights file, nor an MLflow "
            "run id (32 hex digits). Received: '/nowhere/model'",
        ),
    ],
)
def test_each_bad_block_or_pattern_is_one_line(edit, line):
    assert _error(_with(edit)).startswith(line)


@pytest.mark.parametrize(
    ("edit", "line"),
    [
        (
            lambda c: c["model"]["layers"]["backbone"].update(weights="imagenett"),
            "model.layers.backbone.weights: give null, imagenet (Keras downloads it once into its cache) or the "
            "path of a local weights file. Received: 'imagenett'",
        ),
        (
            lambda c: c["model"]["layers"]["backbone"].update(type="tf.keras.applications.MobileNetV9"),
            "model.layers.backbone.type: unknown Keras application (tf.keras.applications.MobileNetV9). "
            "Received: 'MobileNetV9'. Did you mean 'MobileNetV2'?",
        ),
        (
            lambda c: c["model"]["layers"]["backbone"].update(alpah=0.5),
            "model.layers.backbone.alpah: MobileNetV2 takes no argument 'alpah'. Received: 'alpah'. "
            "Did you mean 'alpha'?",
        ),
        (
            lambda c: c["model"]["layers"]["backbone"].update(pooling="mean"),
            "model.layers.backbone.pooling: unknown pooling. Received: 'mean'.",
        ),
    ],
)
def test_each_bad_application_is_one_line_before_tensorflow(edit, line):
    assert _error(_with(edit, BACKBONE)).startswith(line)


@pytest.mark.integration  # builds a Keras application: 10-30 s, the unit tier's whole budget
@pytest.mark.estimator  # the Estimator's dry build
def test_an_inner_layer_that_does_not_exist_is_refused_in_the_dry_build_with_did_you_mean(tmp_path):
    from layerprobe.preflight import preflight

    c = plain([*BACKBONE, f"trainer.model_dir={tmp_path / 'm'}", "probe.layers=[backbone/block_1_expand_rleu]"])
    validate(c)  # the static rules cannot know the inner names
    with pytest.raises(ConfigError) as e:
        preflight(c)
    assert str(e.value).startswith(
        "probe.layers[0]: no such layer. Received: 'backbone/block_1_expand_rleu'. "
        "Did you mean 'backbone/block_1_expand_relu'?"
    )
    assert not (tmp_path / "m").exists()  # nothing half-written


@pytest.mark.integration  # builds a Keras application: 10-30 s, the unit tier's whole budget
@pytest.mark.estimator  # the Estimator's dry build
def test_a_pattern_over_inner_layers_resolves_in_the_dry_build(tmp_path):
    from layerprobe.preflight import preflight

    c = plain([*BACKBONE, f"trainer.model_dir={tmp_path / 'm'}", "probe.layers=[backbone/block_1_*_relu, logits]"])
    x = preflight(c).experiment
    assert x.exposed == ("logits", "backbone/block_1_expand_relu", "backbone/block_1_depthwise_relu")
    assert [r.name for r in x.summary.rows] == ["backbone", "logits", *x.exposed[1:]]
    assert x.summary.shape_of("backbone/block_1_expand_relu") == [16, 16, 48]
    bad = plain([*BACKBONE, f"trainer.model_dir={tmp_path / 'm'}", "probe.layers=[backbone/*_nothing]"])
    with pytest.raises(ConfigError, match=r"^probe.layers\[0\]: the pattern matches no layer of the built model"):
        preflight(bad)
