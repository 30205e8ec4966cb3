"""The probe session at each probe point: statistics, linear probes and CKA against the final point.

Every point probes the first `examples` of the probe split, so the values of a point equal a probe of
the same checkpoint on the same subset after training (ProbeSession.run with max_examples).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from layerprobe.engines.base import Checkpoint, ModelSummary
from layerprobe.probe.accumulate import LayerStats
from layerprobe.probe.session import ProbeSession, ProbeState

log = logging.getLogger(__name__)
# The points' metric keys, dynamics/<layer>/<stat>: a subset's values never share a key (and so an
# MLflow series) with the final probe's probe/<layer>/<stat>, which are of the whole probe split.
PREFIX = "dynamics"


@dataclass(frozen=True)
class DynamicsPoint:
    """One probe point: every exposed layer's statistics on the subset at global step `step`."""

    step: int
    stats: dict[str, LayerStats]
    linear_acc: dict[str, float] = field(default_factory=dict)  # layers probed at this point
    cka_to_final: dict[str, float] = field(default_factory=dict)

    def metrics(self) -> dict[str, float]:
        """dynamics/<layer>/<stat>, linear_acc and cka_to_final: the subset's values, under keys of
        their own (the final probe's `probe/<layer>/<stat>` are of the whole probe split)."""
        out = {f"{PREFIX}/{n}/{k}": v for n, s in self.stats.items() for k, v in s.scalars().items()}
        out.update({f"{PREFIX}/{n}/linear_acc": v for n, v in self.linear_acc.items()})
        out.update({f"{PREFIX}/{n}/cka_to_final": v for n, v in self.cka_to_final.items()})
        return out


@dataclass(frozen=True)
class Dynamics:
    """The probe points of one run, oldest first, and the size of the subset they probed."""

    points: list[DynamicsPoint]
    examples: int

    @property
    def steps(self) -> list[int]:
        return [p.step for p in self.points]

    @property
    def layers(self) -> list[str]:
        return list(self.points[0].stats) if self.points else []

    def records(self) -> list[tuple[dict[str, float], int]]:
        """(metrics, step) per point for the tracker's batch call: every value of dynamics.json."""
        return [(p.metrics(), p.step) for p in self.points]

    def to_dict(self) -> dict[str, Any]:
        """Series per layer (dynamics.json): the compare report overlays runs from it."""
        layers: dict[str, Any] = {}
        for n in self.layers:
            stats = [p.stats[n] for p in self.points]
            layers[n] = {
                "scalars": {k: [s.scalars().get(k) for s in stats] for k in stats[0].scalars()},
                "linear_acc": [p.linear_acc.get(n) for p in self.points],
                "cka_to_final": [p.cka_to_final.get(n) for p in self.points],
                "histograms": [{"edges": s.histogram_edges, "counts": s.histogram_counts} for s in stats],
            }
        return {"examples": self.examples, "steps": self.steps, "layers": layers}


def probe_points(
    session: ProbeSession,
    data: Any,
    summary: ModelSummary,
    checkpoints: Sequence[Checkpoint],
    examples: int,
    linear_every: int = 1,
    cka: bool = True,
    seed: int = 0,
) -> Dynamics:
    """Probe each checkpoint on the first `examples` of the probe split (one ProbeSession.run each).

    Linear probes run at every `linear_every`-th point (0: none) and CKA compares each point's sample
    with the last point's, when the session keeps a reservoir sample (probe.reservoir_size > 0).
    """
    states = []
    for i, ck in enumerate(checkpoints):
        states.append(session.run(data, checkpoint=ck.path, max_examples=examples))
        log.info("dynamics: probed step %d (%d of %d)", ck.step, i + 1, len(checkpoints))
    return points_of(summary, [ck.step for ck in checkpoints], states, examples, linear_every, cka, seed)


def points_of(
    summary: ModelSummary,
    steps: Sequence[int],
    states: Sequence[ProbeState],
    examples: int,
    linear_every: int = 1,
    cka: bool = True,
    seed: int = 0,
) -> Dynamics:
    """The points of probe states already made, one per step (oldest first): see `probe_points`."""
    points, samples = [], []
    for i, (step, state) in enumerate(zip(steps, states)):
        res = {n: acc.reservoir() for n, acc in state.layers.items()}
        lin = _linear(res, seed) if linear_every and i % linear_every == 0 else {}
        points.append(DynamicsPoint(step, state.stats(summary), lin))
        samples.append(res)
    if cka and points:
        points = [
            DynamicsPoint(p.step, p.stats, p.linear_acc, _cka_to(s, samples[-1])) for p, s in zip(points, samples)
        ]
    return Dynamics(points, examples)


def _linear(res: Mapping[str, Mapping[str, np.ndarray]], seed: int) -> dict[str, float]:
    """Linear-probe accuracy per layer, with one BLAS thread: on these small fits (256 x 32-64
    features) OpenBLAS's threads contending with TensorFlow's made each fit 0.1-0.9 s instead of
    7-40 ms (same iterations, same result)."""
    from threadpoolctl import threadpool_limits

    from layerprobe.analysis import linear_probe

    out = {}
    with threadpool_limits(1):
        for name, r in res.items():
            if "labels" not in r:
                continue
            try:
                out[name] = linear_probe(r["activations"], r["labels"], seed).accuracy
            except ValueError as e:  # too few examples or classes in the subset: said once per point
                log.info("dynamics: no linear probe for %s: %s", name, e)
    return out


def _cka_to(
    res: Mapping[str, Mapping[str, np.ndarray]], final: Mapping[str, Mapping[str, np.ndarray]]
) -> dict[str, float]:
    from layerprobe.analysis import linear_cka

    out = {}
    for name, r in res.items():
        if r and final.get(name) and len(r["keys"]) >= 3:
            try:
                out[name] = float(linear_cka(r["activations"], final[name]["activations"]))
            except ValueError as e:  # NaN/Inf activations: no CKA for this layer, the rest goes on
                log.info("dynamics: no CKA to the final checkpoint for %s: %s", name, e)
    return out
