"""Data held in memory as numpy splits, served as tf.data pipelines: one implementation of `DataSource`.

Small data: the whole split fits, so the train shuffle is a full one and `cache: memory` is cheap.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from layerprobe._tf import tf
from layerprobe.data.arrays import ArraySet
from layerprobe.data.serve import Served
from layerprobe.data.source import ElementSpec, LabelClasses

# Arrays above this go through a chunked generator instead of graph constants. A constant is copied
# into the dataset's graph, which tf.data serialises and rewrites each time an iterator is made:
# ~50 ms per MB (a 61 MB split took 3.5 s to its first batch, 0.7 s through the generator).
CONSTANT_BYTES_LIMIT = 1 << 20


@dataclass(frozen=True)
class InMemorySource(Served):
    """The splits as arrays plus what the transforms learnt from the train split."""

    name: str
    splits: dict[str, ArraySet]
    transforms: list[dict[str, Any]]
    fitted: dict[str, Any]  # e.g. normalize mean/std, from train only
    digest: str
    shuffle_seed: int | None  # data.shuffle_seed; None = the seed the input_fn is given (trainer.seed)
    repeat: int | None  # data.repeat; None = forever
    cache_dir: str  # data.cache_dir

    def split_names(self) -> tuple[str, ...]:
        return tuple(self.splits)

    def size(self, split: str) -> int:
        return self.splits[split].size

    def sizes(self) -> dict[str, int]:
        return {k: v.size for k, v in self.splits.items()}

    def label_classes(self) -> dict[str, LabelClasses]:
        """Each integer label's largest value + 1, over every split."""
        out = {}
        for name, y in next(iter(self.splits.values())).labels.items():
            if np.issubdtype(y.dtype, np.integer):
                top = max((int(p.labels[name].max()) for p in self.splits.values() if p.labels[name].size), default=-1)
                if top >= 0:
                    out[name] = LabelClasses(top + 1, f"label {name!r} holds values up to {top}")
        return out

    @functools.cached_property
    def element_spec(self) -> ElementSpec:
        return self.spec_of(next(iter(self.splits)))

    def _examples(self, split: str, *, training: bool, seed: int, max_examples: int | None) -> tf.data.Dataset:
        part = self.splits[split]
        if max_examples is not None:
            part = part.take(np.arange(min(max_examples, part.size)))
        return array_dataset(part)

    def _shuffle_buffer(self, split: str) -> int:
        return self.splits[split].size  # the whole split: a full shuffle

    def _keyed_examples(
        self, split: str, *, max_examples: int | None, blocks: tuple[int, int, int] | None
    ) -> tf.data.Dataset:
        """The key of an example is its index in the split."""
        part = self.splits[split]
        rows = np.arange(part.size if max_examples is None else min(max_examples, part.size), dtype=np.int64)
        if blocks is not None:
            i, n, size = blocks
            rows = rows[(rows // size) % n == i]
        if len(rows) < part.size:
            part = part.take(rows)
        keyed = tf.data.Dataset.zip((array_dataset(part), tf.data.Dataset.from_tensor_slices(rows)))
        return keyed.map(lambda fy, k: (fy[0], fy[1], k))


def array_dataset(part: ArraySet) -> tf.data.Dataset:
    """One (features, labels) element per example: graph constants when small, else a chunked generator."""
    tensors = (part.features, part.labels)
    nbytes = sum(a.nbytes for group in tensors for a in group.values())
    if nbytes <= CONSTANT_BYTES_LIMIT:
        return tf.data.Dataset.from_tensor_slices(tensors)
    return _chunked(part)


def _chunked(part: ArraySet, chunk: int = 1024) -> tf.data.Dataset:
    def gen():
        for start in range(0, part.size, chunk):
            sl = slice(start, start + chunk)
            yield {k: v[sl] for k, v in part.features.items()}, {k: v[sl] for k, v in part.labels.items()}

    def spec(group: dict[str, np.ndarray]) -> dict[str, tf.TensorSpec]:
        return {k: tf.TensorSpec((None, *v.shape[1:]), tf.as_dtype(v.dtype)) for k, v in group.items()}

    ds = tf.data.Dataset.from_generator(gen, output_signature=(spec(part.features), spec(part.labels)))
    return ds.unbatch()
