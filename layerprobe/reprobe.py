"""Probe a finished run again, without retraining: any layers, read from its checkpoint.

The run's logged config is read back as plain YAML (never executed), the graph is rebuilt from it,
the checkpoint the run was evaluated at restored (a model_dir's latest), and the probe results are
logged into the same MLflow run (metrics at the checkpoint's global step; artifacts under `probe/`,
replacing files of the same layer).
"""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from layerprobe.config.loaded import Config, load
from layerprobe.engines.base import Checkpoint, Engine
from layerprobe.errors import LayerprobeError
from layerprobe.probe.state import load_state, save_state
from layerprobe.provenance import RunCheckpoint, config_digest, exposed_layers, run_checkpoint
from layerprobe.runner import MODEL_DIR_CONFIG

log = logging.getLogger(__name__)


def _apply_overrides(logged: Mapping[str, Any], overrides: Sequence[str]) -> Config:
    """The logged config with `overrides`, composed and loaded as every command's config is."""
    from layerprobe.config.compose import compose_logged

    return load(compose_logged(logged, overrides))


def refuse_code(c: Config, allow_imports: bool) -> None:
    """A dotted `type` imports and runs code named by the config: not from a file we merely read."""
    dotted = [f"model.layers.{n}.type={s['type']}" for n, s in c.model.layers.items() if "." in s["type"]]
    if dotted and not allow_imports:
        raise LayerprobeError(
            f"the logged config imports user code ({', '.join(dotted)}); pass --allow-imports to trust it"
        )


def load_source(source: str, uri: str | None) -> tuple[dict[str, Any], str, str | None]:
    """(logged config, model_dir, run id or None) for a model_dir path or an MLflow run id."""
    path = Path(source)
    if path.is_dir():
        cfg_file = path / MODEL_DIR_CONFIG
        if not cfg_file.is_file():
            raise LayerprobeError(f"{source} holds no {MODEL_DIR_CONFIG}: it was not trained by layerprobe")
        return yaml.safe_load(cfg_file.read_text()), str(path), None
    from layerprobe import tracking

    tags = tracking.run_tags(uri or tracking.resolve_uri(None), source)
    with tempfile.TemporaryDirectory() as tmp:
        local = tracking.download_artifact(uri or tracking.resolve_uri(None), source, "config/config.yaml", tmp)
        logged = yaml.safe_load(local.read_text())
    if "model_dir" not in tags:
        raise LayerprobeError(f"run {source} has no model_dir tag: it was not trained by layerprobe")
    return logged, tags["model_dir"], source


def probe_existing(
    source: str,
    overrides: Sequence[str],
    output_dir: str | Path,
    allow_imports: bool = False,
    all_checkpoints: bool = False,
) -> tuple[dict[str, Any], str | None]:
    """Probe `source` (run id or model_dir) with `overrides` (e.g. probe.layers=[conv2]).
    `all_checkpoints`: also probe every checkpoint the model_dir keeps on the dynamics subset
    (probe.dynamics.examples), one point per checkpoint, as training dynamics; of a run, those up
    to its own step.

    Returns (layer -> LayerStats, run id logged into or None).
    """
    p = prepared(source, overrides, allow_imports)
    dyn = None
    if all_checkpoints:
        from layerprobe.dynamics.trace import trace

        dyn = trace(p.x, dynamics_checkpoints(p), Path(output_dir) / "probe" / "dynamics")
    state = p.x.session().run(p.x.data, checkpoint=p.checkpoint)
    return log_outcome(p, state, output_dir, dyn)


def probe_shard(
    source: str, overrides: Sequence[str], shard: tuple[int, int], state_dir: str | Path, allow_imports: bool = False
) -> Path:
    """Probe shard (i, n) of the split and write its mergeable state to `state_dir`; nothing is
    logged until `merge_shards` folds the n states. Returns the state file."""
    p = prepared(source, overrides, allow_imports)
    state = p.x.session().run(p.x.data, checkpoint=p.checkpoint, shard=shard)
    meta = {"shard": list(shard), "step": p.step, "config_sha256": config_digest(p.c), "source": source}
    return save_state(state, Path(state_dir) / f"shard-{shard[0]}-of-{shard[1]}.npz", meta)


