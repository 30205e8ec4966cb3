"""Which snapshots of a model_dir some run has probed: `<model_dir>/dynamics/probed.json`.

A run probes the snapshots that no run has probed yet, however many runs trained them: a run stopped
by Ctrl-C (or killed) before its probe leaves its snapshots to the run that resumes the model_dir,
and a run that continues a finished one does not probe a step again. The ledger is begun when a
model_dir first trains with snapshots and a step is entered once its points are logged, so a run that
stops between probing and logging leaves them to the next run.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from layerprobe.engines.base import SNAPSHOT_DIR, Checkpoint

LEDGER = "probed.json"  # under <model_dir>/dynamics: {"probed": {"<step>": "<run id>"}}
BEFORE_LEDGER = "(a run before the ledger)"  # who probed the steps of a model_dir older than it
LOCK_WAIT = 60.0  # seconds; two runs enter their steps at once at most


def _path(model_dir: str | Path) -> Path:
    return Path(model_dir) / SNAPSHOT_DIR / LEDGER


def probed(model_dir: str | Path) -> dict[int, str]:
    """step -> the run that probed it (empty before the ledger is begun)."""
    path = _path(model_dir)
    if not path.is_file():
        return {}
    return {int(step): run for step, run in json.loads(path.read_text())["probed"].items()}


def begin(model_dir: str | Path, snapshots: Sequence[Checkpoint], trained_to: int) -> None:
    """Begin the ledger of a model_dir about to train with snapshots, unless it has one. A model_dir
    trained before the ledger existed (`trained_to` > 0) had the snapshots of its training probed
    by the runs that trained them, as runs then did."""
    if not _path(model_dir).is_file():
        _update(model_dir, [s.step for s in snapshots if s.step <= trained_to], BEFORE_LEDGER)


def not_yet_probed(snapshots: Sequence[Checkpoint], model_dir: str | Path, upto: int) -> list[Checkpoint]:
    """The snapshots up to step `upto` that no run has probed. Without a ledger (a model_dir trained
    before it, and not since) every one counts as probed."""
    if not _path(model_dir).is_file():
        return []
    done = probed(model_dir)
    return [s for s in snapshots if s.step <= upto and s.step not in done]


def enter(model_dir: str | Path, steps: Iterable[int], run: str) -> None:
    """Record that run `run` probed (and logged) `steps`."""
    _update(model_dir, list(steps), run)


def _update(model_dir: str | Path, steps: list[int], run: str) -> None:
    from layerprobe import locks

    path = _path(model_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    with locks.exclusive(path.with_name(".probed.lock"), f"the ledger {path}", locks.timeout(LOCK_WAIT)):
        held: dict[str, Any] = {str(k): v for k, v in probed(model_dir).items()}
        held.update({str(s): run for s in steps if str(s) not in held})
        ordered = dict(sorted(held.items(), key=lambda kv: int(kv[0])))
        tmp = path.with_name(f"{LEDGER}.tmp")
        tmp.write_text(json.dumps({"probed": ordered}, indent=1) + "\n")
        tmp.replace(path)  # whole or absent to a reader
