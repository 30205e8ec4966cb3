"""The README and the documentation site are a contract: every command they show must still compose,
parse, or exist, and the reference page covers every config key."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from layerprobe.cli import COMMANDS, main
from tests.docs import PAGES, README, ROOT, commands, page
from tests.hang import HANG_GUARD

pytestmark = pytest.mark.estimator  # the commands shown run on `make venv`


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


def subcommand(line: str) -> str | None:
    """`probe` of `layerprobe probe ...`; None for a run (`layerprobe`, `layerprobe key=value ...`)."""
    words = shlex.split(line)
    return words[1] if len(words) > 1 and words[1] in COMMANDS else None


RUNS = [c for c in commands("layerprobe") if subcommand(c) is None and not {"--cfg", "--help"} & set(shlex.split(c))]


@pytest.mark.parametrize("first_page", [README, page("getting-started.md")], ids=lambda p: p.name)
def test_the_first_pages_say_how_to_run_a_command_before_showing_one(first_page):
    """`layerprobe` is not on PATH after `make run`: the README and Getting started activate the venv first."""
    text = first_page.read_text()
    first = re.search(r"^\s*layerprobe ", text, re.M)
    assert first and "\nsource .venv/bin/activate\n" in text[: first.start()]


def test_the_manual_install_matches_make():
    """Every manual install line shown installs what `make venv` installs."""
    make = (ROOT / "Makefile").read_text()
    extras = re.search(r'-e "\.\[([a-z,]+)\]"', make).group(1)  # type: ignore[union-attr]
    installs = [ln for p in PAGES for ln in p.read_text().splitlines() if "pip install -c constraints.txt -e" in ln]
    assert installs and all(f'-e ".[{extras}]"' in ln for ln in installs)


@pytest.mark.parametrize("line", RUNS)
def test_every_run_command_composes_and_validates(line, capsys):
    args = as_single_run(shlex.split(line)[1:])
    assert main(["validate", "--static", *args]) == 0, capsys.readouterr().err


@pytest.mark.parametrize("line", [c for c in commands("layerprobe") if subcommand(c)])
def test_every_subcommand_exists_and_parses(line):
    with pytest.raises(SystemExit) as e:
        COMMANDS[str(subcommand(line))](["--help"])
    assert e.value.code == 0


def make_targets() -> set[str]:
    listed = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True, timeout=30).stdout
    return {ln.split()[1] for ln in listed.splitlines() if ln.strip().startswith("make ")}


@pytest.mark.integration  # starts a process
def test_every_make_target_exists():
    targets = make_targets()
    assert {"run", "test", "ui", "venv"} <= targets
    inline = [t for p in PAGES for t in re.findall(r"`make ([a-z-]+)", p.read_text())]  # `make ui` in prose too
    for target in [line.split()[1] for line in commands("make")] + inline:
        assert target in targets, target


@pytest.mark.integration  # starts a process
def test_cheap_commands_run_as_shown_after_activation():
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


def _hooks():
    """docs/hooks.py, the MkDocs hook that writes the generated pages (loaded by path: not a package)."""
    import runpy

    return runpy.run_path(str(ROOT / "docs" / "hooks.py"))


def _schema_keys() -> list[str]:
    """Every leaf key of the schema, `section.key.subkey`, as a user writes it."""
    import dataclasses
    import typing

    from layerprobe.schema import LayerprobeConfig

    def walk(cls: type, prefix: str) -> list[str]:
        hints = typing.get_type_hints(cls)
        keys = []
        for f in dataclasses.fields(cls):
            key = f"{prefix}.{f.name}" if prefix else f.name
            keys += walk(hints[f.name], key) if dataclasses.is_dataclass(hints[f.name]) else [key]
        return keys

    return walk(LayerprobeConfig, "")


def test_the_reference_gives_every_config_key_a_default_and_a_meaning():
    """The reference page is written from the schema: a key added there appears with its default, and
    its meaning comes from the comment beside it (a key without one fails here, not in the site)."""
    reference = _hooks()["reference_markdown"]()
    rows = {
        m.group(1): (m.group(2), m.group(3))
        for m in re.finditer(r"^\| `([^`]+)` \| (.*?) \| (.*) \|$", reference, re.M)
    }
    for key in _schema_keys():
        default, meaning = rows[key]
        assert default.strip() and meaning.strip(), key
    assert rows["trainer.optimizer.learning_rate"][0] == "`0.003` (schema: `0.001`)"  # conf/trainer/default.yaml's
    assert rows["model.outputs.<name>.loss"][0] == "`sparse_softmax_cross_entropy`"


def test_the_readme_links_into_pages_that_exist():
    """The README's relative links (into docs/) name files of the checkout; the site's own links are
    checked by `make docs` (mkdocs --strict)."""
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README.read_text())
    local = [link for link in links if "://" not in link]
    assert local and all((ROOT / link).exists() for link in local), local


def _transcripts() -> list[tuple[str, str]]:
    """(`layerprobe ...`, its error line) for every `$ layerprobe ...` line of a page's ```text blocks
    that the error line follows: the pages call these the real messages."""
    pairs = []
    for p in PAGES:
        for block in re.findall(r"^```text\n(.*?)^```", p.read_text(), re.M | re.S):
            lines = block.splitlines()
            for shown, printed in zip(lines, lines[1:]):
                if shown.startswith("$ layerprobe ") and printed.startswith("layerprobe: error: "):
                    pairs.append((shown[2:], printed))
    return pairs


def _same_error(printed: str, shown: str) -> bool:
    """`shown` as the page has it: `...` stands for what it leaves out, and absolute paths (the
    checkout's, a temporary directory's) are the reader's own."""
    path = re.compile(r"(?<![\w.])(/[\w.\-]+)+")
    pattern = re.escape(path.sub("<path>", shown)).replace(re.escape("..."), ".*")
    return re.fullmatch(pattern, path.sub("<path>", printed)) is not None


@pytest.mark.integration  # the data and graph checks import TensorFlow; `probe` looks for a store
@pytest.mark.parametrize("line, error", _transcripts(), ids=[c for c, _ in _transcripts()])
def test_every_error_shown_is_the_one_its_command_prints(line, error, tmp_path, monkeypatch, capsys):
    """A run is validated (every check a run makes before training, none of the training); a
    subcommand runs as shown, from an empty directory."""
    monkeypatch.chdir(tmp_path)
    args = shlex.split(line)[1:]
    assert main(args if subcommand(line) else ["validate", *args]) == 2
    printed = capsys.readouterr().err.strip().splitlines()[-1]
    assert _same_error(printed, error), printed
