"""Keras callbacks of the engine: progress records (and divergence), checkpoints every N steps."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import keras

from layerprobe._tf import tf
from layerprobe.engines.base import ProgressSink
from layerprobe.engines.keras.checkpoints import Saver
from layerprobe.errors import TrainingDiverged

log = logging.getLogger(__name__)


class Progress(keras.callbacks.Callback):
    """Every `every` global steps: a progress line (step, loss, steps/s, ETA), a TensorBoard point and
    a record of train/loss and train/steps_per_sec handed to `flush` in batches of `flush_every`.

    Keras hands a callback the running mean of the epoch's loss; the step's own loss is recovered
    from two consecutive means (k*m_k - (k-1)*m_(k-1), exact in real numbers; fit runs one epoch of
    equal batches), so train/loss means what it means in the Estimator engine."""

    def __init__(
        self, every: int, start: int, total: int, flush: ProgressSink | None, logdir: str, flush_every: int = 20
    ) -> None:
        super().__init__()
        self.every, self.start, self.total, self.flush_fn, self.flush_every = every, start, total, flush, flush_every
        self.records: list[tuple[dict[str, float], int]] = []
        self.writer = tf.summary.create_file_writer(logdir)
        self.last: tuple[int, float] | None = None
        self._mean = 0.0

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        k, step = batch + 1, self.start + batch + 1
        mean = float((logs or {})["loss"])
        loss, self._mean = k * mean - (k - 1) * self._mean, mean
        if not math.isfinite(mean):
            raise TrainingDiverged(
                f"training loss became {loss} at global step {step}; the last checkpoint is kept. "
                "Lower trainer.optimizer.learning_rate or check the data for NaN/Inf"
            )
        now = time.perf_counter()
        if self.last is None:
            self.last = (step, now)
            return
        if step % self.every and step < self.total:
            return
        rate = (step - self.last[0]) / max(now - self.last[1], 1e-9)
        self.last = (step, now)
        eta = (self.total - step) / rate if rate > 0 else float("nan")
        log.info("train step %d/%d  loss %.4f  %.1f steps/s  ETA %.0fs", step, self.total, loss, rate, eta)
        with self.writer.as_default(step=step):
            tf.summary.scalar("loss", loss)
            tf.summary.scalar("global_step/sec", rate)
        self.records.append(({"train/loss": loss, "train/steps_per_sec": rate}, step))
        if len(self.records) >= self.flush_every:
            self._flush()

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self._flush()
        self.writer.close()

    def _flush(self) -> None:
        if self.records and self.flush_fn is not None:
            self.flush_fn(self.records)
        self.records = []


class Checkpoints(keras.callbacks.Callback):
    """A checkpoint at every multiple of `every` global steps and at the end of training (the
    Estimator's cadence), so a killed run resumes from the last multiple."""

    def __init__(
        self,
        saver: Saver,
        every: int,
        start: int,
        until: int,
        after_save: Callable[[int, str], bool] | None = None,
        snapshots: Sequence[int] = (),
        snapshot_dir: str = "",
    ) -> None:
        """`after_save(step, path)` hears every checkpoint saved before the last (a sweep's pruner:
        True stops training); `snapshots` are the steps also saved, all kept, in `snapshot_dir`."""
        super().__init__()
        self.saver, self.every, self.step, self.saved, self.until = saver, every, start, start, until
        self.after_save, self.snapshots, self.snapshot_dir = after_save, set(snapshots), snapshot_dir

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        if self.step == 0 and 0 in self.snapshots:  # the initialised model
            self.saver.snapshot(0, self.snapshot_dir)

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.step += 1
        if self.step in self.snapshots:
            self.saver.snapshot(self.step, self.snapshot_dir)
        if self.step % self.every == 0:
            path = self.saver.save(self.step)
            self.saved = self.step
            if self.after_save is not None and self.step < self.until and self.after_save(self.step, path):
                self.model.stop_training = True

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if self.saved != self.step:
            self.saver.save(self.step)
