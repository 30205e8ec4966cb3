"""`layerprobe check`: run the named experiments and compare them with their baselines.

An experiment `experiments/<name>.yaml` has its baseline beside it, `experiments/<name>.baseline.yaml`:

    ci_overrides: [trainer.train_steps=300]      # the CI budget variant (optional)
    metrics:                                     # the default engine's values; every engine shares them
      eval/accuracy: {value: 0.97, tolerance: 0.02}
      probe/conv1/zero_fraction: {value: 0.40, tolerance: 0.02}
    engines:                                     # optional: what one engine reads differently
      keras:
        metrics:
          probe/conv1/zero_fraction: {value: 0.46}   # value and/or tolerance; a new metric needs both
        skip: "why this engine cannot run it"        # optional: the gate prints the reason and skips it

A metric passes when |got - value| <= tolerance. `--engine keras` composes `trainer.engine=keras` into
each run and reads the shared `metrics` overlaid with `engines.keras.metrics`: headline metrics
(accuracy, MAE) are shared when both engines meet them; statistics that depend on the initial weights
(each engine's Keras draws its own) get engine-specific values. `--update` rewrites the values this
engine reads from its own block (tolerances are kept), deliberately: on the default engine the shared
values too, on any other engine only its `engines.<name>` values. Which metrics are engine-specific is
declared, never inferred: to give an engine its own value of a shared metric, add the metric under
`engines.<name>.metrics` (e.g. `{value: 0}`) and run `check --update --engine <name> <experiment>`.
"""

from __future__ import annotations

import copy
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from layerprobe.config import EXPERIMENTS_DIR
from layerprobe.config.names import ENGINES
from layerprobe.errors import ConfigError, LayerprobeError
from layerprobe.schema import TrainerConfig

log = logging.getLogger(__name__)

DEFAULT_ENGINE: str = TrainerConfig.engine  # the engine whose values are the shared `metrics`
BASELINE_SUFFIX = ".baseline.yaml"


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


@dataclass(frozen=True)
class Gate:
    """One gate run: the compared metrics, and the experiments this engine skips (name -> reason)."""

    engine: str
    rows: list[Row]
    skipped: dict[str, str]

    @property
    def failed(self) -> list[Row]:
        return [r for r in self.rows if not r.passed]


def experiment_names() -> list[str]:
    return sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.yaml") if not p.name.endswith(BASELINE_SUFFIX))


def baseline_path(name: str) -> Path:
    return EXPERIMENTS_DIR / f"{name}{BASELINE_SUFFIX}"


def check_engine(engine: str) -> str:
    if engine not in ENGINES:
        raise ConfigError("check --engine", engine, "unknown engine", ENGINES)
    return engine


def load_baseline(name: str) -> dict[str, Any]:
    path = baseline_path(name)
    if not path.is_file():
        raise LayerprobeError(f"experiment {name!r} has no baseline: create {path} (or run check --update)")
    data = yaml.safe_load(path.read_text()) or {}
    _check_metrics(f"{path.name}:metrics", data.get("metrics"), {"value", "tolerance"})
    engines = data.get("engines") or {}
    if not isinstance(engines, dict):
        raise ConfigError(f"{path.name}:engines", engines, "give {<engine>: {metrics: {...}, skip: <reason>}}")
    for engine, block in engines.items():
        where = f"{path.name}:engines.{engine}"
        if engine not in ENGINES:
            raise ConfigError(f"{path.name}:engines", engine, "unknown engine", ENGINES)
        if not isinstance(block, dict) or not set(block) <= {"metrics", "skip"}:
            raise ConfigError(where, block, "give {metrics: {...}} and/or {skip: <reason>}")
        if "skip" in block and not (isinstance(block["skip"], str) and block["skip"].strip()):
            raise ConfigError(f"{where}.skip", block["skip"], "give the reason this engine skips it, as text")
        shared = set(data.get("metrics") or {})
        for key, spec in (block.get("metrics") or {}).items():
            needs = set() if key in shared else {"value", "tolerance"}  # a shared metric: override either
            _check_metrics(f"{where}.metrics", {key: spec}, needs)
    return data


def _check_metrics(where: str, metrics: Any, needs: set[str]) -> None:
    if not isinstance(metrics or {}, dict):
        raise ConfigError(where, metrics, "give {<metric>: {value: <number>, tolerance: <number>}}")
    for key, spec in (metrics or {}).items():
        if not isinstance(spec, dict) or not needs <= set(spec) or not set(spec) <= {"value", "tolerance"}:
            raise ConfigError(f"{where}.{key}", spec, "give {value: <number>, tolerance: <number>}")


def engine_block(baseline: dict[str, Any], engine: str) -> dict[str, Any]:
    return (baseline.get("engines") or {}).get(engine) or {}


