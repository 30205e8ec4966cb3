"""The data source seam: what the engine, the probe and the tracking store may ask of any data.

In-memory arrays (`memory.InMemorySource`) and streamed files implement the same protocol, so a new
kind of data is a new class registered by name in `registry`, never a branch elsewhere.
No TensorFlow at import time: the TensorFlow types below are for type checkers only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import tensorflow as tf

# Per-example specs (no batch axis) of the features and the labels, after the deterministic transforms.
ElementSpec = tuple[Mapping[str, "tf.TensorSpec"], Mapping[str, "tf.TensorSpec"]]


@dataclass(frozen=True)
class LabelClasses:
    """How many classes a label has, and how the source knows (`12 class folders in data.params.path`)."""

    count: int
    known_from: str


@runtime_checkable
class DataSource(Protocol):
    """Prepared data: checked, split, with its fitted transform state, served as tf.data pipelines."""

    @property
    def name(self) -> str:
        """The data config's `name`: names caches, MLflow dataset inputs and data.json."""
        ...

    @property
    def digest(self) -> str:
        """sha256 identifying every byte the splits are read from (the same data, the same digest)."""
        ...

    @property
    def fitted(self) -> Mapping[str, Any]:
        """What the transforms learnt from the train split, e.g. `"0/x/mean"` -> array."""
        ...

    @property
    def element_spec(self) -> ElementSpec:
        """(features, labels) per example as the model sees them (eval transforms applied)."""
        ...

    def split_names(self) -> tuple[str, ...]:
        """The splits there are, e.g. ("train", "eval")."""
        ...

    def label_classes(self) -> Mapping[str, LabelClasses]:
        """What the source knows without a pass over the data of how many classes each integer
        label has (an image folder: its class folders; arrays: their largest label + 1); {} when it
        cannot tell (a stream: then only `data.num_classes` says)."""
        ...

    def size(self, split: str) -> int | None:
        """Examples in one split, or None when the source cannot tell without a pass over it."""
        ...

    def sizes(self) -> dict[str, int]:
        """Examples per split, counting them if need be."""
        ...

    def tf_dataset(
        self,
        split: str,
        *,
        training: bool,
        batch_size: int,
        seed: int,
        max_examples: int | None = None,
        shuffle_buffer: int = 0,
        cache: bool | str = True,
        prefetch: int = -1,
    ) -> tf.data.Dataset:
        """Batches of (features, labels) dicts. Training shuffles (seeded), repeats and augments;
        otherwise one pass in a fixed order. The first `max_examples` of the split when given.
        cache: True/"memory", "file" or False/"none"; shuffle_buffer 0 = the source's default."""
        ...

    def probe_dataset(
        self, split: str, *, batch_size: int, max_examples: int | None = None, shard: tuple[int, int] | None = None
    ) -> tf.data.Dataset:
        """Batches of (features, labels, keys) of one pass over `split` in a fixed order, eval
        transforms applied; keys (batch,) int64 are stable example keys (see `keys`). shard (i, n):
        only the batches j of that pass with j mod n = i: n shards are the pass, batch for batch."""
        ...
