"""Checkpoints of a Keras model in the Estimator's format: variables keyed by their Keras path
(`conv1/kernel`), the step as `global_step`, a `checkpoint` state file listing the kept ones.

So `tf.train.latest_checkpoint`, `load_variable(ckpt, "global_step")`, reprobe's weight check and a
weights transfer between the engines read either engine's model_dir the same way.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from layerprobe._tf import tf
from layerprobe.engines.base import snapshot_prefix
from layerprobe.graph.keys import model_weight_keys
from layerprobe.graph.keys import variables as weights_of

log = logging.getLogger(__name__)

PREFIX = "model.ckpt"  # the Estimator's file prefix: model.ckpt-<step>


def variables(model: Any) -> dict[str, Any]:
    """Checkpoint key -> tf.Variable: the model's weights, the optimizer's state and global_step."""
    keys = model_weight_keys(model.layers)
    out = {keys[id(v)]: v.value for v in weights_of(model)}
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None:
        out["global_step"] = optimizer.iterations.value
        for v in optimizer.variables:
            # Slots as optimizer/conv1_kernel_momentum: the path's first part is the optimizer's
            # process-unique name (adam_4). The learning rate comes from the config, as in the Estimator.
            if v is not optimizer.iterations and v.name != "learning_rate":
                out[f"optimizer/{v.path.split('/', 1)[-1]}"] = v.value
    return out


class Saver:
    """Writes and restores checkpoints of one model in model_dir, keeping the newest `keep`."""

    def __init__(self, model: Any, model_dir: str, keep: int) -> None:
        self.model_dir = model_dir
        self._saver = tf.compat.v1.train.Saver(var_list=variables(model), max_to_keep=keep, save_relative_paths=True)
        state = tf.train.get_checkpoint_state(model_dir)
        if state is not None:  # a restarted run keeps the kept list (and deletes the oldest as it saves)
            self._saver.recover_last_checkpoints(list(state.all_model_checkpoint_paths))

    def save(self, step: int) -> str:
        Path(self.model_dir).mkdir(parents=True, exist_ok=True)
        path: str = self._saver.save(None, str(Path(self.model_dir) / PREFIX), global_step=step)
        log.debug("checkpoint %s", path)
        return path

    def restore(self, path: str) -> None:
        self._saver.restore(None, path)

    def snapshot(self, step: int, directory: str) -> str:
        """The variables at `step` as `directory/snapshot-<step>`, never deleted (training dynamics)."""
        Path(directory).mkdir(parents=True, exist_ok=True)
        if not hasattr(self, "_snapshots"):
            self._snapshots = tf.compat.v1.train.Saver(
                var_list=self._saver._var_list, max_to_keep=None, save_relative_paths=True
            )
        prefix = snapshot_prefix(directory, step)
        self._snapshots.save(None, prefix, write_meta_graph=False, write_state=False)
        return prefix


def restore_weights(model: Any, path: str) -> None:
    """The model's weights only, by key, from `path` (either engine's checkpoint)."""
    reader = tf.train.load_checkpoint(path)
    keys = model_weight_keys(model.layers)
    missing = [keys[id(v)] for v in weights_of(model) if not reader.has_tensor(keys[id(v)])]
    if missing:
        raise ValueError(f"checkpoint {path} holds no {missing[:5]}")
    for v in weights_of(model):
        v.assign(reader.get_tensor(keys[id(v)]))
