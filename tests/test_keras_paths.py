"""The paths built on the engine seam, on the Keras engine (.venv-keras): training dynamics, sharded
probing, Optuna sweeps with pruning, blocks, applications, warm start and frozen layers, and one trace
of the probe's tf.function per engine.

Where the Estimator has a test of the path (dynamics, shards, pruning, blocks, ResNet50's parameter
count) it is collected here again, unchanged, with `tiny` composing `trainer.engine=keras`: the same
assertions hold on both engines. Reprobe and reproduce: tests/test_keras_reprobe.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from layerprobe.config.loaded import load
from layerprobe.experiment import prepare as prepare_experiment
from layerprobe.graph.keys import weight_keys
from layerprobe.runner import run
from tests.test_keras_engine_equivalence import REPO

pytestmark = [pytest.mark.keras, pytest.mark.integration]

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")


@pytest.fixture
def tiny(tiny):
    """conftest's tiny configs, trained and probed by the Keras engine."""

    def make(*overrides: str, model_dir: str | None = None):
        return tiny("trainer.engine=keras", *overrides, model_dir=model_dir)

    return make


# ---- training dynamics: points at >= 3 steps, the last one equal to a probe after training ----
from tests.test_dynamics import (  # noqa: E402
    test_a_resumed_run_continues_the_series,
    test_metrics_at_three_steps_and_the_last_equals_a_probe_after_training,
    trained,
)

# ---- sharded probing: 2 shards merged == 1 process ----
from tests.test_shard import test_two_shards_of_an_in_memory_split_merge_to_one_pass  # noqa: E402

__all__ = [
    "test_a_resumed_run_continues_the_series",
    "test_metrics_at_three_steps_and_the_last_equals_a_probe_after_training",
    "test_two_shards_of_an_in_memory_split_merge_to_one_pass",
    "trained",
]


# ---- sweeps: an Optuna study whose pruner hears the Keras engine's evaluation at each checkpoint ----


def test_an_optuna_sweep_prunes_a_bad_learning_rate_at_its_first_checkpoint(tmp_path, monkeypatch):
    """test_optuna's pruning test with every job on the Keras engine: trial 1 reports step 10 only."""
    from tests import test_optuna

    monkeypatch.setattr(test_optuna, "OPTUNA", [*test_optuna.OPTUNA, "trainer.engine=keras"])
    test_optuna.test_a_bad_learning_rate_is_pruned_at_its_first_checkpoint(tmp_path)
    from mlflow.tracking import MlflowClient

    _, children = test_optuna.children_of_sweep(tmp_path)
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert {client.get_run(c.info.run_id).data.tags["layerprobe.engine"] for c in children} == {"keras"}


# ---- blocks, applications and warm start on Keras 3 ----
from tests.test_archs_models import (  # noqa: E402
    BACKBONE,
    RESNET,
    _variables,
    test_blocks_equal_the_same_layers_written_by_hand,
    test_resnet50_from_config_has_keras_parameter_count,
)

__all__ += [
    "test_blocks_equal_the_same_layers_written_by_hand",
    "test_resnet50_from_config_has_keras_parameter_count",
]

# The layer tables the Estimator engine builds (`.venv`, dry build only) for the same configs.
ESTIMATOR_ROWS = """
import json, sys
from layerprobe.config.loaded import load
from layerprobe.experiment import prepare
from tests.conftest import plain

out = {}
for name, overrides in json.loads(sys.argv[1]).items():
    rows = prepare(load(plain(overrides))).summary.rows
    out[name] = [[r.name, r.type, list(r.output_shape), r.params, list(r.weight_names)] for r in rows]
print(json.dumps(out))
"""
TABLES = {  # name -> (overrides, total parameters)
    "small_resnet": (["experiments=small_resnet"], 43_530),
    "small_resnet_frozen": (["experiments=small_resnet_frozen"], 43_242),  # 8x8x1 digits: a 1-channel stem
    "tiny_backbone": ([*BACKBONE, "probe.layers=[backbone/block_1_*]"], 423_018),
}


