"""The Estimator's distribution strategies (`trainer.distribute`), built from the typed trainer config:

none                   one process, TensorFlow's default device placement
mirrored               one process, synchronous replicas: every GPU, else `trainer.cpu_replicas` CPU devices
multi_worker_mirrored  synchronous all-reduce across the chief and workers named in TF_CONFIG
parameter_server       asynchronous; variables live on the `ps` tasks named in TF_CONFIG
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from layerprobe._tf import tf
from layerprobe.distributed import check_cluster, role
from layerprobe.schema import TrainerConfig


def run_config_kwargs(trainer: TrainerConfig) -> dict[str, Any]:
    """`train_distribute` (and the session config exposing CPU replicas) for tf.estimator.RunConfig."""
    kind = trainer.distribute
    if kind == "none":
        return {}
    if kind == "mirrored":
        if tf.config.list_physical_devices("GPU"):
            return {"train_distribute": tf.distribute.MirroredStrategy()}
        n = trainer.cpu_replicas
        return {
            "train_distribute": tf.distribute.MirroredStrategy(devices=[f"/cpu:{i}" for i in range(n)]),
            "session_config": tf.compat.v1.ConfigProto(device_count={"CPU": n}, allow_soft_placement=True),
        }
    me = role()
    check_cluster(kind, me)
    if me.task_type == "evaluator":  # building the strategy there raises KeyError: 'evaluator'
        return {}
    # Graph mode from here on (the Estimator works in graphs anyway): built eagerly, the strategy
    # must exist before TensorFlow's first op ("Collective ops must be configured at program
    # startup") and the Estimator's copy of it fails ("/job:worker/.../CPU:0 unknown device").
    tf.compat.v1.disable_eager_execution()
    if kind == "multi_worker_mirrored":
        return {"train_distribute": tf.distribute.experimental.MultiWorkerMirroredStrategy()}
    return {"train_distribute": tf.compat.v1.distribute.experimental.ParameterServerStrategy()}


def train_in_cluster(
    est: Any, train_fn: Callable[[], Any], eval_fn: Callable[[], Any], steps: int, hooks: list
) -> None:
    """This process's part of the cluster job: train (chief, worker), serve variables (ps, never
    returns) or evaluate each new checkpoint until the last (evaluator)."""
    tf.estimator.train_and_evaluate(
        est,
        tf.estimator.TrainSpec(train_fn, max_steps=steps, hooks=hooks),
        tf.estimator.EvalSpec(eval_fn, steps=None, start_delay_secs=0, throttle_secs=1),
    )
