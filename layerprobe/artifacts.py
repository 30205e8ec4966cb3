"""The files a run writes beside its MLflow run: config, probe statistics, plots, report, model."""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from layerprobe.config.loaded import Config
from layerprobe.probe.session import ProbeState
from layerprobe.provenance import frozen_requirements, shaping_overrides

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProbeOutcome:
    stats: dict[str, Any]  # layer -> LayerStats
    metrics: dict[str, float]  # probe/<layer>/<stat>, linear-probe accuracy included


def probe_metrics(stats: Mapping[str, Any]) -> dict[str, float]:
    return {f"probe/{n}/{k}": v for n, s in stats.items() for k, v in s.scalars().items()}


def probe_outcome(
    c: Config, state: ProbeState, summary: Any, out_dir: Path, report: Mapping[str, Any] | None = None
) -> ProbeOutcome:
    """Statistics of a probe pass: stats.json, reservoir.npz, plots, representation analysis, report
    (`report`: extra keyword arguments of analysis.write_report, e.g. the run's context, dynamics)."""
    stats = state.stats(summary)
    write_probe_files(stats, state.layers, out_dir, plots=c.probe.plots)
    metrics = probe_metrics(stats)
    if c.probe.analysis:
        metrics.update(analyse(c, stats, state.layers, summary, out_dir, report or {}))
    return ProbeOutcome(stats, metrics)


def analyse(
    c: Config,
    stats: Mapping[str, Any],
    accs: Mapping[str, Any],
    summary: Any,
    out_dir: Path,
    report: Mapping[str, Any] = {},
) -> dict[str, float]:
    """Linear probes and CKA on the reservoir sample, and the run's HTML report (probe/report.html)."""
    from layerprobe.analysis import analyze, write_report

    samples, keys = {}, {}
    for name, acc in accs.items():
        res = acc.reservoir()
        if res:
            samples[name] = (res["activations"], res.get("labels"))
            keys[name] = res["keys"]
    result = (
        analyze(samples, c.trainer.seed, out_dir, keys=keys, reservoir_size=c.probe.reservoir_size) if samples else None
    )
    plots = {n: sorted((out_dir / n).glob("*.png")) for n in stats}
    title = report_title(c, report.get("context") or {})
    scalars = {n: s.scalars() for n, s in stats.items()}
    order = [r.name for r in summary.rows]
    write_report(out_dir / "report.html", title, summary.table(), scalars, plots, result, **report, order=order)
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


def write_run_files(c: Config, summary: Any, data: Any, output_dir: Path) -> None:
    """config/: the config as written (block instances as declared), the layer table, the pins, the data's facts."""
    d = output_dir / "config"
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.yaml").write_text(yaml.safe_dump(dict(c.written), sort_keys=False))
    (d / "model_summary.txt").write_text(summary.table() + "\n")
    (d / "requirements.txt").write_text(frozen_requirements())
    fitted = {k: np.asarray(v).tolist() for k, v in data.fitted.items()}
    (d / "data.json").write_text(
        json.dumps({"name": data.name, "sizes": data.sizes(), "sha256": data.digest, "fitted": fitted}, indent=1)
    )


INPUT_EXAMPLES = 3  # examples of the probe split in the logged model's input example


def export_model(
    c: Config,
    x: Any,
    output_dir: Path,
    tracker: Any,
    step: int,
    eval_metrics: Mapping[str, float],
    checkpoint: str | None = None,
    register: str | None = None,
) -> None:
    """The trained model of experiment `x` as a SavedModel (outputs only, no probe ops) and the
    engine's TensorBoard event files, both as run artifacts; with tracking.log_model, the SavedModel
    also as the run's MLflow Model (its input example: the first examples of the probe split as the
    model sees them, data.transforms applied), `eval_metrics` linked to it, registered as a new
    version of `register` when given."""
    engine = x.engine
    path = engine.export(str(output_dir / "saved_model"), checkpoint)
    tracker.log_artifacts(path, "saved_model")
    from layerprobe._tf import tf

    if c.tracking.log_model and not tf.executing_eagerly():
        # trainer.distribute=parameter_server turned eager execution off for the process: the input
        # example cannot be read nor the SavedModel loaded to sign it. The SavedModel files are logged.
        log.warning("the MLflow Model is not logged: eager execution is off (trainer.distribute=parameter_server)")
    elif c.tracking.log_model:
        first = x.data.tf_dataset(
            c.probe.split, training=False, batch_size=INPUT_EXAMPLES, seed=0, max_examples=INPUT_EXAMPLES, cache=False
        )
        features = next(iter(first))[0]
        examples = {n: features[n].numpy() for n in c.model.inputs}  # (examples, *input shape) each
        from layerprobe.tracking.models import predictions

        answers = predictions(path, examples)  # the signature's outputs: TensorFlow's work, not a store's
        start = time.perf_counter()
        logged = tracker.log_model(path, examples, eval_metrics, step, register, answers)
        if logged:
            also = f", registered as {logged.registered}" if logged.registered else ""
            log.info("logged the MLflow Model %s%s in %.1fs", logged.uri, also, time.perf_counter() - start)
    tb = output_dir / "tensorboard"
    for event in map(Path, engine.event_files()):
        dst = tb / event.parent.relative_to(engine.model_dir) / event.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(event, dst)
    if tb.is_dir():
        tracker.log_artifacts(tb, "tensorboard")


