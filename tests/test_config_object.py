"""The one config object (config.loaded): composed or read back, checked, block-expanded and typed
once; what every command hands on."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from layerprobe.config import compose
from layerprobe.config.blocks import expand_model
from layerprobe.config.loaded import Config, load
from layerprobe.errors import ConfigError, LayerprobeError
from tests.conftest import ENGINE, plain


def test_a_block_model_loads_expanded_and_typed_and_keeps_what_was_written():
    c = load(compose(["experiments=small_resnet"]))
    assert isinstance(c, Config)
    assert c.model.blocks == {}
    assert not any("block" in spec for spec in c.model.layers.values())
    assert "stage1_block1_conv1" in c.model.layers and "stage1" not in c.model.layers
    assert c.plain()["model"]["layers"] == c.model.layers
    assert isinstance(c.trainer.train_steps, int) and c.trainer.train_steps == c.written["trainer"]["train_steps"] > 0
    written = c.written["model"]
    assert "stage1" in written["layers"] and written["layers"]["stage1"]["block"] == "basic"
    assert written["blocks"]  # what a run logs and `layerprobe probe RUN` reads back


def test_loading_a_loaded_config_or_its_written_form_gives_the_same_model():
    c = load(compose(["experiments=small_resnet"]))
    assert load(c) is c
    again = load(c.written)
    assert again.model.layers == c.model.layers and again.written == c.written


def test_replace_checks_the_schemas_types_and_keeps_the_model():
    c = load(plain(["model=tiny_cnn"]))
    moved = c.replace(trainer={"model_dir": "elsewhere"})
    assert moved.trainer.model_dir == "elsewhere" and moved.written["trainer"]["model_dir"] == "elsewhere"
    assert c.trainer.model_dir is None  # the original is unchanged
    with pytest.raises(ConfigError) as e:
        c.replace(trainer={"train_steps": "many"})
    assert e.value.path == "trainer.train_steps"
    with pytest.raises(ValueError):
        c.replace(model={"name": "x"})


def test_a_rule_broken_on_load_is_one_config_error_naming_the_path():
    bad = plain(["model=tiny_cnn"])
    bad["model"]["layers"]["conv1"]["filters"] = -3
    with pytest.raises(ConfigError) as e:
        load(bad)
    assert e.value.path == "model.layers.conv1.filters"


def test_refusing_user_code_reads_the_expanded_layers_of_a_block_model():
    """Was `KeyError: 'type'` on a block instance (reprobe and reproduce of experiments=small_resnet)."""
    from layerprobe.reprobe import refuse_code

    refuse_code(load(compose(["experiments=small_resnet"])), allow_imports=False)  # no dotted type: passes
    written = plain(["experiments=small_resnet"])
    written["model"]["blocks"]["basic"]["layers"]["conv1"]["type"] = "mypkg.layers.MyConv"
    with pytest.raises(LayerprobeError, match=r"model\.layers\.stage1_block1_conv1\.type=mypkg\.layers\.MyConv"):
        refuse_code(load(written), allow_imports=False)


def _count_expansions(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every module's reference to config.blocks.expand_model replaced by a counting one."""
    calls: list[int] = []

    def counting(model: Any) -> dict[str, Any]:
        calls.append(1)
        return expand_model(model)

    for module in list(sys.modules.values()):
        if getattr(module, "expand_model", None) is expand_model and module.__name__.startswith("layerprobe"):
            monkeypatch.setattr(module, "expand_model", counting)
    return calls


@pytest.mark.parametrize("static", [True, False], ids=["static", "dry-build"])
def test_validate_expands_the_model_once(monkeypatch, tmp_path, static, capsys):
    import layerprobe.engines.spec  # noqa: F401 - every module that might expand, imported before counting
    import layerprobe.experiment  # noqa: F401
    import layerprobe.preflight  # noqa: F401
    import layerprobe.provenance  # noqa: F401
    from layerprobe.cli.main import main

    calls = _count_expansions(monkeypatch)
    args = ["validate", "experiments=small_resnet", f"trainer.engine={ENGINE}", f"trainer.model_dir={tmp_path / 'm'}"]
    assert main([*args, "--static"] if static else args) == 0
    assert "config OK: model small_resnet" in capsys.readouterr().out
    assert len(calls) == 1


