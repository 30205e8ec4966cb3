"""Distribution strategies: mirrored CPU replicas in-process, and real clusters on 127.0.0.1."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from layerprobe.distributed import Role, cluster_spec, role
from layerprobe.errors import ConfigError
from tests.test_tracking import TINY, cli

pytestmark = pytest.mark.estimator  # tf.estimator's strategies and TF_CONFIG clusters


def test_the_role_comes_from_tf_config():
    assert role({}) == Role() and Role().is_chief and not Role().in_cluster
    tf_config = {
        "cluster": {"chief": ["127.0.0.1:1"], "worker": ["127.0.0.1:2"]},
        "task": {"type": "worker", "index": 0},
    }
    me = role({"TF_CONFIG": json.dumps(tf_config)})
    assert me == Role("worker", 0) and me.in_cluster and not me.is_chief
    with pytest.raises(ConfigError, match="TF_CONFIG: must be JSON"):
        role({"TF_CONFIG": "{not json"})


def test_a_cluster_spec_has_a_chief_and_distinct_local_ports():
    spec = cluster_spec(workers=3, ps=2)
    assert [len(spec[k]) for k in ("chief", "worker", "ps")] == [1, 2, 2]
    addrs = [a for v in spec.values() for a in v]
    assert len(set(addrs)) == 5 and all(a.startswith("127.0.0.1:") for a in addrs)


@pytest.mark.integration  # starts a process
def test_a_cluster_strategy_without_tf_config_fails_before_anything_is_written(tiny, tmp_path, monkeypatch):
    from layerprobe.runner import run

    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ConfigError) as e:
        run(tiny("trainer.distribute=multi_worker_mirrored"), tmp_path / "out")
    assert str(e.value) == (
        "trainer.distribute: needs TF_CONFIG naming a cluster with a chief; on one machine "
        "run `layerprobe cluster --workers N`. Received: 'multi_worker_mirrored'"
    )
    assert not (tmp_path / "model").exists() and not (tmp_path / "mlflow.db").exists()


def test_an_unknown_strategy_is_named_with_the_options(tiny):
    from layerprobe.config.validate import validate

    with pytest.raises(ConfigError) as e:
        validate(tiny("trainer.distribute=mirored"))
    assert str(e.value) == (
        "trainer.distribute: unknown distribution strategy. Received: 'mirored'. Did you mean 'mirrored'? "
        "Allowed: mirrored, multi_worker_mirrored, none, parameter_server"
    )


@pytest.mark.integration
def test_mirrored_on_2_cpu_replicas_trains_and_probes(tiny, tmp_path):
    from layerprobe.runner import run

    result = run(tiny("trainer.distribute=mirrored", "trainer.cpu_replicas=2"), tmp_path / "out")
    assert result.global_step == 20
    graph = (Path(result.model_dir) / "graph.pbtxt").read_text()
    assert "replica_1/conv1" in graph  # the model_fn ran once per replica
    assert "device:CPU:1" in graph  # ... on a second CPU device
    assert result.probe["conv1"].units == 4 and 0 <= result.eval_metrics["eval/accuracy"] <= 1
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    logged = client.get_run(result.run_id)
    assert logged.data.params["trainer.distribute"] == "mirrored"
    assert logged.data.metrics["probe/conv1/p50"] == pytest.approx(result.probe["conv1"].percentiles["p50"])


def started_pids(stderr: str) -> dict[str, int]:
    return {name: int(pid) for name, pid in re.findall(r"started (\S+) \(pid (\d+)\)", stderr)}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.integration
def test_a_chief_and_a_worker_train_together_and_only_the_chief_logs(tmp_path):
    r = cli(["cluster", "--workers", "2", "--timeout", "240", "--output-dir", "cl", *TINY], tmp_path, timeout=300)
    pids = started_pids(r.stderr)
    assert set(pids) == {"chief-0", "worker-0"}
    assert not any(alive(p) for p in pids.values())
    assert r.returncode == 0, r.stderr[-3000:]
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    found = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(found) == 1 and found[0].info.status == "FINISHED"  # the chief's run, nothing from the worker
    (logged,) = found
    assert logged.data.params["trainer.distribute"] == "multi_worker_mirrored"
    assert [m.step for m in client.get_metric_history(logged.info.run_id, "eval/accuracy")] == [20]
    model_dir = Path(logged.data.tags["model_dir"])
    assert (model_dir / "model.ckpt-20.index").is_file()
    graph = (model_dir / "graph.pbtxt").read_text()
    assert re.search(r'key: "group_size"\s+value \{\s+i: 2', graph)  # all-reduce across 2 processes
    assert "train step 20/20" in (tmp_path / "cl" / "worker-0.log").read_text()  # the worker trained too
    assert "mlflow run: " in r.stdout and "mlflow run: " not in (tmp_path / "cl" / "worker-0.log").read_text()
    assert (tmp_path / "cl" / "chief-0" / "probe" / "conv1" / "stats.json").is_file()
    assert not (tmp_path / "cl" / "worker-0" / "probe").exists()


@pytest.mark.integration
def test_a_timed_out_cluster_stops_every_process_it_started(tmp_path):
    """A parameter server never exits by itself; on timeout the launcher stops it and the others."""
    r = cli(["cluster", "--workers", "1", "--ps", "1", "--timeout", "3", "--output-dir", "cl", *TINY], tmp_path, 120)
    assert r.returncode == 124
    assert "timed out; stopping every task (chief-0 still running)" in r.stderr
    pids = started_pids(r.stderr)
    assert set(pids) == {"chief-0", "ps-0"} and not any(alive(p) for p in pids.values())


@pytest.mark.slow
def test_parameter_servers_and_an_evaluator_on_127_0_0_1(tmp_path):
    args = ["cluster", "--workers", "2", "--ps", "1", "--evaluator", "--timeout", "300", "--output-dir", "cl"]
    r = cli([*args, *TINY], tmp_path, timeout=400)
    pids = started_pids(r.stderr)
    assert set(pids) == {"chief-0", "worker-0", "ps-0", "evaluator-0"}
    assert not any(alive(p) for p in pids.values())  # the ps was stopped
    assert r.returncode == 0, r.stderr[-3000:]
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    (logged,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert logged.data.params["trainer.distribute"] == "parameter_server"
    model_dir = Path(logged.data.tags["model_dir"])
    # The evaluator exits (0, or the launcher fails) only after evaluating the last checkpoint.
    assert "model_dir: " in (tmp_path / "cl" / "evaluator-0.log").read_text()
    assert 'device: "/job:ps/' in (model_dir / "graph.pbtxt").read_text()  # variables on the ps
