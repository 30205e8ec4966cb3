"""Declared data -> tf.data pipelines behind Estimator input_fns.

Order of a split's pipeline: slices -> deterministic transforms -> cache -> (train: shuffle ->
repeat -> augmentation) -> batch -> prefetch. Caching before the augmentation keeps it fresh per epoch.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from layerprobe._tf import tf
from layerprobe.data.checks import TRAIN_ONLY, check_data_config, is_user_function
from layerprobe.data.sources import ArraySet
from layerprobe.data.splits import load_splits
from layerprobe.data.transforms import NAN_INTOLERANT, apply, targets, user_function
from layerprobe.errors import ConfigError

# Arrays above this go through a chunked generator instead of graph constants. A constant is copied
# into the dataset's graph, which tf.data serialises and rewrites each time an iterator is made:
# ~50 ms per MB (a 61 MB split took 3.5 s to its first batch, 0.7 s through the generator).
CONSTANT_BYTES_LIMIT = 1 << 20


@dataclass(frozen=True)
class PreparedData:
    """The splits as arrays plus what the transforms learnt from the train split."""

    name: str
    splits: dict[str, ArraySet]
    transforms: list[dict[str, Any]]
    fitted: dict[str, Any] = field(default_factory=dict)  # e.g. normalize mean/std, from train only
    digest: str = ""
    shuffle_seed: int | None = None  # None = the seed the input_fn is given (trainer.seed)
    repeat: int | None = None  # train epochs; None = forever
    cache_dir: str = ".cache/layerprobe"

    def sizes(self) -> dict[str, int]:
        return {k: v.size for k, v in self.splits.items()}


def prepare(data_cfg: Mapping[str, Any]) -> PreparedData:
    """Load the source, split it, check labels and transforms, fit statistics on train only."""
    check_data_config(data_cfg)
    splits, digest = load_splits(data_cfg)
    for name, part in splits.items():
        if part.size == 0:
            raise ConfigError("data.splits", name, "split is empty")
    _check_labels(splits, data_cfg.get("num_classes"))
    transforms = [dict(t) for t in data_cfg.get("transforms") or []]
    fitted = _check_and_fit(transforms, splits)
    return PreparedData(
        data_cfg["name"],
        splits,
        transforms,
        fitted,
        digest,
        shuffle_seed=data_cfg.get("shuffle_seed"),
        repeat=data_cfg.get("repeat"),
        cache_dir=data_cfg.get("cache_dir") or ".cache/layerprobe",
    )


def _check_labels(splits: Mapping[str, ArraySet], num_classes: int | None) -> None:
    if num_classes is None:
        return
    for split, part in splits.items():
        for name, y in part.labels.items():
            if np.issubdtype(y.dtype, np.integer) and y.size:
                bad = y[(y < 0) | (y >= num_classes)]
                if bad.size:
                    rule = f"label {name!r} of the {split} split holds {bad.flat[0]}, outside [0, {num_classes})"
                    raise ConfigError("data.num_classes", num_classes, rule)


def _check_and_fit(transforms: list[dict[str, Any]], splits: Mapping[str, ArraySet]) -> dict[str, Any]:
    """Walk the transforms with the element spec at each step: names exist, ranks fit, no NaN
    reaches a transform that cannot take it; normalize statistics come from the train split."""
    fitted: dict[str, Any] = {}
    nan = {s: _nan_counts(p) for s, p in splits.items()}  # split -> {(group, name): NaN count}
    for i, t in enumerate(transforms):
        path, name = f"data.transforms[{i}]", t["name"]
        if is_user_function(name):
            user_function(i, name)  # import now: a typo fails before training
            continue
        train = _slices(splits["train"]).map(functools.partial(_step, transforms, fitted, hi=i))
        fspec, lspec = train.element_spec
        for group, spec in (("features", fspec), ("labels", lspec)):
            for n in t.get(group) or []:
                if n not in spec:
                    raise ConfigError(f"{path}.{group}", n, f"no such {group[:-1]} at this step", spec)
        if name in ("select", "rename"):
            _rename_nan(nan, t)
            continue
        feats, labs = targets(t, fspec)
        for n in feats:
            rank = fspec[n].shape.rank
            if name in ("random_flip", "random_crop") and rank != 3:
                raise ConfigError(
                    f"{path}.features", n, f"{name} needs (height, width, channels) examples, not rank {rank}"
                )
            if name == "normalize" and not fspec[n].dtype.is_floating:
                raise ConfigError(
                    f"{path}.features", n, f"normalize needs a float feature, not {fspec[n].dtype.name}: cast it first"
                )
        keys = [("features", n) for n in feats] + [("labels", n) for n in labs]
        intolerant = name in NAN_INTOLERANT or (name == "cast" and not tf.as_dtype(t["dtype"]).is_floating)
        for split, counts in nan.items():
            for key in keys:
                if counts.get(key) and intolerant:
                    rule = (
                        f"{name} cannot take NaN, and {key[0][:-1]} {key[1]!r} of the {split} split holds "
                        f"{counts[key]}: put {{name: fill_nan}} before it"
                    )
                    raise ConfigError(path, key[1], rule)
                if name == "fill_nan":
                    counts.pop(key, None)
        if name == "normalize":
            specs = {**{("features", n): fspec[n] for n in feats}, **{("labels", n): lspec[n] for n in labs}}
            for key in keys:
                fitted[f"{i}/{key[1]}/mean"], fitted[f"{i}/{key[1]}/std"] = _normalizer(path, t, key, specs[key], train)
    return fitted


def _step(transforms: list[dict[str, Any]], fitted: dict[str, Any], f: Any, y: Any, *, hi: int) -> Any:
    return apply(transforms, fitted, f, y, lo=0, hi=hi, training=False, seed=0)


def _nan_counts(part: ArraySet) -> dict[tuple[str, str], int]:
    out = {}
    for group, arrays in (("features", part.features), ("labels", part.labels)):
        for n, a in arrays.items():
            if np.issubdtype(a.dtype, np.floating):
                count = int(np.isnan(a).sum())
                if count:
                    out[(group, n)] = count
    return out


def _rename_nan(nan: dict[str, dict[tuple[str, str], int]], t: Mapping[str, Any]) -> None:
    for split, counts in nan.items():
        if t["name"] == "select":
            nan[split] = {k: c for k, c in counts.items() if not t.get(k[0]) or k[1] in t[k[0]]}
        else:
            nan[split] = {(g, (t.get(g) or {}).get(n, n)): c for (g, n), c in counts.items()}


def _normalizer(
    path: str, t: Mapping[str, Any], key: tuple[str, str], spec: Any, train: Any
) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) per unit of the last axis: given in the config, else from the train split."""
    units = spec.shape[-1] if spec.shape.rank else 1
    if t.get("mean") is not None:
        out = []
        for arg in ("mean", "std"):
            v = np.asarray(t[arg], np.float32)
            if v.size not in (1, units):
                raise ConfigError(f"{path}.{arg}", t[arg], f"needs 1 or {units} values for {key[1]!r}")
            out.append(v)
        return out[0], out[1]
    n, mean, m2 = 0, 0.0, 0.0  # Chan's parallel update, in float64
    group = 0 if key[0] == "features" else 1
    for batch in train.map(lambda f, y: (f, y)[group][key[1]]).batch(4096).as_numpy_iterator():
        x = batch.astype(np.float64).reshape(-1, units)
        bn, bmean = len(x), x.mean(axis=0)
        delta = bmean - mean
        mean = mean + delta * bn / (n + bn)
        m2 = m2 + ((x - bmean) ** 2).sum(axis=0) + delta**2 * n * bn / (n + bn)
        n += bn
    std = np.sqrt(np.asarray(m2) / max(n, 1))
    return np.asarray(mean, np.float32).reshape(-1), np.maximum(std, 1e-6).astype(np.float32).reshape(-1)


