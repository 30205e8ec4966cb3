"""Relative paths: one written in a config file means a file under the repository root from any
working directory; one given on the command line means a file under the working directory."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from layerprobe.cli import main
from layerprobe.config import compose
from layerprobe.config.loaded import load
from layerprobe.config.paths import ROOT
from layerprobe.provenance import training_digest
from tests.conftest import ENGINE
from tests.hang import layerprobe_process

SHIPPED = ROOT / "experiments" / "weights" / "small_resnet_digits04.h5"
FROZEN = "experiments=small_resnet_frozen"
QUICK = ["trainer.train_steps=2", "probe.enabled=false", f"trainer.engine={ENGINE}"]


def composed(*overrides: str, config_dir: str | None = None) -> dict:
    return OmegaConf.to_container(compose(list(overrides), config_dir=config_dir), resolve=True)  # type: ignore[return-value]


def test_an_experiment_files_weights_path_is_the_same_file_from_any_directory(tmp_path, monkeypatch):
    at_root = composed(FROZEN)
    monkeypatch.chdir(tmp_path)
    elsewhere = composed(FROZEN)
    assert elsewhere["trainer"]["warm_start"]["source"] == at_root["trainer"]["warm_start"]["source"] == str(SHIPPED)
    # the digest (and so models/<name>-<digest>) is what the file's relative path gave before, on any checkout
    assert training_digest(load(elsewhere)) == training_digest(load(at_root))
    as_written = {**at_root, "trainer": {**at_root["trainer"], "warm_start": {**at_root["trainer"]["warm_start"]}}}
    as_written["trainer"]["warm_start"]["source"] = "experiments/weights/small_resnet_digits04.h5"
    monkeypatch.chdir(ROOT)  # where the path as written names the file (load checks that it exists)
    assert training_digest(load(elsewhere)) == training_digest(load(as_written))


def test_a_relative_path_on_the_command_line_is_the_working_directorys(tmp_path, monkeypatch, capsys):
    (tmp_path / "relative").mkdir()
    shutil.copy(SHIPPED, tmp_path / "relative" / "x.h5")
    monkeypatch.chdir(tmp_path)
    c = composed(FROZEN, "trainer.warm_start.source=relative/x.h5")
    assert c["trainer"]["warm_start"]["source"] == "relative/x.h5"  # as typed: the shell's directory
    c = composed(FROZEN, "trainer.warm_start.variables=stem.*")  # a sibling override: the path is still the file's
    assert c["trainer"]["warm_start"]["source"] == str(SHIPPED)
    assert main(["validate", FROZEN, f"trainer.engine={ENGINE}", "trainer.warm_start.source=relative/x.h5"]) == 0
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    capsys.readouterr()
    assert main(["validate", "--static", FROZEN, "trainer.warm_start.source=relative/x.h5"]) == 2
    assert capsys.readouterr().err == (
        "layerprobe: error: trainer.warm_start.source: not an existing checkpoint, model_dir or .h5 weights file, "
        "nor an MLflow run id (32 hex digits). Received: 'relative/x.h5'\n"
    )


def test_a_path_in_a_config_dir_file_is_the_repository_roots_too(tmp_path, monkeypatch):
    (tmp_path / "mine" / "trainer").mkdir(parents=True)
    (tmp_path / "mine" / "trainer" / "warm.yaml").write_text(
        "defaults: [default]\nwarm_start: {source: experiments/weights/small_resnet_digits04.h5}\n"
    )
    monkeypatch.chdir(tmp_path)
    c = composed("trainer=warm", config_dir=str(tmp_path / "mine"))
    assert c["trainer"]["warm_start"]["source"] == str(SHIPPED)


@pytest.mark.integration  # trains a few steps and starts the CLI in a process
def test_validate_and_a_run_of_the_frozen_experiment_from_another_directory(tmp_path, monkeypatch, capsys):
    """Both refused the experiment's relative weights path unless started in the repository root."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    assert main(["validate", FROZEN, f"trainer.engine={ENGINE}"]) == 0, capsys.readouterr().err
    assert "ok  graph: training graph built (43242 parameters)" in capsys.readouterr().out
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    r = layerprobe_process([FROZEN, *QUICK, f"tracking.uri={store}"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    from mlflow import MlflowClient

    client = MlflowClient(store)
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.data.tags["layerprobe.warm_start"] == str(SHIPPED)
    assert (tmp_path / "models").is_dir()  # outputs stay under the working directory


@pytest.mark.slow
def test_a_sweep_job_resolves_the_files_paths_as_a_run_does(tmp_path):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    r = layerprobe_process(["-m", FROZEN, *QUICK, f"tracking.uri={store}", "trainer.seed=1"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert not list(Path(tmp_path, "multirun").rglob("FAILED*"))
