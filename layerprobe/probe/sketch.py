"""A log-linear quantile sketch read straight off float32 bits: mergeable by addition, no range set.

A float32's exponent and its top `m` mantissa bits name a bucket whose upper and lower bounds differ
by a factor of at most 1 + 2^-m; reporting the bucket's midpoint is within relative error 2^-(m+1)
of every value in it (m = 7: 0.39%). The bucket of x is `(bits(|x|) >> (23 - m))`, one shift: no
logarithm, no preset range, and every finite float32 has a bucket, from denormals to 3e38. Counts of
batches simply add. Slots: [positive magnitudes (2^(8+m)), negative magnitudes (2^(8+m))]; exponent
0 (zeros, denormals) reads as 0; exponent 255 (Inf, NaN) is ignored: those are counted elsewhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SketchLayout:
    """Bucket layout for one relative accuracy."""

    relative_accuracy: float

    @property
    def mantissa_bits(self) -> int:
        return max(1, min(16, math.ceil(math.log2(1.0 / (2.0 * self.relative_accuracy)))))

    @property
    def shift(self) -> int:
        return 23 - self.mantissa_bits

    @property
    def per_sign(self) -> int:
        return 1 << (8 + self.mantissa_bits)

    @property
    def size(self) -> int:
        return 2 * self.per_sign

    def _exponents(self) -> np.ndarray:
        """The float32 exponent of each magnitude slot (0: zeros and denormals, 255: Inf and NaN)."""
        return np.arange(self.per_sign) >> self.mantissa_bits

    def magnitudes(self) -> np.ndarray:
        """The value each magnitude bucket stands for (its midpoint); 0 for zeros, NaN for Inf/NaN."""
        i = np.arange(self.per_sign, dtype=np.int64)
        with np.errstate(invalid="ignore", over="ignore"):  # the exponent-255 slots are Inf/NaN
            lo = (i << self.shift).astype(np.uint32).view(np.float32).astype(np.float64)
            hi = np.minimum((i + 1) << self.shift, 0x7F800000).astype(np.uint32).view(np.float32).astype(np.float64)
            mid = (lo + hi) / 2.0
        exponent = self._exponents()
        mid[exponent == 0] = 0.0
        mid[exponent == 255] = np.nan
        return mid

    def zero_slots(self) -> np.ndarray:
        """Mask of the slots of exponent 0, both signs: zeros, and denormals, which TensorFlow's CPU
        kernels flush to zero (and compare equal to 0)."""
        return np.tile(self._exponents() == 0, 2)

    def zero_ranges(self) -> tuple[slice, slice]:
        """zero_slots as two runs of slots, positive then negative: the first 2**(23 - shift) slots of
        each sign's half."""
        run, half = 1 << (23 - self.shift), self.size // 2
        return slice(0, run), slice(half, half + run)

    def bucket_values(self) -> np.ndarray:
        """The value each slot stands for, in slot order."""
        mag = self.magnitudes()
        return np.concatenate([mag, -mag])

    def finite_slots(self) -> np.ndarray:
        """Mask of slots that hold finite values (exponent < 255)."""
        return np.tile(self._exponents() < 255, 2)

    def sorted_order(self) -> np.ndarray:
        """Finite slot indices in increasing value order."""
        finite = np.flatnonzero(self._exponents() < 255)
        return np.concatenate([self.per_sign + finite[::-1], finite])

    def index_numpy(self, x: np.ndarray) -> np.ndarray:
        """The slot of each value (the reference for the in-graph computation)."""
        raw = np.asarray(x, dtype=np.float32).view(np.int32).astype(np.int64)
        mag = (raw & 0x7FFFFFFF) >> self.shift
        return np.where(raw < 0, mag + self.per_sign, mag)


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
    finite = layout.finite_slots()
    values = np.clip(layout.bucket_values()[finite], edges[0], edges[-1])
    hist, _ = np.histogram(values, bins=edges, weights=counts[finite].astype(np.float64))
    return edges, hist.astype(np.int64)
