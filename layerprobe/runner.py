"""One experiment, start to end: config -> data source -> engine (train, evaluate) -> probe session
-> analysis -> tracking."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from layerprobe.artifacts import ProbeOutcome, export_model, probe_outcome, run_context, write_run_files
from layerprobe.config.loaded import Config, load
from layerprobe.dynamics import ledger
from layerprobe.dynamics.cadence import snapshot_steps
from layerprobe.dynamics.trace import after_training, report_section
from layerprobe.engines.base import EvaluationCallback
from layerprobe.errors import LayerprobeError
from layerprobe.experiment import Experiment, model_dir_for
from layerprobe.preflight import preflight
from layerprobe.provenance import checkpoint_tags, data_tags, dataset_inputs, provenance_tags, shaping_overrides

log = logging.getLogger(__name__)
MODEL_DIR_CONFIG = "layerprobe_config.yaml"  # written into every model_dir when training starts


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
    pruned_at_step: int | None = None  # a sweep's pruner stopped training at this step


def open_tracker(c: Config, overrides: Sequence[str], tags: Mapping[str, str], parent_run_id: str | None) -> Any:
    """Check the model_dir and the store (one line when either cannot be used, before any training
    and before a run exists) and start the run. Calls the store misses while training are buffered
    under the Hydra output dir (see tracking.Tracker)."""
    from layerprobe import tracking
    from layerprobe.config.validate import check_writable_dir

    check_writable_dir("trainer.model_dir", model_dir_for(c))
    if not c.tracking.enabled:
        return tracking.NullTracker()
    uri = tracking.resolve_uri(c.tracking.uri)
    tracking.check_reachable(uri)
    run_name = c.tracking.run_name  # a sweep's child: what the sweep varies (cli.main)
    tracker = tracking.Tracker(
        uri, c.tracking.experiment_name, run_name or c.model.name, tags, parent_run_id, pending_dir=_hydra_output_dir()
    )
    if not run_name:
        tracker.set_tags({"mlflow.runName": plain_run_name(c.model.name, overrides, tracker.run_id)})
    return tracker


def _hydra_output_dir() -> str | None:
    """The Hydra job's output dir when a Hydra job runs this; None when called as a library (a
    config composed earlier in the process leaves Hydra's state set, without a job's output dir)."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    if not HydraConfig.initialized():
        return None
    return OmegaConf.select(HydraConfig.get(), "runtime.output_dir", default=None, throw_on_missing=False)  # type: ignore[arg-type]


def run(
    c: Config | Mapping[str, Any],
    output_dir: str | Path,
    overrides: Sequence[str] = (),
    tags: Mapping[str, str] | None = None,
    parent_run_id: str | None = None,
    on_evaluation: EvaluationCallback | None = None,
) -> RunResult:
    """Train (or resume), evaluate, probe and log one experiment (`c`: a loaded config, or a mapping
    that is loaded here). `on_evaluation` (a sweep's pruner): hears the eval metrics
    (`eval/<name>`, also logged at their steps) of each checkpoint saved while training; when it
    answers True, training stops there and the run ends FINISHED with the tag `pruned=true`,
    without the final evaluation, probe and export.

    Everything that can fail on the user's input (config, data, graph shapes, tracking store) fails
    before the MLflow run starts and before the model_dir is written (preflight). Then the stages
    run inside the tracker's block, which ends the MLflow run by how they ended (FINISHED, KILLED on
    Ctrl-C, FAILED).
    """
    seconds: dict[str, float] = {}
    with _timed(seconds, "prepare"):
        r = _prepare(load(c), Path(output_dir), overrides, tags, parent_run_id)
    with r.tracker:
        _log_config(r)
        pruned: list[int] = []
        with _timed(seconds, "train"):
            step, checkpoint = _train(r.x, r.tracker, r.cluster, _reported(r.tracker, on_evaluation, pruned))
        if pruned:
            log.info("pruned at step %d: the sweep's pruner stopped this trial", pruned[0])
            r.tracker.set_tags({"pruned": "true", "layerprobe.pruned_at_step": str(pruned[0])})
            return r.result(step, pruned_at_step=pruned[0])
        if not r.cluster.is_chief:  # a worker or the evaluator (a ps never returns): the chief does the rest
            return RunResult(None, None, r.x.engine.model_dir, step, {}, output_dir=str(r.output_dir))
        with _timed(seconds, "evaluate"):
            eval_metrics = _evaluate(r, step, checkpoint)
        outcome = ProbeOutcome({}, {})
        if r.c.probe.enabled and r.x.exposed:
            outcome = _probe(r, step, checkpoint, eval_metrics, seconds)
        if r.tracker.run_id:
            with _timed(seconds, "export"):
                register = None if parent_run_id else r.c.tracking.register_model  # a sweep's parent registers
                export_model(r.c, r.x, r.output_dir, r.tracker, step, eval_metrics, checkpoint, register)
        seconds["mlflow"] = r.tracker.seconds
    return r.result(step, eval_metrics, outcome, seconds)


