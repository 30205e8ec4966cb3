"""The in-graph probe on awkward layers: NaN and Inf, dead units, bounded activations, batching."""

from __future__ import annotations

import math

import numpy as np
import pytest

from layerprobe.data.pipeline import prepare
from layerprobe.probe.accumulate import LayerAccumulator
from layerprobe.runner import run
from tests.reference import activations

pytestmark = [pytest.mark.estimator, pytest.mark.integration]  # probes layers through the Estimator engine


@pytest.fixture
def awkward(tiny, tmp_path):
    c = tiny("probe.batch_size=64")
    c["model"]["layers"] = {
        "conv1": {"type": "Conv2D", "filters": 4, "kernel_size": 3, "padding": "same", "activation": "tanh"},
        "flat": {"type": "Flatten"},
        "dead": {  # ReLU units pushed far below zero: never active, and no gradient brings them back
            "type": "Dense",
            "units": 6,
            "activation": "relu",
            "bias_initializer": {"class_name": "Constant", "config": {"value": -100.0}},
            "expose": True,
        },
        "corrupt": {
            "type": "tests.layers.Corrupt",
            "inputs": "conv1",
            "nan_above": 0.1,
            "inf_below": -0.1,
            "expose": True,
        },
        "gap": {"type": "GlobalAveragePooling2D", "inputs": "conv1"},
        "logits": {"type": "Dense", "units": 10},
    }
    c["model"]["layers"]["conv1"]["expose"] = True
    c["model"]["outputs"] = {}
    return c, run(c, tmp_path / "out")


def test_nan_and_inf_are_counted_and_left_out_of_the_moments(awkward):
    c, result = awkward
    (x,) = activations(c, result.model_dir, ["corrupt"], prepare(c["data"]).splits["eval"].features)
    s = result.probe["corrupt"]
    assert s.nan_count == int(np.isnan(x).sum()) > 0
    assert s.inf_count == int(np.isinf(x).sum()) > 0
    finite = x[np.isfinite(x)].astype(np.float64)
    assert s.count == finite.size
    np.testing.assert_allclose(
        [s.mean, s.std, s.min, s.max], [finite.mean(), finite.std(), finite.min(), finite.max()], rtol=1e-4, atol=1e-6
    )
    np.testing.assert_allclose(
        list(s.percentiles.values()), np.percentile(finite, [1, 5, 50, 95, 99]), rtol=0.01, atol=1e-6
    )
    assert all(math.isfinite(v) for v in s.scalars().values())
    # NaN/Inf batches take the masked branch: the per-position mean image counts them as 0
    np.testing.assert_allclose(s.spatial_mean, np.where(np.isfinite(x), x, 0.0).mean(0), rtol=1e-5, atol=1e-6)
    flat = x.reshape(-1, x.shape[-1])
    active = (np.isfinite(flat) & (flat > 0)).sum(0) / np.isfinite(flat).sum(0)  # of the finite values
    np.testing.assert_allclose(s.unit_active_fraction, active, atol=1e-6)


def test_dead_units_are_found_over_the_whole_split(awkward):
    c, result = awkward
    (x,) = activations(c, result.model_dir, ["dead"], prepare(c["data"]).splits["eval"].features)
    assert (x == 0).all()
    s = result.probe["dead"]
    assert s.dead_units == list(range(6)) and s.dead_count == 6 and s.dead_fraction == 1.0
    assert s.zero_fraction == 1.0 and s.unit_active_fraction == [0.0] * 6


def test_tanh_saturation_equals_numpy(awkward):
    c, result = awkward
    (x,) = activations(c, result.model_dir, ["conv1"], prepare(c["data"]).splits["eval"].features)
    margin = c["probe"]["saturation_margin"] * 2.0  # a share of tanh's range [-1, 1]
    want = ((x >= 1 - margin) | (x <= -1 + margin)).mean()
    assert result.probe["conv1"].saturation_fraction == pytest.approx(want, abs=1e-6)
    assert "saturation_fraction" not in result.probe["dead"].scalars()  # relu is unbounded


def test_the_host_takes_each_pass_state_once_never_per_batch_or_example(tiny, tmp_path, monkeypatch):
    calls: list[tuple[int, int]] = []  # (examples, batches) of each layer's pass
    original = LayerAccumulator.load_pass

    def counting(self, state, batches):
        calls.append((int(state["examples"]), batches))
        return original(self, state, batches)

    monkeypatch.setattr(LayerAccumulator, "load_pass", counting)
    monkeypatch.setattr(LayerAccumulator, "update", None)  # no batch is merged on the host
    c = tiny("probe.batch_size=100")
    c["tracking"]["enabled"] = False
    run(c, tmp_path / "out")
    layers = 2  # conv1 and logits
    points = [(256, 3)] * layers * 3  # training dynamics: 256 examples at steps 0, 10 and 20
    assert calls == points + [(359, 4)] * layers  # then the probe split, 359 examples in 4 batches
