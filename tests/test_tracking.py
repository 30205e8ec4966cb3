"""MLflow tracking against a real sqlite store and a real `mlflow server` on 127.0.0.1."""

from __future__ import annotations

import ast
import csv
import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from layerprobe.tracking import NullTracker, Tracker, download_artifact, flatten, sanitize_key
from tests.hang import HANG_GUARD
from tests.servers import free_port, start_server, stop_server


def test_keys_are_sanitised_deterministically():
    assert sanitize_key("probe/conv1/p99") == "probe/conv1/p99"
    assert sanitize_key("eval/top-k@5:x") == "eval/top-k_5_x"
    assert len(sanitize_key("a" * 300)) == 250


def test_flatten_uses_dotted_keys_and_truncates_long_values():
    flat = flatten({"model": {"layers": {"conv1": {"filters": 32, "kernel_size": [3, 3]}}}, "x": "v" * 7000})
    assert flat["model.layers.conv1.filters"] == "32"
    assert flat["model.layers.conv1.kernel_size"] == "[3, 3]"
    assert len(flat["x"]) == 6000 and flat["x"].endswith("...[truncated]")


@pytest.mark.integration  # a real MLflow store
@pytest.mark.parametrize(
    ("exc", "status"), [(None, "FINISHED"), (RuntimeError("boom"), "FAILED"), (KeyboardInterrupt(), "KILLED")]
)
def test_run_status_follows_how_the_run_ended(tmp_path, exc, status):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    tracker = Tracker(uri, "exp", "r", {})
    try:
        with tracker:
            tracker.log_params({f"p{i}": str(i) for i in range(250)})  # > 100: chunked
            if exc is not None:
                raise exc
    except (RuntimeError, KeyboardInterrupt):
        pass
    run = MlflowClient(tracking_uri=uri).get_run(tracker.run_id)
    assert run.info.status == status
    assert len(run.data.params) == 250
    if status == "FAILED":
        assert run.data.tags["error"] == "RuntimeError: boom"


def public_interface(cls: type) -> dict[str, inspect.Signature | None]:
    """Public methods (with their signatures; __init__ aside) and annotated public attributes."""
    names = {n: getattr(cls, n) for n in dir(cls) if not n.startswith("_") or n in ("__enter__", "__exit__")}
    annotated = vars(cls).get("__annotations__", {})
    out: dict[str, inspect.Signature | None] = {n: None for n in annotated if not n.startswith("_")}
    for name, member in names.items():
        if callable(member) and not isinstance(member, type):
            out[name] = inspect.signature(member).replace(return_annotation=inspect.Signature.empty)
    return out


@pytest.mark.integration  # a real MLflow store
def test_null_tracker_has_exactly_the_public_interface_of_tracker(tmp_path):
    tracker, null = public_interface(Tracker), public_interface(NullTracker)
    live = Tracker(f"sqlite:///{tmp_path / 'm.db'}", "exp", "r", pending_dir=tmp_path)
    unannounced = {n for n in vars(live) if not n.startswith("_")} - set(tracker)
    assert not unannounced, f"annotate Tracker's public attributes (and give NullTracker them): {unannounced}"
    assert {"log_params", "set_tags", "log_metric_records", "run_id", "seconds", "__exit__"} <= set(tracker)
    assert set(null) == set(tracker), set(tracker) ^ set(null)
    for name, signature in tracker.items():
        assert null[name] == signature, name


def test_null_tracker_takes_every_call_and_refuses_misspelt_ones():
    with NullTracker() as t:
        t.log_params({"a": "1"})
        t.log_metric_records([({"train/loss": 1.0}, 1)])
        t.set_tags({"x": "y"})
        t.log_artifacts("nowhere", "config")
    assert (t.run_id, t.uri, t.experiment_id, t.seconds) == (None, None, None, 0.0)
    with pytest.raises(AttributeError, match="log_metric_record"):
        t.log_metric_record([({"train/loss": 1.0}, 1)])  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        t.log_param({"a": "1"})  # type: ignore[attr-defined]


