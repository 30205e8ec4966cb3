"""Training progress, the same for every engine: a line every N steps (step, loss, steps/s, ETA),
a record of train/loss and train/steps_per_sec handed to the tracker in batches, and a stop with one
line when the loss is no longer finite. No TensorFlow here: the engines' hooks feed it (step, loss)."""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from layerprobe.engines.base import ProgressSink
from layerprobe.errors import TrainingDiverged, first_line

log = logging.getLogger("layerprobe.engines.progress")


class ProgressMeter:
    """Use as a context manager around training: the records not yet handed on are handed on however
    training ends (Ctrl-C runs no hook's `end` and no callback's `on_train_end`)."""

    def __init__(self, every: int, total_steps: int, flush: ProgressSink | None = None, flush_every: int = 20) -> None:
        self.every, self.total, self.flush_fn, self.flush_every = every, total_steps, flush, flush_every
        self.records: list[tuple[dict[str, float], int]] = []
        self.last: tuple[int, float] | None = None

    def observe(self, step: int, loss: float) -> float | None:
        """One training step's loss; returns the steps/s when this step is reported, else None."""
        if not math.isfinite(loss):
            raise TrainingDiverged(
                f"training loss became {loss} at global step {step}; the last checkpoint is kept. "
                "Lower trainer.optimizer.learning_rate or check the data for NaN/Inf"
            )
        now = time.perf_counter()
        if self.last is None:
            self.last = (step, now)
            return None
        if step % self.every and step < self.total:
            return None
        rate = (step - self.last[0]) / max(now - self.last[1], 1e-9)
        self.last = (step, now)
        eta = (self.total - step) / rate if rate > 0 else float("nan")
        # recorded before it is shown: a step on screen when Ctrl-C comes is a step in the store
        self.records.append(({"train/loss": loss, "train/steps_per_sec": rate}, step))
        log.info("train step %d/%d  loss %.4f  %.1f steps/s  ETA %.0fs", step, self.total, loss, rate, eta)
        if len(self.records) >= self.flush_every:
            self.flush()
        return rate

    def flush(self) -> None:
        if self.records and self.flush_fn is not None:
            self.flush_fn(self.records)
        self.records = []

    def __enter__(self) -> ProgressMeter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.flush()
            return
        try:  # what stopped training (Ctrl-C, a diverged loss) is the error to report, not this
            self.flush()
        except Exception as e:  # noqa: BLE001
            steps = f"{self.records[0][1]}-{self.records[-1][1]}" if self.records else "?"
            log.warning("train/loss of steps %s was not logged: %s", steps, first_line(e))
