"""Sweeps through the shipped launchers and sweepers (conf/sweep/), run for real with the CLI."""

from __future__ import annotations

import contextlib
import csv
import re
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.hang import HANG_GUARD, layerprobe_process, layerprobe_started
from tests.test_tracking import TINY, cli

pytestmark = pytest.mark.estimator  # sweeps train with the default engine

STORE_ERRORS = re.compile(r"database is locked|OperationalError|IntegrityError|Traceback")


def hydra_cfg(*overrides: str):
    from hydra import compose, initialize_config_dir

    from layerprobe.config import CONF_DIR
    from layerprobe.config.compose import register_configs

    register_configs()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True).hydra


@pytest.mark.parametrize(
    ("sweep", "launcher", "sweeper"),
    [
        ("joblib", "JoblibLauncher", "BasicSweeper"),
        ("optuna", "BasicLauncher", "OptunaSweeper"),
        ("[optuna,joblib]", "JoblibLauncher", "OptunaSweeper"),
        ("submitit_local", "LocalLauncher", "BasicSweeper"),
        ("slurm", "SlurmLauncher", "BasicSweeper"),
    ],
)
def test_every_shipped_sweep_config_composes(sweep, launcher, sweeper):
    h = hydra_cfg(f"+sweep={sweep}")
    assert h.launcher._target_.rsplit(".", 1)[1] == launcher
    assert h.sweeper._target_.rsplit(".", 1)[1] == sweeper


def sweep_cfg(*overrides: str):
    """The config of `layerprobe -m OVERRIDES`, with its hydra node, as the sweep's callback gets it."""
    from layerprobe.config import compose_in, hydra_session

    with hydra_session() as hydra:
        return compose_in(hydra, [*overrides, "hydra.mode=MULTIRUN"], "config", multirun=True)


def test_the_identity_of_a_sweep_its_reruns_share(tmp_path, monkeypatch):
    """A grid: its overrides in any order and the config they compose; a search: its study."""
    from omegaconf import OmegaConf

    from layerprobe.sweeps.resume import sweep_key

    grid = ["model=tiny_cnn", "trainer.seed=1,2"]
    key = sweep_key(sweep_cfg(*grid), grid)
    assert sweep_key(sweep_cfg(*grid[::-1]), grid[::-1]) == key
    edited = sweep_cfg(*grid)
    OmegaConf.update(edited, "probe.max_examples", 7)  # as when a config file changed between the runs
    assert sweep_key(edited, grid) != key
    assert sweep_key(sweep_cfg("model=tiny_cnn", "trainer.seed=1,3"), ["model=tiny_cnn", "trainer.seed=1,3"]) != key

    monkeypatch.chdir(tmp_path)
    search = ["+sweep=optuna", "hydra.sweeper.study_name=s"]
    relative = sweep_key(sweep_cfg(*search, "hydra.sweeper.storage=sqlite:///o.db"), [])
    absolute = sweep_key(sweep_cfg(*search, f"hydra.sweeper.storage=sqlite:///{tmp_path}/o.db"), [])
    assert relative == absolute != sweep_key(sweep_cfg(*search, "hydra.sweeper.storage=sqlite:///p.db"), [])


@pytest.mark.integration  # a real MLflow store, no training
def test_a_grid_rerun_finds_its_finished_jobs_and_says_when_none_is_left(tmp_path, monkeypatch):
    from layerprobe import tracking
    from layerprobe.sweeps.resume import done_job, nothing_left, sweep_key

    monkeypatch.chdir(tmp_path)  # the default store: ./mlflow.db
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri, grid = f"sqlite:///{tmp_path / 'mlflow.db'}", ["model=tiny_cnn", "trainer.seed=1,2"]
    cfg = sweep_cfg(*grid)
    key = sweep_key(cfg, grid)
    parent = tracking.start_sweep_parent(
        uri, "layerprobe", "s", {"layerprobe.sweep": "parent", tracking.SWEEP_KEY_TAG: key}
    )
    jobs = [["model=tiny_cnn", f"trainer.seed={seed}"] for seed in (1, 2)]

    def child(job: list[str], interrupted: bool) -> str:
        tags = {tracking.SWEEP_KEY_TAG: key, "layerprobe.overrides": " ".join(job)}
        with contextlib.suppress(KeyboardInterrupt), tracking.Tracker(uri, "layerprobe", job[1], tags, parent) as run:
            if interrupted:
                raise KeyboardInterrupt
        return run.run_id

    first = child(jobs[0], interrupted=False)
    child(jobs[1], interrupted=True)
    assert done_job(uri, "layerprobe", key, jobs[0][::-1]).run_id == first  # the overrides in any order
    assert done_job(uri, "layerprobe", key, jobs[1]) is None  # KILLED: it runs again
    assert done_job(uri, "layerprobe", "another sweep", jobs[0]) is None
    assert nothing_left(cfg, grid) is None
    child(jobs[1], interrupted=False)
    assert nothing_left(cfg, grid) == (
        f"this sweep is complete: its 2 job(s) finished before (parent run {parent}); nothing run "
        "(change an override, or delete those runs, to run it again)"
    )


