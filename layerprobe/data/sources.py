"""Data sources as named numpy arrays. No TensorFlow here: validation and `layerprobe data` use it.

A source returns an `ArraySet`: features and labels keyed by name, first axis = example.
The synthetic sources carry a learnable signal (class prototypes, a linear rule, a motif in time)
so that training them means something; they are generated from a seed and any size.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from layerprobe.errors import ConfigError


@dataclass(frozen=True)
class ArraySet:
    features: dict[str, np.ndarray]  # name -> (examples, ...)
    labels: dict[str, np.ndarray]  # name -> (examples, ...)

    @property
    def size(self) -> int:
        return len(next(iter(self.features.values())))

    def take(self, index: np.ndarray) -> ArraySet:
        return ArraySet({k: v[index] for k, v in self.features.items()}, {k: v[index] for k, v in self.labels.items()})

    def digest(self) -> str:
        """sha256 over names, dtypes, shapes and bytes: identifies the data a run read."""
        h = hashlib.sha256()
        for group in (self.features, self.labels):
            for name in sorted(group):
                arr = np.ascontiguousarray(group[name])
                h.update(f"{name}:{arr.dtype}:{arr.shape};".encode())
                h.update(arr.tobytes())
        return h.hexdigest()


def _sklearn(loader_name: str, params: Mapping[str, Any]) -> ArraySet:
    import sklearn.datasets

    bunch = getattr(sklearn.datasets, loader_name)()
    return ArraySet({"x": bunch.data.astype(np.float32)}, {"label": bunch.target.astype(np.int64)})


def load_digits(params: Mapping[str, Any]) -> ArraySet:
    """scikit-learn's bundled 8x8 digits (1797 images, 10 classes), pixels scaled to [0, 1]."""
    import sklearn.datasets

    bunch = sklearn.datasets.load_digits()
    image = (bunch.images.astype(np.float32) / 16.0)[..., None]  # (examples, 8, 8, 1)
    return ArraySet({"image": image}, {"label": bunch.target.astype(np.int64)})


def load_synthetic(params: Mapping[str, Any]) -> ArraySet:
    """Seeded generators: kind = image | tabular | sequence | two_output."""
    p = dict(params)
    kind = p.pop("kind", "image")
    n = int(p.pop("size", 2000))
    seed = int(p.pop("seed", 0))
    classes = int(p.pop("num_classes", 10))
    noise = float(p.pop("noise", 1.0))
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size=n)
    if kind == "image":
        shape = tuple(p.pop("shape", [16, 16, 3]))
        protos = rng.normal(size=(classes, *shape)).astype(np.float32)
        x = protos[labels] + noise * rng.normal(size=(n, *shape)).astype(np.float32)
        features = {"image": x.astype(np.float32)}
    elif kind in ("tabular", "two_output"):
        dim = int(p.pop("dim", 20))
        centers = 2.0 * rng.normal(size=(classes, dim))
        x = (centers[labels] + noise * rng.normal(size=(n, dim))).astype(np.float32)
        features = {"x": x}
    elif kind == "sequence":
        steps, dim = int(p.pop("steps", 20)), int(p.pop("dim", 4))
        motifs = rng.normal(size=(classes, 5, dim))  # class-specific pattern, placed at a random time
        x = noise * rng.normal(size=(n, steps, dim))
        starts = rng.integers(0, steps - 5, size=n)
        for t in range(5):  # loop over the 5 motif steps, not over examples
            x[np.arange(n), starts + t] += 2.0 * motifs[labels, t]
        features = {"sequence": x.astype(np.float32)}
    else:
        raise ConfigError("data.params.kind", kind, "unknown synthetic kind", SYNTHETIC_KINDS)
    if p:
        raise ConfigError(f"data.params.{next(iter(p))}", next(iter(p)), f"not a parameter of synthetic {kind}")
    out = {"label": labels.astype(np.int64)}
    if kind == "two_output":  # a regression target from a fixed linear rule
        w = rng.normal(size=features["x"].shape[1]).astype(np.float32)
        out["target"] = (features["x"] @ w / np.sqrt(len(w))).astype(np.float32)
    return ArraySet(features, out)


