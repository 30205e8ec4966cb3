"""Keras callbacks of the engine: Ctrl-C at a step boundary, progress records (and divergence),
checkpoints every N steps."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import keras

from layerprobe._tf import tf
from layerprobe.engines.base import ProgressSink, to_snapshot_at_start
from layerprobe.engines.keras.checkpoints import Saver
from layerprobe.engines.progress import ProgressMeter

log = logging.getLogger(__name__)


class StepBoundary(keras.callbacks.Callback):
    """Raises a pending Ctrl-C before a step begins (engines/interrupt.py): not inside the other
    callbacks' checkpoint or summary writes."""

    def __init__(self) -> None:
        super().__init__()
        self.check: Callable[[], None] = lambda: None  # set by the deferred_interrupt() block around fit

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.check()


class Progress(keras.callbacks.Callback):
    """Every `every` global steps: a progress line (step, loss, steps/s, ETA), a TensorBoard point and
    a record of train/loss and train/steps_per_sec handed to `flush` in batches of `flush_every`.

    Keras hands a callback the running mean of the epoch's loss; the step's own loss is recovered
    from two consecutive means (k*m_k - (k-1)*m_(k-1), exact in real numbers; fit runs one epoch of
    equal batches), so train/loss means what it means in the Estimator engine. Use as a context
    manager around `fit`."""

    def __init__(
        self, every: int, start: int, total: int, flush: ProgressSink | None, logdir: str, flush_every: int = 20
    ) -> None:
        super().__init__()
        self.start = start
        self.meter = ProgressMeter(every, total, flush, flush_every)
        self.writer = tf.summary.create_file_writer(logdir)
        self._mean = 0.0

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        k, step = batch + 1, self.start + batch + 1
        mean = float((logs or {})["loss"])
        loss, self._mean = k * mean - (k - 1) * self._mean, mean
        rate = self.meter.observe(step, loss if math.isfinite(mean) else mean)
        if rate is not None:
            with self.writer.as_default(step=step):
                tf.summary.scalar("loss", loss)
                tf.summary.scalar("global_step/sec", rate)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        """Hand on the records and close the TensorBoard writer however `fit` ended: on Ctrl-C it
        calls no `on_train_end`."""
        try:
            self.meter.__exit__(exc_type, exc, tb)
        finally:
            self.writer.close()


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
        if to_snapshot_at_start(self.snapshot_dir, self.step, self.snapshots):  # the model fit starts from
            self.saver.snapshot(self.step, self.snapshot_dir)

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
