"""A directory of image files, one subfolder per class, streamed: read, decoded and resized in tf.data.

What `image_dataset_from_directory` users have. Labels are the class folders in sorted order. Splits:
a seeded hash of each file's `class/name` (`method: fraction`), or another directory with the same class
folders (`method: files`, `eval_params: {path: ...}`). Only the file list is held in memory; every image
is decoded once when the source opens, so a file that does not decode is one line naming it (or, with
`data.skip_corrupt`, skipped and counted); whether it decodes is remembered beside its digest, so
opening unchanged files again decodes nothing.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import numpy as np

from layerprobe._tf import tf
from layerprobe.data.arrays import known_params, required
from layerprobe.data.digests import FileFacts, files_digest
from layerprobe.data.fitting import check_and_fit_stream
from layerprobe.data.keys import KEY_BUCKETS
from layerprobe.data.opening import OpensOnDemand
from layerprobe.data.records import tf_message
from layerprobe.data.serve import Streamed
from layerprobe.data.source import LabelClasses
from layerprobe.errors import ConfigError
from layerprobe.schema import DataConfig

log = logging.getLogger(__name__)

EXTENSIONS = (".png", ".jpg", ".jpeg", ".gif", ".bmp")  # what tf.io.decode_image reads
HASH_BUCKETS = 1 << 20
SHUFFLE_BUFFER = 10_000


class ImageFolder(OpensOnDemand, Streamed):
    """params = {path, image_size: [height, width], channels: 1|3}: features {image: uint8 (h, w, c)},
    labels {label: int64 class index}."""

    def __init__(self, data_cfg: DataConfig) -> None:
        params = dict(data_cfg.params)
        known_params(data_cfg.source, params, ("path", "image_size", "channels"))
        self._take_config(data_cfg)
        size = params.get("image_size")
        if not (isinstance(size, list) and len(size) == 2 and all(isinstance(d, int) and d > 0 for d in size)):
            raise ConfigError("data.params.image_size", size, "give [height, width] in pixels")
        if params.get("channels", 3) not in (1, 3):
            raise ConfigError("data.params.channels", params.get("channels"), "an image has", ["1", "3"])
        self._shape = [*size, int(params.get("channels", 3))]
        s = data_cfg.splits
        train_root = required(params, "path")
        self.classes, files = _listing(train_root, "data.params.path")
        self._by_files = s.method == "files"
        if self._by_files:
            eval_root = s.eval_params.get("path")
            eval_classes, eval_files = _listing(eval_root, "data.splits.eval_params.path")
            if eval_classes != self.classes:
                rule = f"has class folders {eval_classes}, the train directory {self.classes}: they must be the same"
                raise ConfigError("data.splits.eval_params.path", eval_root, rule)
            self._files = {"train": files, "eval": eval_files}
        else:
            fraction, seed = float(s.eval_fraction), s.seed
            cut = int(round(fraction * HASH_BUCKETS))
            in_eval = [_bucket(rel, seed) < cut for _, _, rel in files]
            self._files = {
                "train": [f for f, e in zip(files, in_eval) if not e],
                "eval": [f for f, e in zip(files, in_eval) if e],
            }
        self._opened()

    def label_classes(self) -> dict[str, LabelClasses]:
        return {"label": LabelClasses(len(self.classes), f"{len(self.classes)} class folders in data.params.path")}

    def _read_files(self) -> None:
        """The digest, the checked counts (whether each file decodes: remembered) and the fitted transforms."""
        self.skipped = 0
        every = sorted(p for part in self._files.values() for p, _, _ in part)
        split_def = repr({k: [rel for _, _, rel in v] for k, v in self._files.items()}).encode()
        self.digest = hashlib.sha256(files_digest(every, self.cache_dir).encode() + split_def).hexdigest()
        self._sizes = {split: self._checked(split) for split in self._files}
        self.fitted: dict[str, Any] = check_and_fit_stream(self.transforms, self._examples("train", training=False), {})

    def _fit_only(self) -> dict[str, Any] | None:
        if any(t["name"] == "normalize" and t.get("mean") is None for t in self.transforms):
            return None  # fitted by a pass over the train split
        return check_and_fit_stream(self.transforms, self._examples("train", training=False), {})

    def _listed(self, split: str, only: list[int] | None = None) -> tf.data.Dataset:
        """(path, label, key) of the split's files (`only`: of those at these positions)."""
        rows = self._files[split] if only is None else [self._files[split][i] for i in only]
        paths, labels, rels = zip(*rows)
        keys = [_bucket(rel, 0, KEY_BUCKETS) for rel in rels]  # stable: the same file, the same key
        return tf.data.Dataset.from_tensor_slices((list(paths), np.asarray(labels, np.int64), np.asarray(keys)))

    def _decode(self, path: Any) -> Any:
        image = tf.io.decode_image(tf.io.read_file(path), channels=self._shape[2], expand_animations=False)
        resized = tf.image.resize(image, self._shape[:2], antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)

    def _example(self, path: Any, label: Any, key: Any) -> tuple[dict[str, Any], dict[str, Any], Any]:
        return {"image": tf.ensure_shape(self._decode(path), self._shape)}, {"label": label}, key

    def _decoded(self, ds: tf.data.Dataset) -> tf.data.Dataset:
        ds = ds.map(self._example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return ds.ignore_errors() if self.skip_corrupt else ds

    def _examples(
        self, split: str, *, training: bool, seed: int = 0, max_examples: int | None = None
    ) -> tf.data.Dataset:
        ds = self._listed(split)
        if training:  # the file list is small: a full shuffle of it, then decode
            order_seed = seed if self.shuffle_seed is None else self.shuffle_seed
            ds = ds.shuffle(len(self._files[split]), seed=order_seed, reshuffle_each_iteration=True)
        if max_examples is not None:
            ds = ds.take(max_examples)
        return self._decoded(ds).map(lambda f, y, k: (f, y))

    def _keyed_examples(
        self, split: str, *, max_examples: int | None, blocks: tuple[int, int, int] | None
    ) -> tf.data.Dataset:
        ds = self._listed(split)
        ds = self._in_blocks(ds, max_examples, blocks)
        return self._decoded(ds)

    def _shuffle_buffer(self, split: str) -> int:
        return SHUFFLE_BUFFER

    def _checked(self, split: str) -> int:
        """Whether each image of a split decodes (remembered, else one pass over the new files): the
        count, and a file that does not decode is one line."""
        where = "data.splits.eval_params.path" if split == "eval" and self._by_files else "data.params.path"
        facts = FileFacts(self.cache_dir, repr(("decodes", self._shape[2])))
        known = [facts.get(path) for path, _, _ in self._files[split]]
        new = [i for i, k in enumerate(known) if k is None]
        if new:
            ds = (
                self._listed(split, new)
                .enumerate()
                .map(lambda i, e: (i, *self._example(*e)), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            )
            # the index of each decoded image, computed from its pixels so that the decode is never pruned
            ok = ds.ignore_errors().map(lambda i, f, y, k: tf.minimum(tf.cast(f["image"][0, 0, 0], tf.int64), 0) + i)
            decoded = {int(i) for batch in ok.batch(4096).as_numpy_iterator() for i in batch}
            for pos, i in enumerate(new):
                known[i] = fact = [int(pos in decoded)]
                facts.put(self._files[split][i][0], fact)
            facts.save()
        ok_count = sum(k[0] for k in known if k is not None)
        bad = len(known) - ok_count
        if bad and not self.skip_corrupt:
            for (path, _, _), k in zip(self._files[split], known):
                if k is not None and not k[0]:
                    try:
                        self._decode(tf.constant(path))
                    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as e:
                        raise ConfigError(where, path, f"the image does not decode ({tf_message(e)})") from None
        self.skipped += bad
        if bad:  # never silently: the count is also the run's tag data.skipped_records
            first = next(path for (path, _, _), k in zip(self._files[split], known) if k is not None and not k[0])
            log.warning(
                "%s: skipped %d image(s) of the %s split that do not decode (data.skip_corrupt), e.g. %s",
                self.name,
                bad,
                split,
                first,
            )
        if not ok_count:
            raise ConfigError("data.splits", split, "split is empty")
        return ok_count


def _listing(root: Any, where: str) -> tuple[list[str], list[tuple[str, int, str]]]:
    """(class names, [(path, class index, "class/file name")]) of a directory of class folders."""
    if not root or not Path(str(root)).is_dir():
        raise ConfigError(where, root, "not a directory (give one with a subfolder per class)")
    classes = sorted(p.name for p in Path(root).iterdir() if p.is_dir())
    if not classes:
        raise ConfigError(where, str(root), "holds no class folders (one subfolder per class)")
    files = [
        (str(f), i, f"{name}/{f.name}")
        for i, name in enumerate(classes)
        for f in sorted((Path(root) / name).iterdir())
        if f.suffix.lower() in EXTENSIONS
    ]
    if not files:
        raise ConfigError(where, str(root), f"holds no image files ({', '.join(EXTENSIONS)})")
    return classes, files


def _bucket(text: str, seed: int, buckets: int = HASH_BUCKETS) -> int:
    """A seeded, machine-independent hash of a file's `class/name` in [0, buckets)."""
    digest = hashlib.sha256(f"{seed}:{text}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % buckets
