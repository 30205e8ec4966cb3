"""Representations across runs: linear CKA of the same-named layer between MLflow runs.

Each run's `probe/<layer>/reservoir.npz` holds raw activations of the same sampled examples when
the runs share the data split and `probe.sample_seed` (trainer seeds and widths may differ); the
examples are aligned by their index in the split, and only the examples every run holds are used.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

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
