"""Relative paths in config values, made to mean the same file wherever layerprobe is started.

A path written in a config file (conf/, experiments/, a --config-dir) is relative to the repository
root (`paths.ROOT`), so `layerprobe experiments=small_resnet_frozen` finds its weights file from any
working directory. A path given on the command line is relative to the working directory, as a shell
user expects, and is left as typed. Resolved once, when the config is composed; only the keys that
name files to read (INPUT_PATHS): outputs (model_dir, cache_dir, the run dir, ./mlflow.db) stay
relative to the working directory.
"""

from __future__ import annotations

import copy
import fnmatch
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from layerprobe.config.applications import KERAS_WEIGHTS
from layerprobe.config.archs import RUN_ID
from layerprobe.config.paths import ROOT

# Keys whose values are files or directories layerprobe reads (`*`: any layer or block name).
INPUT_PATHS = (
    "trainer.warm_start.source",  # a checkpoint, model_dir or .h5 file (or a run id, left alone)
    "data.params.path",  # npz, csv, tfrecord (a glob or a list), image folder, prepared tfds directory
    "data.params.data_dir",  # tfds
    "data.splits.eval_params.path",  # method: files
    "data.splits.eval_params.data_dir",
    "model.layers.*.weights",  # a Keras application's local weights file (`imagenet` is left alone)
    "model.blocks.*.layers.*.weights",
    "model.layers.*.path",  # a model_file's saved model
    "model.blocks.*.layers.*.path",
)


def resolve_paths(cfg: Any, overrides: Sequence[str], groups: Iterable[str]) -> None:
    """Make the relative input paths `cfg` (a composed DictConfig) got from config files absolute
    under ROOT, in place. `overrides`: the command line's (their values stay relative to the
    working directory); `groups`: the config group names (`data=csv` picks a file, sets no value)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import open_dict, read_write

    typed = {o.key_or_group for o in OverridesParser.create().parse_overrides(list(overrides))} - set(groups)
    with read_write(cfg), open_dict(cfg):
        for key, parent, leaf in _input_paths(cfg):
            if any(key == k or key.startswith(k + ".") for k in typed):
                continue  # given on the command line (or inside a mapping given there)
            value = _raw(parent, leaf)  # unresolved: an interpolation stays one
            if isinstance(value, str):
                parent[leaf] = _from_root(key, value)
            elif _is_list(value):
                parent[leaf] = [_from_root(key, v) if isinstance(v, str) else v for v in value]


def portable(c: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the plain config `c` with the input paths under ROOT written relative to it again:
    what a digest hashes, so that it is the same from any working directory and any checkout."""
    out = copy.deepcopy(dict(c))
    for _, parent, leaf in _input_paths(out):
        value = parent[leaf]
        if isinstance(value, str):
            parent[leaf] = _under_root(value)
        elif isinstance(value, list):
            parent[leaf] = [_under_root(v) if isinstance(v, str) else v for v in value]
    return out


def _input_paths(cfg: Any) -> Iterator[tuple[str, Any, str]]:
    """(dotted key, its parent mapping, the leaf key) of every INPUT_PATHS key `cfg` sets."""

    def walk(node: Any, prefix: str) -> Iterator[tuple[str, Any, str]]:
        for k in list(node.keys()) if _is_mapping(node) else []:
            key = f"{prefix}{k}"
            if any(fnmatch.fnmatchcase(key, p) and key.count(".") == p.count(".") for p in INPUT_PATHS):
                if _raw(node, k) is not None:
                    yield key, node, str(k)
            elif any(_could_lead(key, p) for p in INPUT_PATHS):
                yield from walk(_raw(node, k), key + ".")

    yield from walk(cfg, "")


def _could_lead(key: str, pattern: str) -> bool:
    """Whether `key` is a prefix of keys `pattern` matches (`model.layers.conv1` of `model.layers.*.weights`)."""
    depth = key.count(".") + 1
    return depth < pattern.count(".") + 1 and fnmatch.fnmatchcase(key, ".".join(pattern.split(".")[:depth]))


def _raw(node: Any, key: Any) -> Any:
    """The value at `key`, unresolved: `???` and `${...}` stay as written, a sub-config stays a node."""
    from omegaconf import DictConfig

    if isinstance(node, DictConfig):
        child = node._get_node(key)
        return child if isinstance(child, DictConfig) else child._value()  # type: ignore[union-attr]
    return node[key]


def _from_root(key: str, value: str) -> str:
    if (
        not value
        or value == "???"  # still to be given
        or value.startswith(("${", "~", "$"))  # an interpolation, home, a block parameter
        or "://" in value  # gs://, hdfs://: tf.io.gfile's
        or os.path.isabs(value)
        or (key == "trainer.warm_start.source" and RUN_ID.match(value))
        or (key.endswith(".weights") and value in KERAS_WEIGHTS)
    ):
        return value
    return os.path.normpath(ROOT / value)


def _under_root(value: str) -> str:
    root = f"{ROOT}{os.sep}"
    return value[len(root) :] if value.startswith(root) else value


def _is_mapping(node: Any) -> bool:
    from omegaconf import DictConfig

    return isinstance(node, (Mapping, DictConfig))


def _is_list(value: Any) -> bool:
    from omegaconf import ListConfig

    return isinstance(value, (list, ListConfig))