@dataclass(frozen=True)
class _Run:
    """What the stages of one run share."""

    c: Config
    x: Experiment
    tracker: Any
    cluster: Any
    output_dir: Path
    overrides: Sequence[str]
    found_step: int  # the step model_dir held before this run (-1: none)

    def result(
        self,
        step: int,
        eval_metrics: dict[str, float] | None = None,
        outcome: ProbeOutcome | None = None,
        seconds: dict[str, float] | None = None,
        pruned_at_step: int | None = None,
    ) -> RunResult:
        outcome = outcome or ProbeOutcome({}, {})
        t = self.tracker
        return RunResult(
            t.run_id,
            t.uri,
            self.x.engine.model_dir,
            step,
            eval_metrics or {},
            outcome.stats,
            outcome.metrics,
            str(self.output_dir),
            seconds or {},
            t.experiment_id,
            pruned_at_step,
        )


@contextlib.contextmanager
def _timed(seconds: dict[str, float], stage: str) -> Iterator[None]:
    t = time.perf_counter()
    yield
    seconds[stage] = time.perf_counter() - t


def _prepare(
    c: Config, output_dir: Path, overrides: Sequence[str], tags: Mapping[str, str] | None, parent: str | None
) -> _Run:
    """Check everything, then start the run (a NullTracker off the chief of a cluster)."""
    from layerprobe import distributed as D
    from layerprobe import tracking

    x = preflight(c).experiment
    prov = provenance_tags(c, overrides, x.summary.total_params, x.exposed, x.summary.sources)
    all_tags = {**prov, **data_tags(x.data), "model_dir": str(Path(x.engine.model_dir).resolve()), **(tags or {})}
    cluster = D.role()  # in a TF_CONFIG cluster only the chief logs, evaluates, probes and exports
    D.check_cluster(c.trainer.distribute, cluster)
    kept = x.engine.checkpoints()
    if kept and kept[-1].step > c.trainer.train_steps and not cluster.in_cluster:
        _budget_checkpoint(x, kept)  # a budget this model_dir cannot serve fails before the run exists
    tracker = open_tracker(c, overrides, all_tags, parent) if cluster.is_chief else tracking.NullTracker()
    return _Run(c, x, tracker, cluster, output_dir, overrides, kept[-1].step if kept else -1)


def _log_config(r: _Run) -> None:
    """The config as written, the layer table, the data's facts and the model_dir, into the run."""
    from layerprobe import tracking

    r.output_dir.mkdir(parents=True, exist_ok=True)
    r.tracker.log_params(tracking.flatten(r.c.written))
    write_run_files(r.c, r.x.summary, r.x.data, r.output_dir)
    r.tracker.log_datasets(dataset_inputs(r.c.data, r.x.data))
    r.tracker.log_artifacts(r.output_dir / "config", "config")