@pytest.mark.integration  # starts a process
def test_null_tracker_and_the_sweep_callback_import_no_mlflow():
    code = (
        "import sys\n"
        "from layerprobe.tracking import NullTracker\n"
        "import layerprobe.sweeps.parent\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'mlflow'))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=HANG_GUARD)
    assert r.stdout == "[]\n", r.stderr[-2000:]


def test_only_the_tracking_package_imports_mlflow():
    root = Path(__file__).parent.parent / "layerprobe"
    importers = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n.split(".")[0] == "mlflow" for n in names):
                importers.append(path.relative_to(root).as_posix())
    assert importers and all(p.startswith("tracking/") for p in importers), sorted(set(importers))
    assert "tracking/null.py" not in importers


@pytest.mark.integration  # a real MLflow store
@pytest.mark.parametrize("setting", [None, "true"])
def test_downloading_an_artifact_draws_no_progress_bar_unless_asked(tmp_path, capfd, monkeypatch, setting):
    monkeypatch.delenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", raising=False)
    if setting:
        monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", setting)
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    (tmp_path / "probe").mkdir()
    for i in range(3):
        (tmp_path / "probe" / f"stats{i}.json").write_text(json.dumps({"i": i}))
    with Tracker(uri, "exp", "r", pending_dir=tmp_path / "out") as t:
        t.log_artifacts(tmp_path / "probe", "probe")
    capfd.readouterr()
    local = download_artifact(uri, t.run_id, "probe", tmp_path / "down")
    err = capfd.readouterr().err
    assert sorted(p.name for p in local.iterdir()) == ["stats0.json", "stats1.json", "stats2.json"]
    assert json.loads((local / "stats2.json").read_text()) == {"i": 2}
    assert ("Downloading artifacts" in err) == (setting == "true"), err


