"""sha256 of files' bytes, read in chunks, remembered by (path, size, mtime) so a run hashes a file once."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

CHUNK = 1 << 20
INDEX = "file-digests.json"  # in the cache dir: {path: [size, mtime_ns, sha256]}


def file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def files_digest(paths: list[str], cache_dir: str) -> str:
    """One sha256 over the files' names (without their directory) and bytes; known files are not reread."""
    index_path = Path(cache_dir) / INDEX
    try:
        index = json.loads(index_path.read_text())
    except (OSError, ValueError):
        index = {}
    h, changed = hashlib.sha256(), False
    for path in paths:
        st = os.stat(path)
        key = str(Path(path).resolve())
        known = index.get(key)
        if known and known[:2] == [st.st_size, st.st_mtime_ns]:
            digest = known[2]
        else:
            digest, changed = file_digest(path), True
            index[key] = [st.st_size, st.st_mtime_ns, digest]
        h.update(f"{Path(path).name}:{digest};".encode())
    if changed:
        try:
            index_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = index_path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({k: v for k, v in index.items() if os.path.exists(k)}))  # drop the gone
            tmp.replace(index_path)  # atomic: a concurrent run reads the old or the new index, never half
        except OSError as e:  # a read-only cache only costs rehashing next time
            log.warning("cannot write the file digest cache %s: %s", index_path, e)
    return h.hexdigest()
