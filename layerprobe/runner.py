"""One experiment, start to end: config -> data -> model_fn -> Estimator -> probe -> MLflow."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from layerprobe.config.validate import validate
from layerprobe.provenance import (
    checkpoint_digest,
    data_tags,
    dataset_inputs,
    exposed_layers,
    frozen_requirements,
    provenance_tags,
    training_digest,
)

log = logging.getLogger(__name__)

BOUNDED_ACTIVATIONS = {"sigmoid": (0.0, 1.0), "tanh": (-1.0, 1.0), "hard_sigmoid": (0.0, 1.0), "softmax": (0.0, 1.0)}
TRAINING_KEYS = {"data": None, "model": ("inputs", "layers", "outputs"), "trainer": None}


@dataclass(frozen=True)
class RunResult:
    run_id: str | None
    tracking_uri: str | None
    model_dir: str
    global_step: int
    eval_metrics: dict[str, float]
    probe: dict[str, Any] = field(default_factory=dict)  # layer -> LayerStats
    probe_metrics: dict[str, float] = field(default_factory=dict)  # probe/<layer>/<stat>
    output_dir: str = ""
    seconds: dict[str, float] = field(default_factory=dict)  # stage -> wall seconds
    experiment_id: str | None = None


def model_dir_for(c: Mapping[str, Any]) -> str:
    """trainer.model_dir, else models/<model name>-<training digest>: the same command resumes."""
    if c["trainer"].get("model_dir"):
        return str(c["trainer"]["model_dir"])
    return str(Path("models") / f"{c['model']['name']}-{training_digest(c)[:12]}")


def probe_specs(c: Mapping[str, Any], exposed: Sequence[str]) -> tuple:
    from layerprobe.probe.graph_stats import LayerProbeSpec
    from layerprobe.probe.sketch import SketchLayout

    p = c["probe"]
    layout = SketchLayout(p["relative_accuracy"])
    specs = []
    for name in exposed:
        layer = c["model"]["layers"][name]
        act = layer.get("activation") if layer["type"] != "Softmax" else "softmax"
        specs.append(
            LayerProbeSpec(
                name=name,
                layout=layout,
                active_threshold=p["active_threshold"],
                bounds=BOUNDED_ACTIVATIONS.get(act) if isinstance(act, str) else None,
                saturation_margin=p["saturation_margin"],
                reservoir_size=p["reservoir_size"],
            )
        )
    return tuple(specs)


def model_spec(c: Mapping[str, Any], probes: tuple = (), raw: tuple[str, ...] = ()) -> Any:
    from layerprobe.model_fn import ModelSpec, heads_from_config

    t = c["trainer"]
    return ModelSpec(
        inputs=c["model"]["inputs"],
        layers=c["model"]["layers"],
        heads=heads_from_config(c["model"]),
        optimizer=t["optimizer"]["name"],
        learning_rate=float(t["optimizer"]["learning_rate"]),
        seed=t["seed"],
        probes=probes,
        raw=raw,
    )


class _NoTracking:
    """Stands in for tracking.Tracker when tracking.enabled is false."""

    run_id = None
    uri = None
    experiment_id = None
    seconds = 0.0

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


def open_tracker(
    c: Mapping[str, Any], overrides: Sequence[str], tags: Mapping[str, str], parent_run_id: str | None
) -> Any:
    """Check the model_dir and the store (one line when either cannot be used, before any training
    and before a run exists) and start the run. Calls the store misses while training are buffered
    under the Hydra output dir (see tracking.Tracker)."""
    from layerprobe.config.validate import check_writable_dir

    check_writable_dir("trainer.model_dir", model_dir_for(c))
    if not c["tracking"]["enabled"]:
        return _NoTracking()
    from hydra.core.hydra_config import HydraConfig

    from layerprobe import tracking

    uri = tracking.resolve_uri(c["tracking"]["uri"])
    tracking.check_reachable(uri)
    run_name = c["tracking"].get("run_name") or readable_run_name(overrides) or c["model"]["name"]
    pending = HydraConfig.get().runtime.output_dir if HydraConfig.initialized() else None
    return tracking.Tracker(uri, c["tracking"]["experiment_name"], run_name, tags, parent_run_id, pending_dir=pending)


def run(
    c: Mapping[str, Any],
    output_dir: str | Path,
    overrides: Sequence[str] = (),
    tags: Mapping[str, str] | None = None,
    parent_run_id: str | None = None,
) -> RunResult:
    """Train (or resume), evaluate, probe and log one experiment.

    Everything that can fail on the user's input (config, data, graph shapes, tracking store) fails
    before the MLflow run starts and before the model_dir is written.
    """
    validate(c)
    from layerprobe import estimator as E
    from layerprobe.data.pipeline import check_against_inputs, prepare

    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    output_dir = Path(output_dir)
    exposed = exposed_layers(c)
    data = prepare(c["data"])
    spec = model_spec(c, probe_specs(c, exposed))
    check_against_inputs(data, c["model"]["inputs"], {h.label for h in spec.heads.values()})
    summary = E.dry_run(spec, data, set(exposed))
    all_tags = {**provenance_tags(c, overrides, summary.total_params), **data_tags(data), **(tags or {})}
    from layerprobe import distributed as D

    cluster = D.role()  # in a TF_CONFIG cluster only the chief logs, evaluates, probes and exports
    D.check_cluster(c["trainer"], cluster)
    tracker = open_tracker(c, overrides, all_tags, parent_run_id) if cluster.is_chief else _NoTracking()
    seconds["prepare"] = time.perf_counter() - t0
    model_dir = model_dir_for(c)
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        tracker.log_params(flat_params(c))
        write_run_files(c, summary, data, output_dir)
        tracker.log_datasets(dataset_inputs(c["data"], data))
        tracker.log_artifacts(output_dir / "config", "config")
        tracker.set_tags({"model_dir": str(Path(model_dir).resolve())})
        est = E.make_estimator(spec, model_dir, c["trainer"])
        Path(model_dir).mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        t_cfg = c["trainer"]
        hook = E.ProgressHook(t_cfg["log_every_steps"], t_cfg["train_steps"], flush=tracker.log_metric_records)
        train_fn = E.train_input_fn(data, c["data"], t_cfg["seed"])
        if cluster.in_cluster:
            if cluster.is_chief:
                (Path(model_dir) / "layerprobe_config.yaml").write_text(yaml.safe_dump(dict(c), sort_keys=False))
            D.train_in_cluster(est, train_fn, E.eval_input_fn(data, c["data"]), t_cfg["train_steps"], [hook])
            if not cluster.is_chief:  # a worker or the evaluator (a ps never returns): the chief does the rest
                return RunResult(None, None, model_dir, t_cfg["train_steps"], {}, output_dir=str(output_dir))
            step = int(est.get_variable_value("global_step"))
        else:
            # Parallel sweep jobs with the same training config share the model_dir: one trains, the
            # others wait and then resume from its last checkpoint (nothing left to train).
            with D.model_dir_lock(model_dir):
                (Path(model_dir) / "layerprobe_config.yaml").write_text(yaml.safe_dump(dict(c), sort_keys=False))
                step = E.train(est, train_fn, t_cfg["train_steps"], [hook])
        seconds["train"] = time.perf_counter() - t
        t = time.perf_counter()
        metrics = E.evaluate(est, E.eval_input_fn(data, c["data"]), t_cfg["eval_steps"])
        eval_metrics = {f"eval/{k}": v for k, v in metrics.items() if k != "global_step"}
        tracker.log_metrics(eval_metrics, step=step)
        tracker.set_tags({"layerprobe.checkpoint_sha256": checkpoint_digest(model_dir)})
        seconds["evaluate"] = time.perf_counter() - t
        log.info("evaluated at step %d: %s", step, ", ".join(f"{k} {v:.4f}" for k, v in eval_metrics.items()))
        outcome = ProbeOutcome({}, {})
        if c["probe"]["enabled"] and exposed:
            t = time.perf_counter()
            outcome = probe(est, c, data, summary, exposed, output_dir / "probe")
            seconds["probe"] = time.perf_counter() - t
            log.info("probed %s in %.1fs", ", ".join(exposed), seconds["probe"])
            tracker.log_metrics(outcome.metrics, step=step)
            tracker.log_artifacts(output_dir / "probe", "probe")
        if tracker.run_id:
            t = time.perf_counter()
            export_model(c, model_dir, output_dir, tracker)
            seconds["export"] = time.perf_counter() - t
        seconds["mlflow"] = tracker.seconds
        tracker.__exit__(None, None, None)
    except BaseException as e:
        tracker.__exit__(type(e), e, None)
        raise
    return RunResult(
        tracker.run_id,
        tracker.uri,
        model_dir,
        step,
        eval_metrics,
        outcome.stats,
        outcome.metrics,
        str(output_dir),
        seconds,
        tracker.experiment_id,
    )


def probe_metrics(stats: Mapping[str, Any]) -> dict[str, float]:
    return {f"probe/{n}/{k}": v for n, s in stats.items() for k, v in s.scalars().items()}


def flat_params(c: Mapping[str, Any]) -> dict[str, str]:
    from layerprobe.tracking import flatten

    return flatten(c)


def export_model(c: Mapping[str, Any], model_dir: str, output_dir: Path, tracker: Any) -> None:
    """The trained model as a SavedModel (outputs only, no probe ops) and the Estimator's
    TensorBoard event files, both as run artifacts."""
    import shutil

    from layerprobe import estimator as E

    export_base = output_dir / "saved_model"
    path = E.export_saved_model(model_spec(c), model_dir, str(export_base))
    tracker.log_artifacts(path, "saved_model")
    tb = output_dir / "tensorboard"
    for event in Path(model_dir).rglob("events.out.tfevents.*"):
        dst = tb / event.parent.relative_to(model_dir) / event.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(event, dst)
    if tb.is_dir():
        tracker.log_artifacts(tb, "tensorboard")


@dataclass(frozen=True)
class ProbeOutcome:
    stats: dict[str, Any]  # layer -> LayerStats
    metrics: dict[str, float]  # probe/<layer>/<stat>, linear-probe accuracy included


def probe(
    est: Any,
    c: Mapping[str, Any],
    data: Any,
    summary: Any,
    exposed: Sequence[str],
    out_dir: Path,
    checkpoint_path: str | None = None,
) -> ProbeOutcome:
    """Stream the probe split through the exposed layers; write stats.json, reservoir.npz, plots,
    the representation analysis and the report."""
    from layerprobe import estimator as E
    from layerprobe.probe.accumulate import LayerAccumulator, choose_sample
    from layerprobe.probe.sketch import SketchLayout

    p = c["probe"]
    layout = SketchLayout(p["relative_accuracy"])
    accs = {n: LayerAccumulator(n, layout, p["percentiles"], p["histogram_bins"], p["reservoir_size"]) for n in exposed}
    heads = model_spec(c).heads
    label = next(iter(heads.values())).label
    batch = p.get("batch_size") or c["data"]["batch_size"]
    n = (
        data.splits[p["split"]].size
        if p["max_examples"] is None
        else min(p["max_examples"], data.splits[p["split"]].size)
    )
    sample = choose_sample(n, p["reservoir_size"], p["sample_seed"]) if p["reservoir_size"] else None
    input_fn = E.probe_input_fn(data, p["split"], batch, label, p["max_examples"], sample)
    E.stream_probe(est, input_fn, accs, checkpoint_path)
    stats = E.collect_stats(accs, summary)
    write_probe_files(stats, accs, out_dir, plots=p["plots"])
    metrics = probe_metrics(stats)
    if p["analysis"]:
        metrics.update(analyse(c, stats, accs, summary, out_dir))
    return ProbeOutcome(stats, metrics)


def analyse(
    c: Mapping[str, Any], stats: Mapping[str, Any], accs: Mapping[str, Any], summary: Any, out_dir: Path
) -> dict[str, float]:
    """Linear probes and CKA on the reservoir sample, and the run's HTML report (probe/report.html)."""
    from layerprobe.analysis import analyze, write_report

    samples, keys = {}, {}
    for name, acc in accs.items():
        res = acc.reservoir()
        if res:
            samples[name] = (res["activations"], res.get("labels"))
            keys[name] = res["keys"]
    result = analyze(samples, c["trainer"]["seed"], out_dir, keys=keys) if samples else None
    plots = {n: sorted((out_dir / n).glob("*.png")) for n in stats}
    title = f"layerprobe: {c['model']['name']} on {c['data']['name']}"
    write_report(
        out_dir / "report.html", title, summary.table(), {n: s.scalars() for n, s in stats.items()}, plots, result
    )
    if result is None:
        return {}
    return {
        **{f"probe/{n}/linear_acc": v for n, v in result.linear_acc.items()},
        **{f"probe/{n}/linear_chance": v for n, v in result.chance.items()},
    }


