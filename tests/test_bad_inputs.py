"""Malformed configs through the real CLI: one line on stderr naming the path and the value, exit 2,
no traceback, no MLflow run and no model_dir left behind. The corpus is tests/bad_configs.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from layerprobe.cli import main
from tests.bad_configs import CASES, FILES, Case
from tests.conftest import ENGINE
from tests.hang import HANG_GUARD, layerprobe_process
from tests.test_tracking import free_port

TINY = ["model=tiny_cnn", "trainer=quick", "probe.plots=false"]


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("corpus")
    for rel, text in FILES.items():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_text(text.lstrip())
    (d / "a_file").write_text("not a directory\n")
    return d


def fill(text: str, corpus: Path, port: int) -> str:
    for key, value in (("{dir}", corpus), ("{file}", corpus / "a_file"), ("{port}", port)):
        text = text.replace(key, str(value))
    return text


def run_in_process(argv: list[str], capsys) -> tuple[int, str]:
    try:
        rc = main(argv)
    except SystemExit as e:  # raised from inside @hydra.main
        rc = e.code if isinstance(e.code, int) else 1
    return rc, capsys.readouterr().err


def assert_clean_failure(rc: int, err: str, expect: list[str], work: Path) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert len(lines) == 1, lines
    assert lines[0].startswith("layerprobe: error: ")
    for part in expect:
        assert part in lines[0], (part, lines[0])
    assert not (work / "mlflow.db").exists(), "an MLflow store (and maybe a run) was created"
    assert not (work / "model").exists() and not (work / "models").exists(), "a model_dir was written"


# What only the run itself refuses (its model_dir, its tracking store) it refuses after reading its
# provenance from git: a process, so those cases are integration.
RUN_START = ("model-dir", "tracking-")


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(c, marks=pytest.mark.integration) if c.stage == "run" and c.id.startswith(RUN_START) else c
        for c in CASES
    ],
    ids=[c.id for c in CASES],
)
@pytest.mark.estimator  # runs with the default engine
def test_bad_config_is_one_line_exit_2_and_leaves_nothing(bad: Case, corpus_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    port = free_port()
    overrides = [fill(o, corpus_dir, port) for o in bad.overrides]
    store = (
        []
        if any(o.startswith("tracking.uri=") for o in overrides)
        else [f"tracking.uri=sqlite:///{tmp_path}/mlflow.db"]
    )
    argv = [*TINY, f"trainer.model_dir={tmp_path / 'model'}", *store, *overrides]
    rc, err = run_in_process(argv, capsys)
    assert_clean_failure(rc, err, [fill(e, corpus_dir, port) for e in bad.expect], tmp_path)


def test_the_corpus_is_large_and_covers_both_stages():
    assert len(CASES) >= 40
    assert len({c.id for c in CASES}) == len(CASES)
    assert sum(c.stage == "run" for c in CASES) >= 8  # errors found with TensorFlow, data and store


def test_validate_subcommand_agrees_on_the_static_cases(corpus_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    port = free_port()
    for bad in [c for c in CASES if c.stage == "validate" and not c.id.startswith("run-dir")]:
        rc, err = run_in_process(["validate", *TINY, *(fill(o, corpus_dir, port) for o in bad.overrides)], capsys)
        assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err, (bad.id, err)


# What a run refuses after TensorFlow starts (data, graph, losses), `validate` refuses too; only the
# model_dir and the tracking store are left to the run.
PREFLIGHT_CASES = [c for c in CASES if c.stage == "run" and not c.id.startswith(RUN_START)]


@pytest.mark.estimator  # the Estimator's dry build
def test_validate_refuses_every_data_and_graph_case_a_run_refuses(corpus_dir, tmp_path, monkeypatch, capsys):
    assert len(PREFLIGHT_CASES) >= 7
    monkeypatch.chdir(tmp_path)
    port = free_port()
    for bad in PREFLIGHT_CASES:
        rc, err = run_in_process(["validate", *TINY, *(fill(o, corpus_dir, port) for o in bad.overrides)], capsys)
        assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err, (bad.id, err)
        for part in bad.expect:
            assert fill(part, corpus_dir, port) in err, (bad.id, part, err)


SUBPROCESS_CASES = [
    "units-negative",
    pytest.param("dense-into-conv2d", marks=pytest.mark.slow),
    pytest.param("duplicate-layer-names-yaml", marks=pytest.mark.slow),
    pytest.param("model-dir-under-a-file", marks=pytest.mark.slow),
]


@pytest.mark.integration  # starts a process
@pytest.mark.parametrize("case_id", SUBPROCESS_CASES)
def test_bad_config_in_a_real_process(case_id, corpus_dir, tmp_path):
    bad = next(c for c in CASES if c.id == case_id)
    port = free_port()
    argv = [
        *TINY,
        f"trainer.model_dir={tmp_path / 'model'}",
        f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
        *(fill(o, corpus_dir, port) for o in bad.overrides),
    ]
    r = layerprobe_process(argv, tmp_path)
    assert_clean_failure(r.returncode, r.stderr, [fill(e, corpus_dir, port) for e in bad.expect], tmp_path)


@pytest.mark.integration  # starts a process
def test_a_duplicate_key_in_an_experiment_file_is_one_line(tmp_path):
    exps = tmp_path / "experiments"
    exps.mkdir()
    (exps / "twice.yaml").write_text("# @package _global_\ntrainer:\n  train_steps: 5\n  train_steps: 6\n")
    env = {**os.environ, "LAYERPROBE_EXPERIMENTS_DIR": str(exps)}
    r = subprocess.run(
        [sys.executable, "-m", "layerprobe", "validate", "experiments=twice"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD,
    )
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "twice.yaml" in r.stderr and "duplicate key train_steps" in r.stderr


# --- untrusted files -------------------------------------------------------------------------


def test_a_logged_config_is_never_executed(tmp_path, capsys):
    """`layerprobe probe MODEL_DIR` reads layerprobe_config.yaml with safe_load: a python tag is
    refused with one line, and the command it names never runs."""
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    marker = tmp_path / "pwned"
    (model_dir / "layerprobe_config.yaml").write_text(f"model: !!python/object/apply:os.system ['touch {marker}']\n")
    rc, err = run_in_process(["probe", str(model_dir), "--output-dir", str(tmp_path / "out")], capsys)
    assert rc == 2 and err.count("\n") == 1 and "not plain YAML" in err, err
    assert not marker.exists()


def test_a_logged_dotted_type_needs_allow_imports(tiny, tmp_path, capsys):
    c = tiny()
    c["model"]["layers"]["pool1"]["type"] = "os.system"
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "layerprobe_config.yaml").write_text(yaml.safe_dump(c))
    rc, err = run_in_process(["probe", str(model_dir), "--output-dir", str(tmp_path / "out")], capsys)
    assert rc == 2 and err.count("\n") == 1, err
    assert "model.layers.pool1.type=os.system" in err and "--allow-imports" in err


def test_an_npz_with_object_arrays_is_refused_without_unpickling(tmp_path, monkeypatch, capsys):
    import numpy as np

    path = tmp_path / "evil.npz"
    np.savez(path, image=np.array([{"a": 1}], dtype=object), label=np.array([0]))
    monkeypatch.chdir(tmp_path)
    argv = ["data", "data=npz", f"data.params.path={path}"]
    rc, err = run_in_process(argv, capsys)
    assert rc == 2 and err.count("\n") == 1, err
    assert "data.params.path" in err and "without pickle" in err


@pytest.mark.parametrize(
    "name", ["../evil", "a/b", "a\\b", ".hidden", "x" * 300, "conv 1", "dense\n1", "ünïcode", "CON:", ""]
)
def test_unsafe_layer_names_never_reach_paths_or_metric_keys(name):
    from layerprobe.config.validate import validate
    from layerprobe.errors import ConfigError
    from tests.conftest import plain

    c = plain(TINY)
    c["model"]["layers"] = {name: {"type": "Flatten"}, **c["model"]["layers"]}
    with pytest.raises(ConfigError) as e:
        validate(c)
    assert str(e.value).startswith(f"model.layers.{name}: name must match".replace("\n", " "))
    assert "\n" not in str(e.value)


# --- labels against the model's outputs -------------------------------------------------------


def image_folders(root: Path, classes: int) -> Path:
    """`classes` class folders of three 8x8 grey PNGs each."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"c{c:02d}").mkdir(parents=True)
        for j in range(3):
            pixels = rng.integers(0, 256, (8, 8, 1), dtype=np.uint8)
            (root / f"c{c:02d}" / f"{j}.png").write_bytes(tf.io.encode_png(pixels).numpy())
    return root


