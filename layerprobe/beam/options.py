"""The Beam flags of `layerprobe probe RUN --beam`: split from the overrides and checked before anything
is read, built or logged, one line per mistake (exit 2).

Two runners, named explicitly: Beam's DirectRunner first tries the Prism runner, a binary it downloads at
run time, and FlinkRunner/SparkRunner download a job server jar; here nothing is downloaded silently.
"""

from __future__ import annotations

import logging
import shutil
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from layerprobe.errors import ConfigError, LayerprobeError

RUNNERS = ("FnApiRunner", "PortableRunner")
# Runners Beam has that would fetch something at run time or need what this install lacks: why not, what instead.
REFUSED = {
    "DirectRunner": "it first tries the Prism runner, a binary it downloads at run time; FnApiRunner is the "
    "in-process runner (the default)",
    "PrismRunner": "it downloads the Prism binary at run time; FnApiRunner is the in-process runner (the default)",
    "FlinkRunner": "it downloads a Flink job server jar at run time; start the job server yourself and use "
    "--runner=PortableRunner --job_endpoint=HOST:PORT",
    "SparkRunner": "it downloads a Spark job server jar at run time; start the job server yourself and use "
    "--runner=PortableRunner --job_endpoint=HOST:PORT",
    "DataflowRunner": "it needs apache-beam[gcp], which layerprobe[beam] does not install; reach Dataflow's job "
    "service with --runner=PortableRunner --job_endpoint=HOST:PORT",
}
LOCAL_MODES = ("in_memory", "multi_processing")
ENVIRONMENTS = ("EXTERNAL", "PROCESS", "LOOPBACK", "DOCKER")
PORTABLE_BLOCKS = 4  # a job service's worker count is not known here: a few blocks per job by default
CONNECT_TIMEOUT = 5.0  # seconds to reach a job endpoint or a worker pool before saying it is unreachable


@dataclass(frozen=True)
class BeamFlags:
    """The checked Beam flags: what the pipeline runs on and into how many blocks the split is cut."""

    flags: tuple[str, ...]
    runner: str
    blocks: int

    def pipeline_options(self) -> Any:
        from apache_beam.options.pipeline_options import PipelineOptions

        return PipelineOptions(list(self.flags))


def split_flags(args: Sequence[str]) -> tuple[list[str], list[str]]:
    """(Beam flags, overrides) of the arguments left after layerprobe's own: a Beam flag starts with
    `--` (`--runner=X` or `--runner X`); an override never does."""
    flags: list[str] = []
    overrides: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a.startswith("--"):
            flags.append(a)
            nxt = args[i + 1] if i + 1 < len(args) else None
            if "=" not in a and nxt is not None and not nxt.startswith("-") and "=" not in nxt:
                flags[-1] = f"{a}={nxt}"  # `--flag value`: an override always holds `=`
                i += 1
        else:
            overrides.append(a)
        i += 1
    return flags, overrides


def import_beam() -> Any:
    """apache_beam, imported without the warning its import logs about Google Cloud clients."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        import apache_beam
    except ImportError as e:
        raise LayerprobeError(
            f"--beam needs Apache Beam ({e}); install the extra: pip install 'layerprobe[beam]'"
        ) from None
    finally:
        logging.disable(previous)
    return apache_beam


def check_flags(flags: Sequence[str], blocks: int | None) -> BeamFlags:
    """The Beam flags, checked: known to Beam, a runner that downloads nothing, endpoints that answer."""
    import_beam()
    from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, PortableOptions, StandardOptions

    options = PipelineOptions(list(flags))
    known = set(options.get_all_options())
    unknown = sorted(set(options.get_all_options(retain_unknown_options=True)) - known)
    if unknown:
        raise ConfigError("--beam", f"--{unknown[0]}", "not a Beam pipeline option", sorted(f"--{k}" for k in known))
    runner = options.view_as(StandardOptions).runner or "FnApiRunner"
    runner = runner.rsplit(".", 1)[-1]
    if runner in REFUSED:
        raise LayerprobeError(f"--runner={runner}: not with layerprobe probe --beam: {REFUSED[runner]}")
    if runner not in RUNNERS:
        raise ConfigError("--runner", runner, "layerprobe probe --beam runs on these Beam runners", RUNNERS)
    if blocks is not None and blocks < 1:
        raise ConfigError("--blocks", blocks, "the split is cut into at least 1 block")
    if runner == "FnApiRunner":
        d = options.view_as(DirectOptions)
        if d.direct_running_mode not in LOCAL_MODES:  # threads would share one model and engine
            raise ConfigError(
                "--direct_running_mode",
                d.direct_running_mode,
                "FnApiRunner probes in this process or in worker "
                "processes (TensorFlow already runs each on every core)",
                LOCAL_MODES,
            )
        workers = d.direct_num_workers if d.direct_running_mode != "in_memory" else 1
        return BeamFlags(tuple(flags), runner, blocks or max(1, workers))
    _check_portable(options.view_as(PortableOptions))
    return BeamFlags(tuple(flags), runner, blocks or PORTABLE_BLOCKS)


def _check_portable(p: Any) -> None:
    if not p.job_endpoint or p.job_endpoint == "embed":
        raise ConfigError(
            "--job_endpoint", p.job_endpoint, "PortableRunner needs the HOST:PORT of a running job service"
        )
    _reachable("--job_endpoint", p.job_endpoint, "a running job service")
    env = (p.environment_type or "").upper()
    if env not in ENVIRONMENTS:  # Beam's default is DOCKER, which pulls an SDK image: say it, never assume it
        raise ConfigError(
            "--environment_type", p.environment_type, "PortableRunner: say where the workers run", ENVIRONMENTS
        )
    if env == "EXTERNAL":
        if not p.environment_config:
            raise ConfigError("--environment_config", None, "EXTERNAL workers: the HOST:PORT of a worker pool")
        _reachable("--environment_config", p.environment_config, "a running worker pool")
        here = str(Path(sys.executable).parent)
        first = shutil.which("python")
        if first is None or str(Path(first).parent) != here:
            logging.getLogger(__name__).warning(
                "a worker pool on this machine launches a bare `python` (here: %s); with %s not first on its "
                "PATH, the workers cannot import apache_beam and layerprobe and the job hangs",
                first,
                here,
            )


def _reachable(flag: str, endpoint: str, what: str) -> None:
    host, _, port = endpoint.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(flag, endpoint, f"expected HOST:PORT of {what}")
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT):
            pass
    except OSError as e:
        raise LayerprobeError(
            f"{flag}={endpoint}: unreachable ({e.strerror or e}); start {what} there first, nothing was probed"
        ) from None
