"""The trained model as an MLflow Model (tracking.models): what `mlflow.pyfunc.load_model` and a real
`mlflow models serve` answer equals the engine's own predictions; the run's eval metrics are its
params (and once in the run's history); registering twice gives versions 1 and 2; logging it
reaches nothing beyond this machine."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from layerprobe.artifacts import INPUT_EXAMPLES
from layerprobe.config.loaded import load
from tests.conftest import ENGINE, plain
from tests.hang import HANG_GUARD
from tests.servers import free_port

pytestmark = pytest.mark.integration

REGISTERED = "tiny_cnn_digits"


def _outbound(connections: list[str]):
    """An audit hook (observes, replaces nothing) that notes every connection or name lookup that
    is not this machine's loopback, and every package tool started, while `connections` is the list armed."""
    armed = [True]

    def hook(event: str, args: tuple) -> None:
        if not armed[0]:
            return
        if event == "socket.connect" and isinstance(args[1], tuple):
            host = str(args[1][0])
            if not (host.startswith("127.") or host in ("::1", "localhost")):
                connections.append(f"connect {host}")
        elif event == "socket.getaddrinfo" and args[0] not in (None, "localhost", "127.0.0.1", "::1"):
            connections.append(f"lookup {args[0]}")
        elif event == "subprocess.Popen" and any(tool in str(args[1]) for tool in ("pip", "uv", "conda", "virtualenv")):
            connections.append(f"process {args[1]}")  # an environment resolved in a child process

    sys.addaudithook(hook)
    return armed


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """A tiny model trained, logged as an MLflow Model and registered (version 1), with every
    outbound connection noted while it ran."""
    from layerprobe.runner import run

    tmp = tmp_path_factory.mktemp("mlmodel")
    cfg = plain(
        [
            "model=tiny_cnn",
            "trainer=quick",
            f"trainer.engine={ENGINE}",
            f"trainer.model_dir={tmp / 'model'}",
            f"tracking.uri=sqlite:///{tmp / 'mlflow.db'}",
            f"tracking.register_model={REGISTERED}",
            "probe.plots=false",
            "probe.analysis=false",
            "probe.dynamics.enabled=false",
        ]
    )
    connections: list[str] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)  # the store's artifacts (./mlruns) in tmp
        armed = _outbound(connections)
        try:
            result = run(cfg, tmp / "out")
        finally:
            armed[0] = False
    return tmp, cfg, result, connections


def _client(result):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=result.tracking_uri)


def _model(result):
    run = _client(result).get_run(result.run_id)
    (output,) = run.outputs.model_outputs
    return _client(result).get_logged_model(output.model_id)


