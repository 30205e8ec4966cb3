"""The README is a contract: every command it shows must still compose, parse, or exist."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

from layerprobe.cli import COMMANDS, main

README = Path(__file__).resolve().parents[1] / "README.md"
ROOT = README.parent


def commands(prefix: str) -> list[str]:
    """Command lines in the README's code blocks (indented or fenced), comments and continuations joined."""
    text = README.read_text().replace("\\\n", " ")
    lines = [re.sub(r"\s+#.*$", "", ln).strip() for ln in text.splitlines()]
    return [ln for ln in lines if ln.startswith(prefix + " ")]


def as_single_run(args: list[str]) -> list[str]:
    """A sweep's overrides reduced to one job: the first value of each list, hydra.* dropped."""
    out = []
    for a in args:
        if a == "-m" or a.startswith(("hydra.", "+sweep=", "'+sweep", "+sweep")) or "choice(" in a:
            continue
        key, _, value = a.partition("=")
        if "," in value and not value.startswith("["):
            value = value.split(",")[0]
        out.append(f"{key}={value}" if _ else a)
    return out


RUNS = [c for c in commands("layerprobe") if shlex.split(c)[1] not in COMMANDS and "--cfg" not in c]


def test_the_readme_shows_commands():
    assert len(commands("layerprobe")) >= 20 and {"make run", "make test"} <= set(
        commands("make") + ["make run", "make test"]
    )
    assert commands("make")[:2] == ["make run", "make test"]  # the two commands, first


@pytest.mark.parametrize("line", RUNS)
def test_every_run_command_composes_and_validates(line, capsys):
    args = as_single_run(shlex.split(line)[1:])
    assert main(["validate", *args]) == 0, capsys.readouterr().err


@pytest.mark.parametrize("line", [c for c in commands("layerprobe") if shlex.split(c)[1] in COMMANDS])
def test_every_subcommand_exists_and_parses(line):
    name = shlex.split(line)[1]
    with pytest.raises(SystemExit) as e:
        COMMANDS[name](["--help"])
    assert e.value.code == 0


def test_every_make_target_exists():
    listed = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True, timeout=30).stdout
    for line in commands("make"):
        assert f"make {line.split()[1]} " in listed


@pytest.mark.integration
def test_make_run_trains_probes_and_logs_the_run(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = (
        f"model=tiny_cnn trainer=quick probe.plots=false tracking.uri={uri} "
        f"trainer.model_dir={tmp_path / 'model'} hydra.run.dir={tmp_path / 'out'}"
    )
    r = subprocess.run(["make", "-s", "run", f"ARGS={args}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    run_id = re.search(r"^mlflow run: (\w+)$", r.stdout, re.M).group(1)  # type: ignore[union-attr]
    assert f"open the UI: mlflow ui --backend-store-uri {uri}" in r.stdout
    link = f"this run in the UI: http://127.0.0.1:5000/#/experiments/1/runs/{run_id}?workflowType=machine_learning"
    assert link in r.stdout
    data = MlflowClient(tracking_uri=uri).get_run(run_id).data
    assert "eval/accuracy" in data.metrics and "probe/conv1/mean" in data.metrics
    assert data.params["model.name"] == "tiny_cnn"
