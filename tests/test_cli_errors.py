"""One CLI path: every mistake on the command line (Hydra's flags, override grammar, group options,
`-m`, `--config-dir`/`--config-name`) is one exact line on stderr, exit 2, and nothing written."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from layerprobe.cli import COMMANDS, main
from layerprobe.schema import TrainerConfig
from tests.hang import layerprobe_process

ROOT = Path(__file__).resolve().parents[1]
BAD_GRAMMAR = (
    "layerprobe: error: cannot parse override 'model.layers.conv1.filters=[3': no viable alternative at input '[3'"
)
MISSING_INTERPOLATION = (
    "layerprobe: error: data.name: cannot be resolved (Missing mandatory value: data.params.path). "
    "Received: '${data.params.path}'"
)
CASES = {
    "grammar": (["model.layers.conv1.filters=[3"], BAD_GRAMMAR),
    "grammar-in-a-sweep": (["-m", "model.layers.conv1.filters=[3"], BAD_GRAMMAR),
    "grammar-with-config-dir": (["--config-dir", str(ROOT / "conf"), "model.layers.conv1.filters=[3"], BAD_GRAMMAR),
    "config-dir-missing": (
        ["--config-dir", "/nonexistent_lp_conf"],
        "layerprobe: error: --config-dir: not a directory. Received: '/nonexistent_lp_conf'",
    ),
    "config-name-missing": (
        ["--config-name", "nope"],
        "layerprobe: error: --config-name: no config 'nope' on the search path (conf/ and --config-dir)",
    ),
    "unknown-option-in-a-sweep": (
        ["-m", "model=tiny_cnn,tiny_cn"],
        "layerprobe: error: Could not find 'model/tiny_cn'. Did you mean model=tiny_cnn? "
        "Available options in 'model': " + ", ".join(sorted(f.stem for f in (ROOT / "conf" / "model").glob("*.yaml"))),
    ),
    "unknown-option-added": (
        ["+sweep=jobllib"],
        "layerprobe: error: Could not find 'sweep/jobllib'. Did you mean +sweep=joblib? "
        "Available options in 'sweep': joblib, optuna, slurm, submitit_local",
    ),
    "misspelt-key": (
        ["trainer.train_step=10"],
        "layerprobe: error: Could not override 'trainer.train_step': trainer has no key 'train_step'. "
        "Did you mean trainer.train_steps=10?",
    ),
    "misspelt-key-in-a-sweep": (
        ["-m", "trainer.train_step=10,20"],
        "layerprobe: error: Could not override 'trainer.train_step': trainer has no key 'train_step'. "
        "Did you mean trainer.train_steps=10,20?",
    ),
    "bad-value-in-a-sweep": (  # past the key and the value, the reason is Hydra's (OmegaConf's) own wording
        ["-m", "trainer.train_steps=10,abc"],
        re.compile(r"layerprobe: error: .*trainer\.train_steps=abc.*'abc'.*"),
    ),
    "misspelt-layer-argument": (
        ["model.layers.conv1.filtres=3"],
        "layerprobe: error: Could not override 'model.layers.conv1.filtres': model.layers.conv1 has no key "
        "'filtres'. Did you mean model.layers.conv1.filters=3?",
    ),
    "layer-argument-to-add": (
        ["model.layers.conv1.stride=2"],
        "layerprobe: error: Could not override 'model.layers.conv1.stride': model.layers.conv1 has no key "
        "'stride'. Did you mean +model.layers.conv1.strides=2?",
    ),
    "no-such-key-anywhere-close": (
        ["trainer.epochs=3"],
        "layerprobe: error: Could not override 'trainer.epochs': trainer has no key 'epochs'. Keys of trainer: "
        + ", ".join(sorted(f.name for f in dataclasses.fields(TrainerConfig))),
    ),
    "free-form-key": (
        ["data.params.n=3"],
        "layerprobe: error: Could not override 'data.params.n': data.params has no key 'n'. "
        "To add it: +data.params.n=3",
    ),
    "unknown-flag": (
        ["--bogus"],
        "layerprobe: error: unrecognized arguments: --bogus (layerprobe --help lists the options)",
    ),
    "two-modes": (
        ["-m", "--cfg", "job"],
        "layerprobe: error: --multirun and --cfg: give only one of --run, --multirun, --cfg, --info",
    ),
    "interpolation-of-a-missing-value": (
        ["data=tfrecord", "data.name=${data.params.path}"],
        MISSING_INTERPOLATION,
    ),
    "interpolation-of-a-missing-value-in-a-sweep": (
        ["-m", "data=tfrecord", "data.name=${data.params.path}", "trainer.seed=1,2"],
        MISSING_INTERPOLATION,
    ),
    "interpolation-of-a-missing-value-in-validate": (
        ["validate", "--static", "data=tfrecord", "data.name=${data.params.path}"],
        MISSING_INTERPOLATION,
    ),
    "interpolation-of-a-missing-value-in-data": (
        ["data", "data=tfrecord", "data.name=${data.params.path}"],
        MISSING_INTERPOLATION,
    ),
    "interpolation-of-no-such-key": (
        ["data.name=${nope.x}"],
        "layerprobe: error: data.name: cannot be resolved (Interpolation key 'nope.x' not found). "
        "Received: '${nope.x}'",
    ),
    "cfg-with-a-misspelt-key": (
        ["--cfg", "job", "trainer.train_step=3"],
        "layerprobe: error: Could not override 'trainer.train_step': trainer has no key 'train_step'. "
        "Did you mean trainer.train_steps=3?",
    ),
}


@pytest.mark.parametrize("argv, line", list(CASES.values()), ids=list(CASES))
def test_a_command_line_mistake_is_one_exact_line_and_writes_nothing(argv, line, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    rc = main(argv)
    out, err = capsys.readouterr()
    if isinstance(line, re.Pattern):
        assert rc == 2 and err.endswith("\n") and line.fullmatch(err[:-1]), (out, err)
    else:
        assert (rc, err) == (2, line + "\n"), out
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no outputs/, multirun/, mlflow.db, models/


@pytest.mark.integration  # starts a process
@pytest.mark.parametrize(
    "argv", [["-m", "model.layers.conv1.filters=[3"], ["--config-dir", "conf", "model.layers.conv1.filters=[3"]]
)
def test_in_a_real_process_too(argv):
    r = layerprobe_process(argv, ROOT)
    assert (r.returncode, r.stderr) == (2, BAD_GRAMMAR + "\n")


def test_help_lists_every_subcommand_with_one_line(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    listed = [ln.split()[0] for ln in out.split("Commands:\n", 1)[1].split("\n\n", 1)[0].splitlines()]
    expected = ["probe", "compare", "reproduce", "check", "data", "validate", "cluster", "upload-pending"]
    assert listed == expected and sorted(COMMANDS) == sorted(expected)


def test_data_prints_an_ellipsis_only_when_values_are_left_out(capsys):
    assert main(["data", "data=iris"]) == 0
    examples = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("  example: ")]
    assert len(examples) == 3 and all("..." not in ln for ln in examples)  # 4 values each: all shown
    assert main(["data"]) == 0
    examples = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("  example: ")]
    assert len(examples) == 3 and all(ln.startswith("  example: image: [") and ", ...]" in ln for ln in examples)
