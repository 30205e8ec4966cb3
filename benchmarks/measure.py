"""Figures, goals and sections: what every benchmark returns, and how repeats are summarised."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Goal:
    what: str
    value: float
    op: str  # one of ">=", "<=", "<", ">"
    target: float
    unit: str = "x"

    @property
    def met(self) -> bool:
        return {">=": self.value >= self.target, "<=": self.value <= self.target, "<": self.value < self.target}.get(
            self.op, self.value > self.target
        )

    def line(self) -> str:
        return f"{self.what}: {fmt(self.value)}{self.unit} (goal {self.op} {fmt(self.target)}{self.unit}) -> " + (
            "met" if self.met else "NOT met"
        )


@dataclass
class Section:
    key: str
    title: str
    how: str  # one paragraph: what was measured and how
    header: list[str]
    rows: list[list[str]] = field(default_factory=list)
    goals: list[Goal] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)  # raw numbers, for the plot


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def spread(xs: Sequence[float], unit: str = "", digits: int = 3) -> str:
    """`median (min-max, n)` of repeats; a single value alone."""
    if len(xs) == 1:
        return f"{fmt(xs[0], digits)}{unit}"
    return f"{fmt(median(xs), digits)}{unit} ({fmt(min(xs), digits)}-{fmt(max(xs), digits)}, n={len(xs)})"


def fmt(x: float, digits: int = 3) -> str:
    if x != x:  # NaN
        return "nan"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def say(msg: str) -> None:
    """Benchmarks print their figures as they go (flushed: the smoke test reads a pipe)."""
    print(msg, flush=True)


def rss_bytes() -> int:
    return _status_kb("VmRSS") * 1024


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


class PeakRSS:
    """Peak resident memory over a block: VmHWM after resetting it (Linux clear_refs 5), cross-checked
    by sampling VmRSS every few milliseconds in a thread. `growth` = peak - RSS just before the block."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.before = self.peak = self.sampled_peak = self.hwm_peak = 0
        self.hwm_reset = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.sampled_peak = max(self.sampled_peak, rss_bytes())
            time.sleep(self.interval)

    def __enter__(self) -> PeakRSS:
        try:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
            self.hwm_reset = True
        except OSError:
            self.hwm_reset = False
        self.before = rss_bytes()
        self.sampled_peak = self.before
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.hwm_peak = _status_kb("VmHWM") * 1024 if self.hwm_reset else 0
        self.peak = max(self.sampled_peak, self.hwm_peak)

    @property
    def growth(self) -> int:
        return self.peak - self.before