@pytest.mark.integration  # a real MLflow store
def test_a_rerun_continues_the_ended_parent_of_its_sweep_not_one_still_running(tmp_path):
    from layerprobe import tracking
    from layerprobe.sweeps.parent import finish_parent

    uri, key = f"sqlite:///{tmp_path / 'mlflow.db'}", {"layerprobe.sweep": "parent", tracking.SWEEP_KEY_TAG: "k"}
    assert tracking.reopen_sweep_parent(uri, "layerprobe", "k", {}) is None  # no store yet: none, and none made
    assert not (tmp_path / "mlflow.db").exists()
    running = tracking.start_sweep_parent(uri, "layerprobe", "s", key)  # this process: alive
    assert tracking.reopen_sweep_parent(uri, "layerprobe", "k", {}) is None
    finish_parent(uri, running, "eval/accuracy", "maximize", tmp_path, error="interrupted (Ctrl-C)", killed=True)
    again = tracking.reopen_sweep_parent(uri, "layerprobe", "k", {"layerprobe.sweep_dir": "multirun/again"})
    assert again == running
    run = MlflowClient(tracking_uri=uri).get_run(again)
    assert run.info.status == "RUNNING" and "error" not in run.data.tags
    assert run.data.tags["layerprobe.sweep_dir"] == "multirun/again"


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_the_optuna_direction_follows_tracking_direction(direction):
    h = hydra_cfg("+sweep=optuna", f"tracking.direction={direction}")
    assert h.sweeper.direction == direction and h.sweeper.storage is None


def sweep_of_three(tmp_path: Path) -> tuple[str, str, list[str]]:
    """A parent with three children in a real store: accuracies 0.5 and 0.9, then one that failed
    before its evaluation."""
    from layerprobe import tracking

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    parent = tracking.start_sweep_parent(uri, "layerprobe", "sweep: x=1,2,3", {"layerprobe.sweep": "parent"})
    ids = []
    for x, accuracy in ((1, 0.5), (2, 0.9), (3, None)):
        child = tracking.Tracker(uri, "layerprobe", f"x={x}", {"layerprobe.overrides": f"x={x}"}, parent)
        try:
            with child:
                child.log_metrics({"eval/loss": 1.0 / x}, step=10)
                if accuracy is None:
                    raise RuntimeError("diverged")
                child.log_metrics({"eval/accuracy": accuracy}, step=10)
        except RuntimeError:
            pass
        ids.append(child.run_id)
    return uri, parent, ids


@pytest.mark.integration  # a real MLflow store
@pytest.mark.parametrize(("direction", "best"), [("maximize", 1), ("minimize", 0)])
def test_the_parent_gets_the_table_and_the_best_child(tmp_path, direction, best):
    from layerprobe.sweeps.parent import finish_parent

    uri, parent, ids = sweep_of_three(tmp_path)
    assert finish_parent(uri, parent, "eval/accuracy", direction, tmp_path) == (ids[best], (0.5, 0.9)[best])
    run = MlflowClient(tracking_uri=uri).get_run(parent)
    assert run.info.status == "FINISHED" and "error" not in run.data.tags
    assert run.data.tags["layerprobe.best_run_id"] == ids[best]
    assert run.data.tags["layerprobe.best_objective"] == f"eval/accuracy={(0.5, 0.9)[best]}"
    assert (run.data.tags["layerprobe.children"], run.data.tags["layerprobe.failed_children"]) == ("3", "1")
    assert run.data.metrics == {"best/eval/accuracy": (0.5, 0.9)[best]}
    rows = list(csv.reader((tmp_path / "sweep_summary.csv").open()))
    assert rows == [
        ["run_id", "name", "status", "overrides", "eval/accuracy", "eval/loss"],
        [ids[0], "x=1", "FINISHED", "x=1", "0.5", "1"],
        [ids[1], "x=2", "FINISHED", "x=2", "0.9", "0.5"],
        [ids[2], "x=3", "FAILED", "x=3", "", "0.333333"],
    ]
    assert [a.path for a in MlflowClient(tracking_uri=uri).list_artifacts(parent)] == ["sweep_summary.csv"]