def engine_metrics(baseline: dict[str, Any], engine: str) -> dict[str, dict[str, float]]:
    """The metrics `engine` is held to: the shared ones, each overlaid with the engine's own entry."""
    own = engine_block(baseline, engine).get("metrics") or {}
    shared = baseline.get("metrics") or {}
    return {k: {**shared.get(k, {}), **own.get(k, {})} for k in [*shared, *(k for k in own if k not in shared)]}


def updated(baseline: dict[str, Any], engine: str, got: dict[str, float]) -> dict[str, Any]:
    """`baseline` with the values `engine` owns rewritten from `got` (tolerances kept): its
    `engines.<engine>` values and, on the default engine, the shared ones. Metrics this run did not
    give are dropped; a baseline left without metrics gets the headline eval metrics with a first
    guess of tolerance."""
    new = copy.deepcopy(baseline)
    engines = new.pop("engines", None) or {}
    block = engines.setdefault(engine, {})
    own = {k: v for k, v in (block.get("metrics") or {}).items() if k in got}
    for k, v in own.items():
        if "value" in v:
            v["value"] = round(got[k], 6)
    if engine == DEFAULT_ENGINE:
        new["metrics"] = {k: v for k, v in (new.get("metrics") or {}).items() if k in got}
        for k, v in new["metrics"].items():
            if "value" not in own.get(k, {}):
                v["value"] = round(got[k], 6)
    block["metrics"] = own
    if not engine_metrics({**new, "engines": engines}, engine):
        first = {k: {"value": round(v, 6), "tolerance": 0.02} for k, v in got.items() if _headline(k)}
        (new if engine == DEFAULT_ENGINE else block)["metrics"] = first
    if not block["metrics"]:
        del block["metrics"]
    engines = {k: v for k, v in engines.items() if v}
    return {**new, "engines": engines} if engines else new


def _headline(key: str) -> bool:
    return key.startswith("eval/") and key != "eval/loss"


def run_experiment(name: str, baseline: dict[str, Any], out_root: Path, ci: bool, engine: str) -> dict[str, float]:
    from layerprobe.config import compose
    from layerprobe.config.loaded import load
    from layerprobe.runner import run

    out = out_root / engine / name
    shutil.rmtree(out, ignore_errors=True)  # train from scratch: a check that resumed would prove nothing
    overrides = [f"experiments={name}", f"trainer.engine={engine}"]
    overrides += baseline.get("ci_overrides") or [] if ci else []
    overrides += [f"trainer.model_dir={out / 'model'}", "tracking.experiment_name=layerprobe-check"]
    result = run(load(compose(overrides)), out, overrides, tags={"layerprobe.check": name})
    return {**result.eval_metrics, **result.probe_metrics}


def check(
    names: Sequence[str] | None,
    out_root: Path,
    ci: bool = True,
    update: bool = False,
    engine: str = DEFAULT_ENGINE,
) -> Gate:
    """Run each experiment (default: all) on `engine` and compare it with the baseline that engine reads."""
    engine = check_engine(engine)
    names = list(names or experiment_names())
    known = experiment_names()
    for n in names:
        if n not in known:
            raise ConfigError("check", n, "unknown experiment", known)
    # every baseline read before anything runs: a malformed one stops the gate before it trains or writes
    baselines = {n: load_baseline(n) if baseline_path(n).is_file() or not update else {} for n in names}
    gate = Gate(engine, [], {})
    for name, baseline in baselines.items():
        if reason := engine_block(baseline, engine).get("skip"):
            log.warning("check: %s skipped on the %s engine: %s", name, engine, reason)
            gate.skipped[name] = reason
            continue
        log.info("check: running experiment %s on the %s engine", name, engine)
        got = run_experiment(name, baseline, out_root, ci, engine)
        if update:
            baseline = updated(baseline, engine, got)
            _write_baseline(name, baseline)
        metrics = engine_metrics(baseline, engine)
        gate.rows.extend(Row(name, k, float(v["value"]), got.get(k), float(v["tolerance"])) for k, v in metrics.items())
    return gate


def _write_baseline(name: str, baseline: dict[str, Any]) -> None:
    path = baseline_path(name)
    header = (
        f"# Baseline of experiments/{name}.yaml for `layerprobe check` (rewrite: `layerprobe check --update {name}`;\n"
        f"# an engine's own values, engines.<engine>: `layerprobe check --update --engine <engine> {name}`).\n"
    )
    path.write_text(header + yaml.safe_dump(baseline, sort_keys=False))


def table(gate: Gate) -> str:
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
        for r in gate.rows
    ]
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    skipped = [f"{name}: skipped on the {gate.engine} engine: {reason}" for name, reason in gate.skipped.items()]
    return "\n".join([*(fmt.format(*x).rstrip() for x in [head, *body]), *skipped])
