"""What a run records so that it can be rebuilt: digests, versions, git state, the environment."""

from __future__ import annotations

import functools
import hashlib
import json
import platform
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from layerprobe.config.applications import MODEL_FILE
from layerprobe.config.loaded import Config
from layerprobe.config.locations import portable
from layerprobe.data.digests import path_digest
from layerprobe.schema import DataConfig


def exposed_layers(c: Config) -> list[str]:
    """Layers with `expose: true` or listed in probe.layers, in model order; then the entries of
    probe.layers that only the built model resolves (`backbone/conv4_block6_out`, glob patterns)."""
    from layerprobe.config.archs import is_pattern

    extra = list(c.probe.layers)
    layers = c.model.layers
    named = [n for n, s in layers.items() if s.get("expose", False) or n in extra]
    return named + [e for e in extra if e not in layers and ("/" in e or is_pattern(e))]


# trainer keys that say how long or how visibly to train, not what the model becomes
NOT_SHAPING_TRAINING = ("model_dir", "log_every_steps", "train_steps", "eval_steps", "keep_checkpoint_max")


def training_digest(c: Config) -> str:
    """Hash of what shapes training (data, layers, heads, trainer); exposing a layer changes nothing,
    and neither does the step budget or the checkpoint/log cadence: raising train_steps continues.
    Input paths under the repository root are hashed relative to it: the same from any directory."""
    p = portable(c.plain())  # block-expanded, paths under the root made relative
    layers = {n: {k: v for k, v in s.items() if k != "expose"} for n, s in p["model"]["layers"].items()}
    for name, spec in c.model.layers.items():  # a model file saved anew under the same path is another model
        if spec.get("type") == MODEL_FILE and Path(str(spec.get("path"))).exists():
            layers[name]["sha256"] = path_digest(spec["path"])
    trainer = {k: v for k, v in p["trainer"].items() if k not in NOT_SHAPING_TRAINING}
    if not c.trainer.warm_start.source:  # digests of configs from before warm starts stay
        trainer.pop("warm_start", None)
    blob = {
        "data": p["data"],
        "inputs": p["model"]["inputs"],
        "layers": layers,
        "outputs": p["model"]["outputs"],
        "trainer": trainer,
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()


def config_digest(c: Config) -> str:
    """Hash of the whole config as written."""
    return hashlib.sha256(json.dumps(c.written, sort_keys=True, default=str).encode()).hexdigest()


def data_tags(data: Any) -> dict[str, str]:
    sizes = data.sizes()
    tags = {
        "data.name": data.name,
        "data.sha256": data.digest,
        **{f"data.size.{k}": str(v) for k, v in sizes.items()},
    }
    if getattr(data, "skipped", 0):  # records a stream skipped (data.skip_corrupt): never silently
        tags["data.skipped_records"] = str(data.skipped)
    return tags


def dataset_inputs(data_cfg: DataConfig, data: Any) -> list[dict[str, Any]]:
    """One MLflow dataset input per split (the context): the data's name, a digest of this split of
    this data, where it came from, its rows and the features' and labels' dtypes and shapes, all
    asked of the `DataSource` protocol (a stream is not read for them)."""
    source = {"layerprobe.data.source": data_cfg.source}
    for key, value in data_cfg.params.items():
        source[f"layerprobe.data.params.{key}"] = str(value)[:500]
    features, labels = data.element_spec

    def specs(group: Mapping[str, Any]) -> dict[str, list[Any]]:
        # numpy's dtype names, as MLflow's schema wants them (a bytes feature is "object")
        return {k: [np.dtype(v.dtype.as_numpy_dtype).name, v.shape.as_list()] for k, v in group.items()}

    return [
        {
            "name": data.name,
            "digest": hashlib.sha256(f"{data.digest}:{split}".encode()).hexdigest()[:16],
            "context": split,
            "source": source,
            "rows": data.size(split),
            "features": specs(features),
            "targets": specs(labels),
        }
        for split in data.split_names()
    ]


def shaping_overrides(overrides: Sequence[str]) -> list[str]:
    """The overrides that say what a run is: not where it logs or writes (tracking.*, hydra.*), and
    no bare flag. What its name and its report's title show."""
    return [o for o in overrides if "=" in o and not o.lstrip("+~").startswith(("hydra.", "tracking."))]


def provenance_tags(
    c: Config, overrides: Sequence[str], params: int, exposed: Sequence[str], sources: Sequence[Any] = ()
) -> dict[str, str]:
    """What a run records of where it came from; `exposed`: the layers it probes, patterns resolved
    against the built model (what compare and a sweep's report read back); `sources`: the built
    model's weights files (graph.warm.WarmStart), for the ones the config names only by a name."""
    import tensorflow as tf

    import layerprobe

    commit, dirty = _git_state()
    return {
        "layerprobe.config_sha256": config_digest(c),
        "layerprobe.training_sha256": training_digest(c),
        "layerprobe.overrides": " ".join(overrides),
        "layerprobe.model": c.model.name,
        "layerprobe.data": c.data.name,
        "layerprobe.parameters": str(params),
        "layerprobe.exposed": ",".join(exposed),
        "layerprobe.version": layerprobe.__version__,
        "python.version": platform.python_version(),
        "tensorflow.version": tf.__version__,
        "layerprobe.engine": c.trainer.engine,
        "keras.version": _dist_version("keras"),
        "git.commit": commit,
        "git.dirty": dirty,
        **warm_start_tags(c),
        **fetched_weights_tags(sources),
    }


def warm_start_tags(c: Config) -> dict[str, str]:
    """Where initial weights came from: trainer.warm_start and nested models' weights files, each a
    path and a sha256 (of the file, or of the checkpoint's files) or an MLflow run id."""
    sources = {"layerprobe.warm_start": c.trainer.warm_start.source}
    for name, spec in c.model.layers.items():
        if isinstance(spec.get("weights"), str) and Path(spec["weights"]).is_file():  # not `imagenet`
            sources[f"layerprobe.weights.{name}"] = spec["weights"]
    tags: dict[str, str] = {}
    for key, source in sources.items():
        if not source:
            continue
        p = Path(source)
        if p.is_file():
            tags[key], tags[f"{key}.sha256"] = str(p.resolve()), file_digest(source)
        elif p.is_dir() or Path(source + ".index").is_file():
            prefix = source if not p.is_dir() else None
            tags[key] = str(p.resolve())
            tags[f"{key}.sha256"] = checkpoint_digest(source if prefix else latest_in(source) or "")
        else:
            tags[f"{key}.run_id"] = source
    return tags


def fetched_weights_tags(sources: Sequence[Any]) -> dict[str, str]:
    """Nested models' weights the config does not name as a file: an application's `imagenet` (the URL
    Keras fetched it from, its file in Keras's cache, its sha256) and a model_file's saved model."""
    tags: dict[str, str] = {}
    for ws in sources:
        if not ws.origin or ws.origin == ws.source:  # a weights file of the config: warm_start_tags has it
            continue
        key = f"layerprobe.model_file.{ws.scope}" if ws.path.endswith(".path") else f"layerprobe.weights.{ws.scope}"
        tags[key], tags[f"{key}.sha256"] = ws.origin, ws.sha256
        if "://" in ws.origin:
            tags[f"{key}.file"] = ws.source
    return tags


def _dist_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "none"


def _git_state(root: Path | None = None) -> tuple[str, str]:
    """(commit, dirty) of the checkout holding `root` (default: this package's). Dirty means a
    tracked file differs from the commit; untracked files (a run's own mlflow.db, its lock, outputs)
    never count, so a run cannot dirty the checkout it records. "unknown" outside a git checkout."""
    root = root or Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown", "unknown"
    return commit or "unknown", str(bool(status.strip())).lower() if commit else "unknown"


@functools.cache  # what is installed does not change under a running process; a scan takes ~0.1 s
def frozen_requirements() -> str:
    """`pip freeze`-style list of the installed distributions (no pip subprocess needed)."""
    from importlib.metadata import distributions

    pins = {f"{d.metadata['Name']}=={d.version}" for d in distributions() if d.metadata["Name"]}
    return "\n".join(sorted(pins, key=str.lower)) + "\n"


def file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


CHECKPOINT_STEP = "layerprobe.checkpoint_step"  # tags of the checkpoint a run was evaluated at
CHECKPOINT_SHA256 = "layerprobe.checkpoint_sha256"


@dataclass(frozen=True)
class RunCheckpoint:
    """The checkpoint a logged run was evaluated at: what its probe, reproduce and compare read."""

    step: int | None  # None: the run ended before it evaluated (killed, or logged by no layerprobe)
    digest: str  # "" when unknown


def checkpoint_tags(step: int, digest: str) -> dict[str, str]:
    return {CHECKPOINT_STEP: str(step), CHECKPOINT_SHA256: digest}


def run_checkpoint(tags: Mapping[str, str], points: Mapping[str, tuple[int, float]]) -> RunCheckpoint:
    """The run's checkpoint from its tags; runs logged before the step tag: the step of its eval/
    metrics (the last, a pruned trial's too)."""
    if tags.get(CHECKPOINT_STEP):
        return RunCheckpoint(int(tags[CHECKPOINT_STEP]), tags.get(CHECKPOINT_SHA256, ""))
    steps = [step for key, (step, _) in points.items() if key.startswith("eval/")]
    return RunCheckpoint(max(steps) if steps else None, tags.get(CHECKPOINT_SHA256, ""))


def checkpoint_digest(prefix: str) -> str:
    """sha256 over one checkpoint's files (index and data shards) by its prefix: the bitwise identity
    of its weights."""
    h = hashlib.sha256()
    for path in sorted(Path(prefix).parent.glob(Path(prefix).name + ".*")):
        if path.suffix == ".meta":  # the graph, with op names that carry no weights
            continue
        h.update(path.name.split(".", 1)[1].encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def latest_in(directory: str) -> str | None:
    """The newest checkpoint prefix a TensorFlow `checkpoint` state file names in `directory` (a warm
    start's source model_dir), read as text."""
    state = Path(directory) / "checkpoint"
    found = re.search(r'^model_checkpoint_path:\s*"(.*)"', state.read_text(), re.M) if state.is_file() else None
    if found is None:
        return None
    prefix = Path(found.group(1))
    return str(prefix if prefix.is_absolute() else Path(directory) / prefix)
