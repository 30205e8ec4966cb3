"""CSV files streamed through tf.data with typed columns: `data=csv data.params.stream=true`.

The same column config as the in-memory `csv` source (`sources.load_csv`): features a list of columns
stacked into `x` or {feature: [columns]}, labels one per column, dtypes per column; an undeclared
feature column is float32 (an empty cell is NaN), an undeclared label int64 when every cell is an
integer (one pass over the label cells when the source opens, remembered per file), else float32.
Several files (a glob or a list) need the same header. One record per line: a quoted cell may hold
commas but no line break.
Pipeline, splits (files, or a seeded hash of (file name, line index)) and checks: `files.RecordFiles`.
"""

from __future__ import annotations

import csv
import itertools
from collections.abc import Mapping
from typing import Any

import numpy as np

from layerprobe._tf import tf
from layerprobe.data.arrays import known_params
from layerprobe.data.digests import FileFacts, files_digest
from layerprobe.data.files import RecordFiles
from layerprobe.data.sources import CSV_DTYPES, csv_columns, feature_where
from layerprobe.errors import ConfigError
from layerprobe.schema import DataConfig

INT_TEXT = r"[+-]*[0-9]+"  # what the in-memory source takes for an integer cell (`str.isdigit` after signs)


class CSVStream(RecordFiles):
    """params = {path, features, labels, dtypes, stream: true}: a file, a glob or a list of files."""

    def __init__(self, data_cfg: DataConfig) -> None:
        params = dict(data_cfg.params)
        known_params("csv", params, ("path", "features", "labels", "dtypes", "stream"))
        self._open_files(data_cfg, params)
        self._header = _common_header(self._files)
        groups, labels, dtypes, self._where_of = csv_columns(params, self._header)
        every = sorted({f for files in self._files.values() for f in files})
        guessed = [c for c in labels if c not in dtypes]
        dtypes.update({c: "int64" if whole else "float32" for c, whole in zip(guessed, self._integers(every, guessed))})
        self._dtypes = {c: dtypes.get(c, "float32") for cols in groups.values() for c in cols} | {
            c: dtypes[c] for c in labels
        }
        for name, cols in groups.items():
            if len({self._dtypes[c] for c in cols}) > 1:
                raise ConfigError(feature_where(params, name), cols, "the columns of one feature need one dtype")
        self._groups, self._labels = groups, labels
        self._names = {"features": list(groups), "labels": list(labels)}
        self._opened()

    def _open(self, path: Any) -> tf.data.Dataset:
        return tf.data.TextLineDataset(path).skip(1)  # the header

    def _cells(self, line: Any) -> dict[str, Any]:
        cells = tf.io.decode_csv(line, [[""]] * len(self._header))  # more or fewer cells: an error
        return {h: tf.strings.strip(c) for h, c in zip(self._header, cells)}

    def _parse(self, line: Any) -> dict[str, Any]:
        cells = self._cells(line)
        typed = {c: _typed(cells[c], self._dtypes[c]) for c in self._dtypes}
        out = {name: tf.stack([typed[c] for c in cols]) for name, cols in self._groups.items()}
        return out | {c: typed[c] for c in self._labels}

    def _raw_count(self, path: str, where: str) -> int:
        return int(self._open(path).reduce(np.int64(0), lambda n, r: n + 1))

    def _parse_key(self) -> str:
        return repr((self._header, self._groups, self._labels, self._dtypes))

    def _integers(self, paths: list[str], columns: list[str]) -> list[bool]:
        """Per column: whether every cell of every file is an integer (rows that do not split into the
        header's cells are left to the checks); each file's answer is remembered."""
        if not columns:
            return []
        files_digest(paths, self.cache_dir)  # the facts are kept beside the digests
        facts = FileFacts(self.cache_dir, repr(("integers", self._header, columns)))
        every = [True] * len(columns)
        try:
            for path in paths:
                known = facts.get(path)
                if known is None:
                    known = self._integer_columns(path, columns)
                    facts.put(path, known)
                every = [a and bool(b) for a, b in zip(every, known)]
        finally:
            facts.save()
        return every

    def _integer_columns(self, path: str, columns: list[str]) -> list[int]:
        def whole(line: Any) -> Any:
            cells = self._cells(line)
            return tf.stack([tf.strings.regex_full_match(cells[c], INT_TEXT) for c in columns])

        flags = self._open(path).map(whole, num_parallel_calls=tf.data.AUTOTUNE).ignore_errors()
        return [int(v) for v in flags.reduce(tf.ones([len(columns)], tf.bool), tf.logical_and).numpy()]

    def _bad_record(self, where: str, path: str, index: int) -> ConfigError:
        """The in-memory source's line for a bad row, naming the file: line `index + 2` (after the header)."""
        line = index + 2
        with open(path, newline="", encoding="utf-8") as f:
            row = next(itertools.islice(csv.reader(f), line - 1, None), [])
        if len(row) != len(self._header):
            return ConfigError(where, path, f"line {line} has {len(row)} cells, the header {len(self._header)}")
        for col, dtype in self._dtypes.items():
            cell = row[self._header.index(col)].strip()
            try:
                _ = (float(cell) if cell else 0.0) if dtype.startswith("float") else int(cell)
            except ValueError:
                rule = f"column {col!r} on line {line} of {path} is not {dtype}"
                return ConfigError(self._where_of[col], cell, rule)
        return super()._bad_record(where, path, index)

    def _nan_counts(self) -> dict[str, dict[tuple[str, str], int]]:
        """NaN per float feature and label of each split, by one pass (normalize refuses them); only
        the transforms read them, so without transforms there is no pass."""
        if not self.transforms:
            return {}
        return {split: _nan_count(self._examples(split, training=False)) for split in self._files}


