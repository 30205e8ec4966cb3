"""Training dynamics (docs/dynamics.md): probe points during training, their metric
series, TensorBoard histograms from the sketch, resume, and `probe --checkpoints all`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from layerprobe.config.loaded import load
from layerprobe.dynamics.cadence import probe_steps
from layerprobe.experiment import prepare
from layerprobe.runner import run

pytestmark = [pytest.mark.estimator, pytest.mark.integration]  # training dynamics of the Estimator engine


def _steps(result, key):
    client = MlflowClient(tracking_uri=result.tracking_uri)
    return sorted(m.step for m in client.get_metric_history(result.run_id, key))


def assert_the_run_holds_its_series(result, series):
    """One metric, one step, one value: every value of dynamics.json is the run's
    `dynamics/<layer>/<name>` at its step, logged once, and `probe/<layer>/<stat>` holds the final
    probe of the whole split only, at the run's step (docs/dynamics.md)."""
    client = MlflowClient(tracking_uri=result.tracking_uri)
    logged = client.get_run(result.run_id).data.metrics
    for layer, s in series["layers"].items():
        named = {**s["scalars"], "linear_acc": s["linear_acc"], "cka_to_final": s["cka_to_final"]}
        for name, values in named.items():
            want = {step: v for step, v in zip(series["steps"], values) if v is not None}
            history = client.get_metric_history(result.run_id, f"dynamics/{layer}/{name}")
            assert sorted(m.step for m in history) == sorted(want), (layer, name)  # each step once
            assert {m.step: m.value for m in history} == want, (layer, name)
    for key in (k for k in logged if k.startswith("probe/")):
        history = client.get_metric_history(result.run_id, key)
        assert [(m.step, m.value) for m in history] == [(result.global_step, result.probe_metrics[key])], key


def test_cadences():
    from layerprobe.dynamics.cadence import snapshot_steps
    from tests.conftest import plain

    assert snapshot_steps(load(plain([]))) == [0, 500, 1000]  # `make run`: three points per statistic
    assert snapshot_steps(load(plain(["probe.dynamics.enabled=false"]))) == []
    assert probe_steps("checkpoint", 1000, 500) == [0, 500, 1000]
    assert probe_steps(300, 1000, 500) == [0, 300, 600, 900, 1000]
    assert probe_steps([5, 1, 5, 20], 20, 10) == [0, 1, 5, 20]


@pytest.fixture
def trained(tiny, tmp_path):
    c = tiny("probe.dynamics.examples=100", "probe.plots=true")
    return c, run(c, tmp_path / "train")


def test_metrics_at_three_steps_and_the_last_equals_a_probe_after_training(trained, tmp_path):
    c, result = trained
    # step 0 (the initialised model) and the checkpoints at 10 and 20, on the subset; the full probe at 20
    assert _steps(result, "dynamics/conv1/mean") == [0, 10, 20]
    assert _steps(result, "dynamics/conv1/cka_to_final") == [0, 10, 20]
    assert _steps(result, "probe/conv1/mean") == [20]
    series = json.loads((tmp_path / "train/probe/dynamics/dynamics.json").read_text())
    assert series["steps"] == [0, 10, 20] and series["examples"] == 100
    assert_the_run_holds_its_series(result, series)
    assert series["layers"]["conv1"]["cka_to_final"][-1] == pytest.approx(1.0)
    # a probe after training, of the final checkpoint (Estimator.predict at the latest), on the same 100 examples
    x = prepare(load(c), result.model_dir)
    after = x.session().run(x.data, max_examples=100).stats(x.summary)
    for layer in ("conv1", "logits"):
        assert series["layers"][layer]["scalars"]["mean"][-1] == after[layer].mean
        assert series["layers"][layer]["scalars"]["p50"][-1] == after[layer].percentiles["p50"]
        assert series["layers"][layer]["histograms"][-1]["counts"] == after[layer].histogram_counts
    # a PNG per layer and the report's dynamics section
    assert (tmp_path / "train/probe/dynamics/conv1.png").is_file()
    report = (tmp_path / "train/probe/report.html").read_text()
    assert 'id="dynamics"' in report and "at steps 0, 10, 20" in report
    assert "Mean CKA to the final checkpoint before it, by depth: conv1 " in report
    assert result.run_id in report and "eval/accuracy" in report


