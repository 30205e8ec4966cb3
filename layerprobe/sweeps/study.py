"""The Optuna study of a sweep: its storage (an RDB URL or a journal file), its name, sampler and
pruner, each checked with a one-line error before any trial; and who runs which trial, so that a
trial left RUNNING by a dead process is failed and retried.

Optuna is imported inside the functions: Hydra imports the sweeper plugin on every run.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from layerprobe.errors import ConfigError, LayerprobeError, first_line
from layerprobe.sweeps.space import Space

SAMPLERS = {"tpe": "TPESampler", "random": "RandomSampler", "grid": "GridSampler", "cmaes": "CmaEsSampler"}
PRUNERS = {
    "none": "NopPruner",
    "median": "MedianPruner",
    "successive_halving": "SuccessiveHalvingPruner",
    "hyperband": "HyperbandPruner",
}
DEFAULT_JOURNAL = "optuna.journal"  # in the sweep dir when hydra.sweeper.storage is null
# Trial system attributes (hidden from the user's attrs): who runs it, when it was last seen alive,
# and why a FAIL does not count toward n_trials (its process died: its parameters run again).
OWNER, HEARTBEAT, NOT_COUNTED = "layerprobe:owner", "layerprobe:heartbeat", "layerprobe:not_counted"
SPACE_ATTR, OBJECTIVE_ATTR = "layerprobe:search_space", "layerprobe:objective"


@dataclass(frozen=True)
class StudySettings:
    storage: str  # an RDB URL (sqlite:///optuna.db) or a journal file path
    name: str
    direction: str
    objective: str

    @property
    def redacted_storage(self) -> str:
        """The storage as recorded in MLflow: an RDB URL without user name and password."""
        if "://" not in self.storage:
            return str(Path(self.storage).resolve())
        from sqlalchemy.engine import make_url

        try:
            return make_url(self.storage)._replace(username=None, password=None).render_as_string(hide_password=False)
        except Exception:
            return self.storage.split("://", 1)[0] + "://<unparsable URL>"


def settings(
    sweeper: Mapping[str, Any], sweep_dir: str, objective: str, space: Space, task: Sequence[str]
) -> StudySettings:
    """The study a sweep works on. Without hydra.sweeper.storage: a journal file in the sweep dir
    (a new study each time); without study_name: one derived from the objective, the direction, the
    search space and the fixed overrides, so that rerunning the same command finds the same study."""
    storage = sweeper.get("storage") or str(Path(sweep_dir) / DEFAULT_JOURNAL)
    direction = str(sweeper.get("direction") or "maximize")
    name = sweeper.get("study_name")
    if not name:
        fixed = sorted(o for o in task if o.split("=", 1)[0].lstrip("+~") not in space.dimensions)
        blob = json.dumps([objective, direction, space.signature(), fixed], sort_keys=True, default=str)
        name = "layerprobe-" + hashlib.sha256(blob.encode()).hexdigest()[:12]
    return StudySettings(str(storage), str(name), direction, objective)


def open_storage(storage: str) -> Any:
    """The Optuna storage, created when new; one line when it cannot be opened or written."""
    import optuna
    from sqlalchemy.exc import IntegrityError, OperationalError

    path = "hydra.sweeper.storage"
    try:
        if "://" in storage:
            for wait in (0.25, 0.5, 1.0, 2.0):  # another process creating the same tables meanwhile
                try:
                    return optuna.storages.RDBStorage(storage, engine_kwargs=_engine_kwargs(storage))
                except (IntegrityError, OperationalError):
                    time.sleep(wait)
            return optuna.storages.RDBStorage(storage, engine_kwargs=_engine_kwargs(storage))
        Path(storage).parent.mkdir(parents=True, exist_ok=True)
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        return JournalStorage(JournalFileBackend(storage))
    except Exception as e:
        rule = f"cannot open or write the study storage ({type(e).__name__}: {first_line(e)})"
        rule += "; give an RDB URL (sqlite:///optuna.db, postgresql://...) or a journal file path"
        raise ConfigError(path, StudySettings(storage, "", "", "").redacted_storage, rule) from None


def _engine_kwargs(url: str) -> dict[str, Any]:
    # sqlite: wait for another process's write instead of failing at once ("database is locked")
    return {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}


def make_sampler(conf: Mapping[str, Any], space: Space, seed: int | None) -> Any:
    import optuna

    name = conf.get("name", "tpe")
    if name not in SAMPLERS:
        raise ConfigError("hydra.sweeper.sampler.name", name, "no such sampler", SAMPLERS)
    cls = getattr(optuna.samplers, SAMPLERS[name])
    if name == "grid":
        grid = {}
        for key, d in space.dimensions.items():
            if d.choices is None and d.step is None:
                raise ConfigError("hydra.sweeper.sampler.name", name, f"a grid needs choices or range() for {key}")
            grid[key] = list(d.choices) if d.choices is not None else _steps(d)
        return cls(grid, seed=seed)
    return cls(seed=seed)


def _steps(d: Any) -> list[Any]:
    n = int(round((d.high - d.low) / d.step))
    return [d.low + i * d.step for i in range(n + 1)]


def grid_size(conf: Mapping[str, Any], space: Space) -> int | None:
    if conf.get("name") != "grid":
        return None
    size = 1
    for d in space.dimensions.values():
        size *= len(d.choices) if d.choices is not None else len(_steps(d))
    return size


def target_trials(conf: Mapping[str, Any], space: Space) -> int:
    """hydra.sweeper.n_trials, at most the grid's size for the grid sampler."""
    n_trials = int(conf["n_trials"])
    grid = grid_size(conf["sampler"], space)
    return n_trials if grid is None else min(n_trials, grid)