def _nan_count(ds: tf.data.Dataset) -> dict[tuple[str, str], int]:
    """{(group, name): NaN count} of the float features and labels of (features, labels) examples."""
    names = [
        (g, n) for g, spec in zip(("features", "labels"), ds.element_spec) for n in spec if spec[n].dtype.is_floating
    ]
    if not names:
        return {}

    def nans(f: Any, y: Any) -> Any:
        groups = {"features": f, "labels": y}
        return tf.stack([tf.reduce_sum(tf.cast(tf.math.is_nan(groups[g][n]), tf.int64)) for g, n in names])

    counts = ds.map(nans, num_parallel_calls=tf.data.AUTOTUNE).reduce(tf.zeros([len(names)], tf.int64), tf.add)
    return {k: int(c) for k, c in zip(names, counts.numpy()) if c}


def _typed(cell: Any, dtype: str) -> Any:
    """A stripped cell as `dtype`; an empty float cell is NaN, an empty int cell an error."""
    if dtype.startswith("float"):
        empty = tf.equal(cell, "")
        value = tf.strings.to_number(tf.where(empty, "0", cell), dtype)
        return tf.where(empty, tf.constant(np.nan, dtype), value)
    return tf.strings.to_number(cell, dtype)


def _common_header(files: Mapping[str, list[str]]) -> list[str]:
    """The header line every file shares; an empty file or another header is one line naming it."""
    first: tuple[str, list[str]] = ("", [])
    for split, paths in files.items():
        where = (
            "data.splits.eval_params.path"
            if split == "eval" and paths is not files.get("train")
            else "data.params.path"
        )
        for path in paths:
            with open(path, newline="", encoding="utf-8") as f:
                header = [h.strip() for h in next(csv.reader(f), [])]
            if not header:
                raise ConfigError(where, path, "the file is empty: a CSV needs a header line")
            if not first[0]:
                first = (path, header)
            elif header != first[1]:
                raise ConfigError(where, path, f"its header {header} differs from {first[1]} of {first[0]}")
    return first[1]  # files_of never gives an empty list


__all__ = ["CSVStream", "CSV_DTYPES"]
