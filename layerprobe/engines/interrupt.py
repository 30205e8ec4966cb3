"""Ctrl-C during training stops it between two steps, never inside one.

Python raises KeyboardInterrupt at whatever line of Python runs when SIGINT arrives: in training,
that is usually the middle of a callback (a checkpoint being written, a summary being flushed). A CI
run of the Keras engine once died of SIGSEGV instead of exiting 130 when the signal came right after
the progress line of a checkpoint step. Within `deferred_interrupt()` the first SIGINT only asks;
the engine's step-boundary check raises KeyboardInterrupt there (and the block raises it on leaving
when no check came after the signal). A second SIGINT raises at once, as before, for a step that
hangs. Outside the main thread, or when SIGINT is not Python's default handler (ignored, or a
handler of the user's), nothing changes.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any


def _never() -> None:
    return None


@contextlib.contextmanager
def deferred_interrupt() -> Iterator[Callable[[], None]]:
    """Yields `check()`: raises KeyboardInterrupt when a SIGINT came since the block began."""
    if threading.current_thread() is not threading.main_thread():
        yield _never
        return
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield _never
        return
    pending: list[int] = []

    def ask(signum: int, frame: Any) -> None:
        if pending:  # the second Ctrl-C: at once
            raise KeyboardInterrupt
        pending.append(signum)

    def check() -> None:
        if pending:
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, ask)
    try:
        yield check
    finally:
        signal.signal(signal.SIGINT, previous)
    check()  # came during the last step: training ended, the interrupt still stands