def counted(trials: Sequence[Any]) -> list[Any]:
    """The trials that use up n_trials: finished or running, not those failed for a dead process."""
    from optuna.trial import TrialState

    keep = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.FAIL)
    return [t for t in trials if t.state in keep and NOT_COUNTED not in t.system_attrs]


def make_pruner(conf: Mapping[str, Any]) -> Any:
    """The pruner by `name`; its other non-null keys are its constructor's arguments."""
    import optuna

    name = conf.get("name") or "none"
    if name not in PRUNERS:
        raise ConfigError("hydra.sweeper.pruner.name", name, "no such pruner", PRUNERS)
    cls = getattr(optuna.pruners, PRUNERS[name])
    accepted = set(inspect.signature(cls).parameters)
    args = {k: v for k, v in conf.items() if k != "name" and v is not None}
    for key in args:
        if key not in accepted:
            rule = f"the {name} pruner takes no such argument"
            raise ConfigError(f"hydra.sweeper.pruner.{key}", args[key], rule, sorted(accepted) or ["(none)"])
    return cls(**args)


def load_study(s: StudySettings, space: Space, sampler: Any = None, pruner: Any = None, create: bool = True) -> Any:
    """The study `s` names, created when new; one line when it exists with another direction,
    objective or search space."""
    import optuna

    storage = open_storage(s.storage)
    try:
        study = optuna.load_study(study_name=s.name, storage=storage, sampler=sampler, pruner=pruner)
    except KeyError:
        if not create:
            raise LayerprobeError(f"no study {s.name!r} in {s.redacted_storage}") from None
        study = optuna.create_study(
            study_name=s.name,
            storage=storage,
            sampler=sampler,
            pruner=pruner,
            direction=s.direction,  # type: ignore[arg-type]
            load_if_exists=True,
        )
        study._storage.set_study_system_attr(study._study_id, SPACE_ATTR, space.signature())
        study._storage.set_study_system_attr(study._study_id, OBJECTIVE_ATTR, s.objective)
        return study
    _check_same_study(study, s, space)
    return study


def _check_same_study(study: Any, s: StudySettings, space: Space) -> None:
    where = f"study {s.name!r} in {s.redacted_storage}"
    hint = "; give another hydra.sweeper.study_name (or the same search)"
    direction = study.direction.name.lower()
    if direction != s.direction:
        raise LayerprobeError(
            f"{where} maximizes or minimizes otherwise: it was created with direction={direction}, "
            f"this sweep has tracking.direction={s.direction}{hint}"
        )
    attrs = study._storage.get_study_system_attrs(study._study_id)
    if attrs.get(OBJECTIVE_ATTR, s.objective) != s.objective:
        raise LayerprobeError(
            f"{where} optimizes {attrs[OBJECTIVE_ATTR]}, this sweep tracking.objective={s.objective}{hint}"
        )
    recorded = attrs.get(SPACE_ATTR)
    if recorded is not None and recorded != space.signature():
        raise LayerprobeError(f"{where} searches another space: {_diff(recorded, space.signature())}{hint}")


def _diff(recorded: Mapping[str, Any], now: Mapping[str, Any]) -> str:
    for key in sorted(set(recorded) | set(now)):
        if recorded.get(key) != now.get(key):
            return f"{key} was {json.dumps(recorded.get(key))}, now {json.dumps(now.get(key))}"
    return "?"


def owner() -> dict[str, Any]:
    from layerprobe.tracking.reaper import process_start

    return {"host": socket.gethostname(), "pid": os.getpid(), "start": process_start(os.getpid())}


def stale(trial: Any, grace_seconds: float, now: float | None = None) -> bool:
    """A RUNNING trial whose process is gone: on this host, its pid is dead; elsewhere, no heartbeat
    for `grace_seconds`."""
    from layerprobe.tracking.reaper import alive

    who = trial.system_attrs.get(OWNER)
    beat = trial.system_attrs.get(HEARTBEAT, trial.datetime_start.timestamp() if trial.datetime_start else 0)
    if who and who.get("host") == socket.gethostname():
        return not alive(int(who["pid"]), who.get("start"))
    return (now or time.time()) - float(beat) > grace_seconds