def merge_shards(
    source: str, overrides: Sequence[str], state_dir: str | Path, output_dir: str | Path, allow_imports: bool = False
) -> tuple[dict[str, Any], str | None]:
    """Fold the states `probe_shard` wrote to `state_dir` into one pass's statistics and log them
    as `probe_existing` does. Every shard of the same checkpoint and config must be there. The data
    is not read (the graph needs only its element spec): the shards read and checked it."""
    from layerprobe.data.opening import deferred

    with deferred():
        p = prepared(source, overrides, allow_imports)
    files = sorted(Path(state_dir).glob("shard-*-of-*.npz"))
    if not files:
        raise LayerprobeError(f"--merge {state_dir}: no shard-I-of-N.npz files there (written by --shard I/N)")
    loaded = [load_state(f) for f in files]
    want = {"step": p.step, "config_sha256": config_digest(p.c)}
    for f, (_, meta) in zip(files, loaded):
        for key, value in want.items():
            if meta.get(key) != value:
                raise LayerprobeError(
                    f"--merge {state_dir}: {f.name} was probed with another {key} ({meta.get(key)}, this probe: "
                    f"{value}); probe every shard of the same checkpoint with the same overrides"
                )
    n = loaded[0][1]["shard"][1]
    got = sorted(meta["shard"][0] for _, meta in loaded if meta["shard"][1] == n)
    if got != list(range(n)) or len(loaded) != n:
        missing = sorted(set(range(n)) - set(got))
        raise LayerprobeError(f"--merge {state_dir}: expected shards 0..{n - 1} of {n}, missing {missing or 'none'}")
    state = loaded[0][0]
    for other, _ in loaded[1:]:
        state = state.merge(other)
    return log_outcome(p, state, output_dir)


def dynamics_checkpoints(p: Prepared) -> list[Checkpoint]:
    """What `--checkpoints all` probes besides the split: every kept checkpoint up to the probed one
    (of a run: none it never saw), each on the dynamics subset, which must fit in the split."""
    from layerprobe.dynamics.trace import check_subset

    check_subset(p.c, p.x.data)
    return [k for k in p.x.engine.checkpoints() if k.step <= p.step]


@dataclass(frozen=True)
class Prepared:
    logged: dict[str, Any]  # the config as logged, before the overrides
    model_dir: str
    c: Config
    x: Any  # experiment.Experiment
    checkpoint: str
    step: int
    run_id: str | None
    uri: str | None
    exposed: list[str]  # resolved against the built model (patterns, inner layers)


def prepared(source: str, overrides: Sequence[str], allow_imports: bool) -> Prepared:
    """The run's config with `overrides`, checked, its experiment rebuilt and its checkpoint: the one
    a run was evaluated at, a model_dir's latest."""
    uri = next((o.split("=", 1)[1] for o in overrides if o.startswith("tracking.uri=")), None)
    logged, model_dir, run_id = load_source(source, uri)
    x = rebuild(logged, overrides, model_dir, allow_imports)
    c = x.c
    checkpoint = own_checkpoint(x.engine, run_id, uri) if run_id else x.engine.latest()
    if checkpoint is None:
        raise LayerprobeError(f"model_dir {model_dir} holds no checkpoint to probe")
    _refuse_new_weights(x.summary, x.engine.variable_names(checkpoint))
    return Prepared(logged, model_dir, c, x, checkpoint.path, checkpoint.step, run_id, uri, list(x.exposed))


def rebuild(logged: Mapping[str, Any], overrides: Sequence[str], model_dir: str, allow_imports: bool) -> Any:
    """The experiment (experiment.Experiment) of a logged config with `overrides`, on `model_dir`:
    what the probe of any process (a shard's, a Beam worker's) restores its checkpoint into."""
    c = _apply_overrides(logged, overrides)  # the rules, blocks expanded: the config a run gets
    refuse_code(c, allow_imports)
    from layerprobe.experiment import prepare

    exposed = exposed_layers(c)
    if not exposed:
        raise LayerprobeError("no layer to probe: name some with probe.layers=[...]")
    return prepare(c, model_dir, exposed)


def logged_checkpoint(run_id: str, uri: str | None) -> RunCheckpoint:
    """The checkpoint run `run_id` was evaluated at, as its tags (or eval/ metrics) say."""
    from layerprobe import tracking

    uri = uri or tracking.resolve_uri(None)
    return run_checkpoint(tracking.run_tags(uri, run_id), tracking.latest_metric_points(uri, run_id))


