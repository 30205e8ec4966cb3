"""A sweep job's side of its Optuna trial: which trial it runs, and the evaluation callback that
reports the objective at each checkpoint and asks the pruner whether to stop.

The sweeper names the trial in the job's `hydra.job.env_set` (TRIAL_ENV) and the study in
STUDY_FILE of the sweep dir, so a job finds both whichever launcher runs it (this process, joblib
workers, submitit).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

TRIAL_ENV = "LAYERPROBE_OPTUNA_TRIAL"
STUDY_FILE = ".layerprobe_study.json"  # {"storage", "name", "objective", "pruner": {...}}


@dataclass(frozen=True)
class Pruned:
    """What a pruned job returns to the sweeper."""

    step: int


def trial_number(hydra_cfg: Any) -> int | None:
    """The Optuna trial number of this sweep job, None outside an Optuna sweep."""
    value = (hydra_cfg.job.get("env_set") or {}).get(TRIAL_ENV)
    return int(value) if value is not None else None


def write_study_file(sweep_dir: str | Path, study: Mapping[str, Any]) -> None:
    path = Path(sweep_dir)
    path.mkdir(parents=True, exist_ok=True)
    (path / STUDY_FILE).write_text(json.dumps(dict(study)))


class Reporter:
    """on_evaluation for the engine: report the objective to the trial, stop when it is pruned."""

    def __init__(self, trial: Any, objective: str) -> None:
        self.trial = trial
        self.objective = objective

    def __call__(self, step: int, metrics: Mapping[str, float]) -> bool:
        if self.objective not in metrics:
            return False
        self.trial.report(float(metrics[self.objective]), step)
        prune = bool(self.trial.should_prune())
        log.info(
            "trial %d at step %d: %s = %.6g%s",
            self.trial.number,
            step,
            self.objective,
            metrics[self.objective],
            " -> pruned" if prune else "",
        )
        return prune


def reporter(hydra_cfg: Any) -> Reporter | None:
    """The evaluation callback of this job's trial, when its sweep prunes; else None."""
    number = trial_number(hydra_cfg)
    path = Path(hydra_cfg.sweep.dir) / STUDY_FILE
    if number is None or not path.is_file():
        return None
    study_info = json.loads(path.read_text())
    if (study_info.get("pruner") or {}).get("name", "none") == "none":
        return None
    import optuna

    from layerprobe.sweeps.study import make_pruner, open_storage

    storage = open_storage(study_info["storage"])
    study = optuna.load_study(study_name=study_info["name"], storage=storage, pruner=make_pruner(study_info["pruner"]))
    trial_id = storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
    return Reporter(optuna.Trial(study, trial_id), study_info["objective"])