def cli(args: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "layerprobe", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


TINY = ["model=tiny_cnn", "trainer=quick", "probe.plots=false"]


@pytest.mark.integration
@pytest.mark.estimator  # the default engine
def test_a_2x2_sweep_is_one_parent_with_four_children(tmp_path):
    r = cli(["-m", *TINY, "model.layers.conv1.filters=2,4", "trainer.seed=1,2"], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("layerprobe").experiment_id])
    parents = [x for x in runs if x.data.tags.get("layerprobe.sweep") == "parent"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = [x for x in runs if x.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(children) == 4 and {x.info.status for x in children} == {"FINISHED"}
    assert {x.info.run_name for x in children} == {
        f"conv1.filters={f},trainer.seed={s}" for f in (2, 4) for s in (1, 2)
    }
    best = max(children, key=lambda x: x.data.metrics["eval/accuracy"])
    assert parents[0].data.tags["layerprobe.best_run_id"] == best.info.run_id
    table = client.download_artifacts(parents[0].info.run_id, "sweep_summary.csv", str(tmp_path))
    rows = list(csv.DictReader(open(table)))
    assert len(rows) == 4 and {r["run_id"] for r in rows} == {x.info.run_id for x in children}
    # CKA of each exposed layer across the children, on the parent (same sampled examples in every run)
    across = json.loads(
        open(client.download_artifacts(parents[0].info.run_id, "compare/conv1/cka_across.json", str(tmp_path))).read()
    )
    assert len(across["cka"]) == 4 and all(abs(across["cka"][i][i] - 1) < 1e-9 for i in range(4))
    assert across["examples"] == 359 and set(across["run_ids"]) == {x.info.run_id for x in children}
    r = cli(
        [
            "compare",
            "--sweep",
            parents[0].info.run_id,
            "--layer",
            "logits",
            "--tracking-uri",
            f"sqlite:///{tmp_path / 'mlflow.db'}",
            "--output-dir",
            str(tmp_path / "cmp"),
        ],
        tmp_path,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith("linear CKA of logits across 4 runs (359 examples)")


@pytest.mark.integration
@pytest.mark.estimator  # the default engine
def test_a_failing_job_is_failed_and_the_others_finish(tmp_path):
    r = cli(["-m", *TINY, "trainer.optimizer.learning_rate=0.001,0.002,0.003,1e30"], tmp_path)
    assert r.returncode == 1
    assert "1 sweep job(s) failed: 3" in r.stderr
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("layerprobe").experiment_id])
    children = [x for x in runs if "mlflow.parentRunId" in x.data.tags]
    assert sorted(x.info.status for x in children) == ["FAILED", "FINISHED", "FINISHED", "FINISHED"]
    failed = next(x for x in children if x.info.status == "FAILED")
    assert failed.data.tags["error"].startswith("TrainingDiverged: training loss became")
    assert not any(x.info.status == "RUNNING" for x in runs)


@pytest.fixture
def mlflow_server(tmp_path):
    """A real `mlflow server` on 127.0.0.1, stopped at the end."""
    port = free_port()
    proc = start_server(tmp_path, port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_server(proc)


@pytest.mark.integration
@pytest.mark.estimator  # the default engine
def test_a_run_logged_to_a_real_tracking_server_reads_back_whole(tiny, tmp_path, mlflow_server):
    from layerprobe.runner import run

    c = tiny(f"tracking.uri={mlflow_server}", "probe.plots=true")
    result = run(c, tmp_path / "out", overrides=["model=tiny_cnn"])
    client = MlflowClient(tracking_uri=mlflow_server)
    r = client.get_run(result.run_id)
    assert r.info.status == "FINISHED"
    assert r.data.params["model.layers.conv1.filters"] == "4"
    assert r.data.tags["layerprobe.model"] == "tiny_cnn" and r.data.tags["git.commit"]
    assert r.data.metrics["eval/accuracy"] == pytest.approx(result.eval_metrics["eval/accuracy"])
    history = client.get_metric_history(result.run_id, "train/loss")
    assert [m.step for m in history] == [10, 20]
    assert r.data.metrics["probe/conv1/p50"] == pytest.approx(result.probe["conv1"].percentiles["p50"])
    top = {a.path for a in client.list_artifacts(result.run_id)}
    assert {"config", "probe", "saved_model", "tensorboard"} <= top
    assert {a.path for a in client.list_artifacts(result.run_id, "probe/conv1")} >= {
        "probe/conv1/stats.json",
        "probe/conv1/histogram.png",
        "probe/conv1/reservoir.npz",
    }


@pytest.mark.integration
@pytest.mark.estimator  # the default engine
def test_an_unreachable_store_is_one_line_before_training(tmp_path):
    r = cli([*TINY, f"tracking.uri=http://127.0.0.1:{free_port()}"], tmp_path, timeout=HANG_GUARD)
    assert r.returncode == 2
    assert r.stderr.startswith("layerprobe: error: tracking store http://127.0.0.1:")
    assert "cannot be reached" in r.stderr and r.stderr.strip().count("\n") == 0
    assert not (tmp_path / "models").exists()


@pytest.mark.integration
@pytest.mark.estimator  # the default engine
def test_a_store_that_answers_health_but_fails_the_run_is_one_line_before_training(tmp_path):
    """/health says OK, every API call gets 503 (a server whose database is gone): still one line,
    exit 2, no traceback and no model_dir."""
    import http.server
    import threading

    class Broken(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            self.send_response(200 if self.path == "/health" else 503)
            self.end_headers()
            self.wfile.write(b"OK" if self.path == "/health" else b"database is gone")

        do_GET = do_POST = _answer

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Broken)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        r = cli([*TINY, f"tracking.uri=http://127.0.0.1:{server.server_port}"], tmp_path, timeout=HANG_GUARD)
    finally:
        server.shutdown()
        server.server_close()
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stderr.startswith(f"layerprobe: error: tracking store http://127.0.0.1:{server.server_port} did not start")
    assert r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr
    assert not (tmp_path / "models").exists()
