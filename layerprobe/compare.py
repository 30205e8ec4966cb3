"""Runs compared layer by layer: linear CKA of the same-named layer between MLflow runs, and the
compare report (statistics side by side, histograms and dynamics overlaid, probes by depth).

Each run's `probe/<layer>/reservoir.npz` holds raw activations of the same sampled examples when
the runs share the data split and `probe.sample_seed` (trainer seeds and widths may differ); the
examples are aligned by their index in the split, and only the examples every run holds are used.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from layerprobe.errors import LayerprobeError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunComparison:
    layer: str
    runs: tuple[str, ...]  # run names (ids where unnamed), matrix order
    run_ids: tuple[str, ...]
    cka: np.ndarray
    examples: int
    files: tuple[Path, ...]


def _aligned(samples: dict[str, dict[str, np.ndarray]]) -> tuple[dict[str, np.ndarray], int]:
    common = None
    for s in samples.values():
        keys = set(s["keys"].tolist())
        common = keys if common is None else common & keys
    order = np.array(sorted(common or []), dtype=np.int64)
    if len(order) < 3:
        raise LayerprobeError(
            f"the runs share only {len(order)} probed examples: compare runs with the same data split "
            "and probe.sample_seed"
        )
    out = {}
    for name, s in samples.items():
        pos = {int(k): i for i, k in enumerate(s["keys"])}
        out[name] = s["activations"][[pos[int(k)] for k in order]]
    return out, len(order)


def compare_runs(
    uri: str, run_ids: Sequence[str], layer: str, out_dir: Path, log_to: str | None = None
) -> RunComparison:
    """CKA matrix of `layer` across `run_ids`: cka_across.json and cka_across.png, optionally logged
    to run `log_to` (a sweep's parent) under `compare/<layer>/`."""
    from layerprobe import tracking
    from layerprobe.analysis import cka_matrix
    from layerprobe.analysis.plots import cka_heatmap

    samples: dict[str, dict[str, np.ndarray]] = {}
    names, ids = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for run_id in run_ids:
            data = tracking.run_info(uri, run_id)
            name = data.get("run_name") or run_id[:8]
            if name in samples:
                name = f"{name} ({run_id[:8]})"
            try:
                path = tracking.download_artifact(uri, run_id, f"probe/{layer}/reservoir.npz", Path(tmp) / run_id)
            except Exception as e:  # noqa: BLE001 - any store error means the same thing here
                raise LayerprobeError(f"run {run_id} has no probe/{layer}/reservoir.npz ({type(e).__name__})") from None
            with np.load(path, allow_pickle=False) as f:
                samples[name] = {"keys": f["keys"], "activations": f["activations"]}
            names.append(name)
            ids.append(run_id)
    aligned, n = _aligned(samples)
    matrix = cka_matrix(aligned)  # one layer across runs: the same examples in the same order
    out = Path(out_dir) / "compare" / layer
    out.mkdir(parents=True, exist_ok=True)
    (out / "cka_across.json").write_text(json.dumps({**matrix.to_dict(), "run_ids": ids, "examples": n}, indent=1))
    png = cka_heatmap(
        list(matrix.names),
        matrix.values,
        out / "cka_across.png",
        title=f"linear CKA of {layer} across runs ({n} examples)",
        axis_label="run",
    )
    if log_to:
        tracking.Tracker(uri, "", None, run_id=log_to).log_artifacts(out, f"compare/{layer}")
    return RunComparison(layer, tuple(names), tuple(ids), matrix.values, n, (out / "cka_across.json", png))


def compare_report(
    uri: str, run_ids: Sequence[str], out_dir: Path, layers: Sequence[str] | None = None, log_to: str | None = None
) -> Path:
    """`<out_dir>/compare/report.html` for `run_ids`, every exposed layer (or `layers`); logged to run
    `log_to` (a sweep's parent) under `compare/` with the CKA files."""
    from layerprobe import tracking
    from layerprobe.analysis.compare_report import compare_title, write_compare_report

    runs = [_run_view(uri, r) for r in run_ids]
    names = list(layers or dict.fromkeys(n for r in runs for n in r.stats))
    cka: dict[str, Path | str] = {}
    for layer in names:
        try:
            cka[layer] = compare_runs(uri, run_ids, layer, out_dir).files[1]
        except LayerprobeError as e:  # e.g. a run kept no reservoir of this layer
            cka[layer] = str(e)
    _unique_names(runs)
    title = compare_title(runs, names)
    path = write_compare_report(Path(out_dir) / "compare" / "report.html", runs, names, cka, title)
    if log_to:
        tracking.Tracker(uri, "", None, run_id=log_to).log_artifact(path, "compare")
    log.info("compare report: %s", path)
    return path


def _run_view(uri: str, run_id: str) -> Any:
    from layerprobe import tracking
    from layerprobe.analysis.compare_report import RunView
    from layerprobe.provenance import run_checkpoint

    data = tracking.run_data(uri, run_id)
    points = tracking.latest_metric_points(uri, run_id)
    exposed = [n for n in data.tags.get("layerprobe.exposed", "").split(",") if n]
    stats = {n: s for n in exposed if (s := _json_artifact(uri, run_id, f"probe/{n}/stats.json")) is not None}
    return RunView(
        run_id=run_id,
        name=tracking.run_info(uri, run_id).get("run_name") or run_id[:8],
        overrides=data.tags.get("layerprobe.overrides", ""),
        step=run_checkpoint(data.tags, points).step or 0,  # what its stats and reservoirs were probed at
        metrics=dict(data.metrics),
        stats=stats,
        dynamics=_json_artifact(uri, run_id, "probe/dynamics/dynamics.json"),
        model=data.params.get("model.name", ""),
        data=data.params.get("data.name", ""),
    )


def _json_artifact(uri: str, run_id: str, path: str) -> Any:
    """The run's JSON artifact at `path`, None when it has none."""
    from layerprobe import tracking

    with tempfile.TemporaryDirectory() as tmp:
        try:
            return json.loads(tracking.download_artifact(uri, run_id, path, tmp).read_text())
        except Exception:  # noqa: BLE001 - absent, in any store's words
            return None


def _unique_names(runs: list[Any]) -> None:
    seen: set[str] = set()
    for i, r in enumerate(runs):
        if r.name in seen:
            runs[i] = dataclasses.replace(r, name=f"{r.name} ({r.run_id[:8]})")
        seen.add(runs[i].name)