@pytest.mark.integration  # a real MLflow store
def test_a_sweep_stopped_early_ends_its_parent_failed_with_the_reason(tmp_path):
    from layerprobe.sweeps.parent import finish_parent

    uri, parent, ids = sweep_of_three(tmp_path)
    assert finish_parent(uri, parent, "eval/f1", "maximize", tmp_path, error="the sweeper stopped") is None
    run = MlflowClient(tracking_uri=uri).get_run(parent)
    assert run.info.status == "FAILED" and run.data.tags["error"] == "the sweeper stopped"
    assert "layerprobe.best_run_id" not in run.data.tags and run.data.metrics == {}


@pytest.mark.integration  # a real MLflow store
def test_an_interrupted_sweep_ends_its_parent_killed(tmp_path):
    from layerprobe.sweeps.parent import finish_parent

    uri, parent, ids = sweep_of_three(tmp_path)
    finish_parent(uri, parent, "eval/accuracy", "maximize", tmp_path, error="interrupted (Ctrl-C)", killed=True)
    run = MlflowClient(tracking_uri=uri).get_run(parent)
    assert run.info.status == "KILLED" and run.data.tags["error"] == "interrupted (Ctrl-C)"
    assert run.data.tags["layerprobe.best_run_id"] == ids[1]  # what finished is still summarised


@pytest.mark.integration
def test_a_child_that_reuses_a_trained_model_dir_has_the_dynamics_of_its_model(tiny, tmp_path):
    """Two children of a sweep differ only in what the final probe reads, so they share a model_dir:
    the second trains nothing, yet its run has its model's series (cka_to_final among them) and
    dynamics.json for the compare report, as the first's."""
    from layerprobe import tracking
    from layerprobe.runner import run

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    parent = tracking.start_sweep_parent(uri, "layerprobe", "sweep", {"layerprobe.sweep": "parent"})
    results = [
        run(tiny("probe.dynamics.examples=100", f"probe.max_examples={n}"), tmp_path / str(n), parent_run_id=parent)
        for n in (100, 200)
    ]
    assert results[0].model_dir == results[1].model_dir and results[1].global_step == 20
    client = MlflowClient(tracking_uri=uri)
    for key in ("dynamics/conv1/cka_to_final", "dynamics/conv1/mean"):
        first, second = ({m.step: m.value for m in client.get_metric_history(r.run_id, key)} for r in results)
        assert sorted(first) == sorted(second) == [0, 10, 20]
        assert second == pytest.approx(first)  # the same model, the same subset
    assert (tmp_path / "200/probe/dynamics/dynamics.json").is_file()


def test_ctrl_c_marks_the_process_interrupted_for_the_parent_ended_at_exit(monkeypatch):
    import importlib

    import layerprobe.sweeps.parent as parent

    cli = importlib.import_module("layerprobe.cli.main")  # the module (the package exports its `main`)

    def interrupted(argv):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "run_command", interrupted)
    monkeypatch.setattr(parent, "_INTERRUPTED", False)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    assert cli.main(["-m", "trainer.seed=1,2"]) == cli.INTERRUPTED
    assert parent._INTERRUPTED


