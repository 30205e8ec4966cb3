"""The sweep loop of layerprobe's Optuna sweeper: ask trials in batches of n_jobs, launch them as
Hydra jobs through the configured launcher, tell Optuna each outcome (COMPLETE, PRUNED or FAIL).

The study lives in a storage, so the loop counts what the storage holds, not what this process
ran: a rerun of the same command, or a second process on the same storage, only runs the trials
still missing. A trial the sweeper never heard back from (Ctrl-C, or left RUNNING by a dead process)
is told what its MLflow run recorded when that run FINISHED (resume.py); otherwise it is failed (not
counted) and its parameters are asked again first.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from layerprobe.sweeps import study as S
from layerprobe.sweeps.space import Space, parse_space
from layerprobe.sweeps.trial import TRIAL_ENV, Pruned, write_study_file

log = logging.getLogger(__name__)


# trial number -> (state, objective value) that its FINISHED child run records; None when it has none
Outcome = Callable[[int], "tuple[Any, float | None] | None"]


def no_outcome(number: int) -> None:
    """The Outcome of a sweep that tracks nothing."""
    return None


def fail_stale(study: Any, grace_seconds: float, outcome: Outcome = no_outcome) -> None:
    """The RUNNING trials whose process is gone: COMPLETE (or PRUNED) when their run finished, else
    failed, not counted, and their parameters asked again."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    storage = study._storage
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not S.stale(t, grace_seconds) or _settled(study, t.number, outcome):
            continue
        try:
            storage.set_trial_system_attr(t._trial_id, S.NOT_COUNTED, "its process died; its parameters run again")
            storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        except UpdateFinishedTrialError:  # another process got there first
            continue
        log.warning("trial %d was left RUNNING by a process that is gone: failed, its parameters run again", t.number)
        study.enqueue_trial(t.params, skip_if_exists=False)


def _settled(study: Any, number: int, outcome: Outcome) -> bool:
    """Tell Optuna the outcome of trial `number` that its FINISHED run records (the job ended, the
    sweeper never heard it: Ctrl-C or SIGKILL before the batch's end); False when it has no such run."""
    try:
        found = outcome(number)
    except Exception as e:  # the store is away: the trial runs again, as before
        log.warning("trial %d: could not look up its run: %s", number, e)
        return False
    if found is None:
        return False
    state, value = found
    try:
        study.tell(number, value, state=state)
    except Exception:  # finished meanwhile (another process settled it)
        return True
    log.info("trial %d: its run had finished (%s): told Optuna, not run again", number, state.name)
    return True


class Heartbeat:
    """Marks this process's running trials alive every `seconds` (for other hosts' stale check)."""

    def __init__(self, study: Any, seconds: float) -> None:
        self.study, self.seconds = study, seconds
        self.trials: list[Any] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True, name="optuna-heartbeat")

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _beat(self) -> None:
        import time

        while not self._stop.wait(self.seconds):
            for t in list(self.trials):
                try:
                    self.study._storage.set_trial_system_attr(t._trial_id, S.HEARTBEAT, time.time())
                except Exception:  # finished meanwhile, or the store is away for a moment
                    pass


