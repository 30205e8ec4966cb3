"""What a file source learns by reading its files, remembered by (path, size, mtime) in the cache dir,
so that a file is read once however many runs, shard processes and merges open it: the sha256 of
its bytes (read in chunks), and facts a source finds in a pass over it (record counts, which records
do not parse), kept per `kind` (what the source checked: the declared features, the split).

`READS` counts the files this process hashed and scanned: an open of unchanged files adds nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CHUNK = 1 << 20
INDEX = "file-digests.json"  # in the cache dir: {path: [size, mtime_ns, sha256, {kind: facts}]}
READS: Counter[str] = Counter()  # "hashed" / "scanned": files read by this process


def file_digest(path: str) -> str:
    READS["hashed"] += 1
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def path_digest(path: str | Path) -> str:
    """sha256 of a file's bytes, or of a directory's files (their relative names and bytes, in order):
    a saved model, one file or a SavedModel directory."""
    p = Path(path)
    if not p.is_dir():
        return file_digest(str(p))
    h = hashlib.sha256()
    for f in sorted(x for x in p.rglob("*") if x.is_file()):
        h.update(str(f.relative_to(p)).encode())
        h.update(file_digest(str(f)).encode())
    return h.hexdigest()


def files_digest(paths: list[str], cache_dir: str) -> str:
    """One sha256 over the files' names (without their directory) and bytes; known files are not reread."""
    index = _load(cache_dir)
    h, changed = hashlib.sha256(), False
    for path in paths:
        st = os.stat(path)
        key = str(Path(path).resolve())
        known = index.get(key)
        if known and known[:2] == [st.st_size, st.st_mtime_ns]:
            digest = known[2]
        else:  # a new or changed file: its facts are forgotten with its old digest
            digest, changed = file_digest(path), True
            index[key] = [st.st_size, st.st_mtime_ns, digest]
        h.update(f"{Path(path).name}:{digest};".encode())
    if changed:
        _save(cache_dir, index)
    return h.hexdigest()


class FileFacts:
    """Facts (a list of ints) per file for one `kind`, beside the files' digests (`files_digest` first):
    `get` what is known of an unchanged file, `put` what a pass found, `save` once at the end."""

    def __init__(self, cache_dir: str, kind: str) -> None:
        self.cache_dir, self.kind = cache_dir, kind
        self._index = _load(cache_dir)
        self._changed = False

    def get(self, path: str) -> list[int] | None:
        """What is known of the file, or None: the caller reads it (counted in READS)."""
        entry = self._entry(path)
        known = entry[3].get(self.kind) if entry is not None and len(entry) > 3 else None
        if known is None:
            READS["scanned"] += 1
        return known  # type: ignore[no-any-return]

    def put(self, path: str, facts: list[int]) -> None:
        """Remember `facts`, found by reading the file."""
        entry = self._entry(path)
        if entry is None:  # changed since it was digested: not remembered
            return
        entry[3:] = [{**(entry[3] if len(entry) > 3 else {}), self.kind: [int(v) for v in facts]}]
        self._changed = True

    def save(self) -> None:
        if self._changed:
            _save(self.cache_dir, self._index)
            self._changed = False

    def _entry(self, path: str) -> list[Any] | None:
        st = os.stat(path)
        entry = self._index.get(str(Path(path).resolve()))
        return entry if entry and entry[:2] == [st.st_size, st.st_mtime_ns] else None


def _load(cache_dir: str) -> dict[str, Any]:
    try:
        return json.loads((Path(cache_dir) / INDEX).read_text())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return {}


def _save(cache_dir: str, index: dict[str, Any]) -> None:
    index_path = Path(cache_dir) / INDEX
    try:
        index_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = index_path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({k: v for k, v in index.items() if os.path.exists(k)}))  # drop the gone
        tmp.replace(index_path)  # atomic: a concurrent run reads the old or the new index, never half
    except OSError as e:  # a read-only cache only costs reading the files again next time
        log.warning("cannot write the file digest cache %s: %s", index_path, e)
