"""The tracking store going away mid-run: calls are retried, buffered in mlflow-pending.jsonl,
delivered when the store is back or by `layerprobe upload-pending DIR`; nothing is lost silently."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest
import requests
from mlflow.tracking import MlflowClient

from layerprobe import tracking
from layerprobe.cli import main
from layerprobe.tracking import outbox, store
from tests.servers import free_port, start_server, stop_server


@pytest.fixture
def store_down(monkeypatch, integration):
    """Every log_batch to a real store fails as a dead HTTP server does, until `.up()` is called."""
    real = MlflowClient.log_batch
    state = {"down": True}

    def flaky(self, *args, **kwargs):
        if state["down"]:
            raise requests.exceptions.ConnectionError("Connection refused")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, "log_batch", flaky)
    monkeypatch.setattr(store.time, "sleep", lambda s: None)  # no real backoff in unit tests
    state["up"] = lambda: state.update(down=False)
    return state


def records(n: int, offset: int = 0) -> list:
    return [({"train/loss": float(i), "probe/conv1/p50": i / 2}, i) for i in range(offset, offset + n)]


def test_a_store_down_for_the_whole_run_loses_nothing_after_upload_pending(tmp_path, store_down, capsys):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    out = tmp_path / "out"
    t = tracking.Tracker(uri, "exp", "r", pending_dir=out)
    t.log_params({f"p{i}": str(i) for i in range(150)})
    t.log_metric_records(records(1500))  # > 1000: two batches
    t.set_tags({"note": "x"})
    t.__exit__(None, None, None)
    pending = out / tracking.PENDING_FILE
    assert pending.exists()
    client = MlflowClient(tracking_uri=uri)
    assert client.get_run(t.run_id).info.status == "RUNNING"  # the terminate call is pending too

    store_down["up"]()
    assert main(["upload-pending", str(tmp_path)]) == 0
    assert "buffered call(s) delivered" in capsys.readouterr().out
    run = client.get_run(t.run_id)
    assert run.info.status == "FINISHED"
    assert len(run.data.params) == 150 and run.data.tags["note"] == "x"
    for key in ("train/loss", "probe/conv1/p50"):
        assert [m.step for m in client.get_metric_history(t.run_id, key)] == list(range(1500))
    assert not pending.exists()


def test_a_store_that_comes_back_mid_run_gets_the_buffer_first(tmp_path, store_down, monkeypatch):
    monkeypatch.setattr(outbox, "OFFLINE_PROBE_SECONDS", 0.0)
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    t = tracking.Tracker(uri, "exp", "r", pending_dir=tmp_path / "out")
    t.log_metric_records(records(50))
    assert (tmp_path / "out" / tracking.PENDING_FILE).exists()
    store_down["up"]()
    t.log_metric_records(records(50, offset=50))
    t.__exit__(None, None, None)
    assert not (tmp_path / "out" / tracking.PENDING_FILE).exists()
    client = MlflowClient(tracking_uri=uri)
    assert client.get_run(t.run_id).info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(t.run_id, "train/loss")] == list(range(100))


def test_upload_pending_with_the_store_still_down_is_one_line(tmp_path, store_down, capsys):
    t = tracking.Tracker(f"sqlite:///{tmp_path / 'm.db'}", "exp", "r", pending_dir=tmp_path / "out")
    t.log_metric_records(records(5))
    assert main(["upload-pending", str(tmp_path / "out")]) == 2
    # (other lines are log records: MLflow's store creation, the retry warnings)
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("layerprobe: error:")]
    assert len(err) == 1 and "did not take the buffered calls" in err[0], err
    assert (tmp_path / "out" / tracking.PENDING_FILE).exists()  # kept for the next try


@pytest.mark.slow
def test_a_real_server_killed_mid_run_then_restarted_loses_nothing(tmp_path):

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(tmp_path, port)
    steps, every = 3000, 50
    cmd = [
        sys.executable, "-m", "layerprobe", "model=tiny_cnn", "trainer=quick", "probe.plots=false",
        f"trainer.train_steps={steps}", "trainer.save_checkpoints_steps=100", f"trainer.log_every_steps={every}",
        f"trainer.model_dir={tmp_path / 'model'}", f"tracking.uri={url}", f"hydra.run.dir={tmp_path / 'run'}",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while not list((tmp_path / "model").glob("model.ckpt-*.index")) and time.monotonic() < deadline:
            time.sleep(0.1)
        stop_server(server)  # the store dies while the model trains
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        stop_server(server)
    assert proc.returncode == 0, err[-3000:]  # training, evaluation and probing finished regardless
    assert "upload-pending" in out + err  # Hydra's job logging writes the warning to stdout
    pending = tmp_path / "run" / tracking.PENDING_FILE
    assert pending.exists()
    run_id = re.search(r"mlflow run: (\w+)", out).group(1)

    server = start_server(tmp_path, port)
    try:
        r = subprocess.run(
            [sys.executable, "-m", "layerprobe", "upload-pending", str(tmp_path / "run")],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert r.returncode == 0, r.stderr[-3000:]
        client = MlflowClient(tracking_uri=url)
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED"
        history = [m.step for m in client.get_metric_history(run_id, "train/loss")]
        assert history == list(range(every, steps + 1, every))
        for line in out.splitlines():
            if line.startswith("eval/"):
                key, value = line.split(": ")
                assert run.data.metrics[key] == pytest.approx(float(value), abs=1e-4)
        assert "probe/conv1/p50" in run.data.metrics and "probe/logits/p50" in run.data.metrics
        assert {"config", "probe", "saved_model"} <= {a.path for a in client.list_artifacts(run_id)}
        assert not pending.exists()
    finally:
        stop_server(server)
