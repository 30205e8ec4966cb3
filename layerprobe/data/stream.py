"""TFRecord shards streamed through tf.data, never loaded whole: a `DataSource` for data at any scale.

The pipeline, splits and checks are `files.RecordFiles`'; this reads tf.train.Example records (features
declared as in `records`), GZIP/ZLIB compressed or not.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from layerprobe._tf import tf
from layerprobe.data.arrays import known_params
from layerprobe.data.files import RecordFiles, record_key
from layerprobe.data.records import batch_parser, parser, tf_message
from layerprobe.data.tfrecord import COMPRESSION
from layerprobe.errors import ConfigError
from layerprobe.schema import DataConfig

__all__ = ["TFRecordStream", "record_key"]


class TFRecordStream(RecordFiles):
    """params = {path, compression, features, labels} as for `tfrecord` (see `records` for the specs)."""

    def __init__(self, data_cfg: DataConfig) -> None:
        params = dict(data_cfg.params)
        known_params(data_cfg.source, params, ("path", "compression", "features", "labels"))
        self._compression = params.get("compression") or ""
        if self._compression not in COMPRESSION:
            raise ConfigError("data.params.compression", self._compression, "unknown compression", COMPRESSION)
        if not params.get("features"):
            raise ConfigError("data.params.features", params.get("features"), "declare at least one feature")
        self._names = {g: list(params.get(g) or {}) for g in ("features", "labels")}
        specs = {n: (f"data.params.{g}.{n}", s) for g in self._names for n, s in (params.get(g) or {}).items()}
        self._parse = parser(specs)
        self._parse_batch = batch_parser(specs)
        self._specs = repr((sorted(specs.items()), self._compression))
        self._open_files(data_cfg, params)
        self._opened()

    def _parse_key(self) -> str:
        return self._specs

    def _open(self, path: Any) -> tf.data.Dataset:
        return tf.data.TFRecordDataset(path, compression_type=self._compression)

    def _raw_count(self, path: str, where: str) -> int:
        try:
            return int(self._open(path).reduce(np.int64(0), lambda n, r: n + 1))
        except (tf.errors.InvalidArgumentError, tf.errors.DataLossError) as e:
            raise ConfigError(where, path, f"cannot be read as records ({tf_message(e)})") from None
