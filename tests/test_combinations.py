"""Every shipped experiment, and an application with an inner layer exposed, through every command
that takes a run, on the venv's engine, from a working directory that is not the repository root.

One table, model x command: `test_command[small_resnet-reprobe]` is `layerprobe probe RUN` on the
small ResNet. Each model trains once per module (tiny budget: 4 steps, a checkpoint every 2),
in-process through the CLI's `main`, in its own working directory under tmp_path and its own MLflow
experiment of one sqlite store there; each command then runs on that run and checks a value (a
metric in the store at its step, merged shards against one pass, a bitwise reproduction), not only
the exit code. A cell whose run or sweep could not be made fails with that command's error line.
    make test-combinations          # .venv: the Estimator
    make test-combinations-keras    # .venv-keras: trainer.engine=keras
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from layerprobe import tracking
from layerprobe.cli.main import main
from layerprobe.probe.state import load_state
from tests.conftest import ENGINE
from tests.test_shard import EXACT, MOMENTS

pytestmark = [pytest.mark.slow, pytest.mark.combinations]

STEPS = 4
CHECKPOINTS = {0, 2, 4}  # training-dynamics points: the initialised model, then every checkpoint
BUDGET = (
    f"trainer.engine={ENGINE}",
    f"trainer.train_steps={STEPS}",
    "trainer.save_checkpoints_steps=2",
    "trainer.log_every_steps=2",
    "probe.plots=false",
    "probe.max_examples=96",
    "probe.batch_size=16",  # 6 batches: each of 2 shards gets some
    "probe.reservoir_size=48",
    "probe.dynamics.examples=32",
)


@dataclass(frozen=True)
class Model:
    overrides: tuple[str, ...]  # what selects it, and a smaller data set where the source has a size
    name: str  # model.name
    layer: str  # exposed in training: its statistics are checked
    extra: str  # not exposed in training, no new weights: probed at every checkpoint afterwards
    metric: str = "eval/accuracy"


SMALL = "data.params.size=200"
MODELS = {
    "digits_cnn": Model(("experiments=digits_cnn",), "digits_cnn", "conv1", "gap"),
    "sequence_lstm": Model(("experiments=sequence_lstm", SMALL), "sequence_lstm", "lstm", "pool"),
    "small_resnet": Model(("experiments=small_resnet", SMALL), "small_resnet", "stage2_out", "gap"),
    "small_resnet_frozen": Model(("experiments=small_resnet_frozen",), "small_resnet", "stage2_out", "gap"),
    "tabular_two_heads": Model(
        ("experiments=tabular_two_heads", SMALL), "tabular_two_heads", "shared", "hidden", "eval/class_logits/accuracy"
    ),
    # A Keras application as one layer, an inner layer exposed. MobileNet (86 layers) rather than the
    # config's MobileNetV2 (154): the same code path at less than half the graph-building time, which
    # is most of this model's cost here (a 4-step run: 47 s against 107 s on a loaded 2-core machine).
    "tiny_backbone": Model(
        ("model=tiny_backbone", "model.layers.backbone.type=MobileNet", "model.layers.backbone.alpha=0.25",
         "data=synthetic_image", "data.params.shape=[32,32,3]", SMALL, "probe.layers=[backbone/conv_pw_1_relu]"),
        "tiny_backbone", "backbone/conv_pw_1_relu", "logits",
    ),
}  # fmt: skip


@dataclass(frozen=True)
class Call:
    """One in-process `layerprobe ...`: its exit code and what it printed."""

    args: tuple[str, ...]
    rc: int
    out: str
    err: str

    def line(self) -> str:
        """The error: the one-line user error, else the last line (a traceback's exception)."""
        lines = [x for x in self.err.splitlines() if x.strip()]
        errors = [x for x in lines if x.startswith("layerprobe: error:")]
        return (errors or lines or self.out.strip().splitlines() or ["(nothing printed)"])[-1]

    def ok(self) -> None:
        assert self.rc == 0, f"layerprobe {' '.join(self.args[:2])} ... exit {self.rc}: {self.line()}"


def cli(cwd: Path, *args: str) -> Call:
    """`layerprobe ARGS` in-process in `cwd`: one TensorFlow import for the whole table. A run's
    failure leaves Hydra by SystemExit. (Every call is made inside a test: conftest's autouse
    fixture puts the root logger's handlers back after it.)"""
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp, redirect_stdout(out), redirect_stderr(err):
        mp.chdir(cwd)
        mp.delenv("HYDRA_FULL_ERROR", raising=False)  # user errors as their one line
        try:
            rc = main(list(args))
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else 1
    return Call(tuple(args), rc, out.getvalue(), err.getvalue())


class Workspace:
    """One model's directory (the working directory of every command), its MLflow experiment, its
    trained run and its sweep, each made once, when a cell first needs it. One store for all models
    (a new sqlite store spends seconds on migrations)."""

    def __init__(self, key: str, root: Path):
        self.key, self.model = key, MODELS[key]
        self.path = root / key
        self.path.mkdir()
        self.uri = f"sqlite:///{root / 'mlflow.db'}"
        self.overrides = (*self.model.overrides, *BUDGET, f"tracking.uri={self.uri}", f"tracking.experiment_name={key}")

    def cli(self, *args: str) -> Call:
        return cli(self.path, *args)

    @cached_property
    def trained(self) -> Call:
        return self.cli(*self.overrides, f"trainer.model_dir={self.path / 'model'}")

    @property
    def run_id(self) -> str:
        """The trained run; a cell that needs it fails, naming why, when training failed."""
        found = re.search(r"^mlflow run: (\w+)$", self.trained.out, re.M)
        if self.trained.rc or not found:
            pytest.fail(f"needs the trained run, which failed (exit {self.trained.rc}): {self.trained.line()}")
        return found.group(1)

    @cached_property
    def swept(self) -> Call:
        return self.cli("-m", *self.overrides, "trainer.seed=1,2")  # model_dir: models/<name>-<hash> in cwd

    def sweep_runs(self) -> tuple[str, list[str]]:
        """(parent, children oldest first) of the sweep; fails, naming why, when the sweep failed."""
        if self.swept.rc:
            pytest.fail(f"needs the two-job sweep, which failed (exit {self.swept.rc}): {self.swept.line()}")
        client = MlflowClient(tracking_uri=self.uri)
        runs = client.search_runs([client.get_experiment_by_name(self.key).experiment_id])
        (parent,) = [r.info.run_id for r in runs if r.data.tags.get("layerprobe.sweep") == "parent"]
        return parent, tracking.child_runs(self.uri, parent)

    def steps(self, key: str, run_id: str | None = None) -> set[int]:
        return tracking.metric_steps(self.uri, run_id or self.run_id, [key])[key]

    def logged_stats(self, layer: str) -> dict:
        """The run's probe/<layer>/stats.json as its store holds it."""
        got = tracking.download_artifact(self.uri, self.run_id, f"probe/{layer}/stats.json", self.path / "dl" / layer)
        return json.loads(got.read_text())


@pytest.fixture(scope="module")
def workspaces(tmp_path_factory) -> dict[str, Workspace]:
    root = tmp_path_factory.mktemp("combinations")
    return {key: Workspace(key, root) for key in MODELS}


def stats_file(out: Path, layer: str) -> dict:
    return json.loads((out / "probe" / layer / "stats.json").read_text())


def assert_same_stats(one: dict, other: dict, what: str) -> None:
    """Counts, extremes, sketch and dead units exactly; moments within 1e-9 relative (docs/sweeps.md's
    promise for merged shards)."""
    for key in EXACT:
        assert other[key] == one[key], f"{what}: {key}"
    for key in MOMENTS:
        if one[key] is not None:
            np.testing.assert_allclose(other[key], one[key], rtol=1e-9, atol=1e-12, err_msg=f"{what}: {key}")


# The cells: one per command, each given its model's workspace.


def validate(ws: Workspace) -> None:
    done = ws.cli("validate", *ws.overrides)
    done.ok()
    assert f"config OK: model {ws.model.name}" in done.out
    assert ws.model.layer in done.out.split("exposed layers: ", 1)[1].splitlines()[0]


def train(ws: Workspace) -> None:
    ws.trained.ok()
    assert tracking.run_info(ws.uri, ws.run_id)["status"] == "FINISHED"
    assert ws.steps(ws.model.metric) == {STEPS}
    assert ws.steps(f"dynamics/{ws.model.layer}/mean") == CHECKPOINTS  # the subset at each checkpoint
    assert ws.steps(f"probe/{ws.model.layer}/mean") == {STEPS}  # the whole split, at the last
    assert ws.steps("train/loss")


def reprobe(ws: Workspace) -> None:
    """`probe RUN`: the latest checkpoint probed again equals the training's probe, logged into the run."""
    run_id = ws.run_id
    done = ws.cli("probe", run_id, f"tracking.uri={ws.uri}", "--output-dir", "reprobe")
    done.ok()
    assert done.out.strip().endswith(f"logged into run {run_id}")
    again = stats_file(ws.path / "reprobe", ws.model.layer)
    assert_same_stats(ws.logged_stats(ws.model.layer), again, "probe RUN against the run's own probe")
    step, value = tracking.latest_metric_points(ws.uri, run_id)[f"probe/{ws.model.layer}/mean"]
    assert (step, value) == (STEPS, pytest.approx(again["mean"], rel=1e-9))
    assert ws.model.layer in tracking.run_tags(ws.uri, run_id)["layerprobe.reprobed_layers"].split(",")


def checkpoints(ws: Workspace) -> None:
    """`probe RUN --checkpoints all` with a layer training did not expose: one point per checkpoint."""
    run_id, extra = ws.run_id, ws.model.extra
    layers = f"probe.layers=[{ws.model.layer},{extra}]"
    done = ws.cli("probe", run_id, "--checkpoints", "all", layers, f"tracking.uri={ws.uri}", "--output-dir", "all")
    done.ok()
    # the checkpoints the engine keeps: the Estimator's include step 0, the Keras engine's start at 2
    kept = set(json.loads((ws.path / "all" / "probe" / "dynamics" / "dynamics.json").read_text())["steps"])
    assert {2, STEPS} <= kept <= CHECKPOINTS
    assert ws.steps(f"dynamics/{extra}/mean") == kept
    assert ws.steps(f"dynamics/{ws.model.layer}/mean") == CHECKPOINTS  # the points training logged: none twice
    assert ws.steps(f"probe/{extra}/mean") == {STEPS}
    assert (ws.path / "all" / "probe" / extra / "stats.json").is_file()


def shards(ws: Workspace) -> None:
    """`--shard 0/2`, `--shard 1/2`, `--merge`: the merge equals the one-pass probe and is logged."""
    run_id, uri = ws.run_id, f"tracking.uri={ws.uri}"
    for i in (0, 1):
        done = ws.cli("probe", run_id, "--shard", f"{i}/2", "--state-dir", "states", uri)
        done.ok()
        assert f"state in states/shard-{i}-of-2.npz" in done.out
    examples = [
        load_state(ws.path / "states" / f"shard-{i}-of-2.npz")[0].layers[ws.model.layer].examples for i in (0, 1)
    ]
    done = ws.cli("probe", run_id, "--merge", "states", uri, "--output-dir", "merged")
    done.ok()
    assert done.out.strip().endswith(f"logged into run {run_id}")
    merged = stats_file(ws.path / "merged", ws.model.layer)
    one = ws.logged_stats(ws.model.layer)
    assert min(examples) > 0 and sum(examples) == one["examples"]
    assert_same_stats(one, merged, "merged shards against one pass")


def reproduce(ws: Workspace) -> None:
    """`reproduce RUN`: retrained from its logged config, every metric and the checkpoint bitwise."""
    done = ws.cli("reproduce", ws.run_id, "--tracking-uri", ws.uri, "--output-dir", "reproduce")
    fails = re.findall(r"^FAIL: (.*)$", done.out, re.M)
    differ = [f for f in fails if not f.endswith(" -> None")]
    assert not differ, f"reproduce: {len(differ)} differ, e.g. {differ[:2]}"
    unlogged = [f.split(": ", 1)[0] for f in fails if f.endswith(" -> None")]
    assert not unlogged, f"reproduce: the rerun logs no {len(unlogged)} of the run's metrics, e.g. {unlogged[:3]}"
    done.ok()
    lines = done.out.strip().splitlines()
    assert lines[-1] == "reproduced", done.out
    n, identical = map(int, re.search(r"^(\d+) metrics: (\d+) identical", done.out, re.M).groups())
    assert n == identical > 0, done.out
    assert "(identical)" in next(x for x in lines if x.startswith("checkpoint:"))
    new_run = lines[0].rsplit(" -> ", 1)[1]
    assert tracking.run_tags(ws.uri, new_run)["layerprobe.reproduces"] == ws.run_id


def compare(ws: Workspace) -> None:
    """`compare A B` (the sweep's two runs): one report, the layer's statistics of both runs side by side."""
    _, (a, b) = ws.sweep_runs()
    done = ws.cli("compare", a, b, "--tracking-uri", ws.uri, "--output-dir", "cmp")
    done.ok()
    assert done.out.strip() == "report: cmp/compare/report.html"
    html = (ws.path / "cmp" / "compare" / "report.html").read_text()
    assert a in html and b in html
    assert f">{ws.model.layer}</h2>" in html, f"the report lacks the exposed layer: {html.split('<title>')[1][:50]}"


def sweep(ws: Workspace) -> None:
    """`-m trainer.seed=1,2`: a parent, two finished children with their metrics, a compare report."""
    ws.swept.ok()
    parent, children = ws.sweep_runs()
    assert len(children) == 2
    names = sorted(tracking.run_info(ws.uri, c)["run_name"] for c in children)
    assert names == ["trainer.seed=1", "trainer.seed=2"]
    for child in children:
        assert tracking.run_info(ws.uri, child)["status"] == "FINISHED"
        assert ws.steps(ws.model.metric, child) == {STEPS}
        assert STEPS in ws.steps(f"probe/{ws.model.layer}/mean", child)
    report = tracking.download_artifact(ws.uri, parent, "compare/report.html", ws.path / "dl" / "sweep")
    assert f">{ws.model.layer}</h2>" in report.read_text(), "the sweep's compare report lacks the exposed layer"


COMMANDS: dict[str, Callable[[Workspace], None]] = {
    "validate": validate,
    "run": train,
    "reprobe": reprobe,
    "checkpoints": checkpoints,
    "shards": shards,
    "reproduce": reproduce,
    "compare": compare,
    "sweep": sweep,
}


@pytest.mark.parametrize(
    ("model", "command"),
    # One model's cells on one pytest-xdist worker (`--dist loadgroup`): its run and sweep are made once.
    [pytest.param(m, c, id=f"{m}-{c}", marks=pytest.mark.xdist_group(m)) for m in MODELS for c in COMMANDS],
)
def test_command(model: str, command: str, workspaces: dict[str, Workspace]) -> None:
    COMMANDS[command](workspaces[model])
