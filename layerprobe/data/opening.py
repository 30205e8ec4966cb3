"""When a file source reads its files: as it opens (the default: bad data fails before training), or,
inside `deferred()`, only when something asks what that reading finds. The merge of shard states uses
the deferred form: it needs the model's graph (the data's element spec, which reads nothing) and never
the data's digest, sizes or a pass over the records.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

_DEFER = contextvars.ContextVar("layerprobe_defer_open", default=False)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """File sources opened in this block read their files on first demand, not at once."""
    token = _DEFER.set(True)
    try:
        yield
    finally:
        _DEFER.reset(token)


class OpensOnDemand:
    """A source whose `_read_files` sets `digest`, `_sizes`, `skipped` and `fitted`; `_opened()` runs it
    now, or later, the first time one of them is asked for, when opened inside `deferred()`.
    `_fit_only` gives `fitted` without the rest when no fitted transform needs a pass over the data."""

    _READ = ("digest", "_sizes", "skipped", "fitted")

    def _opened(self) -> None:
        if not _DEFER.get():
            self._read_files()

    def _read_files(self) -> None:
        raise NotImplementedError

    def _fit_only(self) -> dict[str, Any] | None:
        """The fitted transforms if they need no pass over the data, else None."""
        return None

    def __getattr__(self, name: str) -> Any:  # only reached while a deferred attribute is missing
        if name not in self._READ or self.__dict__.get("_reading"):
            raise AttributeError(name)
        self.__dict__["_reading"] = True
        try:
            fitted = self._fit_only() if name == "fitted" else None
            if fitted is None:
                self._read_files()
            else:
                self.__dict__["fitted"] = fitted
        finally:
            del self.__dict__["_reading"]
        return self.__dict__[name]
