"""One entry point: linear probes and CKA over a run's sampled activations, written as JSON and PNG."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from layerprobe.analysis.cka import cka_matrix
from layerprobe.analysis.features import Pool, finite
from layerprobe.analysis.linear_probe import ProbeScore, linear_probe

log = logging.getLogger(__name__)

MAX_EXAMPLES = 2048  # CKA keeps (examples, examples) float64 Gram matrices of wide layers: 32 MiB each
MIN_RELIABLE = 200  # below this the held-out part is a few dozen examples and accuracy is noisy

Sample = tuple[np.ndarray, Optional[np.ndarray]]  # (activations (examples, ...), labels (examples,) or None)


@dataclass(frozen=True)
class AnalysisResult:
    """Per-layer linear-probe scores and the layer-by-layer CKA matrix of one run."""

    layers: tuple[str, ...]  # model order; rows and columns of `cka`
    linear_acc: dict[str, float]  # layer -> held-out accuracy (probed layers only)
    chance: dict[str, float]  # layer -> majority-class accuracy on the same held-out part
    probes: dict[str, ProbeScore]
    cka: np.ndarray | None  # (layers, layers); None when the layers' samples are not the same examples
    examples: int  # sampled examples per layer after the cap
    notes: dict[str, str] = field(default_factory=dict)  # layer or "cka" -> why it was skipped
    files: dict[str, Path] = field(default_factory=dict)  # "cka.json", "cka.png", "linear_probe.png", ...


def analyze(
    samples: Mapping[str, Sample],
    seed: int,
    out_dir: Path,
    keys: Mapping[str, np.ndarray] | None = None,
    max_examples: int = MAX_EXAMPLES,
    pool: Pool = "mean",
    reservoir_size: int | None = None,
) -> AnalysisResult:
    """Probe every layer and compare every pair; write out_dir/analysis/{cka,linear_probe}.{json,png}.

    samples: layer -> (activations, labels) in model order, e.g. from probe/<layer>/reservoir.npz.
    reservoir_size: the probe's reservoir (probe.reservoir_size), so that advice about a small sample
    names what would help: a larger reservoir, or (the split is smaller than it) a larger split.
    keys: layer -> reservoir keys; when given, CKA runs only if every layer sampled the same
    examples (same keys), because reservoirs drawn with different seeds hold different examples.
    """
    if not samples:
        raise ValueError("analyze needs at least one layer's sample. Received: none")
    if max_examples < 2:
        raise ValueError(f"max_examples must be >= 2. Received: max_examples={max_examples}")
    capped = {name: _cap(name, acts, labels, seed, max_examples) for name, (acts, labels) in samples.items()}
    layers = tuple(capped)
    notes: dict[str, str] = {}
    probes: dict[str, ProbeScore] = {}
    for name, (acts, labels) in capped.items():
        if labels is None:
            notes[name] = "no labels in the sample"
            continue
        try:
            probes[name] = linear_probe(acts, labels, seed, pool=pool)
        except ValueError as e:
            notes[name] = f"linear probe skipped: {e}"
            log.warning("layer %r: %s", name, notes[name])
    fewest = min(len(a) for a, _ in capped.values())
    if probes and fewest < MIN_RELIABLE:
        if reservoir_size is not None and fewest < reservoir_size:  # the split holds no more: advice that helps
            log.warning(
                "linear probes use the %d examples the probe split holds (fewer than %d): their accuracies are "
                "rough; probe a larger split (probe.split, data.splits.eval_fraction)",
                fewest,
                MIN_RELIABLE,
            )
        else:
            log.warning("linear probes use fewer than %d sampled examples; raise probe.reservoir_size", MIN_RELIABLE)
    cka = None
    reason = _misaligned(capped, keys)
    if reason:
        notes["cka"] = f"CKA skipped: {reason}"
        log.warning(notes["cka"])
    else:
        cka = cka_matrix({n: a for n, (a, _) in capped.items()}).values
    examples = len(next(iter(capped.values()))[0])
    files = _write(out_dir / "analysis", layers, probes, cka, examples)
    return AnalysisResult(
        layers=layers,
        linear_acc={n: s.accuracy for n, s in probes.items()},
        chance={n: s.chance for n, s in probes.items()},
        probes=probes,
        cka=cka,
        examples=examples,
        notes=notes,
        files=files,
    )


def _cap(name: str, acts: Any, labels: Any, seed: int, limit: int) -> Sample:
    """Finite activations, at most `limit` examples; the subset depends only on (seed, n), so aligned
    layers keep the same examples."""
    a = finite(np.asarray(acts), name)
    y = None if labels is None else np.asarray(labels)
    if a.ndim == 0:
        raise ValueError(f"activations of layer {name!r} must have an examples axis. Received: a scalar")
    if y is not None and len(y) != len(a):
        raise ValueError(f"layer {name!r}: {len(a)} activations but {len(y)} labels")
    if len(a) > limit:
        keep = np.sort(np.random.default_rng(seed).choice(len(a), size=limit, replace=False))
        a, y = a[keep], None if y is None else y[keep]
    return a, y


def _misaligned(capped: Mapping[str, Sample], keys: Mapping[str, np.ndarray] | None) -> str:
    """Why the layers' samples cannot be the same examples in the same order, or '' if they may be."""
    sizes = {n: len(a) for n, (a, _) in capped.items()}
    if len(set(sizes.values())) > 1:
        return f"layers sampled different numbers of examples {sizes}"
    labelled = [(n, y) for n, (_, y) in capped.items() if y is not None]
    for n, y in labelled[1:]:
        if not np.array_equal(y, labelled[0][1]):
            return f"labels of {n!r} and {labelled[0][0]!r} differ, so their samples hold different examples"
    if keys:
        names = list(keys)
        for n in names[1:]:
            if not np.array_equal(np.asarray(keys[n]), np.asarray(keys[names[0]])):
                return (
                    f"reservoir keys of {n!r} and {names[0]!r} differ: the layers were sampled with different "
                    "seeds; use one reservoir seed for all layers"
                )
    return ""


def _write(
    d: Path, layers: tuple[str, ...], probes: Mapping[str, ProbeScore], cka: np.ndarray | None, examples: int
) -> dict[str, Path]:
    # matplotlib (~0.5 s to import) only here, where a figure is drawn: the dynamics points' linear
    # probes and CKA import this package and draw nothing.
    from layerprobe.analysis.plots import cka_heatmap, probe_plot

    d.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    if probes:
        scores = {n: asdict(s) for n, s in probes.items()}
        files["linear_probe.json"] = d / "linear_probe.json"
        files["linear_probe.json"].write_text(json.dumps(_json_safe(scores), indent=1))
        files["linear_probe.png"] = probe_plot(probes, d / "linear_probe.png")
    if cka is not None:
        rows = [[None if math.isnan(v) else float(v) for v in row] for row in cka]
        files["cka.json"] = d / "cka.json"
        files["cka.json"].write_text(json.dumps({"layers": list(layers), "examples": examples, "cka": rows}, indent=1))
        files["cka.png"] = cka_heatmap(layers, cka, d / "cka.png", title=f"linear CKA between layers (n={examples})")
    return files


def _json_safe(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x
