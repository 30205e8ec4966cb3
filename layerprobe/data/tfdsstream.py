"""Prepared TensorFlow Datasets streamed from disk by tfds's own reader: never copied into numpy, never
downloaded.

The builder is made from the prepared files alone (`<data_dir>/<name>[/<config>]/<version>/`, or
`params.path` naming that directory), not from tfds's registered dataset code, so nothing is fetched
and a set prepared elsewhere (`tfds build`, your own `GeneratorBasedBuilder`) reads the same. Splits
are tfds's own split names, slicing allowed (`train[:80%]`): `method: files` reads eval from
`eval_params.split`; `method: fraction` puts an example of `params.split` in eval by a seeded hash of
its `tfds_id` (shard file and index), stable across runs, machines and shards. Sizes come from the
dataset info (a fraction split: one pass over the ids, nothing decoded); example keys are fingerprints
of the `tfds_id`; the digest covers the prepared files (cached by path, size and mtime).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from layerprobe._tf import tf
from layerprobe.data.arrays import known_params, required
from layerprobe.data.checks import require_tfds
from layerprobe.data.digests import files_digest
from layerprobe.data.fitting import check_and_fit_stream
from layerprobe.data.keys import KEY_BUCKETS
from layerprobe.data.serve import Streamed
from layerprobe.errors import ConfigError, first_line
from layerprobe.schema import DataConfig

HASH_BUCKETS = 1 << 20  # fraction: eval = examples whose seeded tfds_id hash falls below the fraction
SHUFFLE_BUFFER = 10_000  # examples, when the config gives 0
PARAMS = ("name", "data_dir", "path", "split", "features", "labels")


class TFDSStream(Streamed):
    """params = {name, data_dir (null = $TFDS_DATA_DIR or ~/tensorflow_datasets) | path (a prepared
    version directory), split (the train split, default train), features: {feature: tfds key},
    labels: {label: tfds key}}. Image features stay uint8: cast them with the transforms."""

    def __init__(self, data_cfg: DataConfig) -> None:
        require_tfds()
        import tensorflow_datasets as tfds

        self._tfds = tfds
        params = dict(data_cfg.params)
        known_params(data_cfg.source, params, PARAMS)
        self._take_config(data_cfg)
        self.skipped = 0
        self._builder = _builder(tfds, params)
        s = data_cfg.splits
        train = str(params.get("split") or "train")
        if s.method == "files":
            evaluation = s.eval_params.get("split")
            if not evaluation:
                rule = "method files reads eval from another split of the set: give {split: <name>}"
                raise ConfigError("data.splits.eval_params.split", evaluation, rule, self._builder.info.splits)
            self._files = {"train": train, "eval": str(evaluation)}
            self._fraction, self._split_seed = None, 0
        else:
            self._files = {"train": train, "eval": train}
            self._fraction, self._split_seed = float(s.eval_fraction), s.seed
        self._keys = {g: _selected(params, g, self._builder.info.features) for g in ("features", "labels")}
        _check_classes(self._builder.info.features, self._keys["labels"], data_cfg.num_classes)
        self._sizes = self._count()
        split_def = repr((sorted(self._files.items()), self._fraction, self._split_seed, self._keys)).encode()
        prepared = sorted(str(p) for p in Path(str(self._builder.data_dir)).iterdir() if p.is_file())
        self.digest = hashlib.sha256(files_digest(prepared, self.cache_dir).encode() + split_def).hexdigest()
        self.fitted: dict[str, Any] = check_and_fit_stream(self.transforms, self._examples("train", training=False), {})

    def _read(self, split: str, *, training: bool = False, seed: int = 0, decode: bool = True) -> tf.data.Dataset:
        """The split's tfds examples (dicts with `tfds_id`): train shuffles the files under the seed,
        otherwise one pass in the prepared order; a fraction split filters by the id's hash."""
        order_seed = seed if self.shuffle_seed is None else self.shuffle_seed
        config = self._tfds.ReadConfig(add_tfds_id=True, shuffle_seed=order_seed if training else None)
        wanted = {k: True for group in self._keys.values() for k in group.values()}  # the rest is not parsed
        skip = None if decode else {k: self._tfds.decode.SkipDecoding() for k in wanted}  # ids only: no decode
        decoders = self._tfds.decode.PartialDecoding(wanted, decoders=skip)
        ds = self._builder.as_dataset(
            split=self._files[split], shuffle_files=training, read_config=config, decoders=decoders
        )
        if self._fraction is None:
            return ds
        if split == "eval":
            return ds.filter(lambda e: self._in_eval(e["tfds_id"]))
        return ds.filter(lambda e: tf.logical_not(self._in_eval(e["tfds_id"])))

    def _in_eval(self, tfds_id: Any) -> Any:
        bucket = tf.strings.to_hash_bucket_strong(tfds_id, HASH_BUCKETS, [self._split_seed, 0])
        return bucket < int(round(float(self._fraction or 0) * HASH_BUCKETS))

    def _example(self, e: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any], Any]:
        """(features, labels, key): the selected tfds keys under their config names."""
        features, labels = ({out: e[key] for out, key in self._keys[g].items()} for g in ("features", "labels"))
        return features, labels, tf.strings.to_hash_bucket_fast(e["tfds_id"], KEY_BUCKETS)

    def _examples(
        self, split: str, *, training: bool, seed: int = 0, max_examples: int | None = None
    ) -> tf.data.Dataset:
        ds = self._read(split, training=training, seed=seed)
        if max_examples is not None:
            ds = ds.take(max_examples)
        ds = ds.map(lambda e: self._example(e)[:2], num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return ds.ignore_errors() if self.skip_corrupt else ds

    def _keyed_examples(
        self, split: str, *, max_examples: int | None, blocks: tuple[int, int, int] | None
    ) -> tf.data.Dataset:
        ds = self._read(split)
        ds = self._in_blocks(ds, max_examples, blocks)
        ds = ds.map(self._example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return ds.ignore_errors() if self.skip_corrupt else ds

    def _shuffle_buffer(self, split: str) -> int:
        return SHUFFLE_BUFFER

    def _count(self) -> dict[str, int]:
        """Examples per split from the dataset info; a fraction split counts its eval ids once."""
        splits, fraction = self._builder.info.splits, self._fraction
        totals = {split: _num_examples(splits, spec, _where(split, fraction)) for split, spec in self._files.items()}
        if self._fraction is not None:
            evals = int(self._read("eval", decode=False).reduce(np.int64(0), lambda n, e: n + 1))
            totals = {"train": totals["train"] - evals, "eval": evals}
        for split, count in totals.items():
            if not count:
                raise ConfigError("data.splits", split, "split is empty")
        return totals


def _where(split: str, fraction: float | None) -> str:
    return "data.splits.eval_params.split" if split == "eval" and fraction is None else "data.params.split"


def _builder(tfds: Any, params: Mapping[str, Any]) -> Any:
    """The read-only builder of a prepared set; a set that is not there is one line, never a download."""
    path = params.get("path")
    if path:
        if not (Path(str(path)) / "dataset_info.json").is_file():
            rule = "is not a prepared tfds directory (no dataset_info.json in it); layerprobe never downloads"
            raise ConfigError("data.params.path", str(path), rule)
        return tfds.builder_from_directory(str(path))
    name = required(params, "name")  # or data.params.path
    data_dir = str(params.get("data_dir") or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets")
    root = Path(data_dir).expanduser()
    try:
        return tfds.core.read_only_builder.builder_from_files(str(name), data_dir=str(root))
    except tfds.core.registered.DatasetNotFoundError:
        # what is prepared there: <name>/<version>/ or <name>/<config>/<version>/
        found = [*root.glob("*/*/dataset_info.json"), *root.glob("*/*/*/dataset_info.json")]
        prepared = sorted({p.parent.parent.relative_to(root).as_posix() for p in found})
        rule = f"is not prepared in {root} (prepare it there first: layerprobe never downloads)"
        raise ConfigError("data.params.name", name, rule, prepared or None) from None


def _num_examples(splits: Any, spec: str, where: str) -> int:
    """Examples in a tfds split spec (`train`, `train[:80%]`, `train+test`); a wrong one is one line."""
    try:
        return int(splits[spec].num_examples)
    except (ValueError, KeyError, AssertionError) as e:
        first = first_line(e)
        known = list(splits)
        if any(spec.partition("[")[0].strip() == s for s in known):  # a known split, a bad slice
            raise ConfigError(where, spec, f"is not a valid tfds split slice ({first})") from None
        raise ConfigError(where, spec, "unknown split of the prepared set", known) from None


def _selected(params: Mapping[str, Any], group: str, features: Any) -> dict[str, str]:
    """{config name: tfds key} of features or labels, each key checked against the FeaturesDict."""
    default = {"features": {"image": "image"}, "labels": {"label": "label"}}[group]
    chosen = dict(params.get(group) or default)
    for out, key in chosen.items():
        if key not in features:
            raise ConfigError(f"data.params.{group}.{out}", key, "the prepared set has no such feature", features)
    return {str(k): str(v) for k, v in chosen.items()}


def _check_classes(features: Any, labels: Mapping[str, str], num_classes: int | None) -> None:
    """A ClassLabel with more classes than `data.num_classes` is refused from the info, before a pass."""
    for out, key in labels.items():
        classes = getattr(features[key], "num_classes", None)
        if num_classes is not None and classes is not None and classes > num_classes:
            rule = f"label {out!r} (tfds key {key!r}) has {classes} classes, more than data.num_classes"
            raise ConfigError("data.num_classes", num_classes, rule)
