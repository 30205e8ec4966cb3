"""A probe pass's mergeable state as one file: what each shard of a sharded probe writes, and reads back.

One `.npz` (no pickles) per state: a JSON header (the caller's `meta`, e.g. checkpoint and shard, and
each layer's scalars) and each layer's arrays under `<layer index>/<name>`. Loading and merging the
files of every shard gives the state of one pass over the whole split (see `ProbeState.merge`).
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from layerprobe.probe.accumulate import LayerAccumulator, _Units
from layerprobe.probe.session import ProbeState
from layerprobe.probe.sketch import SketchLayout

FORMAT = 1
_UNITS = ("n", "mean", "m2", "max", "min", "active")
_SCALARS = ("examples", "zeros", "nans", "infs", "l2_sum", "saturated", "batches", "shape")


def save_state(state: ProbeState, path: str | Path, meta: Mapping[str, Any]) -> Path:
    """Write `state` with `meta` to `path` atomically (a reader sees the whole file or none)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        _write(state, meta, f)
    tmp.replace(path)
    return path


def state_bytes(state: ProbeState, meta: Mapping[str, Any]) -> bytes:
    """`state` and `meta` as the bytes of a state file (what a Beam worker hands on: no pickles)."""
    buf = io.BytesIO()
    _write(state, meta, buf)
    return buf.getvalue()


def state_from_bytes(data: bytes) -> tuple[ProbeState, dict[str, Any]]:
    """(state, meta) of `state_bytes`' output."""
    return load_state(io.BytesIO(data))


def _write(state: ProbeState, meta: Mapping[str, Any], f: BinaryIO) -> None:
    header: dict[str, Any] = {"format": FORMAT, "meta": dict(meta), "batches": state.batches, "layers": []}
    arrays: dict[str, np.ndarray] = {}
    for i, (name, acc) in enumerate(state.layers.items()):
        header["layers"].append(
            {
                "name": name,
                "relative_accuracy": acc.layout.relative_accuracy,
                "percentiles": acc.percentile_levels,
                "bins": acc.bins,
                "reservoir_size": acc.reservoir_size,
                "sample_seed": acc.sample_seed,
                **{k: getattr(acc, k) for k in _SCALARS},
            }
        )
        arrays[f"{i}/sketch"] = acc.sketch
        if acc.u is not None:
            arrays.update({f"{i}/u_{k}": getattr(acc.u, k) for k in _UNITS})
        if acc.spatial is not None:
            arrays[f"{i}/spatial"] = acc.spatial
        if acc.sample["keys"]:
            arrays.update({f"{i}/res_{k}": v for k, v in acc.reservoir().items()})
    np.savez(f, header=np.array(json.dumps(header)), **arrays)


def load_state(path: str | Path | BinaryIO) -> tuple[ProbeState, dict[str, Any]]:
    """(state, meta) of a file written by `save_state`."""
    with np.load(path, allow_pickle=False) as f:
        header = json.loads(str(f["header"]))
        arrays = {k: f[k] for k in f.files if k != "header"}
    if header.get("format") != FORMAT:
        raise ValueError(f"{path}: probe state format {header.get('format')}, expected {FORMAT}")
    layers = {}
    for i, h in enumerate(header["layers"]):
        acc = LayerAccumulator(
            h["name"],
            SketchLayout(h["relative_accuracy"]),
            h["percentiles"],
            h["bins"],
            h["reservoir_size"],
            h["sample_seed"],
        )
        for k in _SCALARS:
            setattr(acc, k, h[k])
        acc.sketch = arrays[f"{i}/sketch"]
        if f"{i}/u_n" in arrays:
            acc.u = _Units(*(arrays[f"{i}/u_{k}"] for k in _UNITS))
        acc.spatial = arrays.get(f"{i}/spatial")
        if f"{i}/res_keys" in arrays:
            acc.sample = {
                k: [arrays[f"{i}/res_{k}"]] for k in ("keys", "activations", "labels") if f"{i}/res_{k}" in arrays
            }
            acc.sample.setdefault("labels", [])
        layers[h["name"]] = acc
    return ProbeState(layers, header["batches"]), header["meta"]