def report_title(c: Config, context: Mapping[str, str]) -> str:
    """`layerprobe: digits_cnn on digits, step 1000: model.layers.conv1.filters=16`: which run a
    report is (its step, and what it overrode when it overrode anything)."""
    title = f"layerprobe: {c.model.name} on {c.data.name}"
    if context:
        title += f", step {context.get('step', '?')}"
        shown = shaping_overrides(context.get("overrides", "").split())  # not where it logged
        if shown:
            title += f": {' '.join(shown)}"
    return title


def run_context(run_id: str | None, overrides: str, step: int, eval_metrics: Mapping[str, float]) -> dict[str, str]:
    """The header of a run's report: which run, what it overrode, the step and its eval metrics."""
    context = {"run id": run_id or "(not tracked)", "overrides": overrides or "(defaults)", "step": str(step)}
    return context | {k: f"{v:.4g}" for k, v in eval_metrics.items()}


def earlier_report(uri: str, run_id: str, step: int, layers: Sequence[str], dst: Path) -> dict[str, Any]:
    """What a re-probe of `layers` at `step` keeps of run `run_id`'s report (keyword arguments of
    analysis.write_report): the run's header, its training dynamics (probe/dynamics/dynamics.json and
    PNGs) and the sections of every layer it probed before that this probe leaves out (their
    stats.json and PNGs). Files are downloaded into `dst`, which must outlive the report's writing."""
    from layerprobe import tracking
    from layerprobe.analysis.report import KeptLayer, dynamics_section
    from layerprobe.probe.accumulate import LayerStats

    data = tracking.run_data(uri, run_id)
    evals = {k: v for k, v in data.metrics.items() if k.startswith("eval/")}
    context = run_context(run_id, data.tags.get("layerprobe.overrides", ""), step, evals)
    report: dict[str, Any] = {"context": context | {"re-probed": ", ".join(layers)}}
    earlier = [n for n, is_dir in tracking.list_artifacts(uri, run_id, "probe").items() if is_dir]
    if "dynamics" in earlier:
        d = tracking.download_artifact(uri, run_id, "probe/dynamics", dst)
        if (d / "dynamics.json").is_file():
            with _unreadable_left_out(d / "dynamics.json"):
                report["dynamics"] = dynamics_section(json.loads((d / "dynamics.json").read_text()), d)
    points = tracking.latest_metric_points(uri, run_id)
    kept = {}
    for name in (n for n in earlier if n != "dynamics" and n not in layers):
        files = tracking.list_artifacts(uri, run_id, f"probe/{name}")
        if "stats.json" not in files:
            continue
        wanted = ["stats.json", *sorted(f for f in files if f.endswith(".png"))]  # not the reservoir
        got = [tracking.download_artifact(uri, run_id, f"probe/{name}/{f}", dst / name) for f in wanted]
        with _unreadable_left_out(got[0]):
            stats = LayerStats(**json.loads(got[0].read_text())).scalars()
            at = f" at step {points[f'probe/{name}/mean'][0]}" if f"probe/{name}/mean" in points else ""
            note = f"not re-probed: this section is the run's earlier probe of {name}{at}"
            kept[name] = KeptLayer(stats, got[1:], note)
    if kept:
        report["kept"] = kept
    return report


@contextlib.contextmanager
def _unreadable_left_out(path: Path) -> Iterator[None]:
    """A file of the run's earlier report that this version cannot read (written by another version)
    is left out of the new report with a warning: the re-probe itself goes on."""
    try:
        yield
    except (KeyError, TypeError, ValueError) as e:
        log.warning("report: %s of the run's earlier probe left out (%s: %s)", path.name, type(e).__name__, e)
