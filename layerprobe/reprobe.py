"""Probe a finished run again, without retraining: any layers, read from its checkpoint.

The run's logged config is read back as plain YAML (never executed), the graph is rebuilt from it,
the latest checkpoint restored, and the probe results are logged into the same MLflow run (metrics
at the checkpoint's global step; artifacts under `probe/`, replacing files of the same layer).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf

from layerprobe.config.schema import LayerprobeConfig
from layerprobe.errors import LayerprobeError
from layerprobe.provenance import exposed_layers
from layerprobe.runner import MODEL_DIR_CONFIG

log = logging.getLogger(__name__)


def _apply_overrides(logged: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    from omegaconf.errors import OmegaConfBaseException

    try:
        dotlist = [o.lstrip("+") for o in overrides]  # Hydra's "append" marker; adding keys is allowed here
        cfg = OmegaConf.merge(OmegaConf.structured(LayerprobeConfig), logged, OmegaConf.from_dotlist(dotlist))
    except OmegaConfBaseException as e:
        raise LayerprobeError(
            f"cannot apply {list(overrides)} to the logged config: {str(e).splitlines()[0]}"
        ) from None
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def refuse_code(c: Mapping[str, Any], allow_imports: bool) -> None:
    """A dotted `type` imports and runs code named by the config: not from a file we merely read."""
    dotted = [f"model.layers.{n}.type={s['type']}" for n, s in c["model"]["layers"].items() if "." in s["type"]]
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
    (probe.dynamics.examples), one point per checkpoint, as training dynamics.

    Returns (layer -> LayerStats, run id logged into or None).
    """
    uri = next((o.split("=", 1)[1] for o in overrides if o.startswith("tracking.uri=")), None)
    logged, model_dir, run_id = load_source(source, uri)
    c = _apply_overrides(logged, overrides)
    refuse_code(c, allow_imports)
    from layerprobe.config.validate import validate

    validate(c)
    from layerprobe._tf import tf
    from layerprobe.artifacts import probe_outcome
    from layerprobe.experiment import prepare

    checkpoint = tf.train.latest_checkpoint(model_dir)
    if checkpoint is None:
        raise LayerprobeError(f"model_dir {model_dir} holds no checkpoint to probe")
    exposed = exposed_layers(c)
    if not exposed:
        raise LayerprobeError("no layer to probe: name some with probe.layers=[...]")
    x = prepare(c, model_dir, exposed)
    _refuse_new_weights(x.summary, checkpoint, tf)
    dyn, out = None, Path(output_dir) / "probe" / "dynamics"
    if all_checkpoints:
        from layerprobe.dynamics.trace import check_subset, report_section, trace

        check_subset(c, x.data)
        dyn = trace(x, x.engine.checkpoints(), out)
    state = x.session().run(x.data, checkpoint=checkpoint)
    report = {"dynamics": report_section(dyn, out) if dyn else None}
    outcome = probe_outcome(c, state, x.summary, Path(output_dir) / "probe", report)
    step = int(tf.train.load_variable(checkpoint, "global_step"))
    if run_id and c["tracking"]["enabled"]:
        from layerprobe import tracking

        t = tracking.Tracker(uri or tracking.resolve_uri(None), "", None, run_id=run_id)
        known = tracking.latest_metric_points(uri or tracking.resolve_uri(None), run_id)
        if dyn:
            t.log_metric_records(_new_points(uri or tracking.resolve_uri(None), run_id, dyn.records()))
            known = tracking.latest_metric_points(uri or tracking.resolve_uri(None), run_id)
        t.log_metrics(_not_yet_logged(known, outcome.metrics, step), step=step)
        t.log_artifacts(Path(output_dir) / "probe", "probe")
        t.set_tags({"layerprobe.reprobed_layers": ",".join(exposed)})
    return outcome.stats, run_id


def _not_yet_logged(
    known: Mapping[str, tuple[int, float]], metrics: Mapping[str, float], step: int
) -> dict[str, float]:
    """The metrics whose latest point in the run is not already (step, value): probing the same
    layers of the same checkpoint again adds no duplicate points to the run's series."""
    return {k: v for k, v in metrics.items() if known.get(k) != (step, v)}


def _new_points(
    uri: str, run_id: str, records: Sequence[tuple[dict[str, float], int]]
) -> list[tuple[dict[str, float], int]]:
    """The records without the (metric, step) points the run holds already: probing the checkpoints
    of a run whose training logged dynamics adds no second point at a step."""
    from layerprobe import tracking

    held = tracking.metric_steps(uri, run_id, sorted({k for m, _ in records for k in m}))
    return [({k: v for k, v in m.items() if step not in held[k]}, step) for m, step in records]


def _refuse_new_weights(summary: Any, checkpoint: str, tf: Any) -> None:
    """Every weight of the rebuilt graph must come from the checkpoint."""
    have = {name for name, _ in tf.train.list_variables(checkpoint)}
    missing = [r.name for r in summary.rows if r.params and not all(w in have for w in r.weight_names)]
    if missing:
        raise LayerprobeError(
            f"layers {missing} have weights that the checkpoint does not hold: probing a trained run can only "
            "expose its existing layers; train a new run to add layers"
        )
