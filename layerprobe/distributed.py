"""Clusters: this process's role in TF_CONFIG, the model_dir lock, and a launcher for N-process jobs
on 127.0.0.1. The strategies themselves belong to the engine (engines/estimator/strategies.py).

Try a cluster on one machine (one process per task, ports picked on 127.0.0.1, all stopped at the end):
  layerprobe cluster --workers 2 model=tiny_cnn trainer=quick
  layerprobe cluster --workers 2 --ps 1 --evaluator model=tiny_cnn trainer=quick

This module does not import TensorFlow, so the launcher starts fast.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from layerprobe.errors import ConfigError

log = logging.getLogger(__name__)

CLUSTER_STRATEGIES = ("multi_worker_mirrored", "parameter_server")


@dataclass(frozen=True)
class Role:
    """This process's task in TF_CONFIG; task_type None outside a cluster."""

    task_type: str | None = None
    index: int = 0

    @property
    def in_cluster(self) -> bool:
        return self.task_type is not None

    @property
    def is_chief(self) -> bool:
        """The process that logs to MLflow, evaluates, probes and exports (the only one outside a cluster)."""
        return self.task_type in (None, "chief")


def role(environ: Mapping[str, str] | None = None) -> Role:
    env = os.environ if environ is None else environ
    raw = env.get("TF_CONFIG")
    if not raw:
        return Role()
    try:
        cfg = json.loads(raw)
        task = cfg.get("task") or {}
    except (ValueError, AttributeError):
        raise ConfigError("TF_CONFIG", raw, "must be JSON with 'cluster' and 'task'") from None
    if not cfg.get("cluster") or not task.get("type"):
        return Role()
    return Role(str(task["type"]), int(task.get("index", 0)))


def check_cluster(kind: str, me: Role) -> None:
    """A cluster strategy (trainer.distribute=`kind`) needs a TF_CONFIG cluster: say so before any
    MLflow run or model_dir exists."""
    if kind in CLUSTER_STRATEGIES and not me.in_cluster:
        raise ConfigError(
            "trainer.distribute",
            kind,
            "needs TF_CONFIG naming a cluster with a chief; on one machine run `layerprobe cluster --workers N`",
        )


@contextmanager
def model_dir_lock(model_dir: str | Path, wait: float = 6 * 3600.0) -> Iterator[None]:
    """Exclusive use of a model_dir across processes (parallel sweep jobs on one machine or on a
    shared file system that supports flock). Not taken inside a cluster, whose tasks share it by design.

    A job whose twin trains the same model_dir waits for it (then resumes from its checkpoint), at
    most `wait` seconds (a twin's whole training run; finite, so that a hung holder ends in a
    message) or $LAYERPROBE_LOCK_TIMEOUT; then it stops with one line naming the holder's process."""
    from layerprobe import locks

    path = Path(model_dir) / ".layerprobe.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with locks.exclusive(path, f"model_dir {model_dir}", locks.timeout(wait)):
        yield


# --- the localhost launcher -------------------------------------------------------------------------------


