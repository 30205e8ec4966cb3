"""The checkpoints a model_dir's `checkpoint` state file lists: both engines write the Estimator's
format (`model.ckpt-<step>`, `global_step` inside), so both read their rotating checkpoints here."""

from __future__ import annotations

from layerprobe._tf import tf


def listed(model_dir: str) -> list[tuple[int, str]]:
    """(step, path prefix) of the newest `keep_checkpoint_max` checkpoints the state file names,
    oldest first."""
    state = tf.train.get_checkpoint_state(model_dir)
    paths = list(state.all_model_checkpoint_paths) if state else []
    return sorted((int(tf.train.load_variable(p, "global_step")), p) for p in paths)