def test_blocks_and_applications_build_the_estimators_layer_table(tmp_path):
    import json
    import os
    import subprocess

    from layerprobe.config.loaded import load
    from layerprobe.experiment import prepare
    from tests.conftest import plain
    from tests.test_keras_engine_equivalence import ESTIMATOR_PYTHON, REPO

    if not ESTIMATOR_PYTHON.exists():
        pytest.skip("the Estimator side needs .venv (`make venv`)")
    common = ["tracking.enabled=false", f"trainer.model_dir={tmp_path / 'm'}"]
    overrides = {name: [*o, *common] for name, (o, _) in TABLES.items()}
    r = subprocess.run(
        [str(ESTIMATOR_PYTHON), "-c", ESTIMATOR_ROWS, json.dumps(overrides)],
        capture_output=True, text=True, timeout=600, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    estimator = json.loads(r.stdout.strip().splitlines()[-1])
    for name, (_, params) in TABLES.items():
        rows = prepare(load(plain([*overrides[name], "trainer.engine=keras"]))).summary.rows
        keras_rows = [[r.name, r.type, list(r.output_shape), r.params, list(r.weight_names)] for r in rows]
        assert keras_rows == estimator[name], name
        assert sum(r.params for r in rows) == params, name
    names = [row[0] for row in estimator["tiny_backbone"]]
    assert "backbone/block_1_expand_relu" in names and estimator["tiny_backbone"][0][4][0] == "backbone/Conv1/kernel"


def test_warm_start_and_a_frozen_backbone_keep_the_sources_values_bitwise(tiny, tmp_path):
    source = tiny(*RESNET, "tracking.enabled=false", "probe.enabled=false", model_dir=str(tmp_path / "source"))
    run(source, tmp_path / "out_source")
    src = _variables(str(tmp_path / "source"))
    ws = [f"trainer.warm_start.source={tmp_path / 'source'}", "trainer.warm_start.variables='(stem|stage).*'"]
    warm = tiny(*RESNET, *ws, "tracking.enabled=false", "probe.enabled=false", model_dir=str(tmp_path / "warm"))
    for instance in ("stem", "stage1", "stage2_down", "stage2"):
        warm["model"]["layers"][instance]["trainable"] = False
    run(warm, tmp_path / "out_warm")
    after = _variables(str(tmp_path / "warm"))
    backbone = [n for n in src if n.startswith(("stem", "stage"))]
    assert len(backbone) == 2 + 4 * (2 + 2 * 4) + 1  # stem kernel+bias; 4 blocks of 2 convs, 2 BNs (4 each); proj
    for n in backbone:  # warm-started, then frozen: the source's values after 20 steps (BatchNorm statistics too)
        np.testing.assert_array_equal(after[n], src[n], err_msg=n)
    first = tf.train.load_variable(f"{tmp_path / 'warm'}/model.ckpt-10", "logits/kernel")
    assert not np.array_equal(after["logits/kernel"], src["logits/kernel"])  # the head starts fresh
    assert not np.array_equal(after["logits/kernel"], first)  # and trains


def test_the_frozen_experiment_starts_from_the_shipped_weights_file(tmp_path, monkeypatch):
    from layerprobe.graph import warm
    from tests.conftest import plain
    from tests.test_archs_pretrained import SHIPPED

    monkeypatch.setattr(warm, "CACHE_DIR", tmp_path / "cache")  # the converted file, out of the checkout
    monkeypatch.chdir(REPO)  # the experiment's weights path is relative to the repository
    where = [f"trainer.model_dir={tmp_path / 'm'}", f"tracking.uri=sqlite:///{tmp_path / 'db'}"]
    c = plain(["experiments=small_resnet_frozen", "trainer.train_steps=20", "trainer.engine=keras", *where])
    result = run(c, tmp_path / "out")
    assert result.global_step == 20
    converted = warm.checkpoint_of(warm.WarmStart("trainer.warm_start.source", str(SHIPPED)))
    names = [n for n, _ in tf.train.list_variables(converted)]
    assert len(names) == 43
    final = tf.train.latest_checkpoint(result.model_dir)
    for n in names:  # frozen: every backbone variable is still the file's after training
        np.testing.assert_array_equal(tf.train.load_variable(final, n), tf.train.load_variable(converted, n), n)


def test_an_inner_layer_equals_a_plain_keras3_application_on_the_restored_weights(tiny, tmp_path):
    inner = "block_3_expand_relu"
    c = tiny(*BACKBONE, "trainer.train_steps=3", f"probe.layers=[backbone/{inner}]", "probe.reservoir_size=16",
             "tracking.enabled=false")  # fmt: skip
    result = run(c, tmp_path / "out")
    x = prepare_experiment(load(c))
    res = x.session().run(x.data).layers[f"backbone/{inner}"].reservoir()
    assert res["activations"].shape == (16, 8, 8, 48)
    app = keras.applications.MobileNetV2(
        alpha=0.35, include_top=False, pooling="avg", weights=None, input_shape=(32, 32, 3)
    )
    ckpt = tf.train.latest_checkpoint(result.model_dir)
    keys = weight_keys(app)  # `block_1_depthwise/depthwise_kernel`: Keras 2's name, in either engine's checkpoint
    app.set_weights([tf.train.load_variable(ckpt, f"backbone/{keys[id(w)]}") for w in app.weights])
    sub = keras.Model(app.inputs, app.get_layer(inner).output)
    images = x.data.splits["eval"].features["image"][res["keys"]]
    np.testing.assert_allclose(res["activations"], sub.predict(images, verbose=0), rtol=1e-4, atol=1e-4)
    assert np.abs(tf.train.load_variable(ckpt, "backbone/bn_Conv1/moving_mean")).sum() > 0  # fit updated BatchNorm


# ---- one trace of the probe's tf.function per engine ----


def test_a_new_probe_session_reuses_the_engines_traced_function(tiny, tmp_path):
    """Each run's probe phase and each `probe` command make a new session: with the same exposed
    layers its summaries are the same, so the engine keeps one traced function (no 4-6 s re-trace)."""
    c = tiny("probe.analysis=false", "probe.dynamics.enabled=false")
    result = run(c, tmp_path / "out")
    x = prepare_experiment(load(c))
    first = x.session().run(x.data).stats(x.summary)
    steps = x.engine.checkpoints()
    again = x.session().run(x.data, checkpoint=steps[0].path).stats(x.summary)
    assert len(x.engine._predict_fns) == 1  # one (outputs, feed, element spec): traced once
    latest = x.session().run(x.data, checkpoint=steps[-1].path).stats(x.summary)
    assert latest["conv1"].to_dict() == first["conv1"].to_dict() == result.probe["conv1"].to_dict()
    assert again["conv1"].mean != first["conv1"].mean  # the earlier checkpoint's weights, not a stale trace
    assert len(x.engine._predict_fns) == 1


def test_a_keras3_weights_file_is_one_line_before_training(tmp_path, capsys):
    """Keras 3's `save_weights` keys layers by object path, not name: refused in one line, not guessed."""
    from tests.test_bad_inputs import assert_clean_failure, run_in_process

    path = tmp_path / "backbone.weights.h5"
    shape = (32, 32, 3)
    keras.applications.MobileNetV2(
        alpha=0.35, include_top=False, pooling="avg", weights=None, input_shape=shape
    ).save_weights(str(path))
    work = tmp_path / "work"
    work.mkdir()
    argv = [*BACKBONE, "trainer.engine=keras", f"model.layers.backbone.weights={path}", "probe.plots=false"]
    argv += [f"trainer.model_dir={work / 'model'}", f"tracking.uri=sqlite:///{work / 'mlflow.db'}"]
    rc, err = run_in_process(argv, capsys)
    expect = ["model.layers.backbone.weights: a Keras 3 weights file (layers/<object path>/vars/<i>, no layer names)"]
    assert_clean_failure(rc, err, [*expect, f"Received: '{path}'"], work)
