"""A log-bucketed quantile sketch (DDSketch-style) with a fixed index range: mergeable by addition.

A value x > 0 falls in bucket i = ceil(log(x) / log(gamma)), gamma = (1 + a) / (1 - a); reporting
the bucket's midpoint 2 gamma^i / (gamma + 1) is within relative error a of every value in it. The
buckets cover |x| in [MIN_VALUE, MAX_VALUE]; smaller magnitudes count as zero and larger ones go to
the end buckets (the exact min and max are tracked separately and bound every answer). No range is
set per layer: the same buckets serve any activation, and counts of batches simply add.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MIN_VALUE = 1e-9
MAX_VALUE = 1e9


@dataclass(frozen=True)
class SketchLayout:
    """Bucket layout for one relative accuracy: [negatives (K), positives (K), zero (1)]."""

    relative_accuracy: float

    @property
    def gamma(self) -> float:
        a = self.relative_accuracy
        return (1 + a) / (1 - a)

    @property
    def log_gamma(self) -> float:
        return math.log(self.gamma)

    @property
    def min_index(self) -> int:
        return math.ceil(math.log(MIN_VALUE) / self.log_gamma)

    @property
    def max_index(self) -> int:
        return math.ceil(math.log(MAX_VALUE) / self.log_gamma)

    @property
    def buckets_per_sign(self) -> int:
        return self.max_index - self.min_index + 1

    @property
    def size(self) -> int:
        return 2 * self.buckets_per_sign + 1

    def bucket_values(self) -> np.ndarray:
        """The value each slot stands for, in slot order (negatives, positives, zero)."""
        idx = np.arange(self.min_index, self.max_index + 1, dtype=np.float64)
        mid = 2.0 * np.power(self.gamma, idx) / (self.gamma + 1.0)
        return np.concatenate([-mid, mid, [0.0]])

    def sorted_order(self) -> np.ndarray:
        """Slot indices in increasing value order."""
        k = self.buckets_per_sign
        return np.concatenate([np.arange(k - 1, -1, -1), [2 * k], np.arange(k, 2 * k)])

    def index_numpy(self, x: np.ndarray) -> np.ndarray:
        """The slot of each value (reference implementation of the in-graph one)."""
        x = np.asarray(x, dtype=np.float64)
        mag = np.clip(np.abs(x), MIN_VALUE, MAX_VALUE)
        i = np.ceil(np.log(mag) / self.log_gamma).astype(np.int64)
        i = np.clip(i, self.min_index, self.max_index) - self.min_index
        slot = np.where(x < 0, i, i + self.buckets_per_sign)
        return np.where(np.abs(x) < MIN_VALUE, self.size - 1, slot)


def quantiles(layout: SketchLayout, counts: np.ndarray, qs: list[float], lo: float, hi: float) -> list[float]:
    """Percentiles (0-100) from merged counts; numpy's linear rank convention, clamped to [lo, hi]."""
    order = layout.sorted_order()
    values = layout.bucket_values()[order]
    cum = np.cumsum(counts[order])
    n = int(cum[-1]) if len(cum) else 0
    if n == 0:
        return [math.nan] * len(qs)
    out = []
    for q in qs:
        rank = q / 100.0 * (n - 1)
        lo_i = int(np.searchsorted(cum, math.floor(rank), side="right"))
        hi_i = int(np.searchsorted(cum, math.ceil(rank), side="right"))
        frac = rank - math.floor(rank)
        v = values[lo_i] * (1 - frac) + values[hi_i] * frac
        out.append(float(min(max(v, lo), hi)))
    return out


def histogram(
    layout: SketchLayout, counts: np.ndarray, lo: float, hi: float, bins: int
) -> tuple[np.ndarray, np.ndarray]:
    """Re-bin the sketch onto `bins` equal-width bins over [lo, hi]: (edges, counts)."""
    edges = np.linspace(lo, hi, bins + 1) if hi > lo else np.array([lo - 0.5, lo + 0.5])
    values = np.clip(layout.bucket_values(), edges[0], edges[-1])
    hist, _ = np.histogram(values, bins=edges, weights=counts.astype(np.float64))
    return edges, hist.astype(np.int64)
