"""layerprobe.locks: one exclusive lock for the model_dir and the sqlite store, whose bounded wait
ends in one line naming the process that holds it."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from layerprobe import locks
from layerprobe.distributed import model_dir_lock
from layerprobe.errors import ConfigError, LayerprobeError

# Takes one of the three locks, says so on stdout, holds it until its stdin closes.
HOLDER = textwrap.dedent(
    """
    import sys
    from layerprobe import locks, distributed
    from layerprobe.tracking import store

    kind, target = sys.argv[1], sys.argv[2]
    held = {
        "exclusive": lambda: locks.exclusive(target, "thing", 0),
        "model_dir": lambda: distributed.model_dir_lock(target),
        "store": lambda: store.store_lock(target),
    }[kind]()
    with held:
        print("held", flush=True)
        sys.stdin.read()
    """
)
SINCE = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"


@contextmanager
def held_elsewhere(tmp_path: Path, kind: str, target: str) -> Iterator[subprocess.Popen]:
    """A second process holding a lock for the block."""
    script = tmp_path / "hold.py"
    script.write_text(HOLDER)
    proc = subprocess.Popen(
        [sys.executable, str(script), kind, target], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "held\n"
        yield proc
    finally:
        proc.communicate(timeout=60)  # closes its stdin: it releases and exits


def holder_pattern(proc: subprocess.Popen, kind: str, target: str) -> str:
    """The message's middle, naming the HOLDER process."""
    command = f"hold.py {kind} {target}"
    host = re.escape(socket.gethostname())
    return f"is locked by pid {proc.pid} on host {host} since {SINCE} \\({re.escape(command)}\\)"


@pytest.mark.integration  # starts a process
def test_a_lock_held_by_another_process_times_out_naming_it(tmp_path):
    path = tmp_path / "x.lock"
    with held_elsewhere(tmp_path, "exclusive", str(path)) as proc:
        start = time.time()
        with pytest.raises(LayerprobeError) as e:
            with locks.exclusive(path, "thing x", 0.5):
                pytest.fail("took a lock another process holds")
    message = str(e.value)
    assert re.fullmatch(f"thing x {holder_pattern(proc, 'exclusive', str(path))}; waited 0.5 s", message)
    since = time.mktime(time.strptime(re.search(SINCE, message).group(0), "%Y-%m-%d %H:%M:%S"))
    assert start - 60 <= since <= start + 1  # the holder's start, not the waiter's
    assert "\n" not in message


@pytest.mark.integration  # starts a process
def test_the_lock_is_free_once_its_holder_is_gone(tmp_path):
    path = tmp_path / "x.lock"
    with held_elsewhere(tmp_path, "exclusive", str(path)):
        pass
    with locks.exclusive(path, "thing", 0):
        assert (tmp_path / "x.lock.holder").is_file()
    assert not (tmp_path / "x.lock.holder").exists()


@pytest.mark.integration  # starts a process
def test_the_lock_is_released_after_an_exception(tmp_path):
    path = tmp_path / "x.lock"
    with pytest.raises(RuntimeError, match="boom"):
        with locks.exclusive(path, "thing", 0):
            raise RuntimeError("boom")
    assert not (tmp_path / "x.lock.holder").exists()
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            f"from layerprobe import locks\nwith locks.exclusive({str(path)!r}, 't', 0): print('ok')",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.stdout == "ok\n", r.stderr


@pytest.mark.integration  # starts a process
def test_the_model_dir_lock_waits_lock_timeout_seconds_then_names_the_holder(tmp_path, monkeypatch):
    model_dir = tmp_path / "model"
    monkeypatch.setenv(locks.TIMEOUT_ENV, "1")
    with held_elsewhere(tmp_path, "model_dir", str(model_dir)) as proc:
        with pytest.raises(LayerprobeError) as e:
            with model_dir_lock(model_dir):
                pytest.fail("took a model_dir another process holds")
    pattern = f"model_dir {re.escape(str(model_dir))} {holder_pattern(proc, 'model_dir', str(model_dir))}"
    assert re.fullmatch(f"{pattern}; waited 1 s", str(e.value)), str(e.value)


@pytest.mark.integration  # starts a process
def test_the_sqlite_store_lock_waits_lock_timeout_seconds_then_names_the_holder(tmp_path, monkeypatch):
    from layerprobe.tracking import Tracker

    db = tmp_path / "m.db"
    uri = f"sqlite:///{db}"
    monkeypatch.setenv(locks.TIMEOUT_ENV, "1")
    with held_elsewhere(tmp_path, "store", uri) as proc:
        with pytest.raises(LayerprobeError) as e:
            Tracker(uri, "exp", "r")
    pattern = f"tracking store {re.escape(str(db))} {holder_pattern(proc, 'store', uri)}"
    assert re.fullmatch(f"{pattern}; waited 1 s", str(e.value)), str(e.value)
    assert not db.exists()  # nothing half-written: the store was never opened


def test_the_model_dir_lock_waits_six_hours_unless_told():
    import inspect

    assert inspect.signature(model_dir_lock).parameters["wait"].default == 6 * 3600
    assert locks.timeout(6 * 3600) == 6 * 3600


@pytest.mark.parametrize("raw", ["abc", "-1", "nan"])
def test_a_bad_lock_timeout_is_one_line(monkeypatch, raw):
    monkeypatch.setenv(locks.TIMEOUT_ENV, raw)
    with pytest.raises(ConfigError) as e:
        locks.timeout(10)
    assert str(e.value) == f"LAYERPROBE_LOCK_TIMEOUT: must be a number of seconds >= 0. Received: {raw!r}"


@pytest.mark.integration
@pytest.mark.estimator  # the default engine
def test_a_run_whose_model_dir_is_locked_is_one_line_and_exit_2(tmp_path):
    model_dir = tmp_path / "model"
    cmd = [
        sys.executable, "-m", "layerprobe", "model=tiny_cnn", "trainer=quick", "probe.plots=false",
        f"trainer.model_dir={model_dir}", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
    ]  # fmt: skip
    with held_elsewhere(tmp_path, "model_dir", str(model_dir)) as proc:
        env = {**os.environ, locks.TIMEOUT_ENV: "1"}
        r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr[-3000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(f"layerprobe: error: model_dir {model_dir} is locked by pid {proc.pid} "), last
    assert last.endswith("; waited 1 s") and "Traceback" not in r.stderr


# Waits for the start file, then reads the store as a sweep's start does (its first call opens it).
OPENER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from layerprobe.tracking import store

    uri, start = sys.argv[1], Path(sys.argv[2])
    print("ready", flush=True)
    while not start.exists():
        time.sleep(0.01)
    store.client(uri).search_experiments(max_results=1)
    print("ok", flush=True)
    """
)


@pytest.mark.integration  # starts processes
def test_processes_opening_one_fresh_sqlite_store_at_once_all_get_it(tmp_path):
    """Two sweeps started together on one fresh store: every process's first client creates MLflow's
    tables; without the store lock one of them failed ("table ... already exists")."""
    script, start = tmp_path / "open.py", tmp_path / "start"
    script.write_text(OPENER)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), uri, str(start)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    for p in procs:  # every process has imported MLflow and waits at the start line
        assert p.stdout is not None and p.stdout.readline() == "ready\n"
    start.touch()
    outs = [p.communicate(timeout=300) for p in procs]
    assert [o[0] for o in outs] == ["ok\n"] * 4, [o[1][-1500:] for o in outs]