def test_two_heads_dry_build_names_each_heads_weights_by_its_layer():
    """A label named like an output layer (`target`) took that layer's name scope in the Estimator's
    dry build (`target_1/kernel`): `layerprobe probe RUN` then refused the run's own checkpoint."""
    from layerprobe.experiment import prepare

    x = prepare(load(compose(["experiments=tabular_two_heads", f"trainer.engine={ENGINE}"])))
    rows = {r.name: r.weight_names for r in x.summary.rows}
    assert rows["target"] == ("target/kernel", "target/bias")
    assert rows["class_logits"] == ("class_logits/kernel", "class_logits/bias")


def test_a_logged_config_takes_overrides_through_the_same_composition_as_every_command():
    from layerprobe.config.compose import OverrideError, compose_logged

    logged = load(compose(["experiments=small_resnet"])).written
    c = load(compose_logged(logged, ["probe.layers=[gap]", "probe.reservoir_size=64"]))
    assert c.probe.layers == ["gap"] and c.probe.reservoir_size == 64
    assert c.model.layers == load(logged).model.layers
    with pytest.raises(OverrideError, match=r"probe has no key 'layerz'\. Did you mean probe\.layers=\[gap\]\?"):
        compose_logged(logged, ["probe.layerz=[gap]"])
    with pytest.raises(OverrideError, match=r"^model=tiny_cnn: a logged run's config has no config groups"):
        compose_logged(logged, ["model=tiny_cnn"])


def test_a_reports_title_names_the_run_without_doubled_parentheses():
    from layerprobe.artifacts import report_title

    c = load(plain([]))
    assert report_title(c, {"overrides": "(defaults)", "step": "1000"}) == "layerprobe: digits_cnn on digits, step 1000"
    assert (
        report_title(c, {"overrides": "trainer.seed=3", "step": "1000"})
        == "layerprobe: digits_cnn on digits, step 1000: trainer.seed=3"
    )
    assert report_title(c, {}) == "layerprobe: digits_cnn on digits"
    where = {"overrides": "tracking.uri=sqlite:////tmp/x.db hydra.run.dir=o trainer.seed=3", "step": "1000"}
    assert report_title(c, where) == "layerprobe: digits_cnn on digits, step 1000: trainer.seed=3"  # not where it logs


def test_a_run_name_shows_a_sampled_float_in_four_digits():
    from layerprobe.runner import readable_run_name

    assert (
        readable_run_name(["trainer.optimizer.learning_rate=0.011086282889727999"]) == "optimizer.learning_rate=0.01109"
    )
    assert readable_run_name(["model.layers.conv1.filters=16", "trainer.seed=3"]) == "conv1.filters=16,trainer.seed=3"
    assert readable_run_name(["data.params.path=/data/x.1234567.npz"]) == "params.path=/data/x.1234567.npz"


def test_plain_runs_of_one_model_get_distinct_names():
    from layerprobe.runner import plain_run_name

    ids = ["3f9a2b1c" + "0" * 24, "77aa01bb" + "0" * 24, "c0ffee00" + "0" * 24]
    assert len({plain_run_name("digits_cnn", ["tracking.uri=sqlite:///x.db"], i) for i in ids}) == 3
    assert plain_run_name("digits_cnn", [], ids[0]) == "digits_cnn (3f9a2b1c)"
    overrides = ["model.layers.conv1.filters=32", "trainer.optimizer.learning_rate=0.011086282889727999"]
    assert plain_run_name("digits_cnn", overrides, ids[0]) == (
        "digits_cnn conv1.filters=32,optimizer.learning_rate=0.01109 (3f9a2b1c)"
    )