def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1 (held open together, so never the same one twice)."""
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def cluster_spec(workers: int, ps: int) -> dict[str, list[str]]:
    """`workers` training processes (the first is the chief) and `ps` parameter servers on 127.0.0.1."""
    ports = iter(free_ports(workers + ps))
    spec = {"chief": [f"127.0.0.1:{next(ports)}"]}
    if workers > 1:
        spec["worker"] = [f"127.0.0.1:{next(ports)}" for _ in range(workers - 1)]
    if ps:
        spec["ps"] = [f"127.0.0.1:{next(ports)}" for _ in range(ps)]
    return spec


@dataclass
class Task:
    task_type: str
    index: int
    proc: subprocess.Popen
    log_path: Path

    @property
    def name(self) -> str:
        return f"{self.task_type}-{self.index}"


def _stop(task: Task, grace: float = 10.0) -> None:
    """SIGTERM the task's process group, then SIGKILL after `grace` seconds."""
    if task.proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(task.proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            task.proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def launch(
    overrides: Sequence[str],
    workers: int = 2,
    ps: int = 0,
    evaluator: bool = False,
    output_dir: str | Path | None = None,
    timeout: float = 3600.0,
    python: str = sys.executable,
) -> int:
    """Start one `layerprobe` process per task with its TF_CONFIG, wait for the chief and workers,
    then stop every process started (parameter servers never exit by themselves).

    Returns the chief's exit code; the first failing training task's code when one fails; 124 on timeout.
    Each task's output goes to <output_dir>/<task>.log and its Hydra run dir to <output_dir>/<task>.
    """
    if workers < 1 or ps < 0:
        raise ConfigError("cluster --workers/--ps", (workers, ps), "need at least 1 worker and 0 or more ps")
    out = Path(output_dir or f"outputs/cluster-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    spec = cluster_spec(workers, ps)
    if not any(o.split("=", 1)[0].lstrip("+") == "trainer.distribute" for o in overrides):
        overrides = [*overrides, f"trainer.distribute={'parameter_server' if ps else 'multi_worker_mirrored'}"]
    roles = [(t, i) for t, addrs in spec.items() for i in range(len(addrs))] + ([("evaluator", 0)] if evaluator else [])
    tasks: list[Task] = []
    try:
        for task_type, index in roles:
            name = f"{task_type}-{index}"
            env = {
                **os.environ,
                "TF_CONFIG": json.dumps({"cluster": spec, "task": {"type": task_type, "index": index}}),
            }
            log_path = out / f"{name}.log"
            with log_path.open("w") as f:
                proc = subprocess.Popen(
                    [python, "-m", "layerprobe", *overrides, f"hydra.run.dir={out / name}"],
                    env=env,
                    stdout=f,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,  # its own process group: stopping it stops its children
                )
            tasks.append(Task(task_type, index, proc, log_path))
            log.info("started %s (pid %d), log %s", name, proc.pid, log_path)
        return _wait(tasks, time.monotonic() + timeout)
    finally:
        for t in tasks:
            _stop(t)


def _wait(tasks: list[Task], deadline: float) -> int:
    """Until the chief, the workers and the evaluator have exited; ps tasks are not waited for."""
    waited = [t for t in tasks if t.task_type != "ps"]
    while time.monotonic() < deadline:
        for t in waited:
            rc = t.proc.poll()
            if rc not in (None, 0):
                print(f"layerprobe cluster: {t.name} exited with {rc}; its log ({t.log_path}) ends:", file=sys.stderr)
                print(_tail(t.log_path), file=sys.stderr)
                return rc
        if all(t.proc.poll() == 0 for t in waited):
            print(tasks[0].log_path.read_text(), end="")
            return 0
        time.sleep(0.5)
    running = ", ".join(t.name for t in waited if t.proc.poll() is None)
    print(f"layerprobe cluster: timed out; stopping every task ({running} still running)", file=sys.stderr)
    return 124


def _tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def main(argv: Sequence[str]) -> int:
    """`layerprobe cluster --workers N [--ps P] [--evaluator] [overrides]`: a cluster job on 127.0.0.1."""
    parser = argparse.ArgumentParser(prog="layerprobe cluster", description=main.__doc__)
    parser.add_argument("--workers", type=int, default=2, help="training processes; the first is the chief")
    parser.add_argument("--ps", type=int, default=0, help="parameter servers (> 0 selects parameter_server)")
    parser.add_argument("--evaluator", action="store_true", help="add an evaluator task")
    parser.add_argument("--output-dir", default=None, help="task logs and run dirs (default outputs/cluster-*)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds before every task is stopped")
    args, overrides = parser.parse_known_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that `finally` stops the tasks
    try:
        return launch(overrides, args.workers, args.ps, args.evaluator, args.output_dir, args.timeout)
    except ConfigError as e:
        print(f"layerprobe: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.exit(main(sys.argv[1:]))
