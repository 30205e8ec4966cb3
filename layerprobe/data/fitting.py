"""Checks of in-memory splits against the declared transforms, and the transforms' fitted state.

Each transform is checked with the element spec at its step (names exist, ranks fit, no NaN reaches a
transform that cannot take it); normalize statistics are fitted on the train split only.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import numpy as np

from layerprobe._tf import tf
from layerprobe.data.arrays import ArraySet
from layerprobe.data.checks import is_user_function
from layerprobe.data.memory import array_dataset
from layerprobe.data.transforms import NAN_INTOLERANT, apply, targets, user_function
from layerprobe.errors import ConfigError


def check_labels(splits: Mapping[str, ArraySet], num_classes: int | None) -> None:
    if num_classes is None:
        return
    for split, part in splits.items():
        for name, y in part.labels.items():
            if np.issubdtype(y.dtype, np.integer) and y.size:
                bad = y[(y < 0) | (y >= num_classes)]
                if bad.size:
                    rule = f"label {name!r} of the {split} split holds {bad.flat[0]}, outside [0, {num_classes})"
                    raise ConfigError("data.num_classes", num_classes, rule)


def check_and_fit(transforms: list[dict[str, Any]], splits: Mapping[str, ArraySet]) -> dict[str, Any]:
    """Walk the transforms with the element spec at each step: names exist, ranks fit, no NaN
    reaches a transform that cannot take it; normalize statistics come from the train split."""
    nan = {s: _nan_counts(p) for s, p in splits.items()}  # split -> {(group, name): NaN count}
    return check_and_fit_stream(transforms, array_dataset(splits["train"]), nan)


def check_and_fit_stream(
    transforms: list[dict[str, Any]], examples: tf.data.Dataset, nan: dict[str, dict[tuple[str, str], int]]
) -> dict[str, Any]:
    """`check_and_fit` on the train split's unbatched (features, labels) examples, in one streaming
    pass per fitted transform; `nan` holds the NaN counts known per split ({} when not counted)."""
    fitted: dict[str, Any] = {}
    for i, t in enumerate(transforms):
        path, name = f"data.transforms[{i}]", t["name"]
        if is_user_function(name):
            user_function(i, name)  # import now: a typo fails before training
            continue
        train = examples.map(functools.partial(_step, transforms, fitted, hi=i))
        fspec, lspec = train.element_spec
        for group, spec in (("features", fspec), ("labels", lspec)):
            for n in t.get(group) or []:
                if n not in spec:
                    raise ConfigError(f"{path}.{group}", n, f"no such {group[:-1]} at this step", spec)
        if name in ("select", "rename"):
            _rename_nan(nan, t)
            continue
        feats, labs = targets(t, fspec)
        for n in feats:
            rank = fspec[n].shape.rank
            if name in ("random_flip", "random_crop") and rank != 3:
                raise ConfigError(
                    f"{path}.features", n, f"{name} needs (height, width, channels) examples, not rank {rank}"
                )
            if name == "normalize" and not fspec[n].dtype.is_floating:
                raise ConfigError(
                    f"{path}.features", n, f"normalize needs a float feature, not {fspec[n].dtype.name}: cast it first"
                )
        keys = [("features", n) for n in feats] + [("labels", n) for n in labs]
        intolerant = name in NAN_INTOLERANT or (name == "cast" and not tf.as_dtype(t["dtype"]).is_floating)
        for split, counts in nan.items():
            for key in keys:
                if counts.get(key) and intolerant:
                    rule = (
                        f"{name} cannot take NaN, and {key[0][:-1]} {key[1]!r} of the {split} split holds "
                        f"{counts[key]}: put {{name: fill_nan}} before it"
                    )
                    raise ConfigError(path, key[1], rule)
                if name == "fill_nan":
                    counts.pop(key, None)
        if name == "normalize":
            specs = {**{("features", n): fspec[n] for n in feats}, **{("labels", n): lspec[n] for n in labs}}
            for key in keys:
                fitted[f"{i}/{key[1]}/mean"], fitted[f"{i}/{key[1]}/std"] = _normalizer(path, t, key, specs[key], train)
    return fitted


def _step(transforms: list[dict[str, Any]], fitted: dict[str, Any], f: Any, y: Any, *, hi: int) -> Any:
    return apply(transforms, fitted, f, y, lo=0, hi=hi, training=False, seed=0)


def _nan_counts(part: ArraySet) -> dict[tuple[str, str], int]:
    out = {}
    for group, arrays in (("features", part.features), ("labels", part.labels)):
        for n, a in arrays.items():
            if np.issubdtype(a.dtype, np.floating):
                count = int(np.isnan(a).sum())
                if count:
                    out[(group, n)] = count
    return out


def _rename_nan(nan: dict[str, dict[tuple[str, str], int]], t: Mapping[str, Any]) -> None:
    for split, counts in nan.items():
        if t["name"] == "select":
            nan[split] = {k: c for k, c in counts.items() if not t.get(k[0]) or k[1] in t[k[0]]}
        else:
            nan[split] = {(g, (t.get(g) or {}).get(n, n)): c for (g, n), c in counts.items()}


def _normalizer(
    path: str, t: Mapping[str, Any], key: tuple[str, str], spec: Any, train: Any
) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) per unit of the last axis: given in the config, else from the train split."""
    units = spec.shape[-1] if spec.shape.rank else 1
    if t.get("mean") is not None:
        out = []
        for arg in ("mean", "std"):
            v = np.asarray(t[arg], np.float32)
            if v.size not in (1, units):
                raise ConfigError(f"{path}.{arg}", t[arg], f"needs 1 or {units} values for {key[1]!r}")
            out.append(v)
        return out[0], out[1]
    n, mean, m2 = 0, 0.0, 0.0  # Chan's parallel update, in float64
    group = 0 if key[0] == "features" else 1
    for batch in train.map(lambda f, y: (f, y)[group][key[1]]).batch(4096).as_numpy_iterator():
        x = batch.astype(np.float64).reshape(-1, units)
        bn, bmean = len(x), x.mean(axis=0)
        delta = bmean - mean
        mean = mean + delta * bn / (n + bn)
        m2 = m2 + ((x - bmean) ** 2).sum(axis=0) + delta**2 * n * bn / (n + bn)
        n += bn
    std = np.sqrt(np.asarray(m2) / max(n, 1))
    return np.asarray(mean, np.float32).reshape(-1), np.maximum(std, 1e-6).astype(np.float32).reshape(-1)
