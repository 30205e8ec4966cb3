"""The part of a tf.data pipeline every source shares, after its examples are read.

Order: examples -> deterministic transforms -> cache -> (train: shuffle -> repeat -> augmentation)
-> batch -> prefetch. Caching before the augmentation keeps it fresh per epoch.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any

from layerprobe._tf import tf
from layerprobe.data.checks import TRAIN_ONLY
from layerprobe.data.source import ElementSpec, LabelClasses
from layerprobe.data.transforms import apply
from layerprobe.schema import DataConfig


class Served:
    """`DataSource.tf_dataset` for a source that gives its split's examples one by one (`_examples`)."""

    name: str
    transforms: list[dict[str, Any]]
    fitted: dict[str, Any]
    digest: str
    shuffle_seed: int | None  # None = the seed the input_fn is given (trainer.seed)
    repeat: int | None  # train epochs; None = forever
    cache_dir: str
    caches_in_memory = True  # False: `cache: memory` is ignored, a stream is never held whole

    def _examples(self, split: str, *, training: bool, seed: int, max_examples: int | None) -> tf.data.Dataset:
        """Unbatched (features, labels) of a split, before any transform."""
        raise NotImplementedError

    def _transformed_examples(
        self, split: str, fn: Any, *, training: bool, seed: int, max_examples: int | None
    ) -> tf.data.Dataset:
        """`_examples` with `fn` (example -> example) applied to each; a source may fold it into its own
        per-record work instead of a map of its own."""
        ds = self._examples(split, training=training, seed=seed, max_examples=max_examples)
        return ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    def _shuffle_buffer(self, split: str) -> int:
        """The train shuffle buffer when the config gives 0."""
        raise NotImplementedError

    def label_classes(self) -> dict[str, LabelClasses]:
        """See `DataSource.label_classes`: a stream cannot tell without reading every record."""
        return {}

    def _keyed_examples(
        self, split: str, *, max_examples: int | None, blocks: tuple[int, int, int] | None
    ) -> tf.data.Dataset:
        """Unbatched (features, labels, key) of one pass over a split in order (its first
        `max_examples`), before any transform; blocks (i, n, size): only the examples at positions p
        of that order with (p // size) mod n = i, picked before they are parsed."""
        raise NotImplementedError

    @staticmethod
    def _in_blocks(
        ds: tf.data.Dataset, max_examples: int | None, blocks: tuple[int, int, int] | None
    ) -> tf.data.Dataset:
        """Of the first `max_examples` elements of `ds` (all for None), those at positions p with
        (p // size) mod n = i, blocks = (i, n, size); all of them for None. Cheap when taken before
        parsing: the rest are only counted."""
        if max_examples is not None:
            ds = ds.take(max_examples)
        if blocks is None:
            return ds
        i, n, size = blocks  # tf.equal: `==` on tensors is identity in the Estimator's graph mode
        return ds.enumerate().filter(lambda pos, e: tf.equal((pos // size) % n, i)).map(lambda pos, e: e)

    def probe_dataset(
        self, split: str, *, batch_size: int, max_examples: int | None = None, shard: tuple[int, int] | None = None
    ) -> tf.data.Dataset:
        """See `DataSource.probe_dataset`. A shard is made of whole batches of the one-pass order
        (batch j goes to shard j mod n): each batch's summaries are those of one pass, so the merged
        shards equal it to float64 rounding (float32 batch sums over other batches would not)."""
        blocks = None if shard is None else (*shard, batch_size)
        ds = self._keyed_examples(split, max_examples=max_examples, blocks=blocks)
        if self.transforms:
            n = len(self.transforms)
            fn = functools.partial(self._apply_range, lo=0, hi=n, training=False, seed=0)
            ds = ds.map(lambda f, y, k: (*fn(f, y), k), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)

    def spec_of(self, split: str) -> ElementSpec:
        """Per-example (features, labels) specs after the eval transforms."""
        ds = self.tf_dataset(split, training=False, batch_size=1, seed=0, max_examples=1, cache=False)
        return tuple({k: tf.TensorSpec(v.shape[1:], v.dtype) for k, v in group.items()} for group in ds.element_spec)  # type: ignore[return-value]

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
        """See `DataSource.tf_dataset`."""
        n = len(self.transforms)
        # everything before the first augmentation is deterministic and can be cached
        cut = next((i for i, t in enumerate(self.transforms) if t["name"] in TRAIN_ONLY), n) if training else n
        if cut:
            fn = functools.partial(self._apply_range, lo=0, hi=cut, training=training, seed=seed)
            ds = self._transformed_examples(split, fn, training=training, seed=seed, max_examples=max_examples)
        else:
            ds = self._examples(split, training=training, seed=seed, max_examples=max_examples)
        mode = {True: "memory", False: "none"}.get(cache, cache) if isinstance(cache, bool) else cache
        if mode == "memory" and self.caches_in_memory:
            ds = ds.cache()
        elif mode == "file":
            ds = ds.cache(self._cache_file(split, cut, max_examples))
        if training:
            order_seed = seed if self.shuffle_seed is None else self.shuffle_seed
            ds = ds.shuffle(
                shuffle_buffer or self._shuffle_buffer(split), seed=order_seed, reshuffle_each_iteration=True
            )
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


class Streamed(Served):
    """A source of files streamed through tf.data: split sizes counted when it opens, nothing held."""

    caches_in_memory = False
    _files: dict[str, Any]  # split -> what it reads
    _sizes: dict[str, int]

    def _take_config(self, data_cfg: DataConfig) -> None:
        """What every streamed source takes from data.*: name, transforms, shuffling, repeat, cache, skipping."""
        self.name = data_cfg.name
        self.transforms = [dict(t) for t in data_cfg.transforms]
        self.shuffle_seed, self.repeat = data_cfg.shuffle_seed, data_cfg.repeat
        self.cache_dir = data_cfg.cache_dir
        self.skip_corrupt = data_cfg.skip_corrupt

    def split_names(self) -> tuple[str, ...]:
        return tuple(self._files)

    def size(self, split: str) -> int:
        return self._sizes[split]

    def sizes(self) -> dict[str, int]:
        return dict(self._sizes)

    @property
    def element_spec(self) -> ElementSpec:
        return self.spec_of("train")
