"""trainer.engine in the config, on either environment: names, per-engine layer tables, one-line errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from layerprobe.config.layer_table import load_table
from layerprobe.config.validate import validate
from layerprobe.errors import ConfigError
from tests.conftest import KERAS3, plain


def error_of(c: dict) -> str:
    with pytest.raises(ConfigError) as e:
        validate(c)
    assert "\n" not in str(e.value)
    return str(e.value)


def with_layer(engine: str, **spec) -> dict:
    c = plain(["model=tiny_cnn", f"trainer.engine={engine}"])
    c["model"]["layers"]["conv1"] = {**c["model"]["layers"]["conv1"], **spec}
    return c


def test_engine_names_are_one_list():
    from layerprobe.config.names import ENGINES as NAMES
    from layerprobe.engines import ENGINES

    assert tuple(ENGINES) == NAMES


def test_unknown_engine_is_one_line_with_did_you_mean():
    msg = error_of(plain(["trainer.engine=kears"]))
    assert msg.startswith("trainer.engine: unknown engine. Received: 'kears'. Did you mean 'keras'?")
    assert msg.endswith("Allowed: estimator, keras")


def test_both_engines_validate_the_shipped_models():
    for model in ("digits_cnn", "tiny_cnn", "sequence_lstm", "tabular_two_heads"):
        for engine in ("estimator", "keras"):
            validate(plain([f"model={model}", f"trainer.engine={engine}"]))


def test_a_layer_only_keras_2_has_is_refused_by_the_keras_engine_naming_it():
    c = with_layer("keras", type="LocallyConnected2D")
    assert error_of(c).startswith(
        "model.layers.conv1.type: not a layers class of Keras 3 (trainer.engine=keras) "
        "(only trainer.engine=estimator has it). Received: 'LocallyConnected2D'"
    )
    assert "LocallyConnected2D" in load_table("estimator")["layers"]


def test_a_layer_only_keras_3_has_is_refused_by_the_estimator_engine_naming_it():
    msg = error_of(with_layer("estimator", type="RMSNormalization"))
    assert msg.startswith("model.layers.conv1.type: not a tf.keras.layers class (only trainer.engine=keras has it)")


def test_an_argument_one_engines_keras_lacks_names_that_engine():
    c = plain(["model=tiny_cnn", "trainer.engine=keras", "+model.layers.logits.lora_rank=4"])
    validate(c)  # Keras 3's Dense has LoRA
    c["trainer"]["engine"] = "estimator"
    assert error_of(c).startswith(
        "model.layers.logits.lora_rank: Dense takes no argument 'lora_rank' in tf.keras 2.15 (trainer.engine=estimator)"
    )
    c = plain(["model=tiny_cnn", "trainer.engine=keras", "+model.layers.logits.batch_input_shape=[4]"])
    assert "in Keras 3 (trainer.engine=keras)" in error_of(c)


def test_the_keras_engine_refuses_distribution_strategies():
    c = plain(["trainer.engine=keras", "trainer.distribute=mirrored"])
    assert error_of(c).startswith("trainer.distribute: the keras engine trains in one process")


@pytest.mark.keras
def test_keras3_layer_table_matches_installed_keras():
    from layerprobe.config.layer_table import build_table

    assert build_table() == load_table("keras")


@pytest.mark.integration  # starts a process
@pytest.mark.parametrize("engine", ["estimator", "keras"])
def test_an_engine_this_environment_cannot_run_is_one_line_and_exit_2(tmp_path, engine):
    if (engine == "keras") == KERAS3:
        pytest.skip(f"this environment runs trainer.engine={engine}")
    overrides = [f"trainer.engine={engine}", "model=tiny_cnn", "trainer=quick", f"trainer.model_dir={tmp_path / 'm'}"]
    r = subprocess.run(
        [sys.executable, "-m", "layerprobe", *overrides, "tracking.enabled=false"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert r.returncode == 2, r.stderr[-2000:]
    last = r.stderr.strip().splitlines()[-1]
    need = "TensorFlow >= 2.16 with Keras 3" if engine == "keras" else "TensorFlow 2.13-2.15 with tensorflow-estimator"
    assert last.startswith(f"layerprobe: error: trainer.engine: the {engine.title()} engine needs {need}"), last
    assert "Traceback" not in r.stderr and not (tmp_path / "m").exists()


@pytest.mark.parametrize("python", ["3.11", "3.12", "3.13"])
def test_pyproject_gives_each_python_the_stack_of_the_engine_it_can_run(python):
    """Python <= 3.11: the Estimator's TensorFlow 2.13-2.15; 3.12/3.13: TensorFlow >= 2.16 with Keras 3."""
    from pathlib import Path

    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet

    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    assert python in SpecifierSet(project["requires-python"])
    env = {"python_version": python, "python_full_version": f"{python}.0"}
    reqs = [Requirement(d) for d in project["dependencies"]]
    active = {r.name: r.specifier for r in reqs if r.marker is None or r.marker.evaluate(env)}
    if python == "3.11":  # the Estimator's: tf.estimator was removed in TensorFlow 2.16
        assert "tensorflow-estimator" in active and "keras" not in active
        assert "2.16.0" not in active["tensorflow-cpu"]
    else:  # Keras 3's: TensorFlow >= 2.16 (the pinned versions are constraints-keras.txt's business)
        assert "tensorflow-estimator" not in active and "2.15.1" not in active["keras"]
        assert "2.15.1" not in active["tensorflow-cpu"]
