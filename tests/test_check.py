"""The CI gate's baselines per engine (`layerprobe check --engine`): shared values, an engine's own
values overlaid, `--update` of one engine's values only, the one-line errors, and a real gate run on
the Keras engine (`make test-keras`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from layerprobe.check import DEFAULT_ENGINE, engine_metrics, experiment_names, updated
from layerprobe.config import EXPERIMENTS_DIR
from tests.hang import HANG_GUARD

BASELINE = {
    "ci_overrides": ["trainer.train_steps=10"],
    "metrics": {
        "eval/accuracy": {"value": 0.9, "tolerance": 0.02},
        "probe/conv1/zero_fraction": {"value": 0.4, "tolerance": 0.02},
    },
    "engines": {
        "keras": {
            "metrics": {
                "probe/conv1/zero_fraction": {"value": 0.5},  # the Keras engine's value, the shared tolerance
                "probe/conv1/mean": {"value": 0.1, "tolerance": 0.05},  # a metric only the Keras gate reads
            }
        }
    },
}
GOT = {"eval/accuracy": 0.91, "eval/loss": 0.3, "probe/conv1/zero_fraction": 0.47, "probe/conv1/mean": 0.12}


def test_the_default_engine_reads_the_shared_metrics():
    assert DEFAULT_ENGINE == "estimator"
    assert engine_metrics(BASELINE, "estimator") == BASELINE["metrics"]


def test_an_engine_reads_the_shared_metrics_overlaid_with_its_own():
    assert engine_metrics(BASELINE, "keras") == {
        "eval/accuracy": {"value": 0.9, "tolerance": 0.02},  # shared
        "probe/conv1/zero_fraction": {"value": 0.5, "tolerance": 0.02},  # its value, the shared tolerance
        "probe/conv1/mean": {"value": 0.1, "tolerance": 0.05},  # its own
    }


def test_update_on_keras_rewrites_only_the_keras_values():
    new = updated(BASELINE, "keras", GOT)
    assert new["metrics"] == BASELINE["metrics"]  # the shared values stay the default engine's
    assert new["ci_overrides"] == BASELINE["ci_overrides"]
    assert new["engines"]["keras"]["metrics"] == {
        "probe/conv1/zero_fraction": {"value": 0.47},
        "probe/conv1/mean": {"value": 0.12, "tolerance": 0.05},
    }
    assert BASELINE["engines"]["keras"]["metrics"]["probe/conv1/mean"]["value"] == 0.1  # input not mutated


def test_update_on_the_default_engine_rewrites_the_shared_values_and_leaves_keras_alone():
    new = updated(BASELINE, "estimator", GOT)
    assert new["metrics"] == {
        "eval/accuracy": {"value": 0.91, "tolerance": 0.02},
        "probe/conv1/zero_fraction": {"value": 0.47, "tolerance": 0.02},
    }
    assert new["engines"] == BASELINE["engines"]
    assert list(new) == ["ci_overrides", "metrics", "engines"]  # the file keeps its order


def test_a_new_baseline_takes_the_headline_eval_metrics_where_the_engine_reads_them():
    assert updated({}, "estimator", GOT) == {"metrics": {"eval/accuracy": {"value": 0.91, "tolerance": 0.02}}}
    shared = {"metrics": {}}
    assert updated(shared, "keras", GOT) == {
        "metrics": {},
        "engines": {"keras": {"metrics": {"eval/accuracy": {"value": 0.91, "tolerance": 0.02}}}},
    }


def test_every_shipped_baseline_reads_on_every_engine_and_no_baseline_is_an_experiment():
    from layerprobe.check import load_baseline
    from layerprobe.config.names import ENGINES

    names = experiment_names()
    assert names and not any(n.endswith(".baseline") or "." in n for n in names)
    assert sorted(p.name.removesuffix(".baseline.yaml") for p in EXPERIMENTS_DIR.glob("*.baseline.yaml")) == names
    for name in names:
        baseline = load_baseline(name)
        for engine in ENGINES:
            metrics = engine_metrics(baseline, engine)
            assert all({"value", "tolerance"} <= set(v) for v in metrics.values()), (name, engine)
            # accuracy and MAE are held to the same value and tolerance on every engine
            headline = {k: v for k, v in metrics.items() if k.startswith("eval/")}
            assert headline == {k: v for k, v in baseline["metrics"].items() if k.startswith("eval/")}, (name, engine)


def write_experiment(root: Path, baseline: dict) -> None:
    (root / "tiny.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /model: tiny_cnn\n  - override /trainer: quick\n"
        "probe: {plots: false}\n"
    )
    (root / "tiny.baseline.yaml").write_text(yaml.safe_dump(baseline, sort_keys=False))


def check(root: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "LAYERPROBE_EXPERIMENTS_DIR": str(root)}
    return subprocess.run(
        [sys.executable, "-m", "layerprobe", "check", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD,
    )


@pytest.mark.integration  # starts a process
def test_an_unknown_engine_is_one_line_with_did_you_mean_and_exit_2(tmp_path):
    root = tmp_path / "experiments"
    root.mkdir()
    write_experiment(root, BASELINE)
    before = (root / "tiny.baseline.yaml").read_text()
    r = check(root, tmp_path, "--engine", "kerass", "--update")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "layerprobe: error: check --engine: unknown engine. Received: 'kerass'. Did you mean 'keras'? "
        "Allowed: estimator, keras"
    ]
    assert (root / "tiny.baseline.yaml").read_text() == before and not (tmp_path / "outputs").exists()


@pytest.mark.integration  # starts a process
@pytest.mark.parametrize(
    ("engines", "message"),
    [
        ({"kears": {}}, "tiny.baseline.yaml:engines: unknown engine. Received: 'kears'. Did you mean 'keras'?"),
        (
            {"keras": {"metrics": {"probe/new": {"value": 1.0}}}},
            "tiny.baseline.yaml:engines.keras.metrics.probe/new: give {value: <number>, tolerance: <number>}",
        ),
        ({"keras": {"skip": ""}}, "tiny.baseline.yaml:engines.keras.skip: give the reason this engine skips it"),
        (
            ["keras"],
            "tiny.baseline.yaml:engines: give {<engine>: {metrics: {...}, skip: <reason>}}. Received: ['keras']",
        ),
    ],
)
def test_a_malformed_engines_block_is_one_line_before_anything_runs(tmp_path, engines, message):
    root = tmp_path / "experiments"
    root.mkdir()
    write_experiment(root, {**BASELINE, "engines": engines})
    r = check(root, tmp_path, "--engine", "keras")
    assert r.returncode == 2
    [line] = r.stderr.strip().splitlines()
    assert line.startswith(f"layerprobe: error: {message}")
    assert not (tmp_path / "outputs").exists()


@pytest.mark.integration  # starts a process
def test_an_engine_that_skips_an_experiment_says_why_and_runs_nothing(tmp_path):
    root = tmp_path / "experiments"
    root.mkdir()
    write_experiment(root, {**BASELINE, "engines": {"keras": {"skip": "its h5 warm start needs Keras 2"}}})
    r = check(root, tmp_path, "--engine", "keras")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "tiny: skipped on the keras engine: its h5 warm start needs Keras 2" in r.stdout.splitlines()
    assert r.stdout.strip().endswith("check (keras): 0 of 0 metrics within their baseline tolerance")
    assert not (tmp_path / "outputs").exists()


@pytest.mark.integration
@pytest.mark.estimator
def test_check_passes_on_its_baseline_and_fails_when_the_baseline_is_tightened(tmp_path):
    root = tmp_path / "experiments"
    root.mkdir()
    write_experiment(root, {"metrics": {"eval/accuracy": {"value": 0.0, "tolerance": 1.0}}})
    first = check(root, tmp_path, "--update")
    assert first.returncode == 0, first.stderr[-2000:]
    got = yaml.safe_load((root / "tiny.baseline.yaml").read_text())["metrics"]["eval/accuracy"]["value"]
    assert 0.0 < got < 1.0
    assert check(root, tmp_path).returncode == 0  # the same run again: on the baseline
    # tightened past what the model reaches
    write_experiment(root, {"metrics": {"eval/accuracy": {"value": got + 0.05, "tolerance": 0.01}}})
    tight = check(root, tmp_path)
    assert tight.returncode == 1
    row = next(line for line in tight.stdout.splitlines() if line.startswith("tiny "))
    assert row.split() == ["tiny", "eval/accuracy", f"{got + 0.05:.4f}", f"{got:.4f}", "0.01", "FAIL"]


@pytest.mark.integration
@pytest.mark.keras
def test_the_keras_gate_updates_only_its_values_then_passes_and_fails_when_tightened(tmp_path):
    """A real gate run on the Keras engine: `--update --engine keras` writes the Keras values under
    engines.keras and leaves the shared ones; the rerun is on its baseline; a tightened value fails."""
    root = tmp_path / "experiments"
    root.mkdir()
    shared = {"metrics": {"eval/accuracy": {"value": 0.0, "tolerance": 1.0}}}  # any accuracy passes
    own = {"probe/conv1/zero_fraction": {"value": -1.0, "tolerance": 0.01}}
    write_experiment(root, {**shared, "engines": {"keras": {"metrics": own}}})
    first = check(root, tmp_path, "--engine", "keras", "--update")
    assert first.returncode == 0, first.stderr[-2000:]
    written = yaml.safe_load((root / "tiny.baseline.yaml").read_text())
    assert written["metrics"] == shared["metrics"]  # shared: untouched by the Keras update
    zero = written["engines"]["keras"]["metrics"]["probe/conv1/zero_fraction"]["value"]
    assert 0.0 < zero < 1.0
    again = check(root, tmp_path, "--engine", "keras")  # the same run again: on its baseline
    assert again.returncode == 0, again.stdout + again.stderr[-2000:]
    assert again.stdout.strip().endswith("check (keras): 2 of 2 metrics within their baseline tolerance")
    written["engines"]["keras"]["metrics"]["probe/conv1/zero_fraction"]["value"] = zero + 0.05
    write_experiment(root, written)
    tight = check(root, tmp_path, "--engine", "keras")
    assert tight.returncode == 1
    row = next(line.split() for line in tight.stdout.splitlines() if "zero_fraction" in line)
    assert row == ["tiny", "probe/conv1/zero_fraction", f"{zero + 0.05:.4f}", f"{zero:.4f}", "0.01", "FAIL"]