def own_checkpoint(engine: Engine, run_id: str, uri: str | None) -> Checkpoint:
    """The checkpoint run `run_id` was evaluated at, never a later one of a run that continued its
    model_dir; one line when the model_dir no longer keeps it (nothing is read or logged then)."""
    own = logged_checkpoint(run_id, uri)
    if own.step is None:
        raise LayerprobeError(
            f"run {run_id} records no evaluated checkpoint (it ended before evaluating); "
            f"probe its model_dir {engine.model_dir} to read the latest checkpoint"
        )
    found = engine.at_step(own.step, own.digest or None)
    if found is None:
        kept = ", ".join(str(k.step) for k in engine.checkpoints()) or "none"
        raise LayerprobeError(
            f"run {run_id} was evaluated at step {own.step} (checkpoint {own.digest[:12] or 'of unknown digest'}), "
            f"which {engine.model_dir} no longer keeps (kept steps: {kept}); nothing was probed or logged"
        )
    return found


def log_outcome(p: Prepared, state: Any, output_dir: str | Path, dyn: Any = None) -> tuple[dict[str, Any], str | None]:
    """The probe files of `state` in output_dir/probe (with the dynamics `dyn` of --checkpoints all),
    logged into the run (when there is one)."""
    from layerprobe.artifacts import earlier_report, probe_outcome

    run_id = p.run_id if p.c.tracking.enabled else None
    if run_id:
        from layerprobe import tracking

        uri = p.uri or tracking.resolve_uri(None)
    with tempfile.TemporaryDirectory() as earlier:  # the run's report is rewritten, never made smaller
        report = earlier_report(uri, run_id, p.step, p.exposed, Path(earlier)) if run_id else {}
        if dyn is not None:
            from layerprobe.dynamics.trace import report_section

            report["dynamics"] = report_section(dyn, Path(output_dir) / "probe" / "dynamics")
        outcome = probe_outcome(p.c, state, p.x.summary, Path(output_dir) / "probe", report)
    if run_id:
        t = tracking.Tracker(uri, "", None, run_id=run_id)
        if dyn:
            t.log_metric_records(_new_points(uri, run_id, dyn.records()))
        known = tracking.latest_metric_points(uri, run_id)
        t.log_metrics(_not_yet_logged(known, outcome.metrics, p.step), step=p.step)
        t.log_artifacts(Path(output_dir) / "probe", "probe")
        t.set_tags({"layerprobe.reprobed_layers": ",".join(p.exposed)})
    return outcome.stats, p.run_id


def _not_yet_logged(
    known: Mapping[str, tuple[int, float]], metrics: Mapping[str, float], step: int
) -> dict[str, float]:
    """The metrics whose latest point in the run is not already (step, value): probing the same
    layers of the same checkpoint again adds no second point to the run's series. The same value
    means equal to SAME_VALUE: shards merged (Chan's formula) equal one pass to the last bits only."""
    return {k: v for k, v in metrics.items() if not _same_point(known.get(k), step, v)}


SAME_VALUE = 1e-12  # relative: far below any statistic's meaning, far above double rounding


def _same_point(known: tuple[int, float] | None, step: int, value: float) -> bool:
    if known is None or known[0] != step:
        return False
    return known[1] == value or math.isclose(known[1], value, rel_tol=SAME_VALUE, abs_tol=0.0)


def _new_points(
    uri: str, run_id: str, records: Sequence[tuple[dict[str, float], int]]
) -> list[tuple[dict[str, float], int]]:
    """The records without the (metric, step) points the run holds already: probing the checkpoints
    of a run whose training logged dynamics adds no second point at a step."""
    from layerprobe import tracking

    held = tracking.metric_steps(uri, run_id, sorted({k for m, _ in records for k in m}))
    return [({k: v for k, v in m.items() if step not in held[k]}, step) for m, step in records]


def _refuse_new_weights(summary: Any, have: set[str]) -> None:
    """Every weight of the rebuilt graph must come from the checkpoint (`have`: its variable names)."""
    missing = [r.name for r in summary.rows if r.params and not all(w in have for w in r.weight_names)]
    if missing:
        raise LayerprobeError(
            f"layers {missing} have weights that the checkpoint does not hold: probing a trained run can only "
            "expose its existing layers; train a new run to add layers"
        )
