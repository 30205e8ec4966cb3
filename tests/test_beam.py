"""`layerprobe probe RUN --beam`: the probe as a Beam pipeline equals one `layerprobe probe` pass (counts,
sketch, dead units and reservoir exactly; moments within 1e-9 relative), logs into the run the same way,
downloads nothing, and refuses bad Beam flags in one line (exit 2) before anything is read or logged.
Runs on both venvs: the engine is the venv's (conftest.ENGINE)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from layerprobe.cli import main
from layerprobe.reprobe import probe_existing
from tests.conftest import ENGINE
from tests.test_shard import EXACT, MOMENTS, assert_same_stats, reservoirs

# Any download fails: a proxy nobody listens on (DirectRunner's Prism fetch, a Docker pull, a jar).
NO_DOWNLOADS = {"HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "NO_PROXY": ""}


@pytest.fixture(scope="module")
def trained(integration, tmp_path_factory):
    """A tiny model of the venv's engine, trained and logged; 359 eval examples in 9 probe batches."""
    from layerprobe.runner import run
    from tests.conftest import plain

    tmp = tmp_path_factory.mktemp("beam")
    c = plain(
        [
            "model=tiny_cnn",
            "trainer=quick",
            f"trainer.engine={ENGINE}",
            f"trainer.model_dir={tmp / 'model'}",
            f"tracking.uri=sqlite:///{tmp / 'mlflow.db'}",
            "probe.plots=false",
            "probe.analysis=false",
            "probe.reservoir_size=16",
            "probe.batch_size=40",
        ]
    )
    return run(c, tmp / "train")


def assert_same_files(one: Path, other: Path) -> None:
    """stats.json of every layer and the reservoirs of two probes' output dirs agree."""
    layers = sorted(p.parent.name for p in (one / "probe").glob("*/stats.json"))
    assert layers and layers == sorted(p.parent.name for p in (other / "probe").glob("*/stats.json"))
    for layer in layers:
        a = json.loads((one / "probe" / layer / "stats.json").read_text())
        b = json.loads((other / "probe" / layer / "stats.json").read_text())
        for key in EXACT:
            assert a[key] == b[key], (layer, key)
        for key in MOMENTS:
            if a[key] is not None:
                np.testing.assert_allclose(b[key], a[key], rtol=1e-9, atol=1e-12, err_msg=f"{layer} {key}")
    a, b = reservoirs(one), reservoirs(other)
    assert set(a) == set(layers)
    for layer in a:
        for key in ("keys", "activations", "labels"):
            np.testing.assert_array_equal(a[layer][key], b[layer][key])


