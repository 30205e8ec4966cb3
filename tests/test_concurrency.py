"""Several processes logging to one sqlite store at once (a parallel sweep on one machine).

MLflow sets `PRAGMA busy_timeout = 20000` on sqlite, but a deferred transaction that must upgrade
its read lock to a write lock still gets "database is locked" at once, and several processes
creating a fresh store or the same experiment race. layerprobe's Tracker retries those calls with
backoff (tracking.RETRY_DELAYS) and re-reads an experiment another process created meanwhile.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from mlflow.tracking import MlflowClient

WRITER = textwrap.dedent(
    """
    import sys
    from layerprobe.tracking import Tracker

    uri, name, n, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    t = Tracker(uri, "concurrent", name, {"writer": name})
    t.log_params({f"p{i}": str(i) for i in range(50)})
    for start in range(0, n, batch):
        steps = range(start, start + batch)
        t.log_metric_records([({f"m{i % 5}": float(i), "step_value": float(i)}, i) for i in steps])
        t.set_tags({"progress": str(start)})
    t.__exit__(None, None, None)
    print(t.run_id)
    """
)


def run_writers(tmp_path, processes: int, metrics: int, batch: int) -> None:
    uri = f"sqlite:///{tmp_path / 'shared.db'}"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, uri, f"w{k}", str(metrics), str(batch)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(processes)
    ]
    outs = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        assert p.returncode == 0, err[-3000:]
        assert "database is locked" not in err, err[-3000:]
        outs.append(out.strip().splitlines()[-1])

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("concurrent")
    found = client.search_runs([exp.experiment_id])
    assert sorted(r.info.run_id for r in found) == sorted(outs)
    for r in found:
        assert r.info.status == "FINISHED"
        assert len(r.data.params) == 50
        steps = [m.step for m in client.get_metric_history(r.info.run_id, "step_value")]
        assert sorted(steps) == list(range(metrics)), r.info.run_name
        for i in range(5):
            assert len(client.get_metric_history(r.info.run_id, f"m{i}")) == metrics // 5


@pytest.mark.integration  # starts a process
def test_four_processes_log_to_one_fresh_sqlite_store(tmp_path):
    """4 x 300 steps x 2 metrics in batches of 20, on a store none of them has created yet."""
    run_writers(tmp_path, processes=4, metrics=300, batch=20)


@pytest.mark.slow
def test_four_processes_log_many_small_batches(tmp_path):
    """4 x 1000 steps in batches of 5: 200 write transactions per process, interleaved."""
    run_writers(tmp_path, processes=4, metrics=1000, batch=5)
