"""Probe statistics are bitwise the same whatever the thread count: both summary paths on fixed
activations, and a whole probe of a trained checkpoint, each in processes with 1 and with 8 intra- and
inter-op threads. TensorFlow sizes its thread pools once, when it starts, so each count needs a process
of its own: `python -m tests.test_determinism THREADS ...` is that process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from layerprobe.probe.fused import build

ROOT = Path(__file__).resolve().parents[1]


def _one_unit(seed: int) -> Any:
    return lambda r: np.random.default_rng(seed).normal(0.3, 1.0, size=(250, 61, 67, 1))


THREADS = (1, 8)
CASES: dict[str, Any] = {
    # Sums that fall on float32 ties (values 1 + k * 2**-23, three positions of eight examples): which way
    # a sum rounds shows the order it was summed in, even where the kernel sums in double.
    "ties": lambda r: 1 + r.integers(0, 16, size=(8, 3, 4096)) * 2.0**-23,
    # One unit: its column sums are sums to one number, which TensorFlow cuts into one part per thread.
    # Seeds 9 and 15: on the old TensorFlow path their sum and M2 changed between 1 and 8 threads (9 seeds
    # of 16 changed one or both).
    **{f"one_unit{seed}": _one_unit(seed) for seed in (9, 15)},
    "relu": lambda r: np.maximum(r.normal(0.2, 1.0, size=(256, 16, 16, 16)), 0.0),
    "tanh": lambda r: np.tanh(r.normal(0.0, 2.0, size=(128, 8, 8, 32))),
}


@pytest.fixture(scope="module", autouse=True)
def library():
    """The fused op's library, built here when the install did not build it (as tests/test_fused.py)."""
    ok, line = build.build()
    if not ok:
        pytest.fail(line)


def in_process(threads: int, *args: str) -> None:
    """This module's main(threads, *args) in a new process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    cmd = [sys.executable, "-m", "tests.test_determinism", str(threads), *args]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def differing(one: dict[str, np.ndarray], other: dict[str, np.ndarray]) -> dict[str, str]:
    """key -> how its arrays differ, for the arrays whose dtype, shape or bytes differ."""
    assert set(one) == set(other)
    out = {}
    for key, a in one.items():
        b = other[key]
        if (a.dtype, a.shape) != (b.dtype, b.shape):
            out[key] = f"{a.dtype}{a.shape} vs {b.dtype}{b.shape}"
        elif a.tobytes() != b.tobytes():
            out[key] = f"{np.sum(a != b)} of {a.size} values"
    return out


@pytest.mark.integration  # starts a process per thread count
def test_both_summary_paths_are_bitwise_the_same_with_1_and_8_threads(tmp_path):
    for n in THREADS:
        in_process(n, "summaries", str(tmp_path / f"{n}.npz"))
    one, eight = (arrays(tmp_path / f"{n}.npz") for n in THREADS)
    assert {k.split("/")[1] for k in one} == {"fused", "tf"} and len(one) > 4 * 2 * 10
    assert differing(one, eight) == {}


@pytest.mark.integration
def test_a_probe_of_a_checkpoint_is_bitwise_the_same_with_1_and_8_threads(tiny, tmp_path):
    from layerprobe.probe.state import load_state
    from layerprobe.runner import run
    from tests.conftest import ENGINE

    c = tiny(f"trainer.engine={ENGINE}", "probe.analysis=false", "tracking.enabled=false")
    model_dir = run(c, tmp_path / "train").model_dir
    for n in THREADS:
        in_process(n, "probe", model_dir, str(tmp_path / str(n)))
    files = [tmp_path / str(n) / "shard-0-of-1.npz" for n in THREADS]
    assert differing(arrays(files[0]), arrays(files[1])) == {}  # the header (every scalar) too
    (one, _), (eight, _) = (load_state(f) for f in files)
    assert set(one.layers) == {"conv1", "logits"} and one.layers["conv1"].examples == 359
    for name, acc in one.layers.items():
        a, b = acc.result([]).to_dict(), eight.layers[name].result([]).to_dict()
        assert json.dumps(a) == json.dumps(b), name  # every statistic, float reprs and all


def main(threads: int, task: str, *args: str) -> None:
    """Set the thread counts before TensorFlow starts, then run `task`."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    if task == "summaries":  # OUT.npz: every case's batch summaries on either path
        np.savez(args[0], **summaries(tf))
    else:  # MODEL_DIR STATE_DIR: the probe state of the model_dir's latest checkpoint
        from layerprobe.reprobe import probe_shard

        probe_shard(args[0], [], (0, 1), args[1])


def summaries(tf: Any) -> dict[str, np.ndarray]:
    """`<case>/<path>/<statistic>`: batch_summaries of each case, through each path, in one session."""
    from layerprobe.probe.fused import kernel
    from layerprobe.probe.graph_stats import LayerProbeSpec, batch_summaries
    from layerprobe.probe.sketch import SketchLayout

    xs = {name: make(np.random.default_rng(0)).astype(np.float32) for name, make in CASES.items()}
    fetches, feed = {}, {}
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        for name, x in xs.items():
            ph = tf.compat.v1.placeholder(tf.float32, x.shape)  # fed, so nothing is folded at build time
            feed[ph] = x
            spec = LayerProbeSpec(name, SketchLayout(0.005), bounds=(-1.0, 1.0) if name == "tanh" else None)
            for path in ("fused", "tf"):
                os.environ[kernel.ENV] = path
                fetches[f"{name}/{path}"] = batch_summaries(ph, spec)
        out = sess.run(fetches, feed)
    return {f"{key}/{stat}": np.asarray(v) for key, d in out.items() for stat, v in d.items()}


if __name__ == "__main__":
    main(int(sys.argv[1]), *sys.argv[2:])