def test_tensorboard_histograms_sum_to_the_values_seen(trained, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    c, result = trained
    acc = EventAccumulator(f"{result.model_dir}/probe", size_guidance={"histograms": 0})
    acc.Reload()
    series = json.loads((tmp_path / "train/probe/dynamics/dynamics.json").read_text())
    for layer in ("conv1", "logits"):
        events = acc.Histograms(f"probe/{layer}/activations")
        assert [e.step for e in events] == [0, 10, 20]
        for e, count in zip(events, series["layers"][layer]["scalars"]["count"]):
            h = e.histogram_value
            assert sum(h.bucket) == h.num == count  # every finite value seen, once
        # conv1 on 100 examples: 8x8 positions x 4 channels each (tiny_cnn)
    assert series["layers"]["conv1"]["scalars"]["count"][0] == 100 * 8 * 8 * 4
    # copied with the run's TensorBoard directory
    assert list((tmp_path / "train/tensorboard/probe").glob("events.out.tfevents.*"))


def test_a_resumed_run_continues_the_series(tiny, tmp_path):
    first = run(tiny("probe.analysis=false"), tmp_path / "a")
    second = run(tiny("probe.analysis=false", "trainer.train_steps=40"), tmp_path / "b")
    assert _steps(first, "dynamics/conv1/std") == [0, 10, 20]
    assert _steps(second, "dynamics/conv1/std") == [30, 40]  # no step probed twice
    series = json.loads((tmp_path / "b/probe/dynamics/dynamics.json").read_text())
    assert series["steps"] == [30, 40]


def test_a_new_cadence_on_a_trained_model_dir_says_which_command_probes_it(tiny, tmp_path, caplog):
    """probe.dynamics changed after training: no snapshot can be taken any more; one line says so."""
    first = run(tiny("probe.analysis=false"), tmp_path / "a")
    with caplog.at_level("WARNING", logger="layerprobe.runner"):
        again = run(tiny("probe.analysis=false", "probe.dynamics.every=5"), tmp_path / "b")
    assert again.global_step == first.global_step
    warned = [r.getMessage() for r in caplog.records if r.getMessage().startswith("probe.dynamics:")]
    assert warned == [
        "probe.dynamics: the model_dir is trained already, so no snapshot is taken at steps 5, 15; "
        f"`layerprobe probe {again.run_id} --checkpoints all` probes the checkpoints it keeps"
    ]


def test_probe_checkpoints_all_logs_one_point_per_kept_checkpoint(tiny, tmp_path):
    import subprocess
    import sys

    result = run(tiny("probe.dynamics.enabled=false", "trainer.keep_checkpoint_max=2"), tmp_path / "t")
    assert _steps(result, "dynamics/conv1/mean") == []  # no dynamics in training
    r = subprocess.run(
        [sys.executable, "-m", "layerprobe", "probe", result.run_id, "--checkpoints", "all",
         "probe.dynamics.examples=50", f"tracking.uri={result.tracking_uri}", "--output-dir", str(tmp_path / "o")],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert _steps(result, "dynamics/conv1/mean") == [10, 20]  # the two kept checkpoints
    assert _steps(result, "dynamics/conv1/cka_to_final") == [10, 20]
    assert _steps(result, "probe/conv1/mean") == [20]
    series = json.loads((tmp_path / "o/probe/dynamics/dynamics.json").read_text())
    assert series["steps"] == [10, 20] and series["examples"] == 50


STEP_RULE = "a probe step is an integer in [1, trainer.train_steps=20]"


@pytest.mark.parametrize(
    "override, message",
    [
        ("probe.dynamics.every=0", f"probe.dynamics.every: {STEP_RULE}. Received: 0"),
        ("probe.dynamics.every=-3", f"probe.dynamics.every: {STEP_RULE}. Received: -3"),
        ("probe.dynamics.every=[5,50]", f"probe.dynamics.every[1]: {STEP_RULE}. Received: 50"),
        (
            "probe.dynamics.every=chekpoint",
            "probe.dynamics.every: a cadence is checkpoint, a step count or a list. Received: 'chekpoint'. "
            "Did you mean 'checkpoint'? Allowed: checkpoint",
        ),
        (
            "probe.dynamics.examples=5000",
            "probe.dynamics.examples: the probe subset must fit in the eval split (359 examples). Received: 5000",
        ),
    ],
)
def test_bad_cadence_or_subset_is_one_line_and_exit_2(tmp_path, override, message):
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-m", "layerprobe", "model=tiny_cnn", "trainer=quick", override,
         f"trainer.model_dir={tmp_path / 'm'}", f"tracking.uri=sqlite:///{tmp_path / 'db'}"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].endswith(message), r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "m").exists()  # nothing half-written


def test_training_is_bitwise_the_same_with_or_without_dynamics(tiny, tmp_path):
    import tensorflow as tf

    on = run(tiny("probe.analysis=false", model_dir=str(tmp_path / "on")), tmp_path / "a")
    off = run(
        tiny("probe.analysis=false", "probe.dynamics.enabled=false", model_dir=str(tmp_path / "off")), tmp_path / "b"
    )
    assert on.eval_metrics == off.eval_metrics
    a, b = tf.train.latest_checkpoint(on.model_dir), tf.train.latest_checkpoint(off.model_dir)
    names = [n for n, _ in tf.train.list_variables(a)]
    assert names == [n for n, _ in tf.train.list_variables(b)]
    for n in names:
        np.testing.assert_array_equal(tf.train.load_variable(a, n), tf.train.load_variable(b, n))
    assert not (tmp_path / "off" / "dynamics").exists()


def _page_runs() -> list[list[str]]:
    """The training commands of the docs' Training dynamics page (its subcommands aside)."""
    import shlex

    from layerprobe.cli import COMMANDS
    from tests.docs import commands, page

    runs = [shlex.split(line)[1:] for line in commands("layerprobe", [page("dynamics.md")])]
    return [args for args in runs if not args or args[0] not in COMMANDS]


@pytest.mark.parametrize("args", _page_runs())
def test_the_dynamics_pages_training_commands_pass_every_check_before_training(args, capsys):
    from layerprobe.cli import main

    assert main(["validate", *args]) == 0, capsys.readouterr().err  # data and graph checks too, not --static
