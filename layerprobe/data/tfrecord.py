"""File lists for the streaming sources.

TFRecord files stream (`stream.TFRecordStream`); found by name through `registry`.
"""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Any

from layerprobe.errors import ConfigError

COMPRESSION = ("", "GZIP", "ZLIB")


def files_of(raw: Any, where: str) -> list[str]:
    """The files a path, a glob or a list of them name, in sorted order per pattern; `where` is the
    config path an error names."""
    patterns = raw if isinstance(raw, list) else [raw]
    files: list[str] = []
    for pattern in patterns:
        found = sorted(glob.glob(str(pattern))) if any(ch in str(pattern) for ch in "*?[") else [str(pattern)]
        if not found or not all(Path(f).is_file() for f in found):
            raise ConfigError(where, str(pattern), "no such file" if found else "no file matches")
        files += found
    return files
