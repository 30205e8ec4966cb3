"""Training progress, the same for every engine: a line every N steps (step, loss, steps/s, ETA),
a record of train/loss and train/steps_per_sec handed to the tracker in batches, and a stop with one
line when the loss is no longer finite. No TensorFlow here: the engines' hooks feed it (step, loss)."""

from __future__ import annotations

import logging
import math
import time

from layerprobe.engines.base import ProgressSink
from layerprobe.errors import TrainingDiverged

log = logging.getLogger("layerprobe.engines.progress")


class ProgressMeter:
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
        log.info("train step %d/%d  loss %.4f  %.1f steps/s  ETA %.0fs", step, self.total, loss, rate, eta)
        self.records.append(({"train/loss": loss, "train/steps_per_sec": rate}, step))
        if len(self.records) >= self.flush_every:
            self.flush()
        return rate

    def flush(self) -> None:
        if self.records and self.flush_fn is not None:
            self.flush_fn(self.records)
        self.records = []
