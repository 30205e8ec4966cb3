"""`layerprobe probe RUN --beam`: the probe as a Beam pipeline equals one `layerprobe probe` pass (counts,
sketch, dead units and reservoir exactly; moments within 1e-9 relative), logs into the run the same way,
downloads nothing, and refuses bad Beam flags in one line (exit 2) before anything is read or logged.
Runs on both venvs: the engine is the venv's (conftest.ENGINE)."""

from __future__ import annotations

import json
from pathlib import Path

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
    assert not (tmp_path / "beam" / "probe" / "beam-states").exists()  # the states are not run artifacts
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
