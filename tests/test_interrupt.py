"""Ctrl-C in the middle of training (a real SIGINT to a real `python -m layerprobe`), then the same
command again (docs/mlflow.md, docs/dynamics.md): the KILLED run keeps the train/loss
it measured up to the interrupt, and the run that resumes probes every snapshot no run has probed,
each once, with the values of its dynamics.json. On the venv's engine: the engines' training loops
hand their records on in different places."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import ENGINE, plain
from tests.hang import HANG_GUARD, layerprobe_started
from tests.test_dynamics import assert_the_run_holds_its_series

pytestmark = pytest.mark.integration

STEPS, CHECKPOINTS = 200, 25  # a snapshot at every checkpoint: steps 0, 25, ..., 200
EVERY = 5  # trainer.log_every_steps: the loss meter hands on 20 records at once, every 100 steps
PROGRESS = re.compile(r"train step (\d+)/")


def interrupted_at(args: list[str], cwd: Path, step: int) -> int:
    """Start `layerprobe ARGS`, send SIGINT to its process group once its progress line reaches
    `step` and wait for it to end; returns the last step it logged (exit 130 checked)."""
    proc = layerprobe_started(args, cwd)
    guard = threading.Timer(HANG_GUARD, os.killpg, (proc.pid, signal.SIGKILL))
    guard.start()
    out, sent, last = [], False, 0
    try:
        for line in proc.stdout:  # type: ignore[union-attr]
            out.append(line)
            if m := PROGRESS.search(line):
                last = int(m[1])
                if last >= step and not sent:
                    os.killpg(proc.pid, signal.SIGINT)  # what a terminal sends on Ctrl-C
                    sent = True
        proc.wait()
    finally:
        guard.cancel()
    text = "".join(out)
    assert sent and proc.returncode == 130, text[-3000:]
    assert text.strip().splitlines()[-1].startswith("layerprobe: interrupted"), text[-3000:]
    return last


def test_ctrl_c_keeps_the_loss_and_the_resumed_run_probes_every_snapshot_once(tmp_path):
    from layerprobe.runner import run

    args = [
        "model=tiny_cnn",
        "trainer=quick",
        f"trainer.engine={ENGINE}",
        f"trainer.train_steps={STEPS}",
        f"trainer.save_checkpoints_steps={CHECKPOINTS}",
        f"trainer.log_every_steps={EVERY}",
        "probe.plots=false",
        "probe.analysis=false",
        f"trainer.model_dir={tmp_path / 'model'}",
        f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
    ]
    last = interrupted_at(args, tmp_path, 3 * CHECKPOINTS)
    assert last < STEPS  # stopped while training
    snapshots = {int(p.stem.split("-")[1]) for p in (tmp_path / "model/dynamics").glob("snapshot-*.index")}
    assert set(range(0, last, CHECKPOINTS)) <= snapshots <= set(range(0, last + 1, CHECKPOINTS))

    resumed = run(plain(args), tmp_path / "resumed")  # the same command again
    client = MlflowClient(tracking_uri=resumed.tracking_uri)
    killed, finished = sorted(client.search_runs([resumed.experiment_id]), key=lambda r: r.info.start_time)
    assert (killed.info.status, finished.info.status) == ("KILLED", "FINISHED")
    loss = client.get_metric_history(killed.info.run_id, "train/loss")
    assert [m.step for m in loss] == list(range(EVERY, last + 1, EVERY))  # everything it measured
    assert not any(k.startswith(("dynamics/", "probe/")) for k in killed.data.metrics)

    every = list(range(0, STEPS + 1, CHECKPOINTS))  # the stopped run's snapshots and the resumed run's
    assert [m.step for m in client.get_metric_history(resumed.run_id, "dynamics/conv1/mean")] == every
    series = json.loads((tmp_path / "resumed/probe/dynamics/dynamics.json").read_text())
    assert series["steps"] == every
    assert_the_run_holds_its_series(resumed, series)
    ledger = json.loads((tmp_path / "model/dynamics/probed.json").read_text())["probed"]
    assert ledger == {str(s): resumed.run_id for s in every}
