"""File lists for the streaming sources, and prepared TensorFlow Datasets read into numpy (`tfds`).

TFRecord files stream (`stream.TFRecordStream`); found by name through `registry`.
"""

from __future__ import annotations

import glob
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from layerprobe.data.arrays import ArraySet, known_params, required
from layerprobe.data.checks import require_tfds
from layerprobe.errors import ConfigError

COMPRESSION = ("", "GZIP", "ZLIB")


def files_of(raw: Any, where: str) -> list[str]:
    """The files a path, a glob or a list of them name, in sorted order per pattern; `where` is the
    config path an error names."""
    patterns = raw if isinstance(raw, list) else [raw]
    files: list[str] = []
    for pattern in patterns:
        found = sorted(glob.glob(str(pattern))) if any(ch in str(pattern) for ch in "*?[") else [str(pattern)]
        if not found or not all(Path(f).is_file() for f in found):
            raise ConfigError(where, str(pattern), "no such file" if found else "no file matches")
        files += found
    return files


def read_tfds(params: Mapping[str, Any]) -> ArraySet:
    """params = {name, split, data_dir, features: {feature: tfds key}, labels: {label: tfds key}}."""
    require_tfds()
    import tensorflow_datasets as tfds

    known_params("tfds", params, ("name", "split", "data_dir", "features", "labels"))
    name = required(params, "name")
    split, data_dir = params.get("split", "train"), params.get("data_dir")
    features = dict(params.get("features") or {"image": "image"})
    labels = dict(params.get("labels") or {"label": "label"})
    try:  # download=False: a set that is not on disk is an error, never a download
        ds = tfds.load(name, split=split, data_dir=data_dir, download=False, try_gcs=False)
    except Exception as e:  # tfds raises several types for "not prepared"
        where = data_dir or "~/tensorflow_datasets"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        rule = f"is not prepared in {where} and layerprobe never downloads ({first})"
        raise ConfigError("data.params.name", name, rule) from None
    keys = {**features, **labels}
    chunks: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    for batch in tfds.as_numpy(ds.batch(1024)):
        for out, key in keys.items():
            if key not in batch:
                group = "features" if out in features else "labels"
                raise ConfigError(f"data.params.{group}.{out}", key, f"{name} has no such key", batch)
            chunks[out].append(batch[key])
    arrays = {k: np.concatenate(v) for k, v in chunks.items()}
    return ArraySet({k: arrays[k] for k in features}, {k: arrays[k] for k in labels})