def runs(tmp_path: Path) -> tuple:
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    found = client.search_runs([client.get_experiment_by_name("layerprobe").experiment_id])
    parents = [x for x in found if x.data.tags.get("layerprobe.sweep") == "parent"]
    assert len(parents) == 1, [x.info.run_name for x in found]
    children = [x for x in found if x.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(found) == 1 + len(children)  # no run outside the sweep
    return client, parents[0], children


@pytest.mark.integration
def test_a_4_job_grid_through_joblib_with_2_workers(tmp_path):
    r = cli(["-m", "+sweep=joblib", *TINY, "model.layers.conv1.filters=2,4", "trainer.seed=1,2"], tmp_path, 300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Joblib.Parallel(n_jobs=2" in r.stdout + r.stderr
    assert not STORE_ERRORS.search(r.stdout + r.stderr)
    _, parent, children = runs(tmp_path)
    assert parent.info.status == "FINISHED" and parent.data.tags["layerprobe.launcher"].endswith("JoblibLauncher")
    assert len(children) == 4 and {x.info.status for x in children} == {"FINISHED"}
    assert {x.info.run_name for x in children} == {
        f"conv1.filters={f},trainer.seed={s}" for f in (2, 4) for s in (1, 2)
    }
    assert len({x.data.tags["model_dir"] for x in children}) == 4  # each job its own model_dir
    best = max(children, key=lambda x: x.data.metrics["eval/accuracy"])
    assert parent.data.tags["layerprobe.best_run_id"] == best.info.run_id


@pytest.mark.slow
def test_parallel_jobs_with_the_same_training_config_train_once(tmp_path):
    """Two jobs that differ only in what is probed share a model_dir; the lock lets one train, the
    other resume from its checkpoint: one training event file, the same weights, both runs finish."""
    r = cli(["-m", "+sweep=joblib", *TINY, "probe.max_examples=100,200"], tmp_path, 300)
    assert r.returncode == 0, r.stderr[-2000:]
    _, _, children = runs(tmp_path)
    assert len(children) == 2 and {x.info.status for x in children} == {"FINISHED"}
    (model_dir,) = {x.data.tags["model_dir"] for x in children}
    assert len(list(Path(model_dir).glob("events.out.tfevents.*"))) == 1  # trained by one job only
    assert len({x.data.tags["layerprobe.checkpoint_sha256"] for x in children}) == 1
    assert len({x.data.metrics["eval/accuracy"] for x in children}) == 1


@pytest.mark.integration
def test_an_optuna_search_minimises_the_objective_and_the_parent_keeps_the_best(tmp_path):
    args = ["-m", "+sweep=optuna", *TINY, "hydra.sweeper.n_trials=3", "tracking.objective=eval/loss"]
    r = cli([*args, "tracking.direction=minimize"], tmp_path, 300)
    assert r.returncode == 0, r.stderr[-2000:]
    _, parent, children = runs(tmp_path)
    assert len(children) == 3 and {x.info.status for x in children} == {"FINISHED"}
    rates = [float(x.data.params["trainer.optimizer.learning_rate"]) for x in children]
    assert all(0.0003 <= lr <= 0.03 for lr in rates) and len(set(rates)) == 3
    assert all(x.info.run_name.startswith("optimizer.learning_rate=") for x in children)
    losses = {x.info.run_id: x.data.metrics["eval/loss"] for x in children}
    best_id = min(losses, key=losses.__getitem__)
    assert parent.data.tags["layerprobe.best_run_id"] == best_id
    assert parent.data.metrics["best/eval/loss"] == pytest.approx(losses[best_id])
    (results,) = (tmp_path / "multirun").glob("*/*/optimization_results.yaml")
    optuna_best = yaml.safe_load(results.read_text())
    assert optuna_best["best_value"] == pytest.approx(losses[best_id])  # Optuna saw the same objective
    assert "direction: minimize" in r.stdout + r.stderr  # the study's own direction


@pytest.mark.integration
def test_an_optuna_search_goes_on_past_a_diverging_trial(tmp_path):
    rates = "trainer.optimizer.learning_rate=choice(0.001,1e30)"  # 1e30 diverges: TrainingDiverged
    r = cli(["-m", "+sweep=optuna", *TINY, "hydra.sweeper.n_trials=4", rates], tmp_path, 300)
    assert r.returncode == 1, r.stderr[-2000:]
    _, parent, children = runs(tmp_path)
    statuses = sorted((float(x.data.params["trainer.optimizer.learning_rate"]), x.info.status) for x in children)
    assert len(children) == 4  # not stopped by the first failed batch
    assert {s for lr, s in statuses if lr == 1e30} == {"FAILED"} and {s for lr, s in statuses if lr == 0.001} == {
        "FINISHED"
    }
    assert parent.info.status == "FINISHED" and parent.data.tags["layerprobe.best_run_id"]
    assert f"{sum(s == 'FAILED' for _, s in statuses)} sweep job(s) failed" in r.stderr


@pytest.mark.integration
def test_an_optuna_search_whose_every_trial_fails_ends_its_parent_failed(tmp_path):
    rates = "trainer.optimizer.learning_rate=choice(1e30,2e30)"
    r = cli(["-m", "+sweep=optuna", *TINY, "hydra.sweeper.n_trials=2", rates], tmp_path, 300)
    assert r.returncode == 1, r.stderr[-2000:]
    _, parent, children = runs(tmp_path)
    assert [x.info.status for x in children] == ["FAILED", "FAILED"]
    assert parent.info.status == "FAILED"  # not left RUNNING although Optuna raised
    assert parent.data.tags["error"].startswith("the sweeper stopped before the sweep's end; 2 job(s) failed")


@pytest.mark.slow
def test_a_2_job_sweep_through_submitit_local(tmp_path):
    r = cli(["-m", "+sweep=submitit_local", *TINY, "model.layers.conv1.filters=2,4"], tmp_path, 300)
    assert r.returncode == 0, r.stderr[-2000:]
    _, parent, children = runs(tmp_path)
    assert parent.data.tags["layerprobe.launcher"].endswith("LocalLauncher")
    assert sorted(x.info.run_name for x in children) == ["conv1.filters=2", "conv1.filters=4"]
    assert {x.info.status for x in children} == {"FINISHED"}
    job_logs = list((tmp_path / "multirun").glob("*/*/.submitit/*/*_log.out"))
    assert len(job_logs) == 2  # each job ran as its own submitit process
    assert all("mlflow run: " in p.read_text() for p in job_logs)


# ---- a sweep interrupted, then run again (the same command) ----


def children_in_store(db: Path) -> list[tuple[str, str | None]]:
    """(status, trial tag) of each sweep child, oldest first, read with sqlite3: opening the store
    with MLflow under the running sweep would check (and may migrate) its schema."""
    if not db.is_file():
        return []
    query = (
        "select r.status, (select t.value from tags t where t.run_uuid = r.run_uuid and t.key = 'layerprobe.trial') "
        "from runs r join tags p on p.run_uuid = r.run_uuid and p.key = 'mlflow.parentRunId' order by r.start_time"
    )
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as con:
        try:
            return con.execute(query).fetchall()
        except sqlite3.OperationalError:  # no tables yet
            return []


def interrupt_during_second_job(proc: subprocess.Popen, db: Path, sig: int) -> None:
    """`sig` to the sweep once its first child FINISHED and the next one RUNNING (training)."""
    deadline = time.time() + HANG_GUARD
    while True:
        statuses = [status for status, _ in children_in_store(db)]
        if statuses[:1] == ["FINISHED"] and statuses[-1:] == ["RUNNING"]:
            break
        assert proc.poll() is None and time.time() < deadline, f"the sweep ended first: {statuses}"
        time.sleep(0.1)
    proc.send_signal(sig)
    proc.communicate(timeout=HANG_GUARD)  # its output, drained


@pytest.mark.slow
def test_a_grid_rerun_after_ctrl_c_runs_only_the_jobs_not_finished_and_then_says_complete(tmp_path):
    """Ctrl-C during job 1 of 3; the same command continues the same parent, runs jobs 1 and 2 (job 0
    finished: not again); a third time it prints one line and creates nothing."""
    argv = ["-m", *TINY, "model.layers.conv1.filters=2,3,4"]
    first = layerprobe_started(argv, tmp_path)
    interrupt_during_second_job(first, tmp_path / "mlflow.db", signal.SIGINT)
    assert first.returncode == 130
    again = layerprobe_process(argv, tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    said = again.stdout + again.stderr
    assert "finished before as run" in said and "(continued: this sweep ran before)" in said
    client, parent, children = runs(tmp_path)
    assert parent.info.status == "FINISHED" and "error" not in parent.data.tags
    finished = sorted(x.info.run_name for x in children if x.info.status == "FINISHED")
    assert finished == ["conv1.filters=2", "conv1.filters=3", "conv1.filters=4"]  # each once: job 0 not again
    assert sorted(x.info.status for x in children) == ["FINISHED", "FINISHED", "FINISHED", "KILLED"]
    best = max((x for x in children if x.info.status == "FINISHED"), key=lambda x: x.data.metrics["eval/accuracy"])
    assert parent.data.tags["layerprobe.best_run_id"] == best.info.run_id
    (table,) = Path(parent.data.tags["layerprobe.sweep_dir"]).glob("sweep_summary.csv")
    assert len(list(csv.reader(table.open()))) == 1 + 4  # every child of the sweep, over both processes

    sweep_dirs = sorted((tmp_path / "multirun").glob("*/*"))
    third = layerprobe_process(argv, tmp_path)
    assert third.returncode == 0, third.stderr[-2000:]
    assert third.stdout == (
        f"layerprobe: this sweep is complete: its 3 job(s) finished before (parent run {parent.info.run_id}); "
        "nothing run (change an override, or delete those runs, to run it again)\n"
    )
    assert sorted((tmp_path / "multirun").glob("*/*")) == sweep_dirs  # no new sweep dir
    assert len(client.search_runs([parent.info.experiment_id])) == 1 + 4  # no new run
