"""The engine seam: what the runner, the probe session and reprobe ask of a training backend.

An engine owns one model_dir and knows how to build the graph, train, evaluate, predict batches with
extra outputs, export and list its checkpoints. Nothing outside `layerprobe/engines/` knows which
engine runs. No TensorFlow import here.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

SNAPSHOT_DIR = "dynamics"  # under model_dir: the snapshots probed for training dynamics, all kept
KEPT_DIR = "kept"  # under model_dir: the checkpoints runs were evaluated at, past keep_checkpoint_max


def snapshot_prefix(directory: str | Path, step: int) -> str:
    """Where either engine saves the snapshot of global step `step` (a TF checkpoint prefix)."""
    return str(Path(directory) / f"snapshot-{step}")


def to_snapshot_at_start(directory: str | Path, step: int, steps: Collection[int]) -> bool:
    """Whether training that starts at `step` saves the model it starts from as a snapshot: step 0
    from scratch, or a resumed checkpoint whose snapshot the stopped run did not take (the Estimator
    writes its checkpoint before any hook of ours hears that step, and Ctrl-C can come between)."""
    return step in steps and not Path(snapshot_prefix(directory, step) + ".index").exists()


# The layer tensors of one built graph by name, and the probe feed of the batch (label: (batch,) or
# None; sample: ((batch,) bool in the reservoir, (batch,) int64 example index) or None) -> named
# tensors that PREDICT returns beside the outputs. The probe session passes its summaries this way.
# The sample's examples are candidates for the reservoir, a superset of the final one; the index is
# the example's stable key (data.keys).
ExtraOutputs = Callable[[Mapping[str, Any], "ProbeFeed"], Mapping[str, Any]]


class PassReduction(Protocol):
    """Extra outputs folded over a whole pass on the device (the probe's accumulators): the host
    receives `fold`'s small per-batch outputs each batch and the state once, at the end of the pass.

    The state lives where the engine keeps it (Estimator: local variables of the predict graph; Keras:
    variables of the traced predict function), so no O(state) array crosses to the host per batch."""

    def outputs(self, tensors: Mapping[str, Any], feed: ProbeFeed) -> Mapping[str, Any]:
        """One batch's tensors, built in the graph from the layer tensors (as an ExtraOutputs)."""

    def initial(self, outputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """The state before the first batch, shaped by the static shapes of `outputs`."""

    def fold(self, state: Mapping[str, Any], outputs: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """(the state after this batch, what the host receives of this batch): in the graph."""


# (one batch's host outputs of a PassReduction) -> None
BatchSink = Callable[[dict[str, np.ndarray]], None]


@dataclass(frozen=True)
class ProbeFeed:
    label: Any = None
    sample: tuple[Any, Any] | None = None


@dataclass(frozen=True)
class PredictRequest:
    """One pass over a split (or its first `max_examples`) in batches, in the split's order."""

    split: str
    batch_size: int
    label: str | None = None  # handed to ExtraOutputs as ProbeFeed.label
    max_examples: int | None = None
    reservoir: int = 0  # examples the probe keeps: the smallest ranks of their keys (data.keys)
    sample_seed: int = 0  # seeds the ranks
    shard: tuple[int, int] | None = None  # (i, n): only the i-th of n disjoint parts of the split


@dataclass(frozen=True)
class Checkpoint:
    step: int
    path: str


@dataclass(frozen=True)
class LayerRow:
    name: str
    type: str
    output_shape: list[Any]  # per example
    params: int
    exposed: bool
    weight_names: tuple[str, ...] = ()  # checkpoint keys, e.g. conv1/kernel


@dataclass(frozen=True)
class ModelSummary:
    rows: list[LayerRow]
    # the nested models' weights files (graph.warm.WarmStart): what the run's provenance tags record
    sources: tuple[Any, ...] = ()

    @property
    def total_params(self) -> int:
        return sum(r.params for r in self.rows)

    def shape_of(self, layer: str) -> list[Any]:
        return next(r.output_shape for r in self.rows if r.name == layer)

    def table(self) -> str:
        lines = [f"{'layer':<16} {'type':<24} {'output shape':<20} {'params':>10}  exposed"]
        for r in self.rows:
            shape = str(tuple(r.output_shape))
            lines.append(f"{r.name:<16} {r.type:<24} {shape:<20} {r.params:>10}  {'yes' if r.exposed else ''}")
        lines.append(f"total parameters: {self.total_params}")
        return "\n".join(lines)


def layer_rows(graph: Any, exposed: set[str]) -> list[LayerRow]:
    """The layer table of a built graph (graph.Graph), the same on every engine: a row per layer with
    its per-example output shape, parameter count and checkpoint keys, then the nested models' inner
    layers (their weights count in the nested model's own row)."""
    from layerprobe.graph.keys import model_weight_keys, variables

    def dims(tensor: Any) -> list[Any]:
        shape = tensor.shape
        return list(shape.as_list() if hasattr(shape, "as_list") else shape)[1:]

    keys = model_weight_keys(graph.layers.values())
    rows = []
    for name, layer in graph.layers.items():
        weights = variables(layer)
        params = int(sum(np.prod(w.shape) for w in weights))
        keyed = tuple(keys[id(w)] for w in weights)
        rows.append(LayerRow(name, type(layer).__name__, dims(graph.tensors[name]), params, name in exposed, keyed))
    for name, layer in graph.inner.items():
        rows.append(LayerRow(name, type(layer).__name__, dims(graph.tensors[name]), 0, name in exposed))
    return rows


# (records of ({metric: value}, step)) -> None: where training progress goes (the tracker's batch call)
ProgressSink = Callable[[Sequence[tuple[Mapping[str, float], int]]], None]
# (global step, eval metrics of the checkpoint saved at that step) -> True to stop training there:
# how a sweep's pruner hears intermediate results without the engine knowing of any sweeper.
EvaluationCallback = Callable[[int, Mapping[str, float]], bool]


class ModelDirFiles:
    """What every engine finds the same way in its model_dir: training-dynamics snapshots, the
    checkpoints kept for runs, TensorBoard event files."""

    model_dir: str

    @property
    def snapshot_dir(self) -> str:
        return str(Path(self.model_dir) / SNAPSHOT_DIR)

    def snapshots(self) -> list[Checkpoint]:
        return _by_step(Path(self.snapshot_dir).glob("snapshot-*.index"))

    def event_files(self) -> list[str]:
        return sorted(str(p) for p in Path(self.model_dir).rglob("events.out.tfevents.*"))

    def listed(self) -> list[Checkpoint]:
        """The checkpoints the model_dir's state file lists (the newest keep_checkpoint_max)."""
        from layerprobe.engines.state_file import listed

        return [Checkpoint(step, path) for step, path in listed(self.model_dir)]

    def kept(self) -> list[Checkpoint]:
        """The copies `keep` made, oldest first (a step twice when its model_dir was retrained)."""
        return _by_step(Path(self.model_dir, KEPT_DIR).glob("[!.]*/*.index"))  # not a copy under way

    def keep(self, checkpoint: Checkpoint) -> Checkpoint:
        """Hard links (copies where the file system has none) of the checkpoint's files in
        `kept/<step>-<digest>/`, which no rotation deletes; the copy, made once."""
        digest = self.digest(checkpoint)
        source = Path(checkpoint.path)
        target = Path(self.model_dir, KEPT_DIR, f"{checkpoint.step}-{digest[:16]}")
        if source.parent == target or target.is_dir():
            return Checkpoint(checkpoint.step, str(target / source.name))
        partial = target.with_name(f".{target.name}.{os.getpid()}")  # renamed whole: never half a copy
        partial.mkdir(parents=True, exist_ok=True)
        for f in source.parent.glob(source.name + ".*"):
            try:
                os.link(f, partial / f.name)
            except OSError:
                shutil.copy2(f, partial / f.name)
        try:
            partial.rename(target)
        except OSError:  # another process kept it first
            shutil.rmtree(partial, ignore_errors=True)
        return Checkpoint(checkpoint.step, str(target / source.name))

    def checkpoints(self) -> list[Checkpoint]:
        listed = self.listed()
        steps = {k.step for k in listed}
        return sorted([*listed, *(k for k in self.kept() if k.step not in steps)], key=lambda c: c.step)

    def latest(self) -> Checkpoint | None:
        kept = self.checkpoints()
        return kept[-1] if kept else None

    def at_step(self, step: int, digest: str | None = None) -> Checkpoint | None:
        found = [k for k in [*self.listed(), *self.kept()] if k.step == step]
        return next((k for k in found if digest is None or self.digest(k) == digest), None)

    def digest(self, checkpoint: Checkpoint) -> str:
        """sha256 over the checkpoint's files: the bitwise identity of its weights."""
        from layerprobe.provenance import checkpoint_digest

        return checkpoint_digest(checkpoint.path)


def _by_step(index_files: Iterable[Path]) -> list[Checkpoint]:
    """Checkpoints by their `.index` files, named `<prefix>-<step>.index`, oldest first."""
    found = (Checkpoint(int(p.stem.split("-")[-1]), str(p.with_suffix(""))) for p in index_files)
    return sorted(found, key=lambda c: c.step)


class Engine(Protocol):
    """A training backend bound to one model_dir."""

    name: str
    model_dir: str

    def summary(self, data: Any, exposed: set[str]) -> ModelSummary:
        """Build the training graph once without touching model_dir: shape and loss errors surface
        as ConfigError, and the layer table comes for free."""

    def train(
        self,
        data: Any,
        until_step: int,
        progress: ProgressSink | None = None,
        on_evaluation: EvaluationCallback | None = None,
        snapshots: Sequence[int] = (),
    ) -> int:
        """Train (or resume) up to global step `until_step`; returns the step reached. With
        `on_evaluation`, each checkpoint saved on the way is evaluated on the eval split and handed to
        it; training stops early at the first True it returns. At each step of `snapshots` that this
        call passes (0: the initialised model, when starting from scratch) the model is also saved
        where `snapshots()` lists it, without changing the training trajectory."""

    def evaluate(self, data: Any, split: str = "eval", checkpoint: str | None = None) -> dict[str, float]:
        """Metrics of one pass over `split` at `checkpoint` (default: the latest)."""

    def predict(
        self, data: Any, request: PredictRequest, extra: ExtraOutputs, checkpoint: str | None = None
    ) -> Iterator[dict[str, np.ndarray]]:
        """One dict of numpy arrays per batch: the outputs of `extra` (never per example)."""

    def reduce(
        self,
        data: Any,
        request: PredictRequest,
        reduction: PassReduction,
        on_batch: BatchSink,
        checkpoint: str | None = None,
    ) -> dict[str, np.ndarray]:
        """One pass of `reduction` over the request's batches: `on_batch` hears each batch's host
        outputs; returns the state after the last batch (numpy arrays, read once)."""

    def export(self, export_base: str, checkpoint: str | None = None) -> str:
        """A SavedModel of the outputs (no probe ops) under export_base; returns its directory."""

    def checkpoints(self) -> list[Checkpoint]:
        """The checkpoints model_dir keeps, one per step, oldest first: the newest
        trainer.keep_checkpoint_max and those `keep` kept for runs."""

    def latest(self) -> Checkpoint | None:
        """The newest kept checkpoint; None before training."""

    def at_step(self, step: int, digest: str | None = None) -> Checkpoint | None:
        """The kept checkpoint of global step `step` (whose `digest` is `digest`, when given: the one
        a run logged, not another trained to the same step), if model_dir keeps it."""

    def keep(self, checkpoint: Checkpoint) -> Checkpoint:
        """Keep `checkpoint` past trainer.keep_checkpoint_max (a run refers to it); returns the copy
        that `checkpoints` and `at_step` find after the original rotated away."""

    def variable_names(self, checkpoint: Checkpoint) -> set[str]:
        """The weights a checkpoint holds, by the layer-table rows' keys (`conv1/kernel`)."""

    def digest(self, checkpoint: Checkpoint) -> str:
        """sha256 of the checkpoint's files (the bitwise identity of its weights)."""

    def snapshots(self) -> list[Checkpoint]:
        """The snapshots saved for training dynamics (every one kept), oldest first."""

    def event_files(self) -> list[str]:
        """TensorBoard event files written while training, to be logged with the run."""
