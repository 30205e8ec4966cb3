"""The probe session: an engine, a checkpoint and a split (or the first examples of it) in, the
mergeable accumulator state of every exposed layer out.

After training, at every checkpoint during training, on a shard of a split: the same call. The
engine runs the forward pass and folds each batch's summaries into state on the device
(Engine.reduce); the session only knows the summaries and their fold (graph_stats and graph_fold,
through SummaryOutputs) and the state on the host (accumulate).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from layerprobe.config.loaded import Config
from layerprobe.engines.base import Engine, ModelSummary, PredictRequest, ProbeFeed
from layerprobe.probe.accumulate import LayerAccumulator, LayerStats
from layerprobe.probe.sketch import SketchLayout

log = logging.getLogger(__name__)

BOUNDED_ACTIVATIONS = {"sigmoid": (0.0, 1.0), "tanh": (-1.0, 1.0), "hard_sigmoid": (0.0, 1.0), "softmax": (0.0, 1.0)}


@dataclass(frozen=True)
class ProbeState:
    """Mergeable state of one probe pass: an accumulator per layer (see accumulate.LayerAccumulator)."""

    layers: dict[str, LayerAccumulator]
    batches: int

    def stats(self, summary: ModelSummary) -> dict[str, LayerStats]:
        return {name: acc.result(summary.shape_of(name)) for name, acc in self.layers.items()}

    def merge(self, other: ProbeState) -> ProbeState:
        """This state and another pass's over other examples, folded as one pass (exact counts,
        sketch and reservoir; moments by Chan's merge)."""
        if set(self.layers) != set(other.layers):
            raise ValueError(f"cannot merge probes of layers {sorted(self.layers)} and {sorted(other.layers)}")
        for name, acc in self.layers.items():
            acc.merge(other.layers[name])
        return ProbeState(self.layers, self.batches + other.batches)


def probe_specs(c: Config, exposed: Sequence[str]) -> tuple[Any, ...]:
    """How each exposed layer is summarised in the graph (graph_stats.LayerProbeSpec)."""
    from layerprobe.probe.fused.kernel import choose
    from layerprobe.probe.graph_stats import LayerProbeSpec

    kernel = choose()  # once for every layer: a session's graph takes one path
    p = c.probe
    layout = SketchLayout(p.relative_accuracy)
    layers = c.model.layers
    specs = []
    for name in exposed:
        layer = layers.get(name, {})  # an inner layer of a nested model (`backbone/conv1_relu`) has no spec
        act = layer.get("activation") if layer.get("type") != "Softmax" else "softmax"
        specs.append(
            LayerProbeSpec(
                name=name,
                layout=layout,
                active_threshold=p.active_threshold,
                bounds=BOUNDED_ACTIVATIONS.get(act) if isinstance(act, str) else None,
                saturation_margin=p.saturation_margin,
                reservoir_size=p.reservoir_size,
                kernel=kernel,
            )
        )
    return tuple(specs)


class SummaryOutputs:
    """Each exposed layer's batch summaries, keyed `<layer>/<stat>`: the engine's ExtraOutputs (every
    batch's summaries to the host) and its PassReduction (folded on the device, graph_fold; the host
    receives the reservoir candidates per batch and the state once)."""

    BATCHES = "batches"  # the state's batch count (no layer key lacks a `/`)

    def __init__(self, specs: Sequence[Any]) -> None:
        self.specs = tuple(specs)

    # Equal specs compute equal outputs: a new session's outputs equal the last one's, so an engine
    # that keeps its traced function or graph per outputs traces or builds it once.
    def __eq__(self, other: object) -> bool:
        return isinstance(other, SummaryOutputs) and other.specs == self.specs

    def __hash__(self) -> int:
        return hash(self.specs)

    def __call__(self, tensors: Mapping[str, Any], feed: ProbeFeed) -> dict[str, Any]:
        return self.outputs(tensors, feed)

    def outputs(self, tensors: Mapping[str, Any], feed: ProbeFeed) -> dict[str, Any]:
        from layerprobe.probe.graph_stats import batch_summaries

        out: dict[str, Any] = {}
        for spec in self.specs:
            for key, value in batch_summaries(tensors[spec.name], spec, feed.label, feed.sample).items():
                out[f"{spec.name}/{key}"] = value
        return out

    def initial(self, outputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        from layerprobe.probe import graph_fold

        state: dict[str, np.ndarray] = {self.BATCHES: np.zeros((), np.int64)}
        for spec in self.specs:
            mine = _of_layer(outputs, spec.name)
            state.update({f"{spec.name}/{k}": v for k, v in graph_fold.initial(mine, spec.layout).items()})
        return state

    def fold(self, state: Mapping[str, Any], outputs: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        from layerprobe.probe import graph_fold

        batches = state[self.BATCHES]
        after: dict[str, Any] = {self.BATCHES: batches + 1}
        host: dict[str, Any] = {}
        for spec in self.specs:
            mine = _of_layer(outputs, spec.name)
            folded = graph_fold.fold(_of_layer(state, spec.name), mine, batches, spec.layout)
            after.update({f"{spec.name}/{k}": v for k, v in folded.items()})
            host.update({f"{spec.name}/{k}": v for k, v in mine.items() if k.startswith("res_")})
        return after, host


def _of_layer(named: Mapping[str, Any], layer: str) -> dict[str, Any]:
    """The `<layer>/<stat>` entries of `named`, by stat (layer names may hold `/`: backbone/conv1_relu)."""
    return {key.rpartition("/")[2]: v for key, v in named.items() if key.rpartition("/")[0] == layer}


class ProbeSession:
    """Probes the exposed layers of one model (config `c`) through `engine`."""

    def __init__(self, c: Config, engine: Engine, exposed: Sequence[str], label: str | None) -> None:
        self.c, self.engine, self.exposed, self.label = c, engine, list(exposed), label
        self.outputs = SummaryOutputs(probe_specs(c, self.exposed))

    def accumulators(self) -> dict[str, LayerAccumulator]:
        p = self.c.probe
        layout = SketchLayout(p.relative_accuracy)
        return {
            n: LayerAccumulator(n, layout, p.percentiles, p.histogram_bins, p.reservoir_size, p.sample_seed)
            for n in self.exposed
        }

    def run(
        self,
        data: Any,
        split: str | None = None,
        checkpoint: str | None = None,
        max_examples: int | None = None,
        shard: tuple[int, int] | None = None,
    ) -> ProbeState:
        """One pass over `split` (default probe.split; its first `max_examples`, default
        probe.max_examples; shard (i, n): the i-th of n disjoint parts of them) at `checkpoint`
        (default: the engine's latest). The split's size is never needed: states of the shards merge
        (`ProbeState.merge`) into the state of one pass."""
        p = self.c.probe
        split = split or p.split
        max_examples = p.max_examples if max_examples is None else max_examples
        batch = p.batch_size or self.c.data.batch_size
        request = PredictRequest(split, batch, self.label, max_examples, p.reservoir_size, p.sample_seed, shard)
        accs = self.accumulators()

        def on_batch(host: dict[str, np.ndarray]) -> None:  # the reservoir candidates only
            for name, acc in accs.items():
                acc.take_reservoir(_of_layer(host, name))

        state = self.engine.reduce(data, request, self.outputs, on_batch, checkpoint)
        batches = int(state[SummaryOutputs.BATCHES])
        for name, acc in accs.items():
            acc.load_pass(_of_layer(state, name), batches)
        return ProbeState(accs, batches)
