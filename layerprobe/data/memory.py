"""Data held in memory as numpy splits, served as tf.data pipelines: one implementation of `DataSource`.

Order of a split's pipeline: slices -> deterministic transforms -> cache -> (train: shuffle ->
repeat -> augmentation) -> batch -> prefetch. Caching before the augmentation keeps it fresh per epoch.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from layerprobe._tf import tf
from layerprobe.data.arrays import ArraySet
from layerprobe.data.checks import TRAIN_ONLY
from layerprobe.data.source import ElementSpec
from layerprobe.data.transforms import apply

# Arrays above this go through a chunked generator instead of graph constants. A constant is copied
# into the dataset's graph, which tf.data serialises and rewrites each time an iterator is made:
# ~50 ms per MB (a 61 MB split took 3.5 s to its first batch, 0.7 s through the generator).
CONSTANT_BYTES_LIMIT = 1 << 20


@dataclass(frozen=True)
class InMemorySource:
    """The splits as arrays plus what the transforms learnt from the train split."""

    name: str
    splits: dict[str, ArraySet]
    transforms: list[dict[str, Any]]
    fitted: dict[str, Any] = field(default_factory=dict)  # e.g. normalize mean/std, from train only
    digest: str = ""
    shuffle_seed: int | None = None  # None = the seed the input_fn is given (trainer.seed)
    repeat: int | None = None  # train epochs; None = forever
    cache_dir: str = ".cache/layerprobe"

    def split_names(self) -> tuple[str, ...]:
        return tuple(self.splits)

    def size(self, split: str) -> int:
        return self.splits[split].size

    def sizes(self) -> dict[str, int]:
        return {k: v.size for k, v in self.splits.items()}

    @functools.cached_property
    def element_spec(self) -> ElementSpec:
        split = next(iter(self.splits))
        ds = self.tf_dataset(split, training=False, batch_size=1, seed=0, max_examples=1, cache=False)
        return tuple({k: _unbatched(v) for k, v in group.items()} for group in ds.element_spec)  # type: ignore[return-value]

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
        """See `DataSource.tf_dataset`; shuffle_buffer 0 = the whole split."""
        part = self.splits[split]
        if max_examples is not None:
            part = part.take(np.arange(min(max_examples, part.size)))
        n = len(self.transforms)
        # everything before the first augmentation is deterministic and can be cached
        cut = next((i for i, t in enumerate(self.transforms) if t["name"] in TRAIN_ONLY), n) if training else n
        ds = array_dataset(part)
        if cut:
            fn = functools.partial(self._apply_range, lo=0, hi=cut, training=training, seed=seed)
            ds = ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        mode = {True: "memory", False: "none"}.get(cache, cache) if isinstance(cache, bool) else cache
        if mode == "memory":
            ds = ds.cache()
        elif mode == "file":
            ds = ds.cache(self._cache_file(split, cut, max_examples))
        if training:
            order_seed = seed if self.shuffle_seed is None else self.shuffle_seed
            ds = ds.shuffle(shuffle_buffer or part.size, seed=order_seed, reshuffle_each_iteration=True)
            ds = ds.repeat(self.repeat)
            if cut < n:  # the visit counter seeds the augmentation: fresh each epoch, same for a seed
                aug = functools.partial(self._apply_range, lo=cut, hi=n, training=True, seed=seed)
                ds = ds.enumerate().map(lambda k, e: aug(*e, counter=k), num_parallel_calls=tf.data.AUTOTUNE)
        ds = ds.batch(batch_size)
        return ds.prefetch(tf.data.AUTOTUNE if prefetch < 0 else prefetch)

    def _apply_range(self, f: Any, y: Any, **kw: Any) -> Any:
        return apply(self.transforms, self.fitted, f, y, **kw)

    def _cache_file(self, split: str, cut: int, max_examples: int | None) -> str:
        """One cache per data digest, split and transform prefix: a stale file is never read."""
        key = json.dumps([self.digest, split, self.transforms[:cut], max_examples], sort_keys=True, default=str)
        Path(self.cache_dir).mkdir(parents=True, exist_ok=True)
        return str(Path(self.cache_dir) / f"{self.name}-{split}-{hashlib.sha256(key.encode()).hexdigest()[:16]}")


def _unbatched(spec: tf.TensorSpec) -> tf.TensorSpec:
    return tf.TensorSpec(spec.shape[1:], spec.dtype, spec.name)


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
