"""One layer's accumulator state on the host (float64, Chan's merge): loaded from a pass folded on the
device (`load_pass`), merged across shards (`merge`), turned into statistics (`result`). `update`
merges one batch's summaries: graph_fold's reference, which it matches bit for bit."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from layerprobe.data.keys import sample_rank, smallest
from layerprobe.probe.sketch import SketchLayout, histogram, quantiles


@dataclass(frozen=True)
class LayerStats:
    """Everything the probe knows about one exposed layer over one split."""

    layer: str
    shape: list[int]  # per example
    examples: int
    count: int  # finite values seen
    mean: float
    std: float
    min: float
    max: float
    zero_fraction: float
    nan_count: int
    inf_count: int
    mean_l2_norm: float
    percentiles: dict[str, float]  # "p1" -> value
    units: int
    unit_mean: list[float]
    unit_std: list[float]
    unit_max: list[float]
    unit_active_fraction: list[float]
    dead_units: list[int]
    dead_count: int
    dead_fraction: float
    saturation_fraction: float | None
    histogram_edges: list[float]
    histogram_counts: list[int]
    spatial_mean: list | None = field(default=None, repr=False)  # (height, width, units)

    def scalars(self) -> dict[str, float]:
        """The single numbers, logged as metrics probe/<layer>/<name>."""
        out = {
            "count": float(self.count),
            "mean": self.mean,
            "std": self.std,
            "min": self.min,
            "max": self.max,
            "zero_fraction": self.zero_fraction,
            "nan_count": float(self.nan_count),
            "inf_count": float(self.inf_count),
            "mean_l2_norm": self.mean_l2_norm,
            "dead_count": float(self.dead_count),
            "dead_fraction": self.dead_fraction,
            "active_fraction": float(np.mean(self.unit_active_fraction)) if self.units else math.nan,
            **self.percentiles,
        }
        if self.saturation_fraction is not None:
            out["saturation_fraction"] = self.saturation_fraction
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Units:
    """Per-unit running state: finite count, mean, M2 (sum of squared deviations), max, min, active."""

    n: np.ndarray
    mean: np.ndarray
    m2: np.ndarray
    max: np.ndarray
    min: np.ndarray
    active: np.ndarray

    def merge(self, o: _Units) -> _Units:
        """Chan et al.'s pairwise update: stable for any split of the data into batches."""
        n = self.n + o.n
        safe = np.maximum(n, 1.0)
        delta = o.mean - self.mean
        return _Units(
            n,
            self.mean + delta * o.n / safe,
            self.m2 + o.m2 + delta**2 * self.n * o.n / safe,
            np.maximum(self.max, o.max),
            np.minimum(self.min, o.min),
            self.active + o.active,
        )


