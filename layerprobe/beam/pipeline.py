"""The probe as a Beam pipeline: blocks of the probe split -> a ProbeState per bundle -> one merged state
per probed checkpoint, logged by the driver exactly as `layerprobe probe` logs it.

The blocks are the shards of `--shard I/N` (batch j goes to block j mod N), so the merge equals one pass
as the sharded probe's does. A worker rebuilds the experiment from plain values (the logged config, the
overrides, the model_dir: never a model, which would not pickle) once, in `setup()`; the in-process runner
reuses the driver's. States travel as the bytes of a state file (probe/state.py), not as pickles, and the
merged ones are written to a state directory the driver reads back: with a remote job service it must
be a path the workers and the driver share, like the sharded probe's `--state-dir`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from layerprobe.beam.options import BeamFlags, import_beam
from layerprobe.errors import LayerprobeError
from layerprobe.probe.state import load_state, state_bytes, state_from_bytes
from layerprobe.reprobe import dynamics_checkpoints, log_outcome, prepared, rebuild

import_beam()  # first: apache_beam's import logs a warning about Google Cloud clients, silenced there
import apache_beam as beam  # noqa: E402

log = logging.getLogger(__name__)
FINAL = -1  # the point of the probe of the whole split; 0, 1, ...: the checkpoints of --checkpoints all
_EXPERIMENTS: dict[str, Any] = {}  # ProbeJob.key() -> Experiment built in this process


@dataclass(frozen=True)
class ProbeJob:
    """What every worker rebuilds the experiment from: plain values only."""

    logged: dict[str, Any]  # the run's config as logged (before the overrides)
    overrides: tuple[str, ...]
    model_dir: str
    allow_imports: bool

    def key(self) -> str:
        text = json.dumps(
            [self.logged, self.overrides, self.model_dir, self.allow_imports], sort_keys=True, default=str
        )
        return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Block:
    """One element of the pipeline: block `shard` (i, n) of the first `max_examples` of the probe split
    (None: probe.max_examples) at `checkpoint`, part of point `point`."""

    point: int
    checkpoint: str
    max_examples: int | None
    shard: tuple[int, int]


def experiment(job: ProbeJob) -> Any:
    """The job's experiment.Experiment, built once per process."""
    key = job.key()
    if key not in _EXPERIMENTS:
        if "://" not in job.model_dir and not os.path.isdir(job.model_dir):
            raise LayerprobeError(f"a Beam worker on {socket.gethostname()} cannot read model_dir {job.model_dir}")
        _EXPERIMENTS[key] = rebuild(job.logged, job.overrides, job.model_dir, job.allow_imports)
    return _EXPERIMENTS[key]


class ProbeBlocks(beam.DoFn):
    """Probes blocks; yields one (point, state bytes) per point and bundle."""

    def __init__(self, job: ProbeJob) -> None:
        self.job = job

    def setup(self) -> None:
        self._x = experiment(self.job)
        self._session = self._x.session()

    def start_bundle(self) -> None:
        self._states: dict[int, Any] = {}

    def process(self, block: Block) -> Any:
        shard = None if block.shard[1] == 1 else block.shard  # one block: the one-pass read, unfiltered
        state = self._session.run(
            self._x.data, checkpoint=block.checkpoint, max_examples=block.max_examples, shard=shard
        )
        held = self._states.get(block.point)
        self._states[block.point] = state if held is None else held.merge(state)
        log.info("beam: probed block %d of %d (point %d, pid %d)", *block.shard, block.point, os.getpid())
        return ()

    def finish_bundle(self) -> Any:
        from apache_beam.transforms.window import GlobalWindows

        for point, state in self._states.items():
            yield GlobalWindows.windowed_value((point, state_bytes(state, {})))


def _merged(a: bytes | None, b: bytes | None) -> bytes | None:
    if a is None or b is None:
        return b if a is None else a
    return state_bytes(state_from_bytes(a)[0].merge(state_from_bytes(b)[0]), {})