def test_in_process_beam_equals_one_pass_and_logs_into_the_run(trained, tmp_path, monkeypatch, capsys):
    from mlflow.tracking import MlflowClient

    one, _ = probe_existing(trained.model_dir, [], tmp_path / "one")
    for k, v in NO_DOWNLOADS.items():
        monkeypatch.setenv(k, v)
    code = main(
        ["probe", trained.run_id, "--beam", "--blocks", "3", f"tracking.uri={trained.tracking_uri}",
         "--output-dir", str(tmp_path / "beam")]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0 and f"logged into run {trained.run_id}" in out
    assert_same_files(tmp_path / "one", tmp_path / "beam")
    assert one["conv1"].examples == 359
    assert (tmp_path / "beam" / "beam-states" / "point--1.npz").is_file()  # beside probe/: not a run artifact
    run = MlflowClient(tracking_uri=trained.tracking_uri).get_run(trained.run_id).data
    assert run.tags["layerprobe.reprobed_layers"] == "conv1,logits"
    assert run.metrics["probe/conv1/mean"] == pytest.approx(one["conv1"].mean, rel=1e-9)


def test_beam_states_merge_like_shards(trained, tmp_path):
    """The blocks are the shards of --shard: the pipeline's merged state equals the merged shard files."""
    from layerprobe.beam.options import check_flags
    from layerprobe.beam.pipeline import probe_with_beam
    from layerprobe.reprobe import merge_shards, probe_shard

    for i in (0, 1):
        probe_shard(trained.model_dir, [], (i, 2), tmp_path / "states")
    merged, _ = merge_shards(trained.model_dir, [], tmp_path / "states", tmp_path / "merged")
    stats, run_id = probe_with_beam(trained.model_dir, [], check_flags([], 2), tmp_path / "beam")
    assert run_id is None
    assert_same_stats(merged, stats)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--runner=Bogus"], "--runner: layerprobe probe --beam runs on these Beam runners. Received: 'Bogus'. "
         "Allowed: FnApiRunner, PortableRunner"),
        (["--runner=DirectRunner"], "--runner=DirectRunner: not with layerprobe probe --beam: it first tries the "
         "Prism runner, a binary it downloads at run time"),
        (["--direct_num_worker=2"], "--beam: not a Beam pipeline option. Received: '--direct_num_worker'. "
         "Did you mean '--direct_num_workers'?"),
        (["--runner=PortableRunner"], "--job_endpoint: PortableRunner needs the HOST:PORT of a running job service"),
        (["--runner", "PortableRunner", "--job_endpoint", "127.0.0.1:9"], "--job_endpoint=127.0.0.1:9: unreachable"),
        (["--direct_running_mode=multi_threading"], "--direct_running_mode: FnApiRunner probes in this process or "
         "in worker processes (TensorFlow already runs each on every core). Received: 'multi_threading'"),
        (["--blocks", "0"], "--blocks: the split is cut into at least 1 block. Received: 0"),
        (["--shard", "0/2"], "--beam probes every block itself: drop --shard"),
    ],
)  # fmt: skip
def test_bad_beam_flags_are_one_line_before_anything_is_read(args, message, tmp_path, capsys):
    code = main(["probe", str(tmp_path / "no-such-run"), "--beam", *args, "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert message in err[0]
    assert not (tmp_path / "out").exists()


def dynamics_series(out: Path) -> dict:
    return json.loads((out / "probe" / "dynamics" / "dynamics.json").read_text())


def assert_same_series(one: dict, other: dict) -> None:
    assert one["steps"] == other["steps"] and len(one["steps"]) >= 2 and one["examples"] == other["examples"]
    for layer, series in one["layers"].items():
        got = other["layers"][layer]
        assert got["histograms"] == series["histograms"], layer
        for key in ("linear_acc", "cka_to_final"):  # from the reservoir samples, which are exact
            np.testing.assert_allclose(np.array(got[key], float), np.array(series[key], float), rtol=1e-9)
        for stat, values in series["scalars"].items():
            np.testing.assert_allclose(
                np.array(got["scalars"][stat], float), np.array(values, float), rtol=1e-9, atol=1e-12, err_msg=stat
            )


def test_checkpoints_all_on_beam_equals_the_single_process_series(trained, tmp_path):
    from layerprobe.beam.options import check_flags
    from layerprobe.beam.pipeline import probe_with_beam

    one, _ = probe_existing(trained.model_dir, [], tmp_path / "one", all_checkpoints=True)
    stats, _ = probe_with_beam(trained.model_dir, [], check_flags([], 2), tmp_path / "beam", all_checkpoints=True)
    assert_same_stats(one, stats)
    assert_same_series(dynamics_series(tmp_path / "one"), dynamics_series(tmp_path / "beam"))


@pytest.fixture(scope="module")
def streamed(integration, tmp_path_factory):
    """A tiny model trained on 3 TFRecord files (180 examples), the probe split streamed from them."""
    from layerprobe.runner import run
    from tests.conftest import plain
    from tests.test_data_stream import write_png_shards

    tmp = tmp_path_factory.mktemp("beam-stream")
    write_png_shards(tmp / "shards", shards=3, compression="")
    c = plain(
        ["model=tiny_cnn", "trainer=quick", f"trainer.engine={ENGINE}", f"trainer.model_dir={tmp / 'model'}",
         f"tracking.uri=sqlite:///{tmp / 'mlflow.db'}", "probe.plots=false", "probe.analysis=false",
         "data=tfrecord", f"data.params.path={tmp / 'shards' / '*.tfrecord'}", f"data.cache_dir={tmp / 'cache'}",
         "probe.reservoir_size=10", "probe.batch_size=8"]
    )  # fmt: skip
    return run(c, tmp / "train")


def beam_process(argv: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 600) -> Any:
    """`python -m layerprobe probe ... --beam` in a process of its own, downloads failing."""
    from tests.hang import ROOT

    env = {**os.environ, "PYTHONPATH": str(ROOT), **NO_DOWNLOADS, **(env or {})}
    env.pop("HYDRA_FULL_ERROR", None)
    cmd = [sys.executable, "-m", "layerprobe", "probe", *argv]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_two_local_worker_processes_on_a_tfrecord_stream_equal_one_pass(streamed, tmp_path):
    probe_existing(streamed.model_dir, [], tmp_path / "one")
    done = beam_process(
        [streamed.model_dir, "--beam", "--direct_running_mode=multi_processing", "--direct_num_workers=2",
         "--blocks", "4", "--output-dir", str(tmp_path / "beam")],
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_files(tmp_path / "one", tmp_path / "beam")
    pids = set(re.findall(r"beam: probed block \d of 4 \(point -1, pid (\d+)\)", done.stderr))
    assert len(pids) == 2, done.stderr[-3000:]  # two worker processes probed the blocks


def wait_listening(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{proc.args} ended with {proc.returncode} before listening on {port}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.3)
    pytest.fail(f"{proc.args} not listening on {port} in {timeout} s")


@pytest.mark.slow
def test_portable_runner_through_a_local_job_service_and_worker_pool(trained, tmp_path):
    """The portable path end to end on 127.0.0.1, Python only: Beam's local job service and an EXTERNAL
    worker pool (which launches a bare `python`: the venv's bin first on its PATH)."""
    from tests.hang import ROOT
    from tests.servers import free_port

    job_port, pool_port = free_port(), free_port()
    venv_bin = str(Path(sys.executable).parent)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PATH": f"{venv_bin}:{os.environ['PATH']}", **NO_DOWNLOADS}
    services = [
        [sys.executable, "-m", "apache_beam.runners.portability.local_job_service_main", f"--port={job_port}"],
        [sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main", f"--service_port={pool_port}"],
    ]
    procs = []
    try:
        for cmd, port in zip(services, (job_port, pool_port)):
            procs.append(subprocess.Popen(cmd, cwd=tmp_path, env=env, start_new_session=True,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))  # fmt: skip
            wait_listening(port, procs[-1])
        one, _ = probe_existing(trained.model_dir, [], tmp_path / "one")
        done = beam_process(
            [trained.model_dir, "--beam", "--runner=PortableRunner", f"--job_endpoint=localhost:{job_port}",
             "--environment_type=EXTERNAL", f"--environment_config=localhost:{pool_port}", "--blocks", "2",
             "--output-dir", str(tmp_path / "beam")],
            cwd=tmp_path, env={"PATH": env["PATH"]}, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        assert_same_files(tmp_path / "one", tmp_path / "beam")
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def test_a_worker_that_cannot_read_the_model_dir_or_import_layerprobe_is_one_line(tmp_path):
    from layerprobe.beam.pipeline import ProbeJob, experiment, worker_error
    from layerprobe.errors import LayerprobeError

    with pytest.raises(LayerprobeError, match=f"cannot read model_dir {tmp_path / 'gone'}"):
        experiment(ProbeJob({}, (), str(tmp_path / "gone"), False))
    trace = "Traceback (most recent call last):\n  File ...\nModuleNotFoundError: No module named 'layerprobe'\n"
    assert worker_error(trace).startswith("a worker cannot import layerprobe: its Python needs apache-beam and")
    nested = "RuntimeError: Error in stage\nTraceback ...\nlayerprobe.errors.LayerprobeError: model_dir m holds none\n"
    assert worker_error(nested) == "model_dir m holds none"