def load_npz(params: Mapping[str, Any]) -> ArraySet:
    """Named arrays in an .npz file, read without pickle: params = {path, features: [...], labels: [...]}."""
    path = Path(_required(params, "path"))
    if not path.is_file():
        raise ConfigError("data.params.path", str(path), "no such file")
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    return _select(arrays, params, "array")


def load_csv(params: Mapping[str, Any]) -> ArraySet:
    """A CSV with a header: params = {path, features: [columns], labels: [columns]}; features float32."""
    path = Path(_required(params, "path"))
    if not path.is_file():
        raise ConfigError("data.params.path", str(path), "no such file")
    table = np.genfromtxt(path, delimiter=",", names=True, dtype=None, encoding="utf-8")
    columns = {name: np.asarray(table[name]) for name in table.dtype.names or ()}
    feats = list(params.get("features") or [])
    for i, col in enumerate(feats):
        if col not in columns:
            raise ConfigError(f"data.params.features[{i}]", col, "no such column", columns)
    for i, col in enumerate(params.get("labels") or []):
        if col not in columns:
            raise ConfigError(f"data.params.labels[{i}]", col, "no such column", columns)
    try:
        x = np.stack([columns[c].astype(np.float32) for c in feats], axis=1)
    except ValueError as e:
        raise ConfigError("data.params.features", feats, f"feature columns must be numeric ({e})") from None
    labels = {c: columns[c] for c in params.get("labels") or []}
    return ArraySet({"x": x}, labels)


def _required(params: Mapping[str, Any], key: str) -> Any:
    if params.get(key) in (None, ""):
        raise ConfigError(f"data.params.{key}", params.get(key), "required for this source")
    return params[key]


def _select(arrays: dict[str, np.ndarray], params: Mapping[str, Any], what: str) -> ArraySet:
    out: list[dict[str, np.ndarray]] = [{}, {}]
    for slot, key in enumerate(("features", "labels")):
        for i, name in enumerate(params.get(key) or []):
            if name not in arrays:
                raise ConfigError(f"data.params.{key}[{i}]", name, f"no such {what}", arrays)
            out[slot][name] = arrays[name]
    if not out[0]:
        raise ConfigError("data.params.features", None, f"name at least one feature {what}", arrays)
    sizes = {len(a) for group in out for a in group.values()}
    if len(sizes) != 1:
        raise ConfigError("data.params", sorted(sizes), "all arrays need the same number of examples")
    return ArraySet(*out)


SYNTHETIC_KINDS = ("image", "tabular", "sequence", "two_output")

SOURCES: dict[str, Callable[[Mapping[str, Any]], ArraySet]] = {
    "digits": load_digits,
    "iris": lambda p: _sklearn("load_iris", p),
    "wine": lambda p: _sklearn("load_wine", p),
    "breast_cancer": lambda p: _sklearn("load_breast_cancer", p),
    "synthetic": load_synthetic,
    "npz": load_npz,
    "csv": load_csv,
}


def load(source: str, params: Mapping[str, Any]) -> ArraySet:
    if source not in SOURCES:
        raise ConfigError("data.source", source, "unknown data source", SOURCES)
    data = SOURCES[source](params)
    if data.size == 0:
        raise ConfigError("data", source, "the source holds no examples")
    return data


def split_indices(size: int, eval_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """A seeded permutation cut into train and eval; the same seed gives the same split."""
    order = np.random.default_rng(seed).permutation(size)
    n_eval = int(round(size * eval_fraction))
    if n_eval == 0 or n_eval == size:
        raise ConfigError("data.splits.eval_fraction", eval_fraction, f"leaves an empty split of the {size} examples")
    return {"train": np.sort(order[n_eval:]), "eval": np.sort(order[:n_eval])}
