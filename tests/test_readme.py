"""The README is a contract: every command it shows must still compose, parse, or exist."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from layerprobe.cli import COMMANDS, main
from tests.hang import HANG_GUARD

pytestmark = pytest.mark.estimator  # the README's commands run on `make venv`

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


RUNS = [
    c
    for c in commands("layerprobe")
    if shlex.split(c)[1] not in COMMANDS and not {"--cfg", "--help"} & set(shlex.split(c))
]


def test_the_readme_says_how_to_run_its_commands_before_showing_one():
    """`layerprobe` is not on PATH after `make run`: the README activates the venv first."""
    text = README.read_text()
    first = re.search(r"^\s*layerprobe ", text, re.M)
    assert first and "\nsource .venv/bin/activate\n" in text[: first.start()]


def test_the_manual_install_matches_make():
    """The README's manual install line installs what `make venv` installs."""
    make = (ROOT / "Makefile").read_text()
    extras = re.search(r'-e "\.\[([a-z,]+)\]"', make).group(1)  # type: ignore[union-attr]
    installs = [ln for ln in README.read_text().splitlines() if "pip install -c constraints.txt -e" in ln]
    assert installs and all(f'-e ".[{extras}]"' in ln for ln in installs)


@pytest.mark.parametrize("line", RUNS)
def test_every_run_command_composes_and_validates(line, capsys):
    args = as_single_run(shlex.split(line)[1:])
    assert main(["validate", "--static", *args]) == 0, capsys.readouterr().err


@pytest.mark.parametrize("line", [c for c in commands("layerprobe") if shlex.split(c)[1] in COMMANDS])
def test_every_subcommand_exists_and_parses(line):
    name = shlex.split(line)[1]
    with pytest.raises(SystemExit) as e:
        COMMANDS[name](["--help"])
    assert e.value.code == 0


def make_targets() -> set[str]:
    listed = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True, timeout=30).stdout
    return {ln.split()[1] for ln in listed.splitlines() if ln.strip().startswith("make ")}


@pytest.mark.integration  # starts a process
def test_every_make_target_exists():
    targets = make_targets()
    assert {"run", "test", "ui", "venv"} <= targets
    inline = re.findall(r"`make ([a-z-]+)", README.read_text())  # `make ui` in the prose too
    for target in [line.split()[1] for line in commands("make")] + inline:
        assert target in targets, target


@pytest.mark.integration  # starts a process
def test_cheap_readme_commands_run_as_shown_after_activation():
    """Run from the checkout, in a shell that activated .venv as the README says."""
    cheap = [*commands("layerprobe validate"), "layerprobe --help"]
    assert set(cheap) <= set(commands("layerprobe"))
    for line in cheap:
        r = subprocess.run(
            ["bash", "-c", f"source .venv/bin/activate && {line}"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=HANG_GUARD,
        )
        assert r.returncode == 0, (line, r.stderr[-2000:])


def assert_runs_as_printed(command: str, cwd: Path) -> None:
    """A command the CLI prints is `make <target>`, or a path to an executable that exists."""
    exe = command.split()[0]
    if exe == "make":
        assert command.split()[1] in make_targets(), command
    else:
        assert (cwd / exe).is_file() and os.access(cwd / exe, os.X_OK), command


@pytest.mark.integration
def test_make_run_trains_probes_and_logs_the_run(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = (
        f"model=tiny_cnn trainer=quick probe.plots=false tracking.uri={uri} "
        f"trainer.model_dir={tmp_path / 'model'} hydra.run.dir={tmp_path / 'out'}"
    )
    r = subprocess.run(
        ["make", "-s", "run", f"ARGS={args}"], cwd=ROOT, capture_output=True, text=True, timeout=HANG_GUARD
    )
    assert r.returncode == 0, r.stderr[-2000:]
    run_id = re.search(r"^mlflow run: (\w+)$", r.stdout, re.M).group(1)  # type: ignore[union-attr]
    ui = re.search(r"^open the UI: (.+)$", r.stdout, re.M).group(1)  # type: ignore[union-attr]
    assert ui == f".venv/bin/mlflow ui --backend-store-uri {uri}"  # not on PATH without activation
    assert_runs_as_printed(ui, ROOT)
    link = f"this run in the UI: http://127.0.0.1:5000/#/experiments/1/runs/{run_id}?workflowType=machine_learning"
    assert link in r.stdout
    data = MlflowClient(tracking_uri=uri).get_run(run_id).data
    assert "eval/accuracy" in data.metrics and "probe/conv1/mean" in data.metrics
    assert data.params["model.name"] == "tiny_cnn"
