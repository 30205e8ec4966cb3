"""Linear probes (Alain & Bengio 2016): how linearly decodable the label is from one layer."""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from layerprobe.analysis.features import Pool, class_codes, pool_features

log = logging.getLogger(__name__)

TEST_FRACTION = 0.3  # held-out share of the sample; the sample is small, so keep most for fitting
C = 1.0  # inverse L2 strength; features are standardised, so one value fits layers of any scale
MAX_ITER = 1000


@dataclass(frozen=True)
class ProbeScore:
    """Held-out accuracy of a linear probe on one layer, with what to compare it to."""

    accuracy: float
    chance: float  # accuracy of always predicting the probe-train majority class on the held-out part
    stderr: float  # binomial standard error of accuracy: small samples give noisy probes
    train_size: int
    test_size: int
    features: int
    classes: int
    stratified: bool


def _split(y: np.ndarray, seed: int, test_fraction: float) -> tuple[np.ndarray, np.ndarray, bool]:
    """Seeded train/test indices, stratified when every class can appear on both sides."""
    n = len(y)
    n_test = math.ceil(n * test_fraction)
    classes, counts = np.unique(y, return_counts=True)
    stratify = counts.min() >= 2 and min(n_test, n - n_test) >= len(classes)
    if not stratify:
        log.warning(
            "linear probe: split not stratified (%d examples, %d classes, smallest class %d)",
            n,
            len(classes),
            int(counts.min()),
        )
    idx = np.arange(n)
    tr, te = train_test_split(idx, test_size=n_test, random_state=seed, stratify=y if stratify else None)
    return tr, te, bool(stratify)


def linear_probe(
    activations: np.ndarray,
    labels: np.ndarray,
    seed: int,
    test_fraction: float = TEST_FRACTION,
    pool: Pool = "mean",
) -> ProbeScore:
    """Fit a standardised logistic regression on part of a layer's sample and score it on the rest.

    activations: (examples, ...); rank >= 3 is pooled over positions (see `pool_features`).
    The scaler sees only the probe-train part, so nothing of the held-out part leaks into the fit.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1). Received: test_fraction={test_fraction}")
    x = pool_features(activations, pool)
    y = class_codes(labels)
    if len(x) != len(y):
        raise ValueError(f"activations and labels must have the same examples. Received: {len(x)} and {len(y)}")
    classes = int(y.max()) + 1 if len(y) else 0
    if classes < 2:
        raise ValueError(f"a linear probe needs at least 2 classes in the sample. Received: {classes}")
    tr, te, stratified = _split(y, seed, test_fraction)
    if len(np.unique(y[tr])) < 2:
        raise ValueError(f"the probe-train part holds one class only ({len(tr)} examples); sample more examples")
    model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=MAX_ITER))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model.fit(x[tr], y[tr])
    if any(issubclass(w.category, ConvergenceWarning) for w in caught):
        log.warning("linear probe did not converge in %d iterations; accuracy is a lower bound", MAX_ITER)
    acc = float(model.score(x[te], y[te]))
    majority = np.bincount(y[tr], minlength=classes).argmax()
    return ProbeScore(
        accuracy=acc,
        chance=float(np.mean(y[te] == majority)),
        stderr=math.sqrt(acc * (1.0 - acc) / len(te)),
        train_size=len(tr),
        test_size=len(te),
        features=x.shape[1],
        classes=classes,
        stratified=stratified,
    )
