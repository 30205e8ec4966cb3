"""User-facing errors: one line that names the config path, the value, the rule and the options."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any


class LayerprobeError(Exception):
    """An error caused by the user's input; the CLI prints its message on one line and exits 2."""


class ConfigError(LayerprobeError):
    """A config value breaks a rule. The message names the path, the value and what is allowed."""

    def __init__(
        self,
        path: str,
        value: Any,
        rule: str,
        options: Iterable[str] | None = None,
    ) -> None:
        self.path = path
        self.value = value
        self.rule = rule
        self.options = sorted(str(o) for o in options) if options is not None else None
        super().__init__(_format(path, value, rule, self.options))


def _format(path: str, value: Any, rule: str, options: list[str] | None) -> str:
    msg = f"{path}: {rule}. Received: {value!r}"
    if options is not None:
        close = did_you_mean(str(value), options)
        msg += f". Did you mean {close!r}?" if close else "."
        shown = options if len(options) <= 12 else options[:12] + ["..."]
        msg += f" Allowed: {', '.join(shown)}"
    return msg.replace("\n", " ")


def did_you_mean(value: str, options: Iterable[str]) -> str | None:
    """Closest option to ``value`` (case-insensitive), or None when nothing is close."""
    options = list(options)
    lowered = {o.lower(): o for o in options}
    if value.lower() in lowered:
        return lowered[value.lower()]
    hits = difflib.get_close_matches(value.lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[hits[0]] if hits else None


class TrainingDiverged(LayerprobeError):
    """The training loss became NaN or infinite."""


# Lines that Keras and TensorFlow put before the message that says what went wrong.
_NOISE = ("Call arguments", "Exception encountered")


def first_line(e: BaseException, limit: int = 300) -> str:
    """The first line of an error's message that says something (at most `limit` characters), or the
    error's type when it says nothing: how a library's error becomes part of one line."""
    for line in str(e).strip().splitlines():
        line = line.strip()
        if line and not line.startswith(_NOISE):
            return line[:limit]
    return type(e).__name__
