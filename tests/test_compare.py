"""The compare report (docs/dynamics.md, "Comparing runs"): runs side by side, layer by layer; every sweep
parent gets one, and sweep_summary.csv carries the probe statistics."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

pytestmark = [pytest.mark.estimator, pytest.mark.integration]  # compares runs of the Estimator engine

TINY = ["model=tiny_cnn", "trainer=quick", "probe.plots=false", "probe.dynamics.examples=100"]


def cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "layerprobe", *args], cwd=cwd, capture_output=True, text=True, timeout=900
    )


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweep")
    r = cli(["-m", *TINY, "trainer.seed=1,2"], tmp)
    assert r.returncode == 0, r.stderr[-2000:]
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("layerprobe").experiment_id])
    parent = next(x for x in runs if x.data.tags.get("layerprobe.sweep") == "parent")
    children = [x for x in runs if x.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    return tmp, client, parent, sorted(children, key=lambda x: x.info.start_time)


def test_every_sweep_parent_gets_the_compare_report_and_probe_columns(sweep):
    tmp, client, parent, children = sweep
    html = Path(client.download_artifacts(parent.info.run_id, "compare/report.html", str(tmp / "dl"))).read_text()
    html = html.replace("<wbr>", "")  # the names' line-break opportunities
    for child in children:
        assert child.info.run_id in html and child.info.run_name in html
    for layer in ("conv1", "logits"):  # the exposed layers of tiny_cnn
        assert f">{layer}</h2>" in html
    assert html.count("<img ") >= 1 + 3 * 2  # depth plot; histograms, dynamics and CKA per layer
    assert "Dynamics over training" in html and "Linear CKA across runs" in html
    table = client.download_artifacts(parent.info.run_id, "sweep_summary.csv", str(tmp / "dl"))
    rows = list(csv.DictReader(open(table)))
    assert len(rows) == 2 and "probe/conv1/mean" in rows[0] and "eval/accuracy" in rows[0]
    by_id = {r["run_id"]: r for r in rows}
    for child in children:
        assert float(by_id[child.info.run_id]["probe/conv1/mean"]) == pytest.approx(
            child.data.metrics["probe/conv1/mean"], rel=1e-5
        )


def test_compare_two_runs_side_by_side(sweep):
    tmp, client, parent, children = sweep
    a, b = (c.info.run_id for c in children)
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    r = cli(["compare", a, b, "--tracking-uri", uri, "--output-dir", str(tmp / "cmp")], tmp)
    assert r.returncode == 0, r.stderr[-2000:]
    report = tmp / "cmp" / "compare" / "report.html"
    assert r.stdout.strip() == f"report: {report}"
    html = report.read_text()
    # the statistics side by side: one row per statistic, one column per run, the runs' own values
    row = re.search(r"<tr><td>mean</td>(.*?)</tr>", html.split(">conv1</h2>")[1]).group(1)
    values = [float(v.replace(",", "")) for v in re.findall(r'<td class="num">([^<]*)</td>', row)]
    assert values == [pytest.approx(c.data.metrics["probe/conv1/mean"], rel=1e-3) for c in children]
    # --layer: that layer's CKA matrix printed, the report holds that layer only
    r = cli(["compare", "--sweep", parent.info.run_id, "--layer", "conv1", "--tracking-uri", uri], tmp)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith("linear CKA of conv1 across 2 runs")
    html = (tmp / "outputs" / "compare" / "report.html").read_text()
    assert ">conv1</h2>" in html and ">logits</h2>" not in html


def test_compare_needs_two_runs(tmp_path):
    r = cli(["compare", "abc", "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"], tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].endswith("compare needs at least two runs (run ids, or --sweep PARENT_ID)")
