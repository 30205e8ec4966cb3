"""Cutting a source into train and eval: a seeded fraction, row ranges, or separate files. No TensorFlow."""

from __future__ import annotations

import hashlib

import numpy as np

from layerprobe.data.arrays import ArraySet
from layerprobe.data.registry import array_loader, load_arrays
from layerprobe.errors import ConfigError
from layerprobe.schema import DataConfig


def load_splits(data_cfg: DataConfig) -> tuple[dict[str, ArraySet], str]:
    """The train and eval splits, and a sha256 of all the data read."""
    source, params = data_cfg.source, dict(data_cfg.params)
    s = data_cfg.splits
    arrays = load_arrays(source, params)
    if s.method == "files":
        eval_params = {**params, **s.eval_params}
        try:
            evaluation = array_loader(source)(eval_params)  # empty: refused below, naming the split
        except ConfigError as e:  # name the key the user wrote for the eval split
            key = e.path.removeprefix("data.params.").split(".")[0].split("[")[0]
            if e.path.startswith("data.params.") and key in s.eval_params:
                raise ConfigError(
                    e.path.replace("data.params.", "data.splits.eval_params.", 1), e.value, e.rule, e.options
                ) from None
            raise
        if evaluation.size == 0:
            raise ConfigError("data.splits.eval_params", s.eval_params, "the eval split is empty")
        digest = hashlib.sha256((arrays.digest() + evaluation.digest()).encode()).hexdigest()
        return {"train": arrays, "eval": evaluation}, digest
    if s.method == "range":
        idx = range_indices(arrays.size, s.train_range or [], s.eval_range or [])  # checked: both given
    else:
        idx = split_indices(arrays.size, s.eval_fraction, s.seed)
    return {name: arrays.take(i) for name, i in idx.items()}, arrays.digest()


def split_indices(size: int, eval_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """A seeded permutation cut into train and eval; the same seed gives the same split."""
    order = np.random.default_rng(seed).permutation(size)
    n_eval = int(round(size * eval_fraction))
    if n_eval == 0 or n_eval == size:
        raise ConfigError("data.splits.eval_fraction", eval_fraction, f"leaves an empty split of the {size} examples")
    return {"train": np.sort(order[n_eval:]), "eval": np.sort(order[:n_eval])}


def range_indices(size: int, train: list, evaluation: list) -> dict[str, np.ndarray]:
    """Rows [start, stop) of the source, in file order; a stop of None means the end."""
    out = {}
    for name, (start, stop) in (("train", train), ("eval", evaluation)):
        key = f"data.splits.{name}_range"
        stop = size if stop is None else stop
        if stop > size:
            raise ConfigError(key, [start, stop], f"goes past the {size} rows of the source")
        if start >= stop:
            raise ConfigError(key, [start, stop], f"leaves the {name} split empty (the source has {size} rows)")
        out[name] = (start, stop)
    (a, b), (c, d) = out["train"], out["eval"]
    if a < d and c < b:
        raise ConfigError(
            "data.splits.eval_range", [c, d], f"overlaps train_range {[a, b]}: eval rows would be trained on"
        )
    return {name: np.arange(lo, hi) for name, (lo, hi) in out.items()}