def dataset(
    data: PreparedData,
    split: str,
    *,
    training: bool,
    batch_size: int,
    seed: int,
    shuffle_buffer: int = 0,
    cache: bool | str = True,
    prefetch: int = -1,
    max_examples: int | None = None,
) -> tf.data.Dataset:
    """Batches of (features, labels) dicts; training shuffles (seeded), repeats and augments.
    cache: True/"memory", "file" (under data.cache_dir) or False/"none"; shuffle_buffer 0 = the split."""
    part = data.splits[split]
    if max_examples is not None:
        part = part.take(np.arange(min(max_examples, part.size)))
    n = len(data.transforms)
    # everything before the first augmentation is deterministic and can be cached
    cut = next((i for i, t in enumerate(data.transforms) if t["name"] in TRAIN_ONLY), n) if training else n
    ds = _slices(part)
    if cut:
        fn = functools.partial(_apply_range, data, lo=0, hi=cut, training=training, seed=seed)
        ds = ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    mode = {True: "memory", False: "none"}.get(cache, cache) if isinstance(cache, bool) else cache
    if mode == "memory":
        ds = ds.cache()
    elif mode == "file":
        ds = ds.cache(_cache_file(data, split, cut, max_examples))
    if training:
        order_seed = seed if data.shuffle_seed is None else data.shuffle_seed
        ds = ds.shuffle(shuffle_buffer or part.size, seed=order_seed, reshuffle_each_iteration=True)
        ds = ds.repeat(data.repeat)
        if cut < n:  # the visit counter seeds the augmentation: fresh each epoch, same for a seed
            aug = functools.partial(_apply_range, data, lo=cut, hi=n, training=True, seed=seed)
            ds = ds.enumerate().map(lambda k, e: aug(*e, counter=k), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch_size)
    return ds.prefetch(tf.data.AUTOTUNE if prefetch < 0 else prefetch)


def _apply_range(data: PreparedData, f: Any, y: Any, **kw: Any) -> Any:
    return apply(data.transforms, data.fitted, f, y, **kw)


def _cache_file(data: PreparedData, split: str, cut: int, max_examples: int | None) -> str:
    """One cache per data digest, split and transform prefix: a stale file is never read."""
    key = json.dumps([data.digest, split, data.transforms[:cut], max_examples], sort_keys=True, default=str)
    Path(data.cache_dir).mkdir(parents=True, exist_ok=True)
    return str(Path(data.cache_dir) / f"{data.name}-{split}-{hashlib.sha256(key.encode()).hexdigest()[:16]}")


def _slices(part: ArraySet) -> tf.data.Dataset:
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


def check_against_inputs(data: PreparedData, model_inputs: Mapping[str, Any], labels_needed: set[str]) -> None:
    """Each declared model input must be a feature of matching shape and dtype, in every split."""
    for split in data.splits:
        ds = dataset(data, split, training=False, batch_size=1, seed=0, max_examples=1)
        feats, labels = ds.element_spec
        for name, spec in model_inputs.items():
            if name not in feats:
                raise ConfigError(f"model.inputs.{name}", name, f"the {split} split has no such feature", feats)
            found = feats[name]
            expected = f"{spec.get('dtype', 'float32')}{list(spec['shape'])}"
            got = f"{found.dtype.name}{found.shape.as_list()[1:]}"
            if got != expected:
                rule = f"the model declares {expected} but feature {name!r} of the {split} split is {got}"
                raise ConfigError(f"model.inputs.{name}", got, rule)
        for name in sorted(labels_needed):
            if name not in labels:
                raise ConfigError("model.outputs", name, f"the {split} split has no such label", labels)
