"""Sharded probing: N processes each probe a disjoint shard and write a state file; the merge equals
one pass (counts, dead units, sketch and reservoir exactly; moments within 1e-9 relative)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from layerprobe.data.keys import parse_shard, sample_rank, smallest
from layerprobe.data.pipeline import prepare
from layerprobe.errors import LayerprobeError
from layerprobe.probe.state import load_state, save_state
from layerprobe.reprobe import merge_shards, probe_existing, probe_shard
from layerprobe.runner import run
from tests.test_data_stream import write_png_shards

pytestmark = [pytest.mark.estimator, pytest.mark.integration]  # shards probe passes of the Estimator engine

EXACT = ("examples", "count", "min", "max", "nan_count", "inf_count", "unit_max", "dead_units", "dead_count")
EXACT += ("histogram_edges", "histogram_counts", "percentiles", "units", "shape", "unit_active_fraction")
MOMENTS = ("mean", "std", "unit_mean", "unit_std", "mean_l2_norm", "zero_fraction", "spatial_mean")


def assert_same_stats(one: dict, merged: dict) -> None:
    assert set(one) == set(merged)
    for layer in one:
        a, b = one[layer].to_dict(), merged[layer].to_dict()
        for key in EXACT:
            assert a[key] == b[key], (layer, key)
        for key in MOMENTS:
            if a[key] is not None:
                np.testing.assert_allclose(b[key], a[key], rtol=1e-9, atol=1e-12, err_msg=f"{layer} {key}")


def reservoirs(out: Path) -> dict[str, dict[str, np.ndarray]]:
    return {p.parent.name: dict(np.load(p)) for p in sorted((out / "probe").glob("*/reservoir.npz"))}


def test_two_shards_of_an_in_memory_split_merge_to_one_pass(tiny, tmp_path):
    c = tiny("probe.reservoir_size=16", "probe.batch_size=40")
    result = run(c, tmp_path / "train")
    one, _ = probe_existing(result.model_dir, [], tmp_path / "one")
    for i in (0, 1):
        state_file = probe_shard(result.model_dir, [], (i, 2), tmp_path / "states")
        assert state_file == tmp_path / "states" / f"shard-{i}-of-2.npz"
    merged, _ = merge_shards(result.model_dir, [], tmp_path / "states", tmp_path / "merged")
    assert_same_stats(one, merged)
    assert one["conv1"].examples == prepare(c["data"]).size("eval") == 359
    a, b = reservoirs(tmp_path / "one"), reservoirs(tmp_path / "merged")
    assert set(a) == {"conv1", "logits"}
    for layer in a:
        for key in ("keys", "activations", "labels"):
            np.testing.assert_array_equal(a[layer][key], b[layer][key])
    # the reservoir is the 16 eval examples (keys = indexes) whose seeded ranks are smallest
    keys = np.arange(359)
    np.testing.assert_array_equal(a["conv1"]["keys"], np.sort(keys[smallest(sample_rank(keys, 0), keys, 16)]))
    # a state file round-trips: the loaded state gives the same statistics
    state, meta = load_state(tmp_path / "states" / "shard-0-of-2.npz")
    assert meta["shard"] == [0, 2] and meta["step"] == result.global_step
    save_state(state, tmp_path / "again.npz", meta)
    again, _ = load_state(tmp_path / "again.npz")
    for layer, acc in state.layers.items():
        np.testing.assert_array_equal(again.layers[layer].sketch, acc.sketch)
        assert again.layers[layer].examples == acc.examples and again.batches == state.batches
    # a merge needs every shard, of the same checkpoint and overrides
    (tmp_path / "states" / "shard-1-of-2.npz").unlink()
    with pytest.raises(LayerprobeError, match=r"expected shards 0\.\.1 of 2, missing \[1\]"):
        merge_shards(result.model_dir, [], tmp_path / "states", tmp_path / "m2")
    probe_shard(result.model_dir, ["probe.reservoir_size=8"], (1, 2), tmp_path / "states")
    with pytest.raises(LayerprobeError, match="shard-1-of-2.npz was probed with another config_sha256"):
        merge_shards(result.model_dir, [], tmp_path / "states", tmp_path / "m3")


def layerprobe(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run(
        [sys.executable, "-m", "layerprobe", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def test_shards_of_a_tfrecord_stream_through_the_cli_merge_to_one_pass_and_log_into_the_run(tiny, tmp_path):
    write_png_shards(tmp_path / "shards", shards=3, compression="")
    c = tiny(
        "data=tfrecord",
        f"data.params.path={tmp_path / 'shards' / '*.tfrecord'}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "probe.reservoir_size=10",
        "probe.batch_size=8",
        "probe.analysis=false",
    )
    result = run(c, tmp_path / "train")
    model_dir, states = result.model_dir, tmp_path / "states"
    for i in (0, 1):  # the commands docs/sweeps.md shows
        done = layerprobe("probe", model_dir, "--shard", f"{i}/2", "--state-dir", str(states), cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-2000:]
        assert f"state in {states / f'shard-{i}-of-2.npz'}" in done.stdout
        printed = done.stdout.split("merge with: ", 1)[1].split()
        assert os.access(tmp_path / printed[0], os.X_OK) or os.access(printed[0], os.X_OK)  # runs as printed
        assert printed[1:] == ["probe", model_dir, "--merge", str(states)]
    index = (tmp_path / "cache" / "file-digests.json").read_bytes()
    (tmp_path / "shards").rename(tmp_path / "kept")  # the merge reads no data: empty files in its place
    (tmp_path / "shards").mkdir()
    for f in (tmp_path / "kept").iterdir():
        (tmp_path / "shards" / f.name).touch()
    done = layerprobe("probe", result.run_id, "--merge", str(states), f"tracking.uri={result.tracking_uri}",
                      "--output-dir", str(tmp_path / "merged"), cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "cache" / "file-digests.json").read_bytes() == index  # nothing hashed or scanned
    for f in (tmp_path / "shards").iterdir():
        f.unlink()
    (tmp_path / "shards").rmdir()
    (tmp_path / "kept").rename(tmp_path / "shards")
    assert f"logged into run {result.run_id}" in done.stdout
    one, _ = probe_existing(model_dir, [], tmp_path / "one")
    stats0, _ = load_state(states / "shard-0-of-2.npz")
    stats1, _ = load_state(states / "shard-1-of-2.npz")
    examples = [s.layers["conv1"].examples for s in (stats0, stats1)]
    assert sum(examples) == one["conv1"].examples == result.probe["conv1"].examples and min(examples) > 0
    merged_stats = json.loads((tmp_path / "merged" / "probe" / "conv1" / "stats.json").read_text())
    for key in EXACT:
        assert merged_stats[key] == one["conv1"].to_dict()[key], key
    np.testing.assert_allclose(merged_stats["mean"], one["conv1"].mean, rtol=1e-9)
    a, b = reservoirs(tmp_path / "one"), reservoirs(tmp_path / "merged")
    np.testing.assert_array_equal(a["conv1"]["keys"], b["conv1"]["keys"])
    np.testing.assert_array_equal(a["conv1"]["activations"], b["conv1"]["activations"])
    bad = layerprobe("probe", model_dir, "--shard", "2/2", "--state-dir", str(states), cwd=tmp_path)
    assert bad.returncode == 2
    assert (
        bad.stderr.strip()
        .splitlines()[-1]
        .endswith("--shard: expected i/N with 0 <= i < N (e.g. 0/2). Received: '2/2'")
    )


def test_parse_shard():
    assert parse_shard("1/4") == (1, 4)
    for text in ("4/4", "-1/2", "1", "a/b", "0/0"):
        with pytest.raises(LayerprobeError, match=r"--shard: expected i/N"):
            parse_shard(text)
