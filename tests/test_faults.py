"""Faults injected into real training processes: SIGKILL, Ctrl-C, NaN loss, unwritable dirs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.hang import HANG_GUARD, layerprobe_started

pytestmark = pytest.mark.estimator  # faults in runs of the Estimator engine

TINY = ["model=tiny_cnn", "trainer=quick", "probe.plots=false", "probe.analysis=false"]


def arguments(tmp_path: Path, *extra: str) -> list[str]:
    store = f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}"
    return [*TINY, f"trainer.model_dir={tmp_path / 'model'}", store, *extra]


def command(tmp_path: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "layerprobe", *arguments(tmp_path, *extra)]


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "MLFLOW_TRACKING_URI")}


def start(tmp_path: Path, *extra: str) -> subprocess.Popen:
    """`layerprobe` with the tiny config, its stdout and stderr in one pipe."""
    return layerprobe_started(arguments(tmp_path, *extra), tmp_path)


def wait_for_checkpoint(proc: subprocess.Popen, model_dir: Path, timeout: float = 120) -> int:
    """The step of the first checkpoint written (beyond step 0) while `proc` runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        steps = [int(p.name.split("-")[1].split(".")[0]) for p in model_dir.glob("model.ckpt-*.index")]
        if [s for s in steps if s > 0]:
            return max(steps)
        if proc.poll() is not None:
            pytest.fail(f"training ended before a checkpoint: {proc.communicate()[0][-3000:]}")
        time.sleep(0.1)
    stop(proc)
    pytest.fail("no checkpoint within the time limit")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)


def runs(tmp_path: Path) -> list:
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("layerprobe")
    return sorted(client.search_runs([exp.experiment_id]), key=lambda r: r.info.start_time)


LONG = ["trainer.train_steps=3000", "trainer.save_checkpoints_steps=100", "trainer.log_every_steps=50"]


@pytest.mark.slow
def test_sigkill_mid_training_resumes_and_the_killed_run_is_marked(tmp_path):
    proc = start(tmp_path, *LONG)
    try:
        killed_at = wait_for_checkpoint(proc, tmp_path / "model")
    finally:
        stop(proc)  # SIGKILL: no handler runs, the run stays RUNNING in the store
    assert proc.returncode == -signal.SIGKILL
    assert [r.info.status for r in runs(tmp_path)] == ["RUNNING"]

    r = subprocess.run(command(tmp_path, *LONG), cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "global step 3000" in r.stdout
    first, second = runs(tmp_path)
    assert first.info.status == "KILLED" and "was gone" in first.data.tags["layerprobe.stale"]
    assert second.info.status == "FINISHED"
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    steps = [m.step for m in client.get_metric_history(second.info.run_id, "train/loss")]
    assert steps and min(steps) > killed_at  # resumed from the checkpoint, not from step 0


@pytest.mark.slow
def test_ctrl_c_keeps_the_checkpoint_and_ends_the_run_killed(tmp_path):
    proc = start(tmp_path, *LONG)
    try:
        step = wait_for_checkpoint(proc, tmp_path / "model")
        os.killpg(proc.pid, signal.SIGINT)  # what the terminal sends on Ctrl-C
        err, _ = proc.communicate(timeout=HANG_GUARD)  # stdout and stderr
    finally:
        stop(proc)
    assert proc.returncode == 130, err[-3000:]
    assert err.strip().splitlines()[-1].startswith("layerprobe: interrupted")
    assert "Traceback" not in err
    assert (tmp_path / "model" / f"model.ckpt-{step}.index").exists()
    assert [r.info.status for r in runs(tmp_path)] == ["KILLED"]


@pytest.mark.slow
def test_nan_loss_is_one_line_naming_the_step_and_the_run_fails(tmp_path):
    r = subprocess.run(
        command(tmp_path, "trainer.optimizer.learning_rate=1e30"),
        cwd=tmp_path,
        env=env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 2
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("layerprobe: error: training loss became nan at global step ")
    assert "Traceback" not in r.stderr
    (run,) = runs(tmp_path)
    assert run.info.status == "FAILED" and run.data.tags["error"].startswith("TrainingDiverged")


@pytest.mark.slow
def test_an_unwritable_artifact_store_is_one_line_and_the_run_is_not_left_running(tmp_path):
    (tmp_path / "a_file").write_text("a file where the artifact directory should be\n")
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    client.create_experiment("layerprobe", artifact_location=str(tmp_path / "a_file" / "artifacts"))
    r = subprocess.run(command(tmp_path), cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr[-3000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("layerprobe: error: cannot write ") and "a_file" in last, last
    assert "Traceback" not in r.stderr
    assert [x.info.status for x in runs(tmp_path)] == ["FAILED"]


@pytest.mark.integration  # a real MLflow store
def test_stale_runs_are_marked_only_when_their_process_is_gone(tmp_path):
    from layerprobe import tracking

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    alive = tracking.Tracker(uri, "exp", "alive")  # this process: alive
    client = MlflowClient(tracking_uri=uri)
    exp_id = client.get_experiment_by_name("exp").experiment_id
    dead = client.create_run(exp_id, tags={tracking.HOST_TAG: os.uname().nodename, tracking.PID_TAG: "999999999"})
    reused = client.create_run(
        exp_id, tags={tracking.HOST_TAG: os.uname().nodename, tracking.PID_TAG: "1", tracking.PID_START_TAG: "-1"}
    )
    other_host = client.create_run(exp_id, tags={tracking.HOST_TAG: "elsewhere", tracking.PID_TAG: "999999999"})
    tracking.Tracker(uri, "exp", "next")
    status = {r.info.run_id: r.info.status for r in client.search_runs([exp_id])}
    assert status[dead.info.run_id] == "KILLED"
    assert status[reused.info.run_id] == "KILLED"  # pid 1 lives, but it is not the process that started it
    assert status[alive.run_id] == "RUNNING"
    assert status[other_host.info.run_id] == "RUNNING"  # its pid means nothing here