def folder_argv(tmp_path: Path, *overrides: str) -> list[str]:
    folder = image_folders(tmp_path / "photos", 12)
    return [
        *TINY,
        f"trainer.engine={ENGINE}",
        "data=image_folder",
        f"data.params.path={folder}",
        "data.params.image_size=[8,8]",
        "data.params.channels=1",
        f"data.cache_dir={tmp_path / 'cache'}",
        f"trainer.model_dir={tmp_path / 'model'}",
        f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
        *overrides,
    ]


TOO_FEW_LOGITS = (
    "layerprobe: error: model.layers.logits.units: a classification head needs one output per class, and "
    "label 'label' has 12 classes ({where}); set model.layers.logits.units=12. Received: 10"
)
MORE_THAN_DECLARED = (
    "layerprobe: error: data.num_classes: the data has more classes than declared: 12 class folders in "
    "data.params.path; set data.num_classes=12 (or null: counted from the data). Received: 10"
)


@pytest.mark.parametrize("command", [["validate"], []], ids=["validate", "run"])
@pytest.mark.parametrize(
    "overrides, line",
    [
        ((), TOO_FEW_LOGITS.format(where="12 class folders in data.params.path")),
        (("data.num_classes=12",), TOO_FEW_LOGITS.format(where="data.num_classes")),
        (("data.num_classes=10",), MORE_THAN_DECLARED),
    ],
    ids=["counted-folders", "declared", "declared-too-few"],
)
def test_more_classes_than_logits_is_one_line_before_training(command, overrides, line, tmp_path, monkeypatch, capsys):
    """12 class folders and the default 10 logits passed validate, then failed in the first training
    step with TensorFlow's `indices[0] = 10 is not in [0, 10)` and a 131-line traceback."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    rc, err = run_in_process([*command, *folder_argv(tmp_path, *overrides)], capsys)
    assert (rc, err) == (2, line + "\n")
    assert_clean_failure(rc, err, [], tmp_path)


@pytest.mark.integration  # starts a process, then trains
def test_more_classes_than_logits_in_a_real_process_and_the_fix_runs(tmp_path):
    argv = folder_argv(tmp_path)
    r = layerprobe_process(argv, tmp_path)
    assert (r.returncode, r.stderr) == (2, TOO_FEW_LOGITS.format(where="12 class folders in data.params.path") + "\n")
    assert_clean_failure(r.returncode, r.stderr, [], tmp_path)
    r = layerprobe_process(
        [*argv, "model.layers.logits.units=12", "probe.enabled=false", "trainer.train_steps=2"], tmp_path
    )
    assert r.returncode == 0, r.stderr[-3000:]


def test_an_in_memory_label_past_the_last_logit_is_one_line(tmp_path, monkeypatch, capsys):
    """In-memory data counts its classes by its largest label (here without data.num_classes)."""
    monkeypatch.chdir(tmp_path)
    data = ["data=synthetic_image", "data.params.shape=[8,8,1]", "data.params.size=200", "data.num_classes=null"]
    data.append(f"trainer.engine={ENGINE}")
    rc, err = run_in_process(["validate", *TINY, *data, "data.params.num_classes=12"], capsys)
    assert (rc, err) == (
        2,
        "layerprobe: error: model.layers.logits.units: a classification head needs one output per class, and "
        "label 'label' has 12 classes (label 'label' holds values up to 11); set model.layers.logits.units=12. "
        "Received: 10\n",
    )
    rc, err = run_in_process(["validate", *TINY, *data, "data.params.num_classes=7"], capsys)
    assert rc == 0, err  # fewer classes than logits: wasteful, not wrong


# --- a warm start from a run that is not there ------------------------------------------------

NO_RUN = "0123456789abcdef0123456789abcdef"


@pytest.mark.integration  # a real MLflow store
@pytest.mark.parametrize("command", [["validate"], []], ids=["validate", "run"])
def test_a_warm_start_from_an_unknown_run_id_is_one_line(command, tmp_path, monkeypatch, capsys):
    """It printed MLflow's two migration lines (creating the store it then searched) before its own,
    which named the store twice."""
    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    db = tmp_path / "store" / "mlflow.db"
    db.parent.mkdir()
    uri = f"sqlite:///{db}"
    argv = [*command, *TINY, f"trainer.model_dir={tmp_path / 'model'}", f"tracking.uri={uri}"]
    argv.append(f"trainer.warm_start.source={NO_RUN}")
    rc, err = run_in_process(argv, capsys)
    assert (rc, err) == (
        2,
        f"layerprobe: error: trainer.warm_start.source: no such file or directory, and the tracking store {uri} "
        f"(tracking.uri) does not exist. Received: '{NO_RUN}'\n",
    )
    assert not db.exists(), "looking a run up created the store"

    client = MlflowClient(uri)  # a real store with one run, not the one asked for
    other = client.create_run(client.create_experiment("other")).info.run_id
    capsys.readouterr()  # MLflow's lines about creating it
    rc, err = run_in_process(argv, capsys)
    assert (rc, err) == (
        2,
        f"layerprobe: error: trainer.warm_start.source: neither a file or directory nor a run in the tracking "
        f"store {uri} (tracking.uri). Received: '{NO_RUN}'\n",
    )
    experiments = client.search_experiments()
    assert sorted(e.name for e in experiments) == ["Default", "other"]  # none of layerprobe's
    assert [r.info.run_id for r in client.search_runs([e.experiment_id for e in experiments])] == [other]
    assert not (tmp_path / "model").exists()
