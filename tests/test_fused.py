"""The fused probe kernel (a C++ TensorFlow op) against the TensorFlow path it replaces, and end to end
(on either stack: each builds its own library, and a run trains with that stack's engine)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytest

from layerprobe.errors import ConfigError
from layerprobe.probe.fused import build, kernel
from layerprobe.probe.graph_stats import LayerProbeSpec, batch_summaries
from layerprobe.probe.sketch import SketchLayout
from tests.conftest import ENGINE
from tests.test_sketch_and_merge import exact_summaries

LAYOUT = SketchLayout(0.005)
EXACT = ("examples", "unit_count", "unit_active", "nans", "infs", "saturated", "sketch", "unit_max", "unit_min")
MOMENTS = ("unit_sum", "unit_m2", "l2_sum", "spatial_sum")


@pytest.fixture(scope="module", autouse=True)
def library():
    """The op's library, built here when the install did not build it (the fallback is tested apart)."""
    ok, line = build.build()
    if not ok:
        pytest.fail(line)
    kernel._library.cache_clear()
    kernel._decide.cache_clear()


@pytest.fixture
def fresh_choice():
    kernel._decide.cache_clear()
    yield
    kernel._decide.cache_clear()
    kernel._library.cache_clear()


def summaries(x: np.ndarray, kernel_name: str, spec: LayerProbeSpec, monkeypatch) -> dict[str, np.ndarray]:
    """batch_summaries of x through one path, in a graph and session of its own."""
    import tensorflow as tf

    monkeypatch.setenv(kernel.ENV, kernel_name)
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        sample = (tf.constant(np.arange(len(x)) % 3 == 0), tf.constant(np.arange(len(x), dtype=np.int64)))
        return sess.run(batch_summaries(tf.constant(x), spec, tf.constant(np.arange(len(x))), sample))


