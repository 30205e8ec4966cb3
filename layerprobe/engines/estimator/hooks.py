"""Training hooks of the Estimator engine."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from layerprobe._tf import tf
from layerprobe.engines.base import EvaluationCallback, ProgressSink, snapshot_prefix, to_snapshot_at_start
from layerprobe.engines.estimator.model_fn import LOSS_TENSOR
from layerprobe.engines.progress import ProgressMeter

log = logging.getLogger(__name__)


class StopBeforeFirstStep(tf.estimator.SessionRunHook):
    """Training to step 0 (trainer.train_steps=0, a probe-only run): the session is made, so the
    checkpoint saver writes the initialised (warm-started) model at step 0, and no step runs."""

    def after_create_session(self, session: Any, coord: Any) -> None:
        coord.request_stop()


class ProgressHook(tf.estimator.SessionRunHook):
    """Every `every` steps: a progress line (step, loss, steps/s, ETA) and a record of train/loss and
    train/steps_per_sec, handed to `flush` in batches (never one logging call per step)."""

    def __init__(
        self,
        every: int,
        total_steps: int,
        flush: ProgressSink | None = None,
        flush_every: int = 20,
    ) -> None:
        self.meter = ProgressMeter(every, total_steps, flush, flush_every)

    @property
    def records(self) -> list[tuple[dict[str, float], int]]:
        return self.meter.records

    def begin(self) -> None:
        self.loss = tf.compat.v1.get_default_graph().get_tensor_by_name(LOSS_TENSOR)
        self.step = tf.compat.v1.train.get_global_step()
        self.current = 0

    def after_create_session(self, session: Any, coord: Any) -> None:
        self.current = int(session.run(self.step))

    def before_run(self, run_context: Any) -> Any:
        return tf.estimator.SessionRunArgs({"loss": self.loss, "step": self.step})

    def after_run(self, run_context: Any, run_values: Any) -> None:
        # The global step fetched beside the train op is read before or after its increment (no
        # order between them), so it alone gives one step twice now and then. Each run is one step
        # of this worker; other workers (parameter servers) can only move the step further.
        self.current = max(self.current + 1, int(run_values.results["step"]))
        self.meter.observe(self.current, float(run_values.results["loss"]))

    def end(self, session: Any) -> None:
        self.meter.flush()


class EvaluationListener(tf.estimator.CheckpointSaverListener):
    """At each checkpoint saved during training (not the one written when the session starts, nor
    the last one, which the runner evaluates anyway): evaluate it and hand (step, metrics) to
    `on_evaluation`; a True answer stops training there (a pruner's decision)."""

    def __init__(
        self,
        evaluate: Callable[[str], dict[str, float]],
        on_evaluation: EvaluationCallback,
        model_dir: str,
        until_step: int,
    ) -> None:
        self.evaluate = evaluate
        self.model_dir = model_dir
        self.on_evaluation = on_evaluation
        self.until = until_step

    def begin(self) -> None:
        self.started = False

    def after_save(self, session: Any, global_step: int) -> bool:
        if not self.started or global_step >= self.until:
            self.started = True
            return False
        metrics = self.evaluate(tf.train.latest_checkpoint(self.model_dir))
        return bool(self.on_evaluation(int(global_step), metrics))


class SnapshotHook(tf.estimator.SessionRunHook):
    """Saves the variables at each of `steps` into `directory` (`snapshot-<step>`, all kept), beside
    the Estimator's own checkpoints, whose keep_checkpoint_max may delete them. The model the session
    starts from is saved too when its step is one of `steps` (see `to_snapshot_at_start`). Saving only
    reads variables, so the training trajectory is the same with or without this hook."""

    def __init__(self, steps: set[int], directory: str) -> None:
        self.steps = set(steps)
        self.directory = directory

    def begin(self) -> None:
        self.step = tf.compat.v1.train.get_global_step()
        self.saver = tf.compat.v1.train.Saver(max_to_keep=None, save_relative_paths=True)

    def after_create_session(self, session: Any, coord: Any) -> None:
        self.current = int(session.run(self.step))
        if to_snapshot_at_start(self.directory, self.current, self.steps):
            self._save(session, self.current)

    def before_run(self, run_context: Any) -> Any:
        return tf.estimator.SessionRunArgs(self.step)

    def after_run(self, run_context: Any, run_values: Any) -> None:
        self.current = max(self.current + 1, int(run_values.results))  # see ProgressHook.after_run
        self._save(run_context.session, self.current)

    def _save(self, session: Any, step: int) -> None:
        if step in self.steps:
            self.steps.discard(step)
            prefix = snapshot_prefix(self.directory, step)
            self.saver.save(session, prefix, write_meta_graph=False, write_state=False)
            log.debug("snapshot at step %d: %s", step, prefix)
