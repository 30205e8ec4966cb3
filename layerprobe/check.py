"""`layerprobe check`: run the named experiments and compare them with their baselines.

An experiment `experiments/<name>.yaml` has its baseline beside it, `experiments/<name>.baseline.yaml`:

    ci_overrides: [trainer.train_steps=300]      # the CI budget variant (optional)
    metrics:
      eval/accuracy: {value: 0.97, tolerance: 0.02}

A metric passes when |got - value| <= tolerance. `--update` rewrites the values from this run
(tolerances are kept), deliberately.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from layerprobe.config import EXPERIMENTS_DIR
from layerprobe.errors import ConfigError, LayerprobeError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Row:
    experiment: str
    metric: str
    baseline: float
    got: float | None
    tolerance: float

    @property
    def passed(self) -> bool:
        return self.got is not None and abs(self.got - self.baseline) <= self.tolerance


def experiment_names() -> list[str]:
    return sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.yaml") if not p.name.endswith(".baseline.yaml"))


def baseline_path(name: str) -> Path:
    return EXPERIMENTS_DIR / f"{name}.baseline.yaml"


def load_baseline(name: str) -> dict[str, Any]:
    path = baseline_path(name)
    if not path.is_file():
        raise LayerprobeError(f"experiment {name!r} has no baseline: create {path} (or run check --update)")
    data = yaml.safe_load(path.read_text()) or {}
    for key, spec in (data.get("metrics") or {}).items():
        if not isinstance(spec, dict) or not {"value", "tolerance"} <= set(spec):
            raise ConfigError(f"{path.name}:metrics.{key}", spec, "give {value: <number>, tolerance: <number>}")
    return data


def run_experiment(name: str, baseline: dict[str, Any], out_root: Path, ci: bool) -> dict[str, float]:
    from omegaconf import OmegaConf

    from layerprobe.config import compose
    from layerprobe.runner import run

    out = out_root / name
    shutil.rmtree(out, ignore_errors=True)  # train from scratch: a check that resumed would prove nothing
    overrides = [f"experiments={name}", *(baseline.get("ci_overrides") or [] if ci else [])]
    overrides += [f"trainer.model_dir={out / 'model'}", "tracking.experiment_name=layerprobe-check"]
    c = OmegaConf.to_container(compose(overrides), resolve=True)
    result = run(c, out, overrides, tags={"layerprobe.check": name})  # type: ignore[arg-type]
    return {**result.eval_metrics, **result.probe_metrics}


def check(names: Sequence[str] | None, out_root: Path, ci: bool = True, update: bool = False) -> list[Row]:
    names = list(names or experiment_names())
    known = experiment_names()
    for n in names:
        if n not in known:
            raise ConfigError("check", n, "unknown experiment", known)
    rows: list[Row] = []
    for name in names:
        baseline = load_baseline(name) if baseline_path(name).is_file() or not update else {"metrics": {}}
        log.info("check: running experiment %s", name)
        got = run_experiment(name, baseline, out_root, ci)
        metrics = baseline.get("metrics") or {}
        if update:
            metrics = {
                k: {"value": round(got[k], 6), "tolerance": v["tolerance"]} for k, v in metrics.items() if k in got
            }
            if not metrics:  # a new baseline: the headline eval metrics, with a first guess of tolerance
                metrics = {
                    k: {"value": round(v, 6), "tolerance": 0.02}
                    for k, v in got.items()
                    if k.startswith("eval/") and k != "eval/loss"
                }
            baseline["metrics"] = metrics
            _write_baseline(name, baseline)
        rows += [Row(name, k, float(v["value"]), got.get(k), float(v["tolerance"])) for k, v in metrics.items()]
    return rows


def _write_baseline(name: str, baseline: dict[str, Any]) -> None:
    path = baseline_path(name)
    header = (
        f"# Baseline of experiments/{name}.yaml for `layerprobe check` (rewrite: `layerprobe check --update {name}`).\n"
    )
    path.write_text(header + yaml.safe_dump(baseline, sort_keys=False))


def table(rows: Sequence[Row]) -> str:
    head = ("experiment", "metric", "baseline", "got", "tolerance", "result")
    body = [
        (
            r.experiment,
            r.metric,
            f"{r.baseline:.4f}",
            "missing" if r.got is None else f"{r.got:.4f}",
            f"{r.tolerance:g}",
            "pass" if r.passed else "FAIL",
        )
        for r in rows
    ]
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(fmt.format(*x) for x in [head, *body])
