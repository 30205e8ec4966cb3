"""Linear CKA (Kornblith et al. 2019): similarity of two representations of the same examples.

CKA(X, Y) = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F) with Xc, Yc centred per feature. It is
1 for a representation against itself, invariant to orthogonal maps and isotropic scaling, and
defined for different widths. Representations are flattened (not pooled): CKA compares geometry,
and the centred Gram matrix form keeps it exact and O(examples^2) in memory when the width is large.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from layerprobe.analysis.features import as_matrix

log = logging.getLogger(__name__)

_CHUNK_VALUES = 1 << 22  # float64 values per column chunk (32 MiB) while building a Gram matrix


@dataclass(frozen=True)
class CKAMatrix:
    """Pairwise CKA of named representations (layers of a run, or runs for one layer)."""

    names: tuple[str, ...]
    values: np.ndarray  # (len(names), len(names)), symmetric, NaN where a representation is constant

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: names and rows, NaN as null."""
        rows = [[None if np.isnan(v) else float(v) for v in row] for row in self.values]
        return {"names": list(self.names), "cka": rows}


@dataclass(frozen=True)
class _Rep:
    """A centred representation: features (examples, p) when narrow, else its centred Gram matrix."""

    feats: np.ndarray | None
    gram: np.ndarray | None
    norm: float  # ||Xc^T Xc||_F == ||Xc Xc^T||_F

    def gram_matrix(self) -> np.ndarray:
        if self.gram is not None:
            return self.gram
        if self.feats is None:
            raise RuntimeError("a _Rep holds either features or a Gram matrix")
        return self.feats @ self.feats.T


def _centred(x: np.ndarray, name: str) -> _Rep:
    m = as_matrix(x, name)
    n, p = m.shape
    if n < 2:
        raise ValueError(f"CKA needs at least 2 examples. Received: {n} for {name!r}")
    if p <= n:  # feature form: (n, p) is no bigger than a Gram matrix
        f = m.astype(np.float64)
        _check_finite(f, name)
        f = f - f.mean(axis=0)
        return _Rep(f, None, float(np.linalg.norm(f.T @ f)))
    k = np.zeros((n, n))
    step = max(1, _CHUNK_VALUES // n)
    for j in range(0, p, step):  # column chunks: a wide conv map is never copied to float64 whole
        c = m[:, j : j + step].astype(np.float64)
        _check_finite(c, name)
        c -= c.mean(axis=0)
        k += c @ c.T
    return _Rep(None, k, float(np.linalg.norm(k)))


def _check_finite(a: np.ndarray, name: str) -> None:
    if not np.isfinite(a).all():
        raise ValueError(f"{name!r} has NaN or inf values; CKA needs finite activations")


def _pair(a: _Rep, b: _Rep) -> float:
    if a.norm == 0.0 or b.norm == 0.0:
        return float("nan")  # a constant representation has no geometry to compare
    if a.feats is not None and b.feats is not None:
        hsic = float(np.sum((b.feats.T @ a.feats) ** 2))
    else:  # tr(Kc Lc) == ||Yc^T Xc||_F^2
        hsic = float(np.sum(a.gram_matrix() * b.gram_matrix()))
    return hsic / (a.norm * b.norm)


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA of x (n, ...) and y (n, ...), rows the same examples; NaN if either is constant."""
    nx, ny = np.shape(x)[0] if np.ndim(x) else 0, np.shape(y)[0] if np.ndim(y) else 0
    if nx != ny:
        raise ValueError(f"x and y must hold the same examples. Received: {nx} and {ny} rows")
    return _pair(_centred(x, "x"), _centred(y, "y"))


def cka_matrix(reps: Mapping[str, np.ndarray]) -> CKAMatrix:
    """CKA between every pair of representations; all must be (n, ...) over the same n examples in order."""
    names = tuple(reps)
    if not names:
        raise ValueError("cka_matrix needs at least one representation. Received: none")
    sizes = {k: int(np.shape(v)[0]) if np.ndim(v) else 0 for k, v in reps.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"all representations must hold the same examples. Received rows: {sizes}")
    centred = [_centred(reps[k], k) for k in names]
    out = np.full((len(names), len(names)), np.nan)
    for i, a in enumerate(centred):
        for j in range(i, len(names)):
            out[i, j] = out[j, i] = _pair(a, centred[j])
    constant = [k for k, r in zip(names, centred) if r.norm == 0.0]
    if constant:
        log.warning("CKA undefined (NaN) for constant representations: %s", ", ".join(constant))
    return CKAMatrix(names, out)
