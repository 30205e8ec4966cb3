"""The files a run writes beside its MLflow run: config, probe statistics, plots, report, model."""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from layerprobe.config.loaded import Config
from layerprobe.probe.session import ProbeState
from layerprobe.provenance import frozen_requirements


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
    write_report(out_dir / "report.html", title, summary.table(), scalars, plots, result, **report)
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


def export_model(engine: Any, output_dir: Path, tracker: Any, checkpoint: str | None = None) -> None:
    """The trained model as a SavedModel (outputs only, no probe ops) and the engine's TensorBoard
    event files, both as run artifacts."""
    path = engine.export(str(output_dir / "saved_model"), checkpoint)
    tracker.log_artifacts(path, "saved_model")
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
        if context.get("overrides") not in (None, "", "(defaults)"):
            title += f": {context['overrides']}"
    return title