class Search:
    """One `layerprobe -m +sweep=optuna ...`: the settings of hydra.sweeper, the launcher, the config."""

    def __init__(self, conf: Mapping[str, Any], config: Any, launcher: Any) -> None:
        self.conf, self.config, self.launcher = conf, config, launcher
        self.sweep_dir = str(config.hydra.sweep.dir)

    def run(self, arguments: list[str]) -> Any:
        conf = self.conf
        space = parse_space(conf.get("params"), arguments)
        settings = S.settings(conf, self.sweep_dir, self.config.tracking.objective, space, arguments)
        seed = (conf.get("sampler") or {}).get("seed")
        pruner_conf = dict(conf.get("pruner") or {"name": "none"})
        study = S.load_study(settings, space, S.make_sampler(conf["sampler"], space, seed), S.make_pruner(pruner_conf))
        write_study_file(self.sweep_dir, {**settings.__dict__, "pruner": pruner_conf})
        n_trials = S.target_trials(conf, space)
        if n_trials < int(conf["n_trials"]):
            log.info("n_trials %d -> %d: the grid has %d points", conf["n_trials"], n_trials, n_trials)
        log.info("Study: %s in %s", settings.name, settings.redacted_storage)
        log.info(
            "Sampler: %s, pruner: %s, direction: %s", conf["sampler"]["name"], pruner_conf["name"], settings.direction
        )
        outcome = self._outcome_of(settings.objective)
        fail_stale(study, float(conf["stale_after"]), outcome)
        job_idx = 0
        with Heartbeat(study, float(conf["heartbeat_seconds"])) as beat:
            while True:
                trials = self._ask(study, space, seed, n_trials, int(conf["n_jobs"]))
                if not trials:
                    break
                beat.trials = trials
                try:
                    returns = self.launcher.launch([self._overrides(t, space) for t in trials], initial_job_idx=job_idx)
                except BaseException:
                    _give_back(study, trials, "the sweep was interrupted", retry=True, outcome=outcome)
                    raise
                job_idx += len(returns)
                failed = [_tell(study, t, r) for t, r in zip(trials, returns)]
                rate = float(conf["max_failure_rate"])
                if sum(failed) / len(returns) > rate:
                    raise RuntimeError(
                        f"{sum(failed)} of {len(returns)} trials failed, more than max_failure_rate={rate}"
                    )
        return self._results(study, settings, n_trials)

    def _outcome_of(self, objective: str) -> Outcome:
        from layerprobe.sweeps.parent import sweep_info

        info = sweep_info(self.sweep_dir)
        if not info["parent"]:  # tracking is off
            return no_outcome
        from layerprobe import tracking
        from layerprobe.sweeps.resume import run_outcomes

        uri = tracking.resolve_uri(self.config.tracking.uri)
        return run_outcomes(uri, self.config.tracking.experiment_name, info["key"], objective)

    def _ask(self, study: Any, space: Space, seed: int | None, n_trials: int, n_jobs: int) -> list[Any]:
        trials: list[Any] = []
        for _ in range(n_jobs):
            done = S.counted(study.get_trials(deepcopy=False))
            if len(done) >= n_trials:
                break
            trial = study.ask()
            if seed is not None and self.conf["sampler"]["name"] != "grid":
                # One seed per trial number: reproducible, and processes sharing the study (or a
                # rerun) do not propose the same parameters again.
                study.sampler = S.make_sampler(self.conf["sampler"], space, seed + trial.number)
            study._storage.set_trial_system_attr(trial._trial_id, S.OWNER, S.owner())
            rank = sum(t.number <= trial.number for t in S.counted(study.get_trials(deepcopy=False)))
            if rank > n_trials:  # another process took the last slots meanwhile
                _give_back(study, [trial], "n_trials were reached by another process", retry=False)
                break
            for dim in space.dimensions.values():
                dim.suggest(trial)
            trials.append(trial)
        return trials

    def _overrides(self, trial: Any, space: Space) -> list[str]:
        params = {**trial.params, **space.fixed}
        return [f"{k}={v}" for k, v in params.items()] + [f"++hydra.job.env_set.{TRIAL_ENV}={trial.number}"]

    def _results(self, study: Any, settings: Any, n_trials: int) -> Any:
        from omegaconf import OmegaConf
        from optuna.trial import TrialState

        states = [t.state for t in S.counted(study.get_trials(deepcopy=False))]
        log.info(
            "study %s: %d complete, %d pruned, %d failed of n_trials=%d",
            settings.name,
            states.count(TrialState.COMPLETE),
            states.count(TrialState.PRUNED),
            states.count(TrialState.FAIL),
            n_trials,
        )
        if TrialState.COMPLETE not in states:
            raise RuntimeError(f"no trial of study {settings.name} completed, so there is no best trial")
        best = study.best_trial
        log.info("Best parameters: %s", best.params)
        log.info("Best value: %s", best.value)
        results = {"name": "optuna", "study_name": settings.name, "best_params": best.params, "best_value": best.value}
        OmegaConf.save(OmegaConf.create(results), Path(self.sweep_dir) / "optimization_results.yaml")
        return results


def _tell(study: Any, trial: Any, ret: Any) -> bool:
    """Tell Optuna a job's outcome; True when the job failed."""
    from optuna.trial import TrialState

    try:
        value = ret.return_value
    except Exception as e:  # the job raised: Hydra keeps the error in its JobReturn
        log.warning("trial %d failed: %s", trial.number, e)
        value = None
    if isinstance(value, Pruned):
        study.tell(trial, state=TrialState.PRUNED)
        return False
    if value is None:
        study.tell(trial, state=TrialState.FAIL)
        return True
    study.tell(trial, float(value))
    return False


def _give_back(study: Any, trials: Sequence[Any], reason: str, retry: bool, outcome: Outcome = no_outcome) -> None:
    """Fail trials that never ran to their end, not counted; `retry`: ask their parameters again. A
    trial whose run finished is told its outcome instead."""
    from optuna.trial import TrialState

    for t in trials:
        if _settled(study, t.number, outcome):
            continue
        try:
            study._storage.set_trial_system_attr(t._trial_id, S.NOT_COUNTED, reason)
            study.tell(t, state=TrialState.FAIL)
        except Exception as e:  # the storage is gone too: the stale check of a rerun handles it
            log.warning("could not give back trial %d: %s", t.number, e)
            continue
        if retry and t.params:
            study.enqueue_trial(t.params, skip_if_exists=False)
