"""Stable example keys, the probe's seeded sample ranks and shards: what any number of processes agree on.

Every example has an int64 key that does not depend on the order it is read in: its index in an
in-memory split, or a fingerprint of (file name, record index) for a file source. A seeded hash of the
key ranks the examples; the probe's reservoir is the `reservoir_size` smallest ranks, a uniform sample
that needs no split size and that merges exactly (the smallest of the shards' smallest). A shard
`(i, n)` is the i-th of n disjoint parts of a split. numpy only: config checks and the probe import it.
"""

from __future__ import annotations

import re

import numpy as np

from layerprobe.errors import LayerprobeError

_MIX = (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB)  # splitmix64's constants
KEY_BUCKETS = 1 << 62  # file keys: fingerprints of "file name:record index" modulo this


def sample_rank(keys: np.ndarray, seed: int) -> np.ndarray:
    """(n,) int64 keys -> (n,) int64 ranks in [0, 2**63): splitmix64 of the key offset by the seed."""
    with np.errstate(over="ignore"):
        z = np.asarray(keys).astype(np.uint64) + np.uint64((int(seed) * _MIX[0] + _MIX[0]) % (1 << 64))
        z = (z ^ (z >> np.uint64(30))) * np.uint64(_MIX[1])
        z = (z ^ (z >> np.uint64(27))) * np.uint64(_MIX[2])
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(1)).astype(np.int64)


def smallest(ranks: np.ndarray, keys: np.ndarray, k: int) -> np.ndarray:
    """Positions of the k smallest ranks (ties, practically absent in 63 bits, broken by key)."""
    return np.lexsort((keys, ranks))[:k]


def parse_shard(text: str) -> tuple[int, int]:
    """`"i/n"` (0 <= i < n) -> (i, n); anything else is one line naming the value and the form."""
    found = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not found or not 0 <= int(found.group(1)) < int(found.group(2)):
        raise LayerprobeError(f"--shard: expected i/N with 0 <= i < N (e.g. 0/2). Received: {text!r}")
    return int(found.group(1)), int(found.group(2))
