"""Data sources by name: what serves each `data.source`, as an import path.

Nothing is imported until a source is asked for, so config checks can list the names without
TensorFlow, and no data module imports another through this table.
ARRAY_LOADERS are `params -> ArraySet`: read whole into memory, then split, fitted and served by
`memory.InMemorySource` (see `pipeline.prepare`). STREAMS build a `DataSource` from the data config.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from layerprobe.errors import ConfigError

if TYPE_CHECKING:  # numpy is not needed to list or check names
    from layerprobe.data.arrays import ArraySet

ARRAY_LOADERS: dict[str, str] = {
    "digits": "layerprobe.data.sources:load_digits",
    "iris": "layerprobe.data.sources:load_iris",
    "wine": "layerprobe.data.sources:load_wine",
    "breast_cancer": "layerprobe.data.sources:load_breast_cancer",
    "synthetic": "layerprobe.data.sources:load_synthetic",
    "npz": "layerprobe.data.sources:load_npz",
    "csv": "layerprobe.data.sources:load_csv",
}
# name -> a class built from the whole data config that implements `source.DataSource` itself
STREAMS: dict[str, str] = {
    "tfrecord": "layerprobe.data.stream:TFRecordStream",
    "tfrecord_stream": "layerprobe.data.stream:TFRecordStream",  # the name it had before tfrecord streamed
    "image_folder": "layerprobe.data.images:ImageFolder",
    "tfds": "layerprobe.data.tfdsstream:TFDSStream",  # prepared TensorFlow Datasets on disk
}
# in-memory sources that stream instead when `data.params.stream` is true (large files)
STREAMABLE: dict[str, str] = {"csv": "layerprobe.data.csvstream:CSVStream"}
SOURCE_NAMES = (*ARRAY_LOADERS, *STREAMS)


def stream_target(source: Any, params: Mapping[str, Any]) -> str | None:
    """The import path of the `DataSource` class that streams data of `source` with `params`, or
    None (in memory)."""
    if source in STREAMS:
        return str(STREAMS[source])
    if source in STREAMABLE and params.get("stream"):
        return STREAMABLE[source]
    return None


def resolve(target: str) -> Any:
    """Import `package.module:attribute` and return the attribute."""
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def check_name(source: Any) -> None:
    if source not in SOURCE_NAMES:
        raise ConfigError("data.source", source, "unknown data source", SOURCE_NAMES)


def array_loader(source: str) -> Callable[[Mapping[str, Any]], ArraySet]:
    """The function that reads an in-memory source whole: `params -> ArraySet`."""
    check_name(source)
    if source not in ARRAY_LOADERS:
        raise ConfigError("data.source", source, "streams its files: it cannot be read whole", ARRAY_LOADERS)
    loader: Callable[[Mapping[str, Any]], ArraySet] = resolve(ARRAY_LOADERS[source])
    return loader


def load_arrays(source: str, params: Mapping[str, Any]) -> ArraySet:
    """An in-memory source read whole; refuses a source without examples."""
    data = array_loader(source)(params)
    if data.size == 0:
        raise ConfigError("data", source, "the source holds no examples")
    return data
