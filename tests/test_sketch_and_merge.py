"""Host-side statistics without training: the quantile sketch and the batch merge against numpy."""

from __future__ import annotations

import numpy as np
import pytest

from layerprobe.data.keys import sample_rank, smallest
from layerprobe.probe.accumulate import LayerAccumulator
from layerprobe.probe.sketch import SketchLayout, quantiles

LEVELS = [1.0, 5.0, 50.0, 95.0, 99.0]


def exact_summaries(x: np.ndarray, layout: SketchLayout) -> dict[str, np.ndarray]:
    """What graph_stats.batch_summaries returns, computed in numpy (its reference)."""
    flat = x.reshape(-1, x.shape[-1]).astype(np.float64)
    fin = np.isfinite(flat)
    clean = np.where(fin, flat, 0.0)
    n = fin.sum(0).astype(np.float64)
    mean = clean.sum(0) / np.maximum(n, 1)
    return {
        "examples": np.array(x.shape[0]),
        "unit_count": n,
        "unit_sum": clean.sum(0),
        "unit_m2": (np.where(fin, flat - mean, 0.0) ** 2).sum(0),
        "unit_max": np.where(fin, flat, -np.inf).max(0),
        "unit_min": np.where(fin, flat, np.inf).min(0),
        "unit_active": (flat > 0).sum(0).astype(np.float64),
        "nans": np.array(np.isnan(flat).sum()),
        "infs": np.array(np.isinf(flat).sum()),
        "l2_sum": np.array(np.sqrt((clean.reshape(x.shape[0], -1) ** 2).sum(1)).sum()),
        "sketch": np.bincount(layout.index_numpy(flat[fin]), minlength=layout.size),
    }


@pytest.mark.parametrize(
    "make",
    [
        lambda r: r.normal(size=200_000),
        lambda r: r.lognormal(mean=0.0, sigma=3.0, size=200_000),
        lambda r: np.maximum(r.normal(0.3, 1.0, size=200_000), 0.0),  # ReLU: many exact zeros
        lambda r: -r.exponential(1e-4, size=200_000),
    ],
    ids=["normal", "heavy_tailed", "relu", "tiny_negative"],
)
def test_percentiles_within_one_percent_of_numpy(make):
    x = make(np.random.default_rng(0)).astype(np.float32).astype(np.float64)
    layout = SketchLayout(0.005)
    counts = np.bincount(layout.index_numpy(x), minlength=layout.size)
    got = quantiles(layout, counts, LEVELS, float(x.min()), float(x.max()))
    want = np.percentile(x, LEVELS)
    np.testing.assert_allclose(got, want, rtol=0.01, atol=1e-12)


def test_sketch_counts_merge_by_addition():
    rng = np.random.default_rng(1)
    layout = SketchLayout(0.01)
    a, b = rng.normal(size=1000), rng.normal(size=3000)
    whole = np.bincount(layout.index_numpy(np.concatenate([a, b])), minlength=layout.size)
    parts = np.bincount(layout.index_numpy(a), minlength=layout.size) + np.bincount(
        layout.index_numpy(b), minlength=layout.size
    )
    np.testing.assert_array_equal(whole, parts)


def test_merge_of_uneven_batches_equals_numpy_on_the_whole_set():
    rng = np.random.default_rng(2)
    x = (rng.normal(3.0, 2.0, size=(1003, 5, 4)) ** 3).astype(np.float32)
    x[x < 0] = 0.0
    x[:, :, 3] = 0.0  # a dead unit
    x[7, 1, 0] = np.nan
    x[9, 2, 1] = np.inf
    layout = SketchLayout(0.005)
    acc = LayerAccumulator("layer", layout, LEVELS, 20)
    for start in range(0, len(x), 97):
        acc.update(exact_summaries(x[start : start + 97], layout))
    s = acc.result([5, 4])
    flat = x.reshape(-1, 4).astype(np.float64)
    fin = flat[np.isfinite(flat)]
    assert s.examples == 1003 and s.count == fin.size
    assert s.nan_count == 1 and s.inf_count == 1
    np.testing.assert_allclose(s.mean, fin.mean(), rtol=1e-10)
    np.testing.assert_allclose(s.std, fin.std(), rtol=1e-9)
    assert s.min == fin.min() and s.max == fin.max()
    assert s.zero_fraction == pytest.approx((flat == 0).sum() / flat.size)
    assert s.dead_units == [3] and s.dead_fraction == 0.25
    cols = [flat[:, j][np.isfinite(flat[:, j])] for j in range(4)]
    np.testing.assert_allclose(s.unit_mean, [c.mean() for c in cols], rtol=1e-10)
    np.testing.assert_allclose(s.unit_std, [c.std() for c in cols], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(list(s.percentiles.values()), np.percentile(fin, LEVELS), rtol=0.01)
    assert sum(s.histogram_counts) == fin.size


def test_reservoir_keeps_exactly_the_sampled_examples_with_their_labels():
    layout = SketchLayout(0.01)
    acc = LayerAccumulator("layer", layout, LEVELS, 10, reservoir_size=8, sample_seed=3)
    mask = np.zeros(320, bool)
    mask[smallest(sample_rank(np.arange(320), 3), np.arange(320), 8)] = True  # the 8 smallest ranks
    assert mask.sum() == 8 and np.array_equal(
        mask[smallest(sample_rank(np.arange(320), 3), np.arange(320), 8)], [1] * 8
    )
    assert set(smallest(sample_rank(np.arange(320), 4), np.arange(320), 8)) != set(np.flatnonzero(mask))
    x = np.random.default_rng(3).normal(size=(320, 3)).astype(np.float32)
    for start in range(0, 320, 16):  # what graph_stats returns for each batch: every example a candidate
        sl = slice(start, start + 16)
        batch = exact_summaries(x[sl], layout)
        idx = np.arange(320)[sl]
        batch.update(res_keys=idx, res_values=x[idx], res_labels=idx * 10)
        acc.update(batch)
    sample = acc.reservoir()
    np.testing.assert_array_equal(sample["keys"], np.flatnonzero(mask))
    np.testing.assert_array_equal(sample["activations"], x[mask])
    np.testing.assert_array_equal(sample["labels"], np.flatnonzero(mask) * 10)


@pytest.mark.parametrize("accuracy", [0.02, 0.01, 0.005, 0.0005])
def test_the_zero_ranges_are_the_zero_slots(accuracy):
    """The fold sums the zero slots as two slices (no sketch-sized mask constant in the graph)."""
    layout = SketchLayout(accuracy)
    mask = np.zeros(layout.size, bool)
    for run in layout.zero_ranges():
        mask[run] = True
    np.testing.assert_array_equal(mask, layout.zero_slots())
