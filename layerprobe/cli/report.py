"""What the CLI prints: one-line user errors, probe statistics, and commands that run as shown."""

from __future__ import annotations

import os
import sys
from typing import Any

from layerprobe.errors import LayerprobeError
from layerprobe.shell import installed_command

USER_ERROR = 2


def fail(e: LayerprobeError) -> int:
    """Print `e` as one line on stderr and return exit code 2 (the traceback with HYDRA_FULL_ERROR=1)."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise e
    print(f"layerprobe: error: {str(e).replace(chr(10), ' ')}", file=sys.stderr)
    return USER_ERROR


def print_stats(stats: dict[str, Any]) -> None:
    for layer, s in stats.items():
        dead = f"{s.dead_count}/{s.units}"
        print(f"probe/{layer}: mean {s.mean:.4g} std {s.std:.4g} zeros {s.zero_fraction:.1%} dead units {dead}")


def print_run(result: Any) -> None:
    """The end of a run: model_dir, eval metrics, probe statistics, the run and how to look at it."""
    print(f"model_dir: {result.model_dir} (global step {result.global_step})")
    for k, v in result.eval_metrics.items():
        print(f"{k}: {v:.4f}")
    print_stats(result.probe)
    if result.run_id:
        print(f"mlflow run: {result.run_id}")
        print(f"open the UI: {installed_command('mlflow')} ui --backend-store-uri {result.tracking_uri}")
        if result.experiment_id:
            from layerprobe.tracking import ui_link

            print(f"this run in the UI: {ui_link(result.tracking_uri, result.experiment_id, result.run_id)}")


def example_values(v: Any, shown: int = 6) -> str:
    """The first `shown` values of an array, with an ellipsis only when some are left out."""
    flat = v.round(3).ravel()
    head = ", ".join(str(x) for x in flat[:shown].tolist())
    return f"[{head}, ...]" if flat.size > shown else f"[{head}]"
