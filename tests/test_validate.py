"""Config validation: every mistake is one ConfigError naming the path, the value and the rule."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest

from layerprobe.config.layer_table import load_table
from layerprobe.config.validate import validate
from layerprobe.errors import ConfigError
from tests.conftest import plain
from tests.hang import HANG_GUARD


@pytest.fixture(scope="module")
def base() -> dict:
    return plain([])


def broken(base: dict, edit) -> dict:
    c = copy.deepcopy(base)
    edit(c)
    return c


def error_of(c: dict) -> str:
    with pytest.raises(ConfigError) as e:
        validate(c)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_shipped_default_is_valid(base):
    validate(base)


def test_unknown_layer_type_suggests_the_close_one(base):
    msg = error_of(broken(base, lambda c: c["model"]["layers"]["conv1"].update(type="Conv2d")))
    assert msg.startswith("model.layers.conv1.type: not a tf.keras.layers class. Received: 'Conv2d'.")
    assert "Did you mean 'Conv2D'?" in msg


def test_unknown_constructor_argument(base):
    def edit(c):
        c["model"]["layers"]["conv1"]["filtres"] = c["model"]["layers"]["conv1"].pop("filters")

    msg = error_of(broken(base, edit))
    assert msg.startswith("model.layers.conv1.filtres: Conv2D takes no argument 'filtres'")
    assert "Did you mean 'filters'?" in msg


def test_missing_required_argument(base):
    msg = error_of(broken(base, lambda c: c["model"]["layers"]["logits"].pop("units")))
    assert msg == "model.layers.logits.units: Dense requires 'units'. Received: None"


def test_inputs_naming_an_unknown_layer(base):
    msg = error_of(broken(base, lambda c: c["model"]["layers"]["gap"].update(inputs="conv3")))
    assert msg.startswith("model.layers.gap.inputs: must name a model input or an earlier layer")
    assert "Received: 'conv3'. Did you mean 'conv2'?" in msg


def test_inputs_naming_a_later_layer_is_a_cycle(base):
    msg = error_of(broken(base, lambda c: c["model"]["layers"]["conv1"].update(inputs="gap")))
    assert msg.startswith("model.layers.conv1.inputs: names this layer or a later one, which would form a cycle")
    assert "Received: 'gap'" in msg


@pytest.mark.parametrize("name", ["../x", "a/b", "1conv", "conv 1", ""])
def test_unsafe_layer_names(base, name):
    def edit(c):
        c["model"]["layers"] = {name: {"type": "Flatten"}, **c["model"]["layers"]}

    msg = error_of(broken(base, edit))
    assert msg.startswith(f"model.layers.{name}: name must match [A-Za-z][A-Za-z0-9_]*")


def test_layer_named_like_an_input(base):
    def edit(c):
        c["model"]["layers"] = {"image": {"type": "Flatten"}, **c["model"]["layers"]}

    assert "cannot have the name of a model input" in error_of(broken(base, edit))


def test_expose_must_be_boolean(base):
    msg = error_of(broken(base, lambda c: c["model"]["layers"]["conv1"].update(expose="yes")))
    assert msg == "model.layers.conv1.expose: must be true or false. Received: 'yes'"


def test_probe_layers_naming_nothing(base):
    msg = error_of(broken(base, lambda c: c["probe"].update(layers=["conv9"])))
    assert msg.startswith("probe.layers[0]: can only expose a layer of the model. Received: 'conv9'")


def test_missing_input_shape(base):
    msg = error_of(broken(base, lambda c: c["model"]["inputs"]["image"].update(shape=None)))
    assert msg == "model.inputs.image.shape: give the per-example shape. Received: None"


def test_negative_input_dimension(base):
    msg = error_of(broken(base, lambda c: c["model"]["inputs"]["image"].update(shape=[8, -8, 1])))
    assert msg == "model.inputs.image.shape[1]: must be a positive integer. Received: -8"


def test_empty_layers(base):
    assert error_of(broken(base, lambda c: c["model"].update(layers={}))).startswith("model.layers: declare")


def test_first_layer_of_a_two_input_model_must_name_its_inputs(base):
    def edit(c):
        c["model"]["inputs"]["extra"] = {"shape": [3], "dtype": "float32"}

    assert "the model has several inputs" in error_of(broken(base, edit))


def test_unknown_loss_and_optimizer(base):
    msg = error_of(broken(base, lambda c: c["model"]["outputs"]["logits"].update(loss="crossentropy")))
    assert msg.startswith("model.outputs.logits.loss: unknown loss. Received: 'crossentropy'")
    msg = error_of(broken(base, lambda c: c["trainer"]["optimizer"].update(name="adamw")))
    assert "Did you mean 'adam'?" in msg


def test_bad_split_fraction_and_source(base):
    msg = error_of(broken(base, lambda c: c["data"]["splits"].update(eval_fraction=1.5)))
    assert msg.startswith("data.splits.eval_fraction: must be between 0 and 1")
    assert "Did you mean 'digits'?" in error_of(broken(base, lambda c: c["data"].update(source="digit")))


@pytest.mark.estimator  # tf.keras 2.15's; Keras 3's: test_keras_engine_config
def test_layer_table_matches_installed_keras():
    """keras_layers.json lets validation run without TensorFlow; it must not drift from Keras."""
    from layerprobe.config.layer_table import build_table

    assert build_table() == load_table()


def run_cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "layerprobe", *args], capture_output=True, text=True, timeout=HANG_GUARD, cwd=cwd
    )


@pytest.mark.integration  # starts a process
def test_cli_config_error_is_one_line_and_exit_2(tmp_path):
    r = run_cli("model.layers.conv1.type=Conv2d", cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0
    assert r.stderr.startswith("layerprobe: error: model.layers.conv1.type: not a tf.keras.layers class")
    assert "Traceback" not in r.stderr + r.stdout
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "models").exists()


@pytest.mark.integration  # starts a process
def test_cli_unknown_key_override_exit_2(tmp_path):
    r = run_cli("model.layers.conv1.filtres=3", cwd=tmp_path)
    assert r.returncode == 2
    assert "Could not override 'model.layers.conv1.filtres'" in r.stderr
    assert r.stderr.strip().count("\n") == 0


@pytest.mark.integration  # starts a process
def test_help_and_config_printing_do_not_import_tensorflow_or_mlflow():
    code = (
        "import sys, contextlib, io\n"
        "from layerprobe.cli import main\n"
        "for args in (['--help'], ['--cfg', 'job'], ['validate', '--static']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        try: main(args)\n"
        "        except SystemExit: pass\n"
        "print(json.dumps(sorted(m for m in ('tensorflow', 'mlflow') if m in sys.modules)))\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", "import json\n" + code], capture_output=True, text=True, timeout=HANG_GUARD
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1]) == []


def test_keras_object_names_are_checked(base):
    msg = error_of(broken(base, lambda c: c["model"]["layers"]["logits"].update(bias_regularizer="0")))
    assert msg.startswith("model.layers.logits.bias_regularizer: unknown regularizer. Received: '0'.")
    msg = error_of(broken(base, lambda c: c["model"]["layers"]["logits"].update(kernel_initializer="glorot_unifrom")))
    assert "Did you mean 'glorot_uniform'?" in msg
    validate(broken(base, lambda c: c["model"]["layers"]["logits"].update(kernel_initializer="GlorotUniform")))


@pytest.mark.parametrize("dtype", ["float64", "float16", 2])
def test_a_layer_dtype_other_than_float32_is_refused(base, dtype):
    """Keras builds such a layer, then the first training step dies in AddV2 (float64 vs float32)."""
    msg = error_of(broken(base, lambda c: c["model"]["layers"]["logits"].update(dtype=dtype)))
    assert msg.startswith(
        "model.layers.logits.dtype: every layer computes in float32 (the data's dtype is "
        f"model.inputs.<name>.dtype). Received: {dtype!r}."
    )
    assert msg.endswith(" Allowed: float32")
    validate(broken(base, lambda c: c["model"]["layers"]["logits"].update(dtype="float32")))


def test_an_unknown_key_force_added_to_the_schema_gets_the_closest_key(base):
    """`+trainer.train_step=10` composes (Hydra's `+` adds past struct mode) and would be ignored."""
    msg = error_of(broken(base, lambda c: c["trainer"].update(train_step=10)))
    assert msg.startswith(
        "trainer.train_step: trainer has no such key. Received: 'train_step'. Did you mean 'train_steps'? Allowed:"
    )


# --- `layerprobe validate`: everything a run checks before training ---------------------------


def validate_cli(capsys, *args: str) -> tuple[int, str, str]:
    from layerprobe.cli import main

    rc = main(["validate", "model=tiny_cnn", "trainer=quick", *args])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.estimator  # the Estimator's dry build
def test_validate_runs_the_deep_checks_and_names_them(capsys):
    rc, out, err = validate_cli(capsys)
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0] == "ok  config: schema, types, layer types and arguments, wiring, losses, metrics, names"
    assert lines[1] == "ok  data: digits prepared (train 1438, eval 359 examples)"
    assert lines[2] == "ok  data: every split has the model's inputs (image) and labels"
    assert lines[3].startswith("ok  graph: training graph built (") and "losses fit their outputs" in lines[3]
    assert lines[4] == "config OK: model tiny_cnn (5 layers), data digits"


def test_validate_static_says_what_it_did_not_check(capsys):
    rc, out, _ = validate_cli(capsys, "--static")
    assert rc == 0
    assert out.splitlines()[1].startswith("not checked (--static): the data against the model's inputs")


@pytest.mark.parametrize(
    "overrides, expect",
    [
        (
            ["data=iris"],
            "layerprobe: error: model.inputs.image: the train split has no such feature. Received: 'image'.",
        ),
        (
            ["+model.layers.add={type:Add,inputs:[conv1,gap]}"],
            "layerprobe: error: model.layers.add: ",
        ),
        (
            ["model.outputs.logits.loss=mean_squared_error"],
            "layerprobe: error: model.outputs.logits.loss: needs one output value per example",
        ),
    ],
    ids=["data-without-the-input", "add-of-mismatched-shapes", "loss-against-outputs"],
)
@pytest.mark.estimator  # the Estimator's dry build
def test_validate_refuses_what_the_run_would_refuse(capsys, overrides, expect):
    rc, out, err = validate_cli(capsys, *overrides)
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(expect), err
    rc, _, err = validate_cli(capsys, "--static", *overrides)
    assert rc == 0, err  # beyond what the config rules alone can see