def _engine_predictions(cfg) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The first INPUT_EXAMPLES of the probe split and what the engine itself predicts for them."""
    from layerprobe.engines.base import PredictRequest
    from layerprobe.experiment import prepare

    c = load(cfg)
    x = prepare(c)
    features = next(iter(x.data.tf_dataset(c.probe.split, training=False, batch_size=8, seed=0, cache=False)))[0]
    examples = {n: features[n].numpy()[:INPUT_EXAMPLES] for n in c.model.inputs}
    request = PredictRequest(c.probe.split, batch_size=INPUT_EXAMPLES, max_examples=INPUT_EXAMPLES)
    (batch,) = list(x.engine.predict(x.data, request, lambda tensors, feed: {}))
    return examples, batch


def test_the_run_logs_its_model_with_signature_example_pinned_requirements_and_its_eval_metrics(logged):
    from importlib.metadata import version

    import mlflow
    from mlflow.models import Model

    tmp, _, result, _ = logged
    model = _model(result)
    assert model.name == "model" and model.source_run_id == result.run_id and model.status.to_proto() == 2  # READY
    params = {k: float(v) for k, v in model.params.items()}
    assert params == pytest.approx({**result.eval_metrics, "step": result.global_step}, rel=1e-5)
    client = _client(result)
    for key in result.eval_metrics:  # one point at the run's step, not a second one for the model
        assert [m.step for m in client.get_metric_history(result.run_id, key)] == [result.global_step]
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)
        meta = Model.load(f"models:/{model.model_id}")
    assert [s.name for s in meta.signature.inputs.inputs] == ["image"]
    assert meta.signature.inputs.inputs[0].shape == (-1, 8, 8, 1)
    assert [s.name for s in meta.signature.outputs.inputs] == ["logits"]
    assert meta.saved_input_example_info["type"] == "ndarray"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)
        pins = Path(mlflow.pyfunc.get_model_dependencies(f"models:/{model.model_id}")).read_text().split()
    tf_dist = next(p for p in pins if p.startswith("tensorflow"))
    assert version(tf_dist.split("==")[0]) == tf_dist.split("==")[1] and f"numpy=={np.__version__}" in pins
    assert f"mlflow=={mlflow.__version__}" in pins and all("==" in p for p in pins)  # nothing left to resolve


def test_pyfunc_predicts_what_the_engine_predicts(logged):
    import mlflow

    tmp, cfg, result, _ = logged
    examples, expected = _engine_predictions(cfg)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)
        loaded = mlflow.pyfunc.load_model(f"models:/{_model(result).model_id}")
        answered = loaded.predict(examples)
    assert set(answered) == {"logits"}
    np.testing.assert_allclose(answered["logits"], expected["logits"], rtol=1e-5, atol=1e-6)


def test_a_served_model_answers_invocations_with_the_engines_predictions(logged):
    tmp, cfg, result, _ = logged
    examples, expected = _engine_predictions(cfg)
    port = free_port()
    exe = Path(sys.executable).with_name("mlflow")
    uri = f"models:/{_model(result).model_id}"
    # as from the activated venv: the server runs `uvicorn` by name
    path = os.pathsep.join([str(exe.parent), os.environ.get("PATH", "")])
    env = {**os.environ, "MLFLOW_TRACKING_URI": result.tracking_uri, "PATH": path}
    args = [str(exe), "models", "serve", "-m", uri, "--env-manager", "local", "-p", str(port), "-h", "127.0.0.1"]
    log = (tmp / "serve.log").open("w")
    proc = subprocess.Popen(args, cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + HANG_GUARD
        while True:
            try:
                with urllib.request.urlopen(url + "/ping", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    tail = (tmp / "serve.log").read_text()[-3000:]
                    pytest.fail(f"`mlflow models serve -m {uri}` ended or hung before answering /ping:\n{tail}")
                time.sleep(0.5)
        body = json.dumps({"inputs": {n: v.tolist() for n, v in examples.items()}}).encode()
        request = urllib.request.Request(url + "/invocations", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=HANG_GUARD) as resp:
            answered = json.loads(resp.read())["predictions"]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    np.testing.assert_allclose(np.asarray(answered["logits"]), expected["logits"], rtol=1e-5, atol=1e-6)


def test_registering_twice_gives_versions_1_and_2(logged):
    from layerprobe.runner import run

    tmp, cfg, first, _ = logged
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)
        second = run(cfg, tmp / "out2")  # the same model_dir: trained already, evaluated, logged, registered
    from layerprobe.tracking import register_model

    again = register_model(first.tracking_uri, first.run_id, REGISTERED)  # a continued sweep's best, unchanged
    assert again == f"models:/{REGISTERED}/1"
    versions = _client(first).search_model_versions(f"name='{REGISTERED}'")
    by_version = {int(v.version): v for v in versions}
    assert sorted(by_version) == [1, 2]
    assert by_version[1].run_id == first.run_id and by_version[1].source == f"models:/{_model(first).model_id}"
    assert by_version[2].run_id == second.run_id and by_version[2].source == f"models:/{_model(second).model_id}"


def test_tracking_log_model_false_logs_no_model_and_registers_nothing(logged):
    from layerprobe.runner import run

    tmp, cfg, first, _ = logged
    off = {**cfg, "tracking": {**cfg["tracking"], "log_model": False, "register_model": None}}
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)
        result = run(off, tmp / "out3")  # the same model_dir: trained already
    assert not _client(result).get_run(result.run_id).outputs.model_outputs
    assert {a.path for a in _client(result).list_artifacts(result.run_id)} >= {"saved_model"}


def test_logging_the_model_reaches_nothing_beyond_loopback(logged):
    _, _, result, connections = logged
    assert _model(result) is not None
    assert connections == [], connections


@pytest.mark.estimator  # sweeps train with the default engine
def test_a_sweep_registers_only_its_best_trial(tmp_path):
    from mlflow import MlflowClient

    from tests.test_tracking import TINY, cli

    args = ["-m", *TINY, "probe.analysis=false", "probe.dynamics.enabled=false", "trainer.seed=1,2"]
    r = cli([*args, f"tracking.register_model={REGISTERED}"], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("layerprobe").experiment_id])
    (parent,) = [x for x in runs if x.data.tags.get("layerprobe.sweep") == "parent"]
    children = [x for x in runs if x.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 2 and all(x.outputs.model_outputs for x in children)  # each trial logs its model
    (version,) = client.search_model_versions(f"name='{REGISTERED}'")
    assert int(version.version) == 1 and version.run_id == parent.data.tags["layerprobe.best_run_id"]
