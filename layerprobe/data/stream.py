"""TFRecord shards streamed through tf.data, never loaded whole: a `DataSource` for data at any scale.

Pipeline: file list (train: shuffled by the seed) -> parallel interleave over shards (deterministic
order) -> split filter -> parse and decode in a parallel `map` -> the shared transforms, shuffle buffer,
batch and prefetch of `serve.Served`. Splits need no loading: per-split files (`splits.method: files`)
or a seeded hash of (file name, record index) (`method: fraction`), stable across runs, machines and
machines. Sizes are counted when the source is opened, by one pass that reads the records without parsing
them (it also finds truncated files and bad checksums before training).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from layerprobe._tf import tf
from layerprobe.data.arrays import known_params, required
from layerprobe.data.digests import files_digest
from layerprobe.data.fitting import check_and_fit_stream
from layerprobe.data.records import parser, tf_message
from layerprobe.data.serve import Served
from layerprobe.data.source import ElementSpec
from layerprobe.data.tfrecord import COMPRESSION, files_of
from layerprobe.errors import ConfigError

log = logging.getLogger(__name__)

HASH_BUCKETS = 1 << 20  # eval = records whose keyed hash falls below eval_fraction of the buckets
CHECKED_RECORDS = 8  # per file, parsed and decoded before training: a wrong spec fails there, by file
SHUFFLE_BUFFER = 10_000  # examples, when the config gives 0: memory stays bounded whatever the split size
CYCLE_LENGTH = 8  # shards read at once


class TFRecordStream(Served):
    """params = {path, compression, features, labels} as for `tfrecord` (see `records` for the specs)."""

    caches_in_memory = False

    def __init__(self, data_cfg: Mapping[str, Any]) -> None:
        params = dict(data_cfg.get("params") or {})
        known_params("tfrecord_stream", params, ("path", "compression", "features", "labels"))
        self.name = data_cfg["name"]
        self.transforms = [dict(t) for t in data_cfg.get("transforms") or []]
        self.shuffle_seed, self.repeat = data_cfg.get("shuffle_seed"), data_cfg.get("repeat")
        self.cache_dir = data_cfg.get("cache_dir") or ".cache/layerprobe"
        self._compression = params.get("compression") or ""
        if self._compression not in COMPRESSION:
            raise ConfigError("data.params.compression", self._compression, "unknown compression", COMPRESSION)
        if not params.get("features"):
            raise ConfigError("data.params.features", params.get("features"), "declare at least one feature")
        self._names = {g: list(params.get(g) or {}) for g in ("features", "labels")}
        specs = {n: (f"data.params.{g}.{n}", s) for g in self._names for n, s in (params.get(g) or {}).items()}
        self._parse = parser(specs)
        self._files, self._fraction, self._split_seed = _split_files(params, data_cfg.get("splits") or {})
        for split, files in self._files.items():
            self._check_first_records(files, self._where(split))
        names = {split: [Path(f).name for f in files] for split, files in self._files.items()}
        split_def = repr((sorted(names.items()), self._fraction, self._split_seed)).encode()  # no directories
        every = sorted({f for files in self._files.values() for f in files})
        self.digest = hashlib.sha256(files_digest(every, self.cache_dir).encode() + split_def).hexdigest()
        self._sizes = self._count()
        self.fitted: dict[str, Any] = check_and_fit_stream(self.transforms, self._examples("train", training=False), {})

    def split_names(self) -> tuple[str, ...]:
        return tuple(self._files)

    def size(self, split: str) -> int:
        return self._sizes[split]

    def sizes(self) -> dict[str, int]:
        return dict(self._sizes)

    @property
    def element_spec(self) -> ElementSpec:
        return self.spec_of("train")

    @property
    def splits(self) -> dict[str, SplitView]:
        """Per split: empty arrays of each feature's dtype and shape, and `.size` counted. Only for the
        engine code that predates `size()`/`element_spec`; the examples themselves are never here."""
        sizes = self.sizes()
        spec = self._examples("train", training=False).element_spec
        empty = [{k: np.zeros((0, *v.shape), v.dtype.as_numpy_dtype) for k, v in g.items()} for g in spec]
        return {split: SplitView(empty[0], empty[1], sizes[split]) for split in self._files}

    def _records(self, split: str, *, training: bool, seed: int = 0) -> tf.data.Dataset:
        files = tf.data.Dataset.from_tensor_slices(self._files[split])
        if training:  # a seeded file order; the shuffle buffer mixes records within it
            order_seed = seed if self.shuffle_seed is None else self.shuffle_seed  # as the record shuffle
            files = files.shuffle(len(self._files[split]), seed=order_seed, reshuffle_each_iteration=True)
        keep = self._keep(split)

        def read(path: Any) -> tf.data.Dataset:
            records = tf.data.TFRecordDataset(path, compression_type=self._compression)
            if keep is None:
                return records
            name = tf.strings.split(path, "/")[-1]  # the file name, not where it lies: stable across machines
            return records.enumerate().filter(lambda i, r: keep(name, i)).map(lambda i, r: r)

        cycle = min(CYCLE_LENGTH, len(self._files[split]))
        return files.interleave(read, cycle_length=cycle, num_parallel_calls=cycle, deterministic=True)

    def _keep(self, split: str) -> Any:
        """None (every record of the split's files) or `(file name, record index) -> bool`."""
        if self._fraction is None:
            return None
        if split == "eval":
            return self._in_eval
        return lambda name, index: tf.logical_not(self._in_eval(name, index))

    def _in_eval(self, name: Any, index: Any) -> Any:
        """Whether a record is an eval record: its keyed hash falls below eval_fraction of the buckets."""
        key = tf.strings.join([name, tf.strings.as_string(index)], ":")
        bucket = tf.strings.to_hash_bucket_strong(key, HASH_BUCKETS, [self._split_seed, 0])
        return bucket < int(round(float(self._fraction or 0) * HASH_BUCKETS))

    def _eval_flags(self, path: str) -> tf.data.Dataset:
        """Per record of a file: 1 when it is an eval record of a fraction split, else 0."""
        records = tf.data.TFRecordDataset(path, compression_type=self._compression)
        if self._fraction is None:
            return records.map(lambda r: tf.constant(0, tf.int64))
        name = tf.constant(Path(path).name)
        return records.enumerate().map(lambda i, r: tf.cast(self._in_eval(name, i), tf.int64))

    def _where(self, split: str) -> str:
        """The config path that names a split's files."""
        return "data.splits.eval_params.path" if split == "eval" and self._fraction is None else "data.params.path"

    def _count(self) -> dict[str, int]:
        """Examples per split, by one pass over every file's records (no parsing): a truncated file or a
        bad checksum is one line naming the file, before training."""
        counts = dict.fromkeys(self._files, 0)
        for split, files in self._files.items():
            if self._fraction is not None and split == "eval":
                continue  # counted with train: one pass over the shared files
            for path in files:
                try:
                    total, evals = self._eval_flags(path).reduce(
                        (np.int64(0), np.int64(0)), lambda acc, e: (acc[0] + 1, acc[1] + e)
                    )
                except (tf.errors.InvalidArgumentError, tf.errors.DataLossError) as e:
                    raise ConfigError(
                        self._where(split), path, f"cannot be read as records ({tf_message(e)})"
                    ) from None
                counts[split] += int(total) - int(evals)
                if self._fraction is not None:
                    counts["eval"] += int(evals)
        for split, count in counts.items():
            if not count:
                raise ConfigError("data.splits", split, "split is empty")
        return counts

    def _examples(
        self, split: str, *, training: bool, seed: int = 0, max_examples: int | None = None
    ) -> tf.data.Dataset:
        ds = self._records(split, training=training, seed=seed)
        if max_examples is not None:
            ds = ds.take(max_examples)
        return ds.map(self._pair, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    def _pair(self, record: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        parsed = self._parse(record)
        return {n: parsed[n] for n in self._names["features"]}, {n: parsed[n] for n in self._names["labels"]}

    def _shuffle_buffer(self, split: str) -> int:
        return SHUFFLE_BUFFER

    def _check_first_records(self, files: list[str], where: str) -> None:
        """Parse and decode the first records of each file, so a wrong spec or a bad file is one line
        naming the file before training."""
        for path in files:
            ds = tf.data.TFRecordDataset(path, compression_type=self._compression).take(CHECKED_RECORDS)
            try:
                for _ in ds.map(self._pair):
                    pass
            except (tf.errors.InvalidArgumentError, tf.errors.DataLossError) as e:
                rule = f"the file does not match the declared features ({tf_message(e)})"
                raise ConfigError(where, path, rule) from None


@dataclass(frozen=True)
class SplitView:
    """A split's size and, as empty arrays, its features' and labels' dtypes and shapes."""

    features: dict[str, np.ndarray]  # name -> (0, ...)
    labels: dict[str, np.ndarray]
    size: int


def _split_files(params: Mapping[str, Any], s: Mapping[str, Any]) -> tuple[dict[str, list[str]], float | None, int]:
    """(files per split, eval fraction or None, hash seed) from `data.splits` (fraction or files: checked)."""
    method = s.get("method", "fraction")
    files = files_of(required(params, "path"), "data.params.path")
    if method == "files":
        path = (s.get("eval_params") or {}).get("path")
        if path is None:
            raise ConfigError(
                "data.splits.eval_params", s.get("eval_params"), "method files needs the eval files: {path: ...}"
            )
        evaluation = files_of(path, "data.splits.eval_params.path")
        shared = sorted(set(files) & set(evaluation))
        if shared:
            rule = f"names {shared[0]}, a train file too: its records would be trained on"
            raise ConfigError("data.splits.eval_params.path", path, rule)
        return {"train": files, "eval": evaluation}, None, 0
    return {"train": files, "eval": files}, float(s["eval_fraction"]), int(s.get("seed", 0))