def _evaluate(r: _Run, step: int, checkpoint: str | None) -> dict[str, float]:
    """eval/ metrics of the run's checkpoint, logged at its step, with that checkpoint's step and digest."""
    engine = r.x.engine
    metrics = engine.evaluate(r.x.data, "eval", checkpoint)
    eval_metrics = {f"eval/{k}": v for k, v in metrics.items() if k != "global_step"}
    evaluated, tags = engine.at_step(step) or engine.latest(), {}
    if evaluated is not None:  # kept past keep_checkpoint_max: the run's probe and reproduce read it later
        evaluated = engine.keep(evaluated)
        tags = checkpoint_tags(evaluated.step, engine.digest(evaluated))
    r.tracker.log_metric_records([(eval_metrics, step)], tags=tags)
    log.info("evaluated at step %d: %s", step, ", ".join(f"{k} {v:.4f}" for k, v in eval_metrics.items()))
    return eval_metrics


def _probe(
    r: _Run, step: int, checkpoint: str | None, eval_metrics: Mapping[str, float], seconds: dict[str, float]
) -> ProbeOutcome:
    """The dynamics of the snapshots no run has probed yet (of all up to its step when this run
    trained none), then the probe of its checkpoint; logged."""
    x, out = r.x, r.output_dir / "probe"
    with _timed(seconds, "dynamics"):
        # A run that found its model_dir trained to its step (a sweep's children sharing one) has that
        # model's dynamics all the same: every snapshot up to its step, though another run probed them.
        trained_none = r.found_step >= step
        dyn = after_training(x, step, out / "dynamics", every_snapshot=trained_none)
    with _timed(seconds, "probe"):
        state = x.session().run(x.data, checkpoint=checkpoint)
        context = run_context(r.tracker.run_id, " ".join(r.overrides), step, eval_metrics)
        report = {"context": context, "dynamics": dyn and report_section(dyn, out / "dynamics")}
        outcome = probe_outcome(r.c, state, x.summary, out, report)
    log.info("probed %s in %.1fs", ", ".join(x.exposed), seconds["probe"])
    r.tracker.log_metric_records([*(dyn.records() if dyn else []), (outcome.metrics, step)])
    r.tracker.log_artifacts(out, "probe")
    if dyn:  # logged with dynamics.json: no later run probes these steps again
        ledger.enter(x.engine.model_dir, dyn.steps, r.tracker.run_id or "(not tracked)")
    return outcome


def _reported(tracker: Any, on_evaluation: EvaluationCallback | None, pruned: list[int]) -> EvaluationCallback | None:
    """`on_evaluation` with the metrics named and logged as the run's eval/ metrics at their step;
    the step it stopped training at is appended to `pruned`."""
    if on_evaluation is None:
        return None

    def report(step: int, metrics: Mapping[str, float]) -> bool:
        named = {f"eval/{k}": float(v) for k, v in metrics.items() if k != "global_step"}
        tracker.log_metrics(named, step=step)
        stop = bool(on_evaluation(step, named))
        if stop:
            pruned.append(step)
        return stop

    return report


