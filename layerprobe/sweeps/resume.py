"""What a rerun of a sweep finds done: the same sweep is one thing in MLflow however often it ran.

The identity rule. A sweep is its `layerprobe.sweep_key` (SWEEP_KEY_TAG) within one MLflow experiment:
- layerprobe's Optuna sweeper: the study (its storage, an sqlite path made absolute, and its name);
- any other sweeper (Hydra's basic grid): the command's overrides, sorted, and the digest of the
  config they compose (hydra.* left out), so an edited config file makes another sweep.
Every parent and child run of the sweep carries the key. A rerun continues the oldest ended parent of
its key (parent.py), and the summary, the best child and the compare report cover every child of the
key. Within it:
- a grid job is done when a FINISHED child has the same overrides: it is not run again, the sweeper
  gets that child's objective;
- an Optuna trial is settled by its child run (tag `layerprobe.trial`): FINISHED -> COMPLETE with its
  objective (PRUNED when tagged pruned); any other child (KILLED, RUNNING) ran no further than an
  interrupt, and the trial is given back and asked again.
A rerun that finds nothing left says so in one line and starts nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from layerprobe.sweeps.space import Space
    from layerprobe.sweeps.study import StudySettings
    from layerprobe.tracking.queries import RunSummary

TRIAL_TAG = "layerprobe.trial"


def optuna_study(config: Any, task: Sequence[str]) -> tuple[dict[str, Any], Space, StudySettings] | None:
    """(hydra.sweeper as a dict, search space, study settings) when layerprobe's Optuna sweeper runs
    the sweep; None for any other sweeper. `task`: the overrides without hydra.*."""
    from omegaconf import OmegaConf

    from layerprobe.sweeps.space import parse_space
    from layerprobe.sweeps.study import settings

    if not str(config.hydra.sweeper.get("_target_", "")).startswith("hydra_plugins.layerprobe_sweeper."):
        return None
    conf: dict[str, Any] = OmegaConf.to_container(config.hydra.sweeper, resolve=True)  # type: ignore[assignment]
    space = parse_space(conf.get("params"), task)
    return conf, space, settings(conf, str(config.hydra.sweep.dir), config.tracking.objective, space, task)


def sweep_key(config: Any, task: Sequence[str]) -> str:
    """The sweep's identity (see the module's docstring), 16 hex digits."""
    from omegaconf import OmegaConf

    study = optuna_study(config, task)
    if study is not None:
        s = study[2]
        storage = s.redacted_storage
        if storage.startswith("sqlite:///") and not storage.startswith("sqlite:////"):
            storage = "sqlite:///" + str(Path(storage[len("sqlite:///") :]).resolve())
        identity: list[Any] = ["optuna", storage, s.name]
    else:
        composed: dict[str, Any] = OmegaConf.to_container(config, resolve=False)  # type: ignore[assignment]
        composed.pop("hydra", None)
        digest = hashlib.sha256(json.dumps(composed, sort_keys=True, default=str).encode()).hexdigest()
        identity = ["grid", sorted(task), digest]
    return hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:16]


def _same_overrides(run: RunSummary, overrides: Sequence[str]) -> bool:
    return sorted(run.tags.get("layerprobe.overrides", "").split(" ")) == sorted(" ".join(overrides).split(" "))


def done_job(uri: str, experiment: str, key: str, overrides: Sequence[str]) -> RunSummary | None:
    """The FINISHED child of the sweep `key` that ran a job with these `overrides`, if any."""
    from layerprobe import tracking

    runs = tracking.find_runs(uri, experiment, {tracking.SWEEP_KEY_TAG: key}, status="FINISHED")
    return next((r for r in runs if r.tags.get(TRIAL_TAG) is None and _same_overrides(r, overrides)), None)


def trial_run(uri: str, experiment: str, key: str, number: int) -> RunSummary | None:
    """The FINISHED child run of trial `number` of the study `key`, if any."""
    from layerprobe import tracking

    runs = tracking.find_runs(uri, experiment, {tracking.SWEEP_KEY_TAG: key, TRIAL_TAG: str(number)}, "FINISHED")
    return runs[-1] if runs else None


def run_outcomes(
    uri: str, experiment: str, key: str, objective: str
) -> Callable[[int], tuple[Any, float | None] | None]:
    """trial number -> (Optuna state, value) that the trial's FINISHED child run of the study `key`
    records: PRUNED when tagged pruned, COMPLETE with its `objective`, FAIL without it; None when
    the trial has no FINISHED run."""
    from optuna.trial import TrialState

    def outcome(number: int) -> tuple[Any, float | None] | None:
        run = trial_run(uri, experiment, key, number)
        if run is None:
            return None
        if run.tags.get("pruned") == "true":
            return TrialState.PRUNED, None
        if objective in run.metrics:
            return TrialState.COMPLETE, run.metrics[objective]
        return TrialState.FAIL, None

    return outcome


def nothing_left(config: Any, task: Sequence[str]) -> str | None:
    """The one line a rerun prints when its sweep has nothing left to run, else None: an Optuna study
    with n_trials finished; a grid whose every job has a FINISHED child (tracking on)."""
    study = optuna_study(config, task)
    if study is not None:
        return _study_complete(config, *study)
    if not config.tracking.enabled:
        return None
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from layerprobe import tracking
    from layerprobe.config.hydra_private import BasicSweeper

    params = [f"{k}={v}" for k, v in (config.hydra.sweeper.get("params") or {}).items()]
    jobs = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides([*params, *task]), None)[0]
    uri, experiment = tracking.resolve_uri(config.tracking.uri), config.tracking.experiment_name
    tracking.check_reachable(uri)  # one line when the store is away, as the sweep's start would say
    key = sweep_key(config, task)
    done = tracking.find_runs(uri, experiment, {tracking.SWEEP_KEY_TAG: key}, status="FINISHED")
    if not jobs or not all(any(_same_overrides(r, job) for r in done) for job in jobs):
        return None
    parents = tracking.find_runs(uri, experiment, {tracking.SWEEP_KEY_TAG: key, "layerprobe.sweep": "parent"})
    where = f"parent run {parents[0].run_id}" if parents else f"experiment {experiment!r}"
    return (
        f"this sweep is complete: its {len(jobs)} job(s) finished before ({where}); nothing run "
        "(change an override, or delete those runs, to run it again)"
    )


def _study_complete(config: Any, conf: dict[str, Any], space: Space, s: StudySettings) -> str | None:
    import optuna
    from optuna.trial import TrialState

    from layerprobe.sweeps import study as S

    if not conf.get("storage"):  # a journal in this sweep's own dir: a new study each time
        return None
    try:
        study = optuna.load_study(study_name=s.name, storage=S.open_storage(s.storage))
    except KeyError:  # no such study yet
        return None
    n_trials = S.target_trials(conf, space)
    done = [t for t in S.counted(study.get_trials(deepcopy=False)) if t.state != TrialState.RUNNING]
    if len(done) < n_trials:
        return None
    states = [t.state for t in done]
    line = (
        f"study {s.name} in {s.redacted_storage} is complete: {len(done)} of n_trials={n_trials} trials ran "
        f"({states.count(TrialState.COMPLETE)} complete, {states.count(TrialState.PRUNED)} pruned, "
        f"{states.count(TrialState.FAIL)} failed)"
    )
    if TrialState.COMPLETE in states:
        line += f", best {s.objective}={study.best_value:.6g} (trial {study.best_trial.number})"
    return line + "; nothing run (raise hydra.sweeper.n_trials to run more)"