def write_probe_files(stats: Mapping[str, Any], accs: Mapping[str, Any], out_dir: Path, plots: bool) -> None:
    for name, s in stats.items():
        d = out_dir / name
        d.mkdir(parents=True, exist_ok=True)
        (d / "stats.json").write_text(json.dumps(s.to_dict(), indent=1))
        sample = accs[name].reservoir()
        if sample:
            np.savez(d / "reservoir.npz", **sample)
        if plots:
            from layerprobe.probe.plots import layer_plots

            layer_plots(s, d)
    if plots and stats:
        from layerprobe.probe.plots import overview

        overview(stats, out_dir / "overview.png")


def write_run_files(c: Mapping[str, Any], summary: Any, data: Any, output_dir: Path) -> None:
    d = output_dir / "config"
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.yaml").write_text(yaml.safe_dump(dict(c), sort_keys=False))
    (d / "model_summary.txt").write_text(summary.table() + "\n")
    (d / "requirements.txt").write_text(frozen_requirements())
    fitted = {k: np.asarray(v).tolist() for k, v in data.fitted.items()}
    (d / "data.json").write_text(
        json.dumps({"name": data.name, "sizes": data.sizes(), "sha256": data.digest, "fitted": fitted}, indent=1)
    )


def readable_run_name(overrides: Sequence[str]) -> str:
    """`model.layers.conv1.filters=32` -> `conv1.filters=32`; joined with commas."""
    parts = []
    for o in overrides:
        if o.startswith(("hydra.", "tracking.", "+hydra")) or "=" not in o:
            continue
        key, _, value = o.lstrip("+~").partition("=")
        parts.append(".".join(key.split(".")[-2:]) + "=" + value)
    return ",".join(parts)[:200]