def _train(
    x: Experiment, tracker: Any, cluster: Any, on_evaluation: EvaluationCallback | None = None
) -> tuple[int, str | None]:
    """Train up to trainer.train_steps, resuming what model_dir holds. Returns the step the run
    reports and the checkpoint to evaluate, probe and export at (None: the latest).

    The step budget is not part of the model_dir's name, so raising it continues training. A model_dir
    already trained past this run's budget (a sweep over train_steps sharing it) is read at the
    checkpoint of exactly this budget: a job never reports a model trained past its own steps.
    """
    from layerprobe import distributed as D

    budget = x.c.trainer.train_steps
    model_dir = Path(x.engine.model_dir)
    config_text = yaml.safe_dump(dict(x.c.written), sort_keys=False)
    if cluster.in_cluster:
        if cluster.is_chief:
            model_dir.mkdir(parents=True, exist_ok=True)
            (model_dir / MODEL_DIR_CONFIG).write_text(config_text)
        return x.engine.train(x.data, budget, tracker.log_metric_records), None  # no snapshots in a cluster
    # Parallel sweep jobs with the same training config share the model_dir: one trains, the others
    # wait and then resume from its last checkpoint.
    model_dir.mkdir(parents=True, exist_ok=True)
    with D.model_dir_lock(model_dir):
        (model_dir / MODEL_DIR_CONFIG).write_text(config_text)
        kept = x.engine.checkpoints()
        latest = kept[-1].step if kept else 0
        if latest < budget or not kept:  # budget 0 (a probe-only run): the engine saves the model at step 0
            snaps = snapshot_steps(x.c)
            if snaps:
                ledger.begin(model_dir, x.engine.snapshots(), latest)
            step = x.engine.train(x.data, budget, tracker.log_metric_records, on_evaluation, snaps)
            return step, _kept(x, step)  # under the lock: a job that continues the model_dir cannot rotate it away
    log.info("checkpoint at step %d >= trainer.train_steps=%d: training skipped", latest, budget)
    missing = sorted(set(snapshot_steps(x.c)) - {k.step for k in x.engine.snapshots()})
    if missing:  # probe.dynamics changed after the model trained: nothing will probe those steps
        run = tracker.run_id or "<run id>"
        log.warning(
            "probe.dynamics: the model_dir is trained already, so no snapshot is taken at steps %s; "
            "`layerprobe probe %s --checkpoints all` probes the checkpoints it keeps",
            ", ".join(map(str, missing[:8])) + (", ..." if len(missing) > 8 else ""),
            run,
        )
    return _budget_checkpoint(x, kept)


def _kept(x: Experiment, step: int) -> str | None:
    """The checkpoint of `step`, kept past keep_checkpoint_max: what the run evaluates, probes and exports."""
    found = x.engine.at_step(step)
    return x.engine.keep(found).path if found else None


def _budget_checkpoint(x: Experiment, kept: Sequence[Any]) -> tuple[int, str | None]:
    """(step, checkpoint) for a model_dir trained at least to this run's budget: the latest when it
    is the budget, else the kept checkpoint of exactly the budget; one line when there is none."""
    budget, latest = x.c.trainer.train_steps, kept[-1].step
    if latest == budget:
        return latest, None
    exact = next((k for k in kept if k.step == budget), None)
    if exact is None:
        steps = ", ".join(str(k.step) for k in kept)
        raise LayerprobeError(
            f"trainer.train_steps: {x.engine.model_dir} is trained to step {latest} and keeps no checkpoint at "
            f"step {budget} (kept: {steps}); raise train_steps to at least {latest} or set another trainer.model_dir"
        )
    return budget, exact.path


def readable_run_name(overrides: Sequence[str]) -> str:
    """`model.layers.conv1.filters=32` -> `conv1.filters=32`; joined with commas."""
    parts = []
    for o in shaping_overrides(overrides):
        key, _, value = o.lstrip("+~").partition("=")
        parts.append(".".join(key.split(".")[-2:]) + "=" + _short(value))
    return ",".join(parts)[:200]


def plain_run_name(model: str, overrides: Sequence[str], run_id: str) -> str:
    """A run outside a sweep, `digits_cnn conv1.filters=32 (3f9a2b1c)`: its model, what it overrode
    and the start of its id, so that runs of one model differ in MLflow's run list."""
    return " ".join(filter(None, [model, readable_run_name(overrides), f"({run_id[:8]})"]))


def _short(value: str) -> str:
    """A float a sampler chose (`0.011086282889727999`) as 4 significant digits (`0.01109`); any
    other value as given."""
    try:
        number = float(value)
    except ValueError:
        return value
    return f"{number:.4g}" if "." in value and len(value) > 8 else value
