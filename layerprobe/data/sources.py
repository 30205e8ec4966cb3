"""In-memory sources as named numpy arrays, found by name through `registry.ARRAY_LOADERS`. No TensorFlow.

A loader returns an `ArraySet`: features and labels keyed by name, first axis = example.
The synthetic sources carry a learnable signal (class prototypes, a linear rule, a motif in time)
so that training them means something; they are generated from a seed and any size.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from layerprobe.data.arrays import ArraySet, known_params, required
from layerprobe.errors import ConfigError


def _sklearn(loader_name: str, params: Mapping[str, Any]) -> ArraySet:
    """scikit-learn's bundled tables: feature `x` (examples, columns) float32, label `label` int64."""
    import sklearn.datasets

    _no_params(loader_name.removeprefix("load_"), params)
    bunch = getattr(sklearn.datasets, loader_name)()
    return ArraySet({"x": bunch.data.astype(np.float32)}, {"label": bunch.target.astype(np.int64)})


def load_iris(params: Mapping[str, Any]) -> ArraySet:
    """scikit-learn's bundled iris table."""
    return _sklearn("load_iris", params)


def load_wine(params: Mapping[str, Any]) -> ArraySet:
    """scikit-learn's bundled wine table."""
    return _sklearn("load_wine", params)


def load_breast_cancer(params: Mapping[str, Any]) -> ArraySet:
    """scikit-learn's bundled breast cancer table."""
    return _sklearn("load_breast_cancer", params)


def load_digits(params: Mapping[str, Any]) -> ArraySet:
    """scikit-learn's bundled 8x8 digits (1797 images, 10 classes), pixels scaled to [0, 1]."""
    import sklearn.datasets

    _no_params("digits", params)
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
    path = Path(required(params, "path"))
    if not path.is_file():
        raise ConfigError("data.params.path", str(path), "no such file")
    known_params("npz", params, ("path", "features", "labels"))
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except ValueError as e:  # object arrays: reading them would run pickle
        raise ConfigError("data.params.path", str(path), f"cannot be read without pickle ({e})") from None
    return _select(arrays, params, "array")


def load_csv(params: Mapping[str, Any]) -> ArraySet:
    """A CSV with a header. params = {path, features, labels, dtypes}:
    features is a list of columns (stacked into the feature `x`) or {feature: [columns]};
    labels is a list of columns, each its own label; dtypes types columns ({column: int64}).
    Undeclared feature columns are float32 (an empty cell is NaN); undeclared labels are int64 when
    every cell is an integer, else float32. `stream: true` streams the files instead (`csvstream`)."""
    known_params("csv", params, ("path", "features", "labels", "dtypes", "stream"))
    path = Path(required(params, "path"))
    if not path.is_file():
        raise ConfigError("data.params.path", str(path), "no such file")
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise ConfigError("data.params.path", str(path), "the file is empty: a CSV needs a header line")
    header = [h.strip() for h in rows[0]]
    rows = rows[1:]
    for n, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise ConfigError("data.params.path", str(path), f"line {n} has {len(row)} cells, the header {len(header)}")
    groups, label_cols, dtypes, where_of = csv_columns(params, header)

    def column(col: str, default: str | None) -> np.ndarray:
        cells = [row[header.index(col)].strip() for row in rows]
        dtype = dtypes.get(col, default)
        if dtype is None:  # an undeclared label
            dtype = "int64" if all(_is_int_text(c) for c in cells) else "float32"
        return _parse_column(cells, col, dtype, where_of[col])

    features = {}
    for name, cols in groups.items():
        parts = [column(c, "float32") for c in cols]
        if len({p.dtype for p in parts}) > 1:
            raise ConfigError(feature_where(params, name), cols, "the columns of one feature need one dtype")
        features[name] = np.stack(parts, axis=1)
    labels = {c: column(c, None) for c in label_cols}
    return ArraySet(features, labels)


def csv_columns(
    params: Mapping[str, Any], header: list[str]
) -> tuple[dict[str, list[str]], list[str], dict[str, str], dict[str, str]]:
    """The column config checked against a header: (feature -> its columns, label columns, declared
    dtypes, column -> the config path an error about its cells names)."""
    dtypes = dict(params.get("dtypes") or {})
    for col, dtype in dtypes.items():
        if col not in header:
            raise ConfigError(f"data.params.dtypes.{col}", col, "no such column", header)
        if dtype not in CSV_DTYPES:
            raise ConfigError(f"data.params.dtypes.{col}", dtype, "unknown column dtype", CSV_DTYPES)
    feats = params.get("features") or []
    groups = {"x": list(feats)} if isinstance(feats, list) else {k: list(v or []) for k, v in feats.items()}
    if not groups or not all(groups.values()):
        raise ConfigError("data.params.features", feats, "name at least one feature column", header)
    where_of: dict[str, str] = {}
    named = [(feature_where(params, name), cols) for name, cols in groups.items()]
    labels = list(params.get("labels") or [])
    for where, cols in [*named, ("data.params.labels", labels)]:
        for i, col in enumerate(cols):
            if col not in header:
                raise ConfigError(f"{where}[{i}]", col, "no such column", header)
            where_of[col] = f"data.params.dtypes.{col}" if col in dtypes else f"{where}[{i}]"
    return groups, labels, dtypes, where_of


def feature_where(params: Mapping[str, Any], name: str) -> str:
    """The config path of a CSV feature's column list."""
    return "data.params.features" + ("" if isinstance(params.get("features") or [], list) else f".{name}")


CSV_DTYPES = ("float32", "float64", "int32", "int64")


def _is_int_text(cell: str) -> bool:
    return cell.lstrip("+-").isdigit()


def _parse_column(cells: list[str], col: str, dtype: str, path: str) -> np.ndarray:
    floating = dtype.startswith("float")
    out = []
    for n, cell in enumerate(cells, start=2):
        try:
            out.append(float(cell) if floating and cell else float("nan") if floating else int(cell))
        except ValueError:
            raise ConfigError(path, cell, f"column {col!r} on line {n} is not {dtype}") from None
    return np.asarray(out, dtype=dtype)


def _no_params(source: str, params: Mapping[str, Any]) -> None:
    known_params(source, params, ())


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