class LayerAccumulator:
    """Merges batch summaries; memory is O(units + sketch buckets + reservoir), not O(examples)."""

    def __init__(
        self,
        layer: str,
        layout: SketchLayout,
        percentiles: list[float],
        histogram_bins: int,
        reservoir_size: int = 0,
        sample_seed: int = 0,
    ) -> None:
        self.layer = layer
        self.layout = layout
        self.percentile_levels = list(percentiles)
        self.bins = histogram_bins
        self.reservoir_size = reservoir_size
        self.sample_seed = sample_seed
        self.examples = 0
        self.shape: list[int] = []
        self.u: _Units | None = None  # per-unit running state, created by the first batch
        self.zeros = 0.0
        self.nans = 0.0
        self.infs = 0.0
        self.l2_sum = 0.0
        self.saturated: float | None = None
        self.sketch = np.zeros(layout.size, dtype=np.int64)
        self._zero_slots = layout.zero_slots()
        self.spatial: np.ndarray | None = None
        self.sample: dict[str, list[np.ndarray]] = {"keys": [], "activations": [], "labels": []}
        self.batches = 0

    def update(self, b: dict[str, np.ndarray]) -> None:
        """Merge one batch's summaries (see graph_stats.batch_summaries for the keys)."""
        self.batches += 1
        self.examples += int(b["examples"])
        n_b = b["unit_count"].astype(np.float64)
        mean_b = b["unit_sum"].astype(np.float64) / np.maximum(n_b, 1.0)
        batch = _Units(
            n_b,
            mean_b,
            b["unit_m2"].astype(np.float64),
            b["unit_max"].astype(np.float64),
            b["unit_min"].astype(np.float64),
            b["unit_active"].astype(np.float64),
        )
        self.u = batch if self.u is None else self.u.merge(batch)
        self.zeros += float(b["sketch"][self._zero_slots].sum())  # exact zeros, from the sketch
        self.nans += float(b["nans"])
        self.infs += float(b["infs"])
        self.l2_sum += float(b["l2_sum"])
        self.sketch += b["sketch"].astype(np.int64)
        if "saturated" in b:
            self.saturated = (self.saturated or 0.0) + float(b["saturated"])
        if "spatial_sum" in b:
            s = b["spatial_sum"].astype(np.float64)
            self.spatial = s if self.spatial is None else self.spatial + s
        if "res_keys" in b:
            self._merge_reservoir(b)

    def load_pass(self, state: dict[str, np.ndarray], batches: int) -> None:
        """Take the state a pass folded on the device (graph_fold) into this fresh accumulator: the
        same values as `update` with each of those batches (the reservoir still comes per batch)."""
        if self.batches or self.u is not None:
            raise ValueError(f"layer {self.layer!r}: a pass's state loads into a fresh accumulator only")
        self.batches = batches
        self.examples = int(state["examples"])
        if batches:
            self.u = _Units(*(np.asarray(state[k], np.float64) for k in ("n", "mean", "m2", "max", "min", "active")))
        self.zeros, self.nans, self.infs, self.l2_sum = (float(state[k]) for k in ("zeros", "nans", "infs", "l2_sum"))
        self.sketch = np.asarray(state["sketch"], np.int64)
        if "saturated" in state and batches:
            self.saturated = float(state["saturated"])
        if "spatial" in state and batches:
            self.spatial = np.asarray(state["spatial"], np.float64)

    def take_reservoir(self, b: dict[str, np.ndarray]) -> None:
        """One batch's reservoir candidates (res_keys, res_values, res_labels), when it sent any."""
        if "res_keys" in b:
            self._merge_reservoir(b)

    def _merge_reservoir(self, b: dict[str, np.ndarray]) -> None:
        self.sample["keys"].append(np.asarray(b["res_keys"], np.int64))
        self.sample["activations"].append(b["res_values"])
        if "res_labels" in b:
            self.sample["labels"].append(b["res_labels"])
        if sum(len(k) for k in self.sample["keys"]) > 2 * self.reservoir_size:  # memory stays O(k)
            self.sample = {name: [part] for name, part in self._kept().items()}

    def _kept(self) -> dict[str, np.ndarray]:
        """The held examples with the k smallest ranks, in rank order."""
        keys = np.concatenate(self.sample["keys"])
        order = smallest(sample_rank(keys, self.sample_seed), keys, self.reservoir_size)
        out = {"keys": keys[order], "activations": np.concatenate(self.sample["activations"])[order]}
        if self.sample["labels"]:
            out["labels"] = np.concatenate(self.sample["labels"])[order]
        return out

    def reservoir(self) -> dict[str, np.ndarray]:
        """The sampled examples' raw activations, labels and keys (data.keys), ordered by key: the
        reservoir_size examples whose seeded key ranks are smallest, whatever the order or the shards."""
        if not self.sample["keys"]:
            return {}
        kept = self._kept()
        order = np.argsort(kept["keys"], kind="stable")
        return {name: part[order] for name, part in kept.items()}

    def merge(self, o: LayerAccumulator) -> None:
        """Fold in the state of another pass over other examples (a shard): as if one pass saw both."""
        self.batches += o.batches
        self.examples += o.examples
        self.shape = self.shape or o.shape
        self.u = o.u if self.u is None else self.u if o.u is None else self.u.merge(o.u)
        self.zeros += o.zeros
        self.nans += o.nans
        self.infs += o.infs
        self.l2_sum += o.l2_sum
        self.sketch = self.sketch + o.sketch
        if o.saturated is not None:
            self.saturated = (self.saturated or 0.0) + o.saturated
        if o.spatial is not None:
            self.spatial = o.spatial if self.spatial is None else self.spatial + o.spatial
        if o.sample["keys"]:
            for name in self.sample:
                self.sample[name] += o.sample[name]
            self.sample = {name: [part] for name, part in self._kept().items()}

    def result(self, shape: list[int]) -> LayerStats:
        if self.u is None:
            raise ValueError(f"no batches were probed for layer {self.layer!r}")
        u = self.u
        n_total = float(u.n.sum())
        total_values = n_total + self.nans + self.infs
        mean = float((u.n * u.mean).sum() / max(n_total, 1.0))
        m2 = float(u.m2.sum() + (u.n * (u.mean - mean) ** 2).sum())
        unit_std = np.sqrt(u.m2 / np.maximum(u.n, 1.0))
        lo = float(u.min.min()) if n_total else math.nan
        hi = float(u.max.max()) if n_total else math.nan
        qs = quantiles(self.layout, self.sketch, self.percentile_levels, lo, hi)
        edges, hist = histogram(self.layout, self.sketch, lo, hi, self.bins) if n_total else (np.zeros(0), np.zeros(0))
        active_frac = u.active / np.maximum(u.n, 1.0)
        dead = [int(i) for i in np.flatnonzero(u.active == 0)]
        units = len(u.n)
        return LayerStats(
            layer=self.layer,
            shape=list(shape),
            examples=self.examples,
            count=int(n_total),
            mean=mean,
            std=math.sqrt(m2 / max(n_total, 1.0)),
            min=lo,
            max=hi,
            zero_fraction=self.zeros / max(total_values, 1.0),
            nan_count=int(self.nans),
            inf_count=int(self.infs),
            mean_l2_norm=self.l2_sum / max(self.examples, 1),
            percentiles={_pname(q): v for q, v in zip(self.percentile_levels, qs)},
            units=units,
            unit_mean=u.mean.tolist(),
            unit_std=unit_std.tolist(),
            unit_max=u.max.tolist(),
            unit_active_fraction=active_frac.tolist(),
            dead_units=dead,
            dead_count=len(dead),
            dead_fraction=len(dead) / max(units, 1),
            saturation_fraction=None if self.saturated is None else self.saturated / max(total_values, 1.0),
            histogram_edges=edges.tolist(),
            histogram_counts=hist.tolist(),
            spatial_mean=None if self.spatial is None else (self.spatial / max(self.examples, 1)).tolist(),
        )


def _pname(q: float) -> str:
    return f"p{q:g}".replace(".", "_")
