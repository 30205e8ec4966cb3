"""layerprobe's Optuna sweeper: persistent, resumable, shared studies; pruning through the engine's
evaluation callback; invalid sweeps refused before any job. Real Optuna storages, real training."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from layerprobe.cli import main
from tests.hang import layerprobe_process, layerprobe_started
from tests.test_tracking import TINY, cli

pytestmark = pytest.mark.estimator  # sweeps and pruning train with the default engine (and optuna is a `sweeps` extra)

LR = "trainer.optimizer.learning_rate"
OPTUNA = ["-m", "+sweep=optuna", *TINY, "hydra.sweeper.n_jobs=1"]


def finished(storage: str, name: str) -> list[optuna.trial.FrozenTrial]:
    """The COMPLETE and PRUNED trials of a study in an RDB URL or a journal file."""
    from layerprobe.sweeps.study import open_storage

    study = optuna.load_study(study_name=name, storage=open_storage(storage))
    return [
        t for t in study.get_trials() if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    ]


def children_of_sweep(tmp_path: Path) -> tuple[object, list]:
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    found = client.search_runs([client.get_experiment_by_name("layerprobe").experiment_id])
    (parent,) = [x for x in found if x.data.tags.get("layerprobe.sweep") == "parent"]
    return parent, [x for x in found if x.data.tags.get("mlflow.parentRunId") == parent.info.run_id]


# ---- refused before any job: one line, exit 2, nothing written ----

REFUSED = {
    "grid-job-config": (
        ["model.layers.conv1.filters=8,16", "model.layers.logits.units=-1"],
        "layerprobe: error: model.layers.logits.units: must be a positive integer. Received: -1",
    ),
    "grid-value": (
        ["model.layers.conv1.filters=8,-16"],
        "layerprobe: error: sweep value model.layers.conv1.filters=8,-16: model.layers.conv1.filters: must be a "
        "positive integer. Received: -16",
    ),
    "optuna-choice": (
        ["+sweep=optuna", "trainer.optimizer.name=choice(adam,sgdd)"],
        "layerprobe: error: sweep value trainer.optimizer.name=choice(adam,sgdd): trainer.optimizer.name: unknown "
        "optimizer. Received: 'sgdd'. Did you mean 'sgd'? Allowed: adagrad, adam, momentum, rmsprop, sgd",
    ),
    "optuna-bound": (
        ["+sweep=optuna", f"{LR}=interval(-1,0.1)"],
        f"layerprobe: error: sweep value {LR}=interval(-1,0.1): {LR}: must be > 0. Received: -1.0",
    ),
    "unknown-pruner": (
        ["+sweep=optuna", "hydra.sweeper.pruner.name=medain"],
        "layerprobe: error: hydra.sweeper.pruner.name: no such pruner. Received: 'medain'. Did you mean 'median'? "
        "Allowed: hyperband, median, none, successive_halving",
    ),
    "pruner-argument": (
        ["+sweep=optuna", "hydra.sweeper.pruner.name=median", "hydra.sweeper.pruner.min_resource=3"],
        "layerprobe: error: hydra.sweeper.pruner.min_resource: the median pruner takes no such argument. "
        "Received: 3. Allowed: interval_steps, n_min_trials, n_startup_trials, n_warmup_steps",
    ),
    "unknown-sampler": (
        ["+sweep=optuna", "hydra.sweeper.sampler.name=tpee"],
        "layerprobe: error: hydra.sweeper.sampler.name: no such sampler. Received: 'tpee'. Did you mean 'tpe'? "
        "Allowed: cmaes, grid, random, tpe",
    ),
    "bad-storage-url": (
        ["+sweep=optuna", "hydra.sweeper.storage=sqlte:///x.db"],
        "layerprobe: error: hydra.sweeper.storage: cannot open or write the study storage (NoSuchModuleError: "
        "Can't load plugin: sqlalchemy.dialects:sqlte); give an RDB URL (sqlite:///optuna.db, postgresql://...) "
        "or a journal file path. Received: 'sqlte:///x.db'",
    ),
}


@pytest.mark.parametrize("argv, line", list(REFUSED.values()), ids=list(REFUSED))
def test_an_invalid_sweep_is_one_line_before_any_job(argv, line, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    rc = main(["-m", "model=tiny_cnn", *argv])
    out, err = capsys.readouterr()
    assert (rc, err) == (2, line + "\n"), out
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no multirun/, mlflow.db (no parent run), models/


def test_an_unwritable_storage_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("")
    rc = main(["-m", "+sweep=optuna", f"hydra.sweeper.storage={tmp_path}/afile/optuna.journal"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert err.startswith("layerprobe: error: hydra.sweeper.storage: cannot open or write the study storage")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_a_study_of_another_direction_or_space_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    optuna.create_study(study_name="s", storage=storage, direction="minimize")
    rc = main(["-m", "+sweep=optuna", f"hydra.sweeper.storage={storage}", "hydra.sweeper.study_name=s"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert "study 's' in sqlite:///" in err and "created with direction=minimize" in err
    assert "tracking.direction=maximize" in err

    from layerprobe.sweeps.space import parse_space
    from layerprobe.sweeps.study import StudySettings, load_study

    load_study(StudySettings(storage, "t", "maximize", "eval/accuracy"), parse_space({LR: "choice(0.1,0.2)"}, []))
    rc = main(["-m", "+sweep=optuna", f"hydra.sweeper.storage={storage}", "hydra.sweeper.study_name=t"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert f"study 't' in sqlite:///{tmp_path}/optuna.db searches another space: {LR} was" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["optuna.db"]


def test_the_search_space_reads_hydra_override_grammar():
    from layerprobe.sweeps.space import parse_space

    space = parse_space(
        {"a": "choice(1,2)", "b": "tag(log, interval(0.001, 0.1))"},
        ["c=range(2,8,2)", "d=interval(1,5)", "a=3,4", "e=x"],
    )
    a, b, c, d = (space.dimensions[k] for k in "abcd")
    assert a.choices == (3, 4)  # the command line wins over params
    assert (b.low, b.high, b.log, b.integer) == (0.001, 0.1, True, False)
    assert (c.low, c.high, c.step, c.integer) == (2, 6, 2, True)  # range's stop is excluded
    assert (d.low, d.high, d.integer) == (1.0, 5.0, False)  # Hydra reads interval() as floats
    assert space.fixed == {"e": "x"}


# ---- pruning ----


@pytest.mark.integration
def test_a_bad_learning_rate_is_pruned_at_its_first_checkpoint(tmp_path):
    """Trial 0 (lr 0.01) completes; trial 1 (lr 1e-9) reports a worse loss at step 10 of 20 than the
    median and is pruned there: its MLflow run is FINISHED with the pruned tag, Optuna has it PRUNED."""
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="p", storage=storage, direction="minimize")
    study.enqueue_trial({LR: 0.01})
    study.enqueue_trial({LR: 1e-9})
    r = cli(
        [
            *OPTUNA,
            "hydra.sweeper.n_trials=2",
            f"hydra.sweeper.storage={storage}",
            "hydra.sweeper.study_name=p",
            "hydra.sweeper.pruner.name=median",
            "hydra.sweeper.pruner.n_startup_trials=1",
            f"{LR}=choice(0.01,1e-9)",
            "tracking.objective=eval/loss",
            "tracking.direction=minimize",
        ],
        tmp_path,
        300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    trials = optuna.load_study(study_name="p", storage=storage).get_trials()
    assert [(t.params[LR], t.state.name) for t in trials] == [(0.01, "COMPLETE"), (1e-9, "PRUNED")]
    assert list(trials[1].intermediate_values) == [10]  # stopped at its first checkpoint of 20 steps
    assert trials[1].intermediate_values[10] > trials[0].intermediate_values[10]
    parent, children = children_of_sweep(tmp_path)
    by_trial = {c.data.tags["layerprobe.trial"]: c for c in children}
    good, bad = by_trial["0"], by_trial["1"]
    assert good.info.status == "FINISHED" and "pruned" not in good.data.tags
    assert bad.info.status == "FINISHED" and bad.data.tags["pruned"] == "true"
    assert bad.data.tags["layerprobe.pruned_at_step"] == "10"
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert [m.step for m in client.get_metric_history(bad.info.run_id, "eval/loss")] == [10]
    assert [m.step for m in client.get_metric_history(good.info.run_id, "eval/loss")] == [10, 20]
    tags = parent.data.tags
    assert (tags["layerprobe.complete_children"], tags["layerprobe.pruned_children"]) == ("1", "1")
    assert tags["layerprobe.failed_children"] == "0" and tags["layerprobe.best_run_id"] == good.info.run_id
    assert tags["layerprobe.study_name"] == "p" and tags["layerprobe.study_storage"] == storage
    assert (tags["layerprobe.sampler"], tags["layerprobe.pruner"]) == ("tpe", "median")


@pytest.mark.integration  # real Optuna and MLflow stores, no training
@pytest.mark.parametrize("how", ["interrupt", "dead process"])
def test_a_trial_whose_run_finished_is_told_its_outcome_and_only_the_others_run_again(how, tmp_path):
    """Four trials the sweeper never heard back from: their runs FINISHED (0.9), KILLED, FINISHED
    pruned, and none. Given back on Ctrl-C (`interrupt`) or found by a rerun with their process gone."""
    import socket

    from layerprobe import tracking
    from layerprobe.sweeps import study as S
    from layerprobe.sweeps.resume import run_outcomes
    from layerprobe.sweeps.search import _give_back, fail_stale

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    study = optuna.create_study(study_name="s", storage=f"sqlite:///{tmp_path / 'o.db'}", direction="maximize")
    trials = [study.ask() for _ in range(4)]
    for t in trials:
        t.suggest_float(LR, 0.001, 0.1)
        study._storage.set_trial_system_attr(t._trial_id, S.OWNER, {"host": socket.gethostname(), "pid": 2**22 + 1})
    for number, end in enumerate(["accuracy", "killed", "pruned"]):
        tags = {tracking.SWEEP_KEY_TAG: "k", "layerprobe.trial": str(number), "pruned": str(end == "pruned").lower()}
        with contextlib.suppress(KeyboardInterrupt), tracking.Tracker(uri, "layerprobe", f"t{number}", tags) as run:
            run.log_metrics({"eval/accuracy": 0.9}, step=20)
            if end == "killed":
                raise KeyboardInterrupt
    outcome = run_outcomes(uri, "layerprobe", "k", "eval/accuracy")
    if how == "interrupt":
        _give_back(study, trials, "the sweep was interrupted", retry=True, outcome=outcome)
    else:
        fail_stale(study, 120.0, outcome)
    got = [(t.state.name, t.value, S.NOT_COUNTED in t.system_attrs) for t in study.get_trials()]
    assert got[:4] == [("COMPLETE", 0.9, False), ("FAIL", None, True), ("PRUNED", None, False), ("FAIL", None, True)]
    asked_again = [t.system_attrs["fixed_params"] for t in study.get_trials(states=(optuna.trial.TrialState.WAITING,))]
    assert asked_again == [trials[1].params, trials[3].params]


def test_a_study_that_holds_n_trials_is_complete_in_one_line(tmp_path, monkeypatch):
    from layerprobe.sweeps.resume import nothing_left
    from tests.test_sweeps import sweep_cfg

    monkeypatch.chdir(tmp_path)
    storage = f"sqlite:///{tmp_path / 'o.db'}"
    search = ["+sweep=optuna", f"hydra.sweeper.storage={storage}", "hydra.sweeper.study_name=s"]
    assert nothing_left(sweep_cfg(*search, "hydra.sweeper.n_trials=2"), []) is None  # no study yet
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    for value in (0.5, 0.75):
        study.add_trial(optuna.trial.create_trial(value=value))
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL))
    assert nothing_left(sweep_cfg(*search, "hydra.sweeper.n_trials=4"), []) is None
    assert nothing_left(sweep_cfg(*search, "hydra.sweeper.n_trials=3"), []) == (
        f"study s in {storage} is complete: 3 of n_trials=3 trials ran (2 complete, 0 pruned, 1 failed), "
        "best eval/accuracy=0.75 (trial 1); nothing run (raise hydra.sweeper.n_trials to run more)"
    )


def test_the_parent_records_the_storage_without_credentials():
    from layerprobe.sweeps.study import StudySettings

    s = StudySettings("postgresql://alice:s3cret@db.example:5432/optuna", "n", "maximize", "eval/accuracy")
    assert s.redacted_storage == "postgresql://db.example:5432/optuna"


# ---- resuming and sharing (slow: several sweeps of real training) ----


def sweep_command(tmp_path: Path, storage: str, n_trials: int, sweep_dir: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "layerprobe",
        *OPTUNA,
        f"hydra.sweeper.n_trials={n_trials}",
        f"hydra.sweeper.storage={storage}",
        f"hydra.sweep.dir={sweep_dir}",
    ]


def study_name_of(tmp_path: Path, storage: str) -> str:
    from layerprobe.sweeps.study import open_storage

    (summary,) = optuna.get_all_study_summaries(open_storage(storage))
    return summary.study_name


@pytest.mark.slow
def test_a_killed_sweep_resumes_and_runs_only_the_missing_trials(tmp_path):
    storage = str(tmp_path / "study.journal")  # Optuna's journal file
    first = subprocess.Popen(
        sweep_command(tmp_path, storage, 4, "multirun/first"),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while time.time() < deadline:
        time.sleep(1)
        try:
            if len(finished(storage, study_name_of(tmp_path, storage))) >= 2:
                break
        except ValueError:  # no study there yet
            pass
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    name = study_name_of(tmp_path, storage)
    done_before = len(finished(storage, name))
    assert 2 <= done_before < 4
    again = subprocess.run(
        sweep_command(tmp_path, storage, 4, "multirun/again"), cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert again.returncode == 0, again.stderr[-2000:]
    trials = finished(storage, name)
    assert len(trials) == 4  # exactly n_trials, over both processes
    assert len({t.params[LR] for t in trials}) == 4  # none ran twice
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("layerprobe").experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("layerprobe.sweep") == "parent"]  # the rerun continued it
    assert parent.data.tags["layerprobe.sweep_dir"].endswith("again") and parent.info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    ran = [r.data.tags["layerprobe.trial"] for r in children if r.info.status == "FINISHED"]
    assert len(ran) == len(set(ran)) == 4  # the rerun ran only the missing trials


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_an_interrupted_study_is_one_study_under_one_parent_after_its_rerun(sig, tmp_path):
    """Two trials per batch; the signal comes while trial 1 trains, trial 0 having finished. The same
    command again: trial 0 is COMPLETE (not run again), the parent is the same, and the study and the
    parent agree on the trials, the best value and the best child. A third time: one line, nothing new."""
    from layerprobe.sweeps.study import NOT_COUNTED
    from tests.test_sweeps import interrupt_during_second_job

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    argv = ["-m", "+sweep=optuna", *TINY, "hydra.sweeper.n_trials=3", f"hydra.sweeper.storage={storage}"]
    interrupt_during_second_job(layerprobe_started(argv, tmp_path), tmp_path / "mlflow.db", sig)
    again = layerprobe_process(argv, tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]

    study = optuna.load_study(study_name=study_name_of(tmp_path, storage), storage=storage)
    trials = [t for t in study.get_trials() if NOT_COUNTED not in t.system_attrs]
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    assert trials[0].number == 0  # the trial that finished before the signal counts: not run again
    parent, children = children_of_sweep(tmp_path)
    assert parent.info.status == "FINISHED" and not {"error", "layerprobe.stale"} & set(parent.data.tags)
    done = [c for c in children if c.info.status == "FINISHED"]
    assert sorted(int(c.data.tags["layerprobe.trial"]) for c in done) == [t.number for t in trials]  # one each
    assert len({c.data.params[LR] for c in done}) == 3
    assert sorted(c.info.status for c in children) == ["FINISHED"] * 3 + ["KILLED"]  # trial 1's first try
    best = next(c for c in done if c.data.tags["layerprobe.trial"] == str(study.best_trial.number))
    assert parent.data.tags["layerprobe.best_run_id"] == best.info.run_id
    assert parent.data.metrics["best/eval/accuracy"] == study.best_value
    assert parent.data.tags["layerprobe.complete_children"] == "3"
    said = again.stdout + again.stderr
    assert f"Best value: {study.best_value}" in said and f"best child run: {best.info.run_id}" in said

    runs_before = len(
        MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}").search_runs([parent.info.experiment_id])
    )
    third = layerprobe_process(argv, tmp_path)
    assert third.returncode == 0, third.stderr[-2000:]
    assert third.stdout == (
        f"layerprobe: study {study.study_name} in {storage} is complete: 3 of n_trials=3 trials ran (3 complete, "
        f"0 pruned, 0 failed), best eval/accuracy={study.best_value:.6g} (trial {study.best_trial.number}); "
        "nothing run (raise hydra.sweeper.n_trials to run more)\n"
    )
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert len(client.search_runs([parent.info.experiment_id])) == runs_before  # no empty parent


@pytest.mark.slow
def test_two_processes_on_one_storage_finish_one_study_between_them(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    procs = [
        subprocess.Popen(
            sweep_command(tmp_path, storage, 4, f"multirun/p{i}"),
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    trials = finished(storage, study_name_of(tmp_path, storage))
    assert len(trials) == 4 and len({t.params[LR] for t in trials}) == 4
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("layerprobe").experiment_id])
    parents = [r for r in runs if r.data.tags.get("layerprobe.sweep") == "parent"]
    per_parent = [sum(r.data.tags.get("mlflow.parentRunId") == p.info.run_id for r in runs) for p in parents]
    assert len(parents) == 2 and sum(per_parent) == 4 and min(per_parent) >= 1  # both worked on it


def shown_sweeps() -> list[list[str]]:
    """The Optuna sweeps the README and the docs show."""
    import shlex

    from tests.docs import commands

    return [shlex.split(c)[1:] for c in commands("layerprobe") if "optuna" in c]


@pytest.mark.parametrize("args", shown_sweeps(), ids=lambda a: " ".join(a)[:80])
def test_every_shown_optuna_sweep_passes_the_checks_before_its_first_job(args, tmp_path, monkeypatch):
    """What `layerprobe -m ...` does before Hydra launches anything, on each command the docs show; a
    server storage the tests cannot reach is replaced by a sqlite file."""
    from layerprobe.cli.main import _check_sweep_values
    from layerprobe.config import compose_in, hydra_session

    monkeypatch.chdir(tmp_path)
    overrides = [a for a in args if a != "-m"]
    overrides = [f"hydra.sweeper.storage=sqlite:///{tmp_path}/o.db" if "postgresql" in a else a for a in overrides]
    with hydra_session() as hydra:
        cfg = compose_in(hydra, [*overrides, "hydra.mode=MULTIRUN"], "config", multirun=True)
        assert cfg.hydra.sweeper._target_ == "hydra_plugins.layerprobe_sweeper.sweeper.OptunaSweeper"
        _check_sweep_values(hydra, cfg, [*overrides, "hydra.mode=MULTIRUN"], "config")
