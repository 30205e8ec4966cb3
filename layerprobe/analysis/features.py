"""Turn sampled activations and labels into the matrices the analyses take (numpy only)."""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np

log = logging.getLogger(__name__)

Pool = Literal["mean", "mean_max"]
POOLS: tuple[str, ...] = ("mean", "mean_max")


def as_matrix(x: np.ndarray, name: str = "activations") -> np.ndarray:
    """(examples, ...) -> (examples, features) by flattening; a rank-1 array is one feature."""
    a = np.asarray(x)
    if a.ndim == 0:
        raise ValueError(f"{name} must have an examples axis. Received: a scalar")
    if a.ndim == 1:
        a = a[:, None]
    return a.reshape(a.shape[0], -1)


def pool_features(x: np.ndarray, pool: Pool = "mean") -> np.ndarray:
    """(examples, ..., channels) -> (examples, features) float64 for a linear probe.

    Rank <= 2 is used as is. For rank >= 3 (a conv map) we average over every non-channel axis
    (`mean`, C features) and with `mean_max` also take the max (2C features). We do not flatten:
    H*W*C features usually exceed the sampled examples, so the probe would fit the sample and its
    accuracy would measure the sample size more than the representation; the spatial mean is what a
    global-average-pooling readout sees, and the max says whether a channel fires anywhere.
    """
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {POOLS}. Received: pool={pool!r}")
    a = np.asarray(x, dtype=np.float64)
    if a.ndim <= 2:
        return as_matrix(a)
    axes = tuple(range(1, a.ndim - 1))  # (examples, *positions, channels): pool the positions
    parts = [a.mean(axis=axes)]
    if pool == "mean_max":
        parts.append(a.max(axis=axes))
    return np.concatenate(parts, axis=1)


def finite(x: np.ndarray, layer: str) -> np.ndarray:
    """x with NaN/inf set to 0: one broken unit should not void the whole layer's analysis."""
    a = np.asarray(x)
    bad = ~np.isfinite(a) if np.issubdtype(a.dtype, np.floating) else np.zeros(a.shape, bool)
    if bad.any():
        log.warning("layer %r: %d non-finite sampled activations set to 0 for the analysis", layer, int(bad.sum()))
        a = np.where(bad, 0.0, a)
    return a


def class_codes(labels: np.ndarray, name: str = "labels") -> np.ndarray:
    """(examples,) or (examples, 1) class labels -> int codes 0..classes-1; rejects regression targets."""
    y = np.asarray(labels)
    while y.ndim > 1 and y.shape[-1] == 1:
        y = y[..., 0]
    if y.ndim != 1:
        raise ValueError(f"{name} must be one class per example, shape (examples,). Received: shape={y.shape}")
    if np.issubdtype(y.dtype, np.floating):
        if not np.isfinite(y).all() or not np.array_equal(y, np.round(y)):
            raise ValueError(f"{name} must be class ids; non-integer values look like a regression target")
    codes = np.unique(y, return_inverse=True)[1]
    return codes.reshape(-1).astype(np.int64)
