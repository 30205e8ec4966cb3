"""Records in files streamed through tf.data: what the TFRecord and CSV streams share.

Pipeline: file list (train: shuffled by the seed) -> parallel interleave over files (deterministic
order; each file's split filter hashes a chunk of record keys at once) -> parse in a parallel `map`,
PARSE_BATCH records per call when the source can (`_parse_batch`), decoding what it leaves encoded and
applying the deterministic transforms in the same call -> the shuffle buffer, batch and prefetch of
`serve.Served`.
Splits need no loading: per-split files (`splits.method: files`) or a seeded hash of (file name, record
index) (`method: fraction`), stable across runs, machines and shards. Sizes are counted when the source
opens, by one pass that reads, parses and decodes every record: bad files and bad records are found
before training. What it finds is remembered beside the files' digests (`digests.FileFacts`), so opening
unchanged files again (a shard process, the next run) reads nothing. A subclass says how to open a file
as records (`_open`), parse one (`_pair`) and count and explain its bad ones.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from layerprobe._tf import tf
from layerprobe.data.arrays import required
from layerprobe.data.digests import FileFacts, files_digest
from layerprobe.data.fitting import check_and_fit_stream
from layerprobe.data.keys import KEY_BUCKETS
from layerprobe.data.opening import OpensOnDemand
from layerprobe.data.records import each_record, tf_message
from layerprobe.data.serve import Streamed
from layerprobe.data.tfrecord import files_of
from layerprobe.errors import ConfigError
from layerprobe.schema import DataConfig, SplitConfig

log = logging.getLogger(__name__)

HASH_BUCKETS = 1 << 20  # eval = records whose keyed hash falls below eval_fraction of the buckets
SHUFFLE_BUFFER = 10_000  # examples, when the config gives 0: memory stays bounded whatever the split size
CYCLE_LENGTH = 8  # files read at once
PARSE_BATCH = 128  # records parsed by one parse_example call


class RecordFiles(OpensOnDemand, Streamed):
    """A split is files of records; `_open_files` then `_opened` (after the parser exists) set it up."""

    _names: dict[str, list[str]]  # features / labels -> names, in declared order
    _parse: Any  # serialized record -> {name: tensor}
    _parse_batch: Any = None  # (batch,) serialized records -> {name: (batch, ...) tensor}, if the source has one

    def _open_files(self, data_cfg: DataConfig, params: Mapping[str, Any]) -> None:
        """Name, transforms and the files of each split."""
        self._take_config(data_cfg)
        self._files, self._fraction, self._split_seed = _split_files(params, data_cfg.splits)

    def _read_files(self) -> None:
        """The digest, the checked counts (remembered per file) and the fitted transforms."""
        self.skipped = 0
        names = {split: [Path(f).name for f in files] for split, files in self._files.items()}
        split_def = repr((sorted(names.items()), self._fraction, self._split_seed)).encode()  # no directories
        every = sorted({f for files in self._files.values() for f in files})
        self.digest = hashlib.sha256(files_digest(every, self.cache_dir).encode() + split_def).hexdigest()
        self._sizes = self._count()
        self.fitted: dict[str, Any] = check_and_fit_stream(
            self.transforms, self._examples("train", training=False), self._nan_counts()
        )

    def _fit_only(self) -> dict[str, Any] | None:
        if any(t["name"] == "normalize" and t.get("mean") is None for t in self.transforms):
            return None  # fitted by a pass over the train split
        return check_and_fit_stream(self.transforms, self._examples("train", training=False), {})

    def _facts_kind(self) -> str:
        """What a file's remembered facts depend on besides its bytes: the parse and the split hash."""
        return repr((type(self).__name__, self._parse_key(), self._fraction, self._split_seed))

    def _parse_key(self) -> str:
        """The declared parse of a record, as text."""
        raise NotImplementedError

    def _open(self, path: Any) -> tf.data.Dataset:
        """One file's serialized records."""
        raise NotImplementedError

    def _raw_count(self, path: str, where: str) -> int:
        """Records in one file, read but not parsed; an unreadable file is one line naming it."""
        raise NotImplementedError

    def _bad_record(self, where: str, path: str, index: int) -> ConfigError:
        """The one-line error for the first record of a file that does not parse."""
        ds = self._open(tf.constant(path)).skip(index).take(1)
        why = "it does not parse"
        try:
            for _ in ds.map(self._pair):
                pass
        except (tf.errors.InvalidArgumentError, tf.errors.DataLossError) as e:
            why = tf_message(e)
        return ConfigError(where, path, f"the file does not match the declared features ({why}; record {index})")

    def _nan_counts(self) -> dict[str, dict[tuple[str, str], int]]:
        """NaN counts per split for the transform checks ({} = not counted)."""
        return {}

    def _pair(self, record: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        return self._grouped(self._parse(record))

    def _grouped(self, parsed: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        return {n: parsed[n] for n in self._names["features"]}, {n: parsed[n] for n in self._names["labels"]}

    def _parsed(self, ds: tf.data.Dataset, keyed: bool = False, then: Any = None) -> tf.data.Dataset:
        """Records (keyed: (record, key) pairs) -> examples, `then` (example -> example) applied to each.
        Parsed PARSE_BATCH at a time when the source can (`_parse_batch`), what is left per record (the
        decode of encoded images, `then`) done in the same map by `each_record`; else one by one (also
        under data.skip_corrupt: an error drops one record, not a batch)."""

        def each(d: tf.data.Dataset, fn: Any) -> tf.data.Dataset:  # fn of the record; the key passed along
            def with_key(r: Any, k: Any) -> Any:
                out = fn(r)
                return (*out, k) if isinstance(out, tuple) else (out, k)

            return d.map(with_key if keyed else fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

        if self._parse_batch is None or self.skip_corrupt:
            ds = each(ds, self._pair if then is None else lambda r: then(*self._pair(r)))
            return ds.ignore_errors() if self.skip_corrupt else ds
        parse, decode = self._parse_batch
        if decode is None and then is None:
            return each(ds.batch(PARSE_BATCH), lambda r: self._grouped(parse(r))).unbatch()

        def record(parsed: dict[str, Any]) -> Any:
            example = self._grouped(parsed if decode is None else decode(parsed))
            return example if then is None else then(*example)

        return each(ds.batch(PARSE_BATCH), lambda r: each_record(record, parse(r))).unbatch()

    def _records(self, split: str, *, training: bool, seed: int = 0, keyed: bool = False) -> tf.data.Dataset:
        """The split's serialized records (keyed: (record, key) pairs, see `record_key`)."""
        paths = self._files[split]
        file_ds = tf.data.Dataset.from_tensor_slices(paths)
        if training:  # a seeded file order; the shuffle buffer mixes records within it
            order_seed = seed if self.shuffle_seed is None else self.shuffle_seed  # as the record shuffle
            file_ds = file_ds.shuffle(len(paths), seed=order_seed, reshuffle_each_iteration=True)
        keep = self._keep(split)

        def read(path: Any) -> tf.data.Dataset:
            records = self._open(path)
            if keep is None and not keyed:
                return records
            name = tf.strings.split(path, "/")[-1]  # the file name, not where it lies: stable across machines

            def pick(j: Any, chunk: Any) -> Any:  # hashes of a chunk's keys at once, not one per record
                i = j * PARSE_BATCH + tf.range(tf.size(chunk, out_type=tf.int64))
                mask = tf.ones_like(i, tf.bool) if keep is None else keep(name, i)
                picked = tf.boolean_mask(chunk, mask)
                return (picked, tf.boolean_mask(record_key(name, i), mask)) if keyed else picked

            return records.batch(PARSE_BATCH).enumerate().map(pick).unbatch()

        cycle = min(CYCLE_LENGTH, len(paths))
        return file_ds.interleave(read, cycle_length=cycle, num_parallel_calls=cycle, deterministic=True)

    def _keyed_examples(
        self, split: str, *, max_examples: int | None, blocks: tuple[int, int, int] | None
    ) -> tf.data.Dataset:
        """A shard reads every record but parses and decodes only its own."""
        ds = self._records(split, training=False, keyed=True)
        ds = self._in_blocks(ds, max_examples, blocks)
        return self._parsed(ds, keyed=True)

    def _examples(
        self, split: str, *, training: bool, seed: int = 0, max_examples: int | None = None, then: Any = None
    ) -> tf.data.Dataset:
        ds = self._records(split, training=training, seed=seed)
        if max_examples is not None:
            ds = ds.take(max_examples)
        return self._parsed(ds, then=then)

    def _transformed_examples(
        self, split: str, fn: Any, *, training: bool, seed: int, max_examples: int | None
    ) -> tf.data.Dataset:
        """The transforms in the parse's own map (`_parsed`): a map per record cost PNG images a third
        of their throughput (BENCHMARKS.md, "Data at scale")."""
        return self._examples(split, training=training, seed=seed, max_examples=max_examples, then=fn)

    def _shuffle_buffer(self, split: str) -> int:
        return SHUFFLE_BUFFER

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

    def _where(self, split: str) -> str:
        """The config path that names a split's files."""
        return "data.splits.eval_params.path" if split == "eval" and self._fraction is None else "data.params.path"

    def _count(self) -> dict[str, int]:
        """Examples per split, from each file's (records, parsed, eval records, first bad record):
        remembered, or found by `_scan`. A bad file or a record that does not match the declared
        features is one line naming the file and the record, before training (or, with
        data.skip_corrupt, a skipped record, counted in `skipped`)."""
        counts = dict.fromkeys(self._files, 0)
        split_of: dict[str, str] = {}  # a fraction split: train and eval share the files
        for split, files in self._files.items():
            split_of.update({path: split for path in files if path not in split_of})
        facts = FileFacts(self.cache_dir, self._facts_kind())
        try:
            for path, split in split_of.items():
                known = facts.get(path)
                if known is None:
                    known = self._scan(path, self._where(split))
                    facts.put(path, known)
                total, ok, evals, first_bad = known
                if ok < total and not self.skip_corrupt:
                    raise self._bad_record(self._where(split), path, first_bad)
                self.skipped += total - ok
                counts[split] += ok - evals
                if evals:
                    counts["eval"] += evals
        finally:
            facts.save()
        if self.skipped:
            log.warning("%s: skipped %d corrupt record(s) (data.skip_corrupt)", self.name, self.skipped)
        for split, count in counts.items():
            if not count:
                raise ConfigError("data.splits", split, "split is empty")
        return counts

    def _scan(self, path: str, where: str) -> list[int]:
        """[records, records that parse and decode, of them eval records, first that does not or -1]:
        one pass over a good file; a file with a bad record is read again to find it."""
        try:
            total, evals = self._checked(path).reduce(
                (np.int64(0), np.int64(0)), lambda a, e: (a[0] + 1 + e[2], a[1] + e[1])
            )
            return [int(total), int(total), int(evals), -1]
        except (tf.errors.InvalidArgumentError, tf.errors.DataLossError):
            pass
        total = self._raw_count(path, where)
        ok, evals, first = self._check_records(path)
        return [total, ok, evals, first]

    def _checked(self, path: str) -> tf.data.Dataset:
        """(index, is eval, 0) per record of a file, each parsed and decoded (an error if one does not)."""
        name = tf.constant(Path(path).name)
        fraction = self._fraction is not None

        def check(i: Any, r: Any) -> tuple[Any, Any, Any]:
            values = [tf.reshape(v, [-1])[:1] for g in self._pair(r) for v in g.values()]
            text = [v if v.dtype == tf.string else tf.strings.as_string(v) for v in values]
            touched = tf.add_n([tf.reduce_sum(tf.strings.length(t)) for t in text])  # reads every decoded value
            evals = tf.cast(self._in_eval(name, i), tf.int64) if fraction else tf.constant(0, tf.int64)
            return i, evals, tf.cast(tf.minimum(touched, 0), tf.int64)  # 0, but not foldable: nothing is pruned

        records = self._open(tf.constant(path)).enumerate()
        return records.map(check, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    def _check_records(self, path: str) -> tuple[int, int, int]:
        """(records that parse and decode, of them eval records of a fraction split, index of the
        first that does not or -1)."""

        def step(acc: Any, e: Any) -> Any:
            ok, evals, first = acc
            first = tf.where(tf.logical_and(first < 0, tf.not_equal(e[0], ok)), ok, first)
            return ok + 1 + e[2], evals + e[1], first

        reduced = self._checked(path).ignore_errors().reduce((np.int64(0), np.int64(0), np.int64(-1)), step)
        ok, evals, first = (int(v) for v in reduced)
        return ok, evals, first if first >= 0 else ok


def record_key(name: Any, index: Any) -> Any:
    """A record's stable int64 key: a fingerprint of "file name:record index" (see `keys`)."""
    return tf.strings.to_hash_bucket_fast(tf.strings.join([name, tf.strings.as_string(index)], ":"), KEY_BUCKETS)


def _split_files(params: Mapping[str, Any], s: SplitConfig) -> tuple[dict[str, list[str]], float | None, int]:
    """(files per split, eval fraction or None, hash seed) from `data.splits` (fraction or files: checked)."""
    files = files_of(required(params, "path"), "data.params.path")
    if s.method == "files":
        path = s.eval_params.get("path")
        if path is None:
            raise ConfigError(
                "data.splits.eval_params", s.eval_params, "method files needs the eval files: {path: ...}"
            )
        evaluation = files_of(path, "data.splits.eval_params.path")
        shared = sorted(set(files) & set(evaluation))
        if shared:
            rule = f"names {shared[0]}, a train file too: its records would be trained on"
            raise ConfigError("data.splits.eval_params.path", path, rule)
        return {"train": files, "eval": evaluation}, None, 0
    return {"train": files, "eval": files}, float(s.eval_fraction), s.seed