def _relu(r: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return np.maximum(r.normal(0.2, 1.0, size=shape), 0.0)


def _with(r: np.random.Generator, value: float, share: float) -> np.ndarray:
    x = r.normal(size=(7, 5, 4, 6))
    return np.where(r.random(x.shape) < share, value, x)


CASES: dict[str, Any] = {
    "rank2": lambda r: r.normal(size=(33, 10)),
    "rank3": lambda r: r.lognormal(0.0, 2.0, size=(9, 7, 12)),  # 12 units: one register block of 8 + 4
    "rank4_relu": lambda r: _relu(r, (12, 6, 5, 8)),
    "rank5": lambda r: r.normal(1e3, 1e-2, size=(3, 4, 2, 3, 5)),  # mean >> std: no cancellation allowed
    "all_zero": lambda r: np.zeros((4, 3, 3, 2)),
    # +0.0 and -0.0 (different sketch slots) in examples of 105 values: the sketch packs the non-zero
    # slots 16 values at a time (AVX-512), the tail one by one
    "signed_zeros": lambda r: np.where(
        r.random((6, 3, 5, 7)) < 0.8, np.where(r.random((6, 3, 5, 7)) < 0.5, 0.0, -0.0), r.normal(size=(6, 3, 5, 7))
    ),
    "empty_batch": lambda r: np.zeros((0, 3, 3, 9)),
    "nan": lambda r: _with(r, np.nan, 0.1),
    "inf": lambda r: _with(r, np.inf, 0.05) * np.sign(r.normal(size=(7, 5, 4, 6))),
    "all_nan_unit": lambda r: np.concatenate([r.normal(size=(6, 3, 3, 1)), np.full((6, 3, 3, 1), np.nan)], axis=-1),
    "denormal": lambda r: np.concatenate([r.normal(size=(5, 4, 4, 2)) * 1e-39, r.normal(size=(5, 4, 4, 1))], axis=-1),
    "huge": lambda r: r.normal(size=(64, 4, 4, 3)) * 1e37,  # float32 sums overflow (partially or wholly)
    "tanh_saturated": lambda r: np.tanh(r.normal(0, 3, size=(10, 4, 4, 11))),
    "nan_in_one_example": lambda r: np.where(
        np.arange(5)[:, None, None, None] == 2, np.nan, r.normal(size=(5, 3, 3, 16))
    ),
    # 2,304 values per example: the kernel's blocks of 2**18 values hold 113 examples, so two blocks (113
    # and 17 examples) merge, NaN in both
    "two_blocks": lambda r: np.where(r.random((130, 16, 16, 9)) < 0.01, np.nan, _relu(r, (130, 16, 16, 9))),
}


@pytest.mark.parametrize("case", list(CASES))
def test_fused_equals_the_tensorflow_path(case, monkeypatch):
    x = CASES[case](np.random.default_rng(7)).astype(np.float32)
    spec = LayerProbeSpec("l", LAYOUT, bounds=(-1.0, 1.0), reservoir_size=4)
    fused, tf_path = summaries(x, "fused", spec, monkeypatch), summaries(x, "tf", spec, monkeypatch)
    assert set(fused) == set(tf_path) and ("spatial_sum" in fused) == (x.ndim == 4)
    for key in fused:
        assert fused[key].dtype == tf_path[key].dtype and fused[key].shape == tf_path[key].shape, key
    for key in EXACT + ("res_keys", "res_values", "res_labels"):
        np.testing.assert_array_equal(fused[key], tf_path[key], err_msg=key)
    if len(x) == 0:  # numpy's oracle has no max of nothing: the paths agree on zeros, -Inf and +Inf
        for key in MOMENTS:
            np.testing.assert_array_equal(fused[key], tf_path[key], err_msg=key)
        return
    oracle = exact_summaries(np.where(np.abs(x) < 1.2e-38, 0.0, x), LAYOUT)  # TF's CPU flushes denormals
    oracle["spatial_sum"] = np.where(np.isfinite(x), oracle_clean(x), 0.0).sum(0)
    for key in MOMENTS:
        if key not in fused:
            continue
        with np.errstate(over="ignore"):
            got, want = fused[key].astype(np.float64), np.asarray(oracle[key], np.float64).astype(np.float32)
        # the kernel sums in double and rounds once: the float64 oracle rounded to float32 (Inf if it overflows)
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-30, err_msg=key)
        finite = np.isfinite(tf_path[key])  # the TF path sums in float32: it overflows sooner
        np.testing.assert_allclose(got[finite], tf_path[key][finite], rtol=2e-4, atol=1e-4, err_msg=key)
    flat = oracle_clean(x).reshape(-1, x.shape[-1])
    np.testing.assert_array_equal(fused["unit_active"], (np.isfinite(flat) & (flat > 0)).sum(0))  # +Inf is not
    slots = np.bincount(LAYOUT.index_numpy(x[np.isfinite(x)]), minlength=LAYOUT.size)  # denormals: zero slots
    np.testing.assert_array_equal(fused["sketch"][LAYOUT.finite_slots()], slots[LAYOUT.finite_slots()])


def oracle_clean(x: np.ndarray) -> np.ndarray:
    return np.where(np.abs(x) < 1.2e-38, 0.0, x).astype(np.float64)


def test_huge_values_give_the_correctly_rounded_sums_where_float32_partial_sums_overflow(monkeypatch):
    x = np.full((4, 2, 2, 1), 3e38, np.float32)
    x[:2] = -3e38  # the float32 running sum overflows; the exact sum is 0
    spec = LayerProbeSpec("l", LAYOUT)
    fused = summaries(x, "fused", spec, monkeypatch)
    assert fused["unit_sum"].tolist() == [0.0] and fused["unit_max"].tolist() == [np.float32(3e38)]


