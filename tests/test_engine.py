"""The model_fn factory under a real tf.estimator.Estimator: graphs, training, restore, probing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from layerprobe.config.loaded import load
from layerprobe.data.pipeline import prepare
from layerprobe.engines.estimator.model_fn import ModeKeys, make_model_fn
from layerprobe.engines.spec import model_spec
from layerprobe.runner import run
from tests.reference import activations

# trains, resumes and reads the graph with the Estimator engine
pytestmark = [pytest.mark.estimator, pytest.mark.integration]


def eval_features(c):
    return prepare(c["data"]).splits["eval"]


def test_streaming_statistics_equal_numpy_on_the_full_activations(tiny, tmp_path):
    c = tiny("probe.reservoir_size=5", "probe.batch_size=50")
    result = run(c, tmp_path / "out")
    ev = eval_features(c)
    conv1, logits = activations(c, result.model_dir, ["conv1", "logits"], ev.features)
    for name, x in (("conv1", conv1), ("logits", logits)):
        s = result.probe[name]
        flat = x.reshape(-1, x.shape[-1]).astype(np.float64)
        assert s.examples == ev.size == 359 and s.count == flat.size
        np.testing.assert_allclose(s.mean, flat.mean(), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(s.std, flat.std(), rtol=1e-5)
        np.testing.assert_allclose([s.min, s.max], [flat.min(), flat.max()], rtol=1e-5, atol=1e-6)
        assert s.zero_fraction == pytest.approx((flat == 0).mean(), abs=1e-6)
        np.testing.assert_allclose(s.unit_mean, flat.mean(0), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(s.unit_std, flat.std(0), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(s.unit_max, flat.max(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(s.unit_active_fraction, (flat > 0).mean(0), atol=1e-6)
        assert s.dead_units == [int(i) for i in np.flatnonzero((flat > 0).sum(0) == 0)]
        l2 = np.sqrt((x.reshape(len(x), -1).astype(np.float64) ** 2).sum(1)).mean()
        np.testing.assert_allclose(s.mean_l2_norm, l2, rtol=1e-5)
        want = np.percentile(flat, [1, 5, 50, 95, 99])
        np.testing.assert_allclose(list(s.percentiles.values()), want, rtol=0.01, atol=1e-6)
        assert s.nan_count == 0 and s.inf_count == 0
    np.testing.assert_allclose(result.probe["conv1"].spatial_mean, conv1.mean(0), rtol=1e-5, atol=1e-6)
    sample = np.load(Path(result.output_dir) / "probe" / "conv1" / "reservoir.npz")
    assert sample["activations"].shape == (5, 8, 8, 4) and sample["labels"].shape == (5,)
    # every sampled row is a real activation of an eval example, with that example's label
    match = [np.flatnonzero(np.all(np.isclose(conv1, row, atol=1e-5), axis=(1, 2, 3))) for row in sample["activations"]]
    assert all(len(m) >= 1 for m in match)
    assert [int(ev.labels["label"][m[0]]) for m in match] == sample["labels"].tolist()


def write_two_input_npz(path: Path) -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(400, 6)).astype(np.float32), rng.normal(size=(400, 6)).astype(np.float32)
    label = (a[:, 0] + b[:, 1] > 0).astype(np.int64) + (a[:, 2] > 1).astype(np.int64)
    target = (a @ np.arange(6) - b.sum(1)).astype(np.float32) / 6
    np.savez(path, a=a, b=b, label=label, target=target)


def test_two_inputs_skip_connection_and_two_outputs_match_a_keras_reference(tiny, tmp_path):
    write_two_input_npz(tmp_path / "d.npz")
    c = tiny(
        "data.source=npz",
        "data.name=two",
        "data.num_classes=3",  # not digits' 10: the class head has 3 outputs
        f"+data.params={{path: {tmp_path / 'd.npz'}, features: [a, b], labels: [label, target]}}",
        "trainer.train_steps=200",
        "trainer.optimizer.learning_rate=0.01",
    )
    c["model"] = {
        "name": "two_in_two_out",
        "inputs": {"a": {"shape": [6], "dtype": "float32"}, "b": {"shape": [6], "dtype": "float32"}},
        "layers": {
            "da": {"type": "Dense", "units": 8, "inputs": "a"},
            "db": {"type": "Dense", "units": 8, "inputs": "b"},
            "merged": {"type": "Add", "inputs": ["da", "db"]},
            "hidden": {"type": "Dense", "units": 8, "activation": "relu", "expose": True},
            "skip": {"type": "Add", "inputs": ["merged", "hidden"]},  # the skip connection
            "cls": {"type": "Dense", "units": 3, "inputs": "skip"},
            "reg": {"type": "Dense", "units": 1, "inputs": "skip"},
        },
        "outputs": {
            "cls": {"label": "label", "loss": "sparse_softmax_cross_entropy", "weight": 1.0, "metrics": ["accuracy"]},
            "reg": {"label": "target", "loss": "mean_squared_error", "weight": 1.0, "metrics": ["mean_absolute_error"]},
        },
    }
    c["tracking"]["enabled"] = False
    result = run(c, tmp_path / "out")
    assert set(result.eval_metrics) == {"eval/loss", "eval/cls/accuracy", "eval/reg/mean_absolute_error"}
    assert result.eval_metrics["eval/cls/accuracy"] > 0.6

    ev = eval_features(c)
    cls_ref, reg_ref = activations(c, result.model_dir, ["cls", "reg"], ev.features)
    est = tf.estimator.Estimator(make_model_fn(model_spec(load(c), raw=("cls", "reg"))), model_dir=result.model_dir)
    input_fn = lambda: tf.data.Dataset.from_tensor_slices(ev.features).batch(64)  # noqa: E731
    got = list(est.predict(input_fn, yield_single_examples=False))
    np.testing.assert_allclose(np.concatenate([g["cls"] for g in got]), cls_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.concatenate([g["reg"] for g in got]), reg_ref, rtol=1e-5, atol=1e-5)
    # the skip really adds: skip = merged + hidden, checked on the reference model
    merged, hidden, skip = activations(c, result.model_dir, ["merged", "hidden", "skip"], ev.features)
    np.testing.assert_allclose(skip, merged + hidden, rtol=1e-6, atol=1e-6)


def test_batchnorm_moving_mean_updates_during_training(tiny, tmp_path):
    c = tiny("+model.layers.conv1.use_bias=false")
    layers = c["model"]["layers"]
    c["model"]["layers"] = {
        "conv1": layers["conv1"],
        "bn": {"type": "BatchNormalization"},
        **{k: v for k, v in layers.items() if k != "conv1"},
    }
    c["tracking"]["enabled"] = False
    c["probe"]["enabled"] = False
    result = run(c, tmp_path / "out")
    moving_mean = tf.train.load_variable(result.model_dir, "bn/moving_mean")
    assert np.abs(moving_mean).max() > 1e-3  # initialised to zeros; updates moved it


def test_dropout_is_active_only_in_training(tiny):
    c = tiny()
    c["model"]["layers"]["drop"] = {"type": "Dropout", "rate": 0.5, "inputs": "gap"}
    c["model"]["layers"]["logits"]["inputs"] = "drop"
    c["model"]["layers"] = {k: c["model"]["layers"][k] for k in ["conv1", "pool1", "conv2", "gap", "drop", "logits"]}
    zero_share = {}
    for mode in (ModeKeys.TRAIN, ModeKeys.PREDICT):
        with tf.Graph().as_default():
            tf.compat.v1.train.get_or_create_global_step()
            built = []
            feats = {"image": tf.ones([256, 8, 8, 1])}
            labels = {"label": tf.zeros([256], tf.int64)}
            make_model_fn(model_spec(load(c)), on_build=built.append)(feats, labels, mode)
            g = built[0]
            with tf.compat.v1.Session() as sess:
                sess.run(tf.compat.v1.global_variables_initializer())
                before, after = sess.run([g.tensors["gap"], g.tensors["drop"]])
            zero_share[mode] = float(((after == 0) & (before != 0)).sum() / max((before != 0).sum(), 1))
            if mode == ModeKeys.PREDICT:
                np.testing.assert_array_equal(before, after)
    assert 0.4 < zero_share[ModeKeys.TRAIN] < 0.6
    assert zero_share[ModeKeys.PREDICT] == 0.0


def test_rerun_resumes_and_exposing_a_new_layer_needs_no_retraining(tiny, tmp_path):
    c = tiny()
    first = run(c, tmp_path / "a")
    assert first.global_step == 20 and set(first.probe) == {"conv1", "logits"}

    longer = tiny("trainer.train_steps=30")
    assert run(longer, tmp_path / "b").global_step == 30  # resumed from 20: same model_dir

    c2 = tiny("trainer.train_steps=30", "probe.layers=[conv2]")
    ckpt_before = tf.train.latest_checkpoint(first.model_dir)
    again = run(c2, tmp_path / "c")
    assert again.global_step == 30 and tf.train.latest_checkpoint(first.model_dir) == ckpt_before
    assert set(again.probe) == {"conv1", "conv2", "logits"}
    (conv2,) = activations(c2, first.model_dir, ["conv2"], eval_features(c2).features)
    np.testing.assert_allclose(again.probe["conv2"].mean, conv2.mean(), rtol=1e-5)
    np.testing.assert_allclose(again.probe["conv2"].max, conv2.max(), rtol=1e-5)


def test_run_is_logged_to_the_sqlite_store(tiny, tmp_path):
    from mlflow.tracking import MlflowClient

    c = tiny("probe.plots=true")
    result = run(c, tmp_path / "out", overrides=["model=tiny_cnn"])
    client = MlflowClient(tracking_uri=result.tracking_uri)
    r = client.get_run(result.run_id)
    assert r.info.status == "FINISHED"
    assert r.data.params["model.layers.conv1.filters"] == "4"
    assert r.data.params["trainer.train_steps"] == "20"
    assert r.data.metrics["eval/accuracy"] == pytest.approx(result.eval_metrics["eval/accuracy"])
    assert r.data.metrics["probe/conv1/mean"] == pytest.approx(result.probe["conv1"].mean)
    assert "probe/logits/p99" in r.data.metrics and "probe/conv1/dead_fraction" in r.data.metrics
    assert client.get_metric_history(result.run_id, "eval/accuracy")[0].step == 20
    assert r.data.tags["layerprobe.exposed"] == "conv1,logits"
    names = {a.path for a in client.list_artifacts(result.run_id, "probe/conv1")}
    assert {"probe/conv1/stats.json", "probe/conv1/histogram.png", "probe/conv1/channels.png"} <= names
    local = client.download_artifacts(result.run_id, "probe/conv1/stats.json", str(tmp_path))
    assert json.loads(Path(local).read_text())["mean"] == pytest.approx(result.probe["conv1"].mean)
    assert client.download_artifacts(result.run_id, "config/config.yaml", str(tmp_path))
    # the splits as MLflow dataset inputs ("Datasets used" in the UI), one per split
    inputs = {i.tags[0].value: i.dataset for i in r.inputs.dataset_inputs}
    sizes = prepare(c["data"]).sizes()
    assert set(inputs) == set(sizes) == {"train", "eval"}
    assert {d.name for d in inputs.values()} == {"digits"}
    assert {json.loads(d.profile)["num_rows"] for d in inputs.values()} == set(sizes.values())
    assert len({d.digest for d in inputs.values()}) == 2
    schema = json.loads(json.loads(inputs["eval"].schema)["mlflow_tensorspec"]["features"])
    assert schema == [{"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 8, 8, 1]}, "name": "image"}]
    assert json.loads(inputs["eval"].source)["tags"]["layerprobe.data.source"] == "digits"
    # the experiment says it is model training, not GenAI (the UI's view is picked by the link, test_docs)
    experiment = client.get_experiment(r.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"


def test_progress_records_each_logged_step_once_whichever_side_of_the_increment_the_step_is_read():
    """The global step fetched beside the train op is read before or after its increment; under
    load the two orders mix (CI once logged train/loss at steps 10, 10, 20)."""
    from types import SimpleNamespace

    from layerprobe.engines.estimator.hooks import ProgressHook

    flushed: list[tuple[dict[str, float], int]] = []
    hook = ProgressHook(every=5, total_steps=20, flush=flushed.extend, flush_every=100)
    hook.current = 0
    # True steps 1..20; the fetched value is the step before (k-1) or after (k) the increment.
    reads = [k - 1 if k % 3 else k for k in range(1, 21)]
    for read in reads:
        hook.after_run(None, SimpleNamespace(results={"step": read, "loss": 0.5}))
    hook.end(None)
    assert [step for _, step in flushed] == [5, 10, 15, 20]