class MergeStates(beam.CombineFn):
    """ProbeState.merge as a CombineFn; accumulators are state bytes (None: nothing yet)."""

    def create_accumulator(self) -> bytes | None:
        return None

    def add_input(self, acc: bytes | None, state: bytes) -> bytes | None:
        return _merged(acc, state)

    def merge_accumulators(self, accs: Any) -> bytes | None:
        out = None
        for acc in accs:
            out = _merged(out, acc)
        return out

    def extract_output(self, acc: bytes | None) -> bytes | None:
        return acc


def _write_state(item: tuple[int, bytes], state_dir: str) -> None:
    point, data = item
    path = Path(state_dir) / f"point-{point}.npz"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def probe_with_beam(
    source: str,
    overrides: Sequence[str],
    flags: BeamFlags,
    output_dir: str | Path,
    allow_imports: bool = False,
    all_checkpoints: bool = False,
    state_dir: str | Path | None = None,
) -> tuple[dict[str, Any], str | None]:
    """`reprobe.probe_existing` as a Beam pipeline on `flags`' runner: the same files, metrics and
    report; returns (layer -> LayerStats, run id logged into or None)."""
    p = prepared(source, overrides, allow_imports)
    checkpoints = dynamics_checkpoints(p) if all_checkpoints else []
    n = flags.blocks
    blocks = [Block(FINAL, p.checkpoint, None, (i, n)) for i in range(n)]
    if checkpoints:
        from layerprobe.dynamics.trace import subset_size

        examples = subset_size(p.c, p.x.data)
        blocks += [Block(j, k.path, examples, (i, n)) for j, k in enumerate(checkpoints) for i in range(n)]
    states_dir = Path(state_dir or Path(output_dir) / "beam-states")
    if states_dir.is_dir():
        shutil.rmtree(states_dir)
    states_dir.mkdir(parents=True)
    job = ProbeJob(p.logged, tuple(overrides), p.model_dir, allow_imports)
    _EXPERIMENTS[job.key()] = p.x  # the in-process runner's DoFn reuses it; worker processes build their own
    try:
        _run(flags, job, blocks, states_dir)
    finally:
        _EXPERIMENTS.pop(job.key(), None)
    states = {}
    for point in [FINAL, *range(len(checkpoints))]:
        path = states_dir / f"point-{point}.npz"
        if not path.is_file():
            raise LayerprobeError(f"the Beam job ended without the state {path}: do its workers share {states_dir}?")
        states[point] = load_state(path)[0]
    log.info("beam: %d blocks of %d points merged on %s", len(blocks), len(states), flags.runner)
    dyn = None
    if all_checkpoints:
        from layerprobe.dynamics.trace import trace

        dyn = trace(
            p.x, checkpoints, Path(output_dir) / "probe" / "dynamics", [states[j] for j in range(len(checkpoints))]
        )
    return log_outcome(p, states[FINAL], output_dir, dyn)


def _run(flags: BeamFlags, job: ProbeJob, blocks: Sequence[Block], states_dir: Path) -> None:
    if flags.runner == "FnApiRunner":
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner

        runner: Any = FnApiRunner()
    else:
        from apache_beam.runners.portability.portable_runner import PortableRunner

        runner = PortableRunner()
    try:
        with beam.Pipeline(runner=runner, options=flags.pipeline_options()) as pipe:
            _ = (
                pipe
                | "blocks" >> beam.Create(list(blocks))
                | "probe" >> beam.ParDo(ProbeBlocks(job))
                | "merge" >> beam.CombinePerKey(MergeStates())
                | "write" >> beam.Map(_write_state, str(states_dir))
            )
    except LayerprobeError:
        raise
    except Exception as e:  # noqa: BLE001 - a worker's error arrives as the runner's, its text inside
        raise LayerprobeError(f"the Beam job failed on {flags.runner}: {worker_error(str(e))}") from e


def worker_error(text: str) -> str:
    """The line of a failed job's text that says what went wrong on the worker."""
    found = re.findall(r"(?:LayerprobeError|ConfigError): ([^\n]+)", text)
    if found:
        return found[-1]
    missing = re.findall(r"No module named '([^']+)'", text)
    if missing:
        return (
            f"a worker cannot import {missing[-1]}: its Python needs apache-beam and layerprobe "
            "(the same venv first on its PATH, or an SDK container image with them)"
        )
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if re.match(r"^[\w.]*(Error|Exception)\b", ln)]
    return (errors or lines or ["unknown error"])[-1][:300]