def test_the_choice_is_logged_once_and_forcing_a_path_works(fresh_choice, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger=kernel.__name__)
    monkeypatch.setenv(kernel.ENV, "auto")
    assert kernel.choose() == "fused" and kernel.choose() == "fused"
    monkeypatch.setenv(kernel.ENV, "tf")
    assert kernel.choose() == "tf"
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and "fused C++ kernel" in lines[0] and "TensorFlow ops" in lines[1]


def test_without_the_library_auto_falls_back_and_fused_is_refused(fresh_choice, monkeypatch, caplog):
    monkeypatch.setattr(kernel, "_library", lambda: (None, "_summaries.so is not built (no compiler at install?)"))
    caplog.set_level(logging.INFO, logger=kernel.__name__)
    monkeypatch.setenv(kernel.ENV, "auto")
    assert kernel.choose() == "tf"
    assert "not used: _summaries.so is not built" in caplog.records[-1].getMessage()
    monkeypatch.setenv(kernel.ENV, "fused")
    with pytest.raises(ConfigError, match=r"^LAYERPROBE_PROBE_KERNEL: the fused kernel cannot run: .*not built"):
        kernel.choose()


def test_an_unknown_kernel_name_is_one_line_with_the_options(monkeypatch):
    monkeypatch.setenv(kernel.ENV, "fuse")
    with pytest.raises(ConfigError) as e:
        kernel.choose()
    assert str(e.value) == (
        "LAYERPROBE_PROBE_KERNEL: the probe kernel is one of auto, fused, tf. Received: 'fuse'. "
        "Did you mean 'fused'? Allowed: auto, fused, tf"
    )


@pytest.mark.integration
def test_a_run_gives_the_same_probe_statistics_with_either_kernel(tiny, tmp_path, monkeypatch):
    from layerprobe.runner import run

    c = tiny("probe.reservoir_size=5", "probe.batch_size=50", "probe.analysis=false", f"trainer.engine={ENGINE}")
    stats = {}
    for name in ("fused", "tf"):  # the second run restores the first one's checkpoint: same weights
        monkeypatch.setenv(kernel.ENV, name)
        stats[name] = run(c, tmp_path / name).probe
    assert set(stats["fused"]) == set(stats["tf"]) == {"conv1", "logits"}
    # each run took its own path (a graph kept across runs must not serve the other kernel): the fused
    # op sums in double, the TensorFlow ops in float32, so some figure differs in its last bits
    floats = [k for k, v in stats["fused"]["conv1"].to_dict().items() if isinstance(v, float)]
    assert any(stats["fused"][n].to_dict()[k] != stats["tf"][n].to_dict()[k] for n in stats["tf"] for k in floats)
    for layer, f in stats["fused"].items():
        t = stats["tf"][layer].to_dict()
        for key, value in f.to_dict().items():
            if isinstance(value, dict):  # the percentiles
                value, t[key] = list(value.values()), list(t[key].values())
            if key in (
                "layer",
                "examples",
                "count",
                "nan_count",
                "inf_count",
                "dead_units",
                "histogram_counts",
                "shape",
            ):
                assert value == t[key], (layer, key)
            elif value is not None:
                np.testing.assert_allclose(
                    np.asarray(value, np.float64), np.asarray(t[key], np.float64), rtol=1e-5, atol=1e-7
                )


@pytest.mark.integration  # starts a process
def test_the_install_step_prints_one_line_and_never_fails(tmp_path):
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "layerprobe.probe.fused.build"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert done.returncode == 0 and done.stdout == f"fused probe kernel up to date: {build.LIBRARY}\n"
    before = build.LIBRARY.stat().st_mtime
    no_compiler = subprocess.run(cmd + ["--force"], capture_output=True, text=True, env={"PATH": str(tmp_path)})
    assert no_compiler.returncode == 0
    assert no_compiler.stdout == (
        "fused probe kernel not built (no C++ compiler found): the probe uses its TensorFlow path\n"
    )
    assert build.LIBRARY.stat().st_mtime == before  # the library already built is left as it was
