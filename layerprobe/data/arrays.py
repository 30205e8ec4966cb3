"""Named numpy arrays and the parameter checks every source shares. No TensorFlow, no other data module:
sources of every kind import from here, so nothing imports back."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from layerprobe.errors import ConfigError


@dataclass(frozen=True)
class ArraySet:
    features: dict[str, np.ndarray]  # name -> (examples, ...)
    labels: dict[str, np.ndarray]  # name -> (examples, ...)

    @property
    def size(self) -> int:
        return len(next(iter(self.features.values())))

    def take(self, index: np.ndarray) -> ArraySet:
        return ArraySet({k: v[index] for k, v in self.features.items()}, {k: v[index] for k, v in self.labels.items()})

    def digest(self) -> str:
        """sha256 over names, dtypes, shapes and bytes: identifies the data a run read."""
        h = hashlib.sha256()
        for group in (self.features, self.labels):
            for name in sorted(group):
                arr = np.ascontiguousarray(group[name])
                h.update(f"{name}:{arr.dtype}:{arr.shape};".encode())
                h.update(arr.tobytes())
        return h.hexdigest()


def known_params(source: str, params: Mapping[str, Any], known: tuple[str, ...]) -> None:
    """Refuse a key of `data.params` that the source does not take."""
    for key in params:
        if key not in known:
            rule = f"{source} takes no parameter {key!r}" if known else f"{source} takes no parameters"
            raise ConfigError(f"data.params.{key}", key, rule, known if known else None)


def required(params: Mapping[str, Any], key: str) -> Any:
    """`data.params.<key>`, refusing a missing or empty value."""
    if params.get(key) in (None, "", "???"):  # ??? = left MISSING in a shipped config
        raise ConfigError(f"data.params.{key}", params.get(key), "required for this source")
    return params[key]
