"""Loads the fused op and chooses the probe's path.

`choose()` says which path `graph_stats.batch_summaries` takes: the op when its library loads and no
GPU is visible, else the pure-TensorFlow path; LAYERPROBE_PROBE_KERNEL=auto|fused|tf forces one (tests,
benchmarks). The choice is logged once per process and setting.
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Any

from layerprobe._tf import tf
from layerprobe.errors import ConfigError, first_line
from layerprobe.probe.fused.build import LIBRARY

log = logging.getLogger(__name__)

ENV = "LAYERPROBE_PROBE_KERNEL"  # a config key (probe.kernel) could replace it
KERNELS = ("auto", "fused", "tf")


@functools.cache
def _library() -> tuple[Any, str]:
    """(the loaded op module or None, why not)."""
    if not LIBRARY.exists():
        return None, f"{LIBRARY.name} is not built (no compiler at install?)"
    try:
        return tf.load_op_library(str(LIBRARY)), ""
    except (tf.errors.NotFoundError, OSError) as e:  # built against another TensorFlow, say
        return None, f"{LIBRARY.name} does not load ({first_line(e)})"


def available() -> bool:
    """Whether the op's library loads in this process."""
    return _library()[0] is not None


def choose() -> str:
    """ "fused" or "tf": the path the probe takes in this process now."""
    wanted = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if wanted not in KERNELS:
        raise ConfigError(ENV, os.environ[ENV], "the probe kernel is one of auto, fused, tf", KERNELS)
    return _decide(wanted)


@functools.cache
def _decide(wanted: str) -> str:
    lib, why = _library()
    if wanted == "tf":
        log.info("probe summaries: TensorFlow ops (%s=tf)", ENV)
        return "tf"
    gpus = tf.config.list_physical_devices("GPU")
    if lib is not None and not gpus:
        log.info("probe summaries: fused C++ kernel, one pass per layer (%s)", LIBRARY)
        return "fused"
    reason = why or "a GPU is visible and the kernel is CPU-only"
    if wanted == "fused":
        raise ConfigError(ENV, wanted, f"the fused kernel cannot run: {reason}; run `python -m {__name__}.build`")
    log.info("probe summaries: TensorFlow ops, the fused kernel is not used: %s", reason)
    return "tf"


def summaries(
    x: tf.Tensor,
    shift: int,
    sketch_size: int,
    active_threshold: float,
    saturation: tuple[float, float] | None,
) -> dict[str, tf.Tensor]:
    """The op on x: (batch, ..., units) float32; keys and dtypes as graph_stats' TensorFlow path.

    `saturation` = (lo, hi): values <= lo or >= hi count as saturated (the margin already applied).
    """
    lib, _ = _library()
    units = x.shape[-1]
    spatial = x.shape.rank == 4
    lo, hi = saturation if saturation is not None else (0.0, 0.0)
    out = lib.layerprobe_summaries(
        tf.reshape(x, [tf.shape(x)[0], -1, units]),  # (batch, positions, units): a view, no copy
        shift=shift,
        sketch_size=sketch_size,
        active_threshold=active_threshold,
        saturation_hi=hi,
        saturation_lo=lo,
        saturation=saturation is not None,
        spatial=spatial,
    )
    keys = ("unit_count", "unit_sum", "unit_m2", "unit_max", "unit_min", "unit_active", "l2_sum", "nans", "infs")
    result = dict(zip(keys, out[:9]))
    if saturation is not None:
        result["saturated"] = out.saturated
    if spatial:
        result["spatial_sum"] = tf.reshape(out.spatial_sum, tf.shape(x)[1:])
    result["sketch"] = out.sketch
    return result
