"""Hydra multirun -> one MLflow parent run per sweep, one nested child run per job.

`SweepCallback` is registered in conf/config.yaml (`hydra.callbacks`). It creates the parent run
in the launching process before any job starts and writes its id into the sweep directory, where
every job finds it, whichever launcher runs the jobs (in this process, in joblib workers, under
submitit). After the sweep it logs a table of every child's overrides and headline metrics and the
best child to the parent, and makes the process exit non-zero when a job failed.
"""

from __future__ import annotations

import atexit
import csv
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

if TYPE_CHECKING:
    from layerprobe.tracking import RunSummary

log = logging.getLogger(__name__)

SWEEP_FILE = ".layerprobe_sweep.json"  # {"parent": run id or null, "swept": [override keys], "key": sweep key}
FAILED_FILE = "FAILED"  # written into a job's output dir when the job failed
_INTERRUPTED = False  # set by the CLI on Ctrl-C: an abandoned parent then ends KILLED, not FAILED


def mark_interrupted() -> None:
    """The process is ending on Ctrl-C (the CLI calls this): a sweep parent still open ends KILLED."""
    global _INTERRUPTED
    _INTERRUPTED = True


def sweep_info(sweep_dir: str | Path) -> dict[str, Any]:
    path = Path(sweep_dir) / SWEEP_FILE
    return json.loads(path.read_text()) if path.is_file() else {"parent": None, "swept": [], "key": None}


def swept_keys(overrides: list[str]) -> list[str]:
    """Keys of the overrides that take several values (`a=1,2`, `range(...)`, `choice(...)`)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return [o.get_key_element() for o in OverridesParser.create().parse_overrides(overrides) if o.is_sweep_override()]


@dataclass(frozen=True)
class SweepJob:
    """A sweep job's place in its sweep, before it runs."""

    parent: str | None  # the parent run's id; None when nothing is tracked
    run_name: str  # what the sweep varies, as the child is named
    tags: dict[str, str]  # the trial number, the sweep key
    done: RunSummary | None  # a grid job's child that FINISHED in a run of this sweep before: not run again


def sweep_job(hydra_cfg: Any, cfg: Any) -> SweepJob:
    """This job of a sweep (`hydra_cfg`: HydraConfig of the job, `cfg`: its config)."""
    from layerprobe import tracking
    from layerprobe.runner import readable_run_name
    from layerprobe.sweeps.resume import TRIAL_TAG, done_job
    from layerprobe.sweeps.trial import trial_number

    overrides = list(hydra_cfg.overrides.task)
    info = sweep_info(hydra_cfg.sweep.dir)
    run_name = readable_run_name([o for o in overrides if o.split("=", 1)[0].lstrip("+~") in info["swept"]])
    number = trial_number(hydra_cfg)
    tags = {} if number is None else {TRIAL_TAG: str(number)}
    done = None
    if info.get("key") and info["parent"]:  # a parent: tracking is on
        tags[tracking.SWEEP_KEY_TAG] = info["key"]
        if number is None:
            uri = tracking.resolve_uri(cfg.tracking.uri)
            done = done_job(uri, cfg.tracking.experiment_name, info["key"], overrides)
    return SweepJob(info["parent"], run_name, tags, done)


def _failed_jobs(sweep_dir: Path) -> list[str]:
    return sorted(p.parent.name for p in sweep_dir.glob(f"*/{FAILED_FILE}"))


@dataclass(frozen=True)
class SweepSummary:
    """What the parent run gets: every child's overrides and eval metrics, and the best child."""

    header: list[str]  # run_id, name, status, overrides, then every eval/ and probe/ metric of any child
    # status: FINISHED, FAILED, KILLED, or PRUNED (a FINISHED run tagged pruned=true)
    rows: list[list[str]]  # one per child, oldest first; "" where a child lacks a metric
    tags: dict[str, str]
    metrics: dict[str, float]  # best/<objective>, when any child has the objective
    best: tuple[str, float] | None  # (run id, objective value) of the best child


def summarize(children: Sequence[RunSummary], objective: str, direction: str) -> SweepSummary:
    """The sweep's table and its best child by `objective` (`direction`: maximize or minimize)."""
    keys = sorted({k for r in children for k in r.metrics if k.startswith(("eval/", "probe/"))})
    rows = [
        [
            r.run_id,
            r.name,
            "PRUNED" if r.tags.get("pruned") == "true" else r.status,
            r.tags.get("layerprobe.overrides", ""),
        ]
        + [f"{r.metrics[k]:.6g}" if k in r.metrics else "" for k in keys]
        for r in sorted(children, key=lambda r: r.start_time)
    ]
    pruned = [r for r in children if r.tags.get("pruned") == "true"]  # FINISHED, but stopped early
    # Only a run that ended well has its final objective (a KILLED one may hold an intermediate value).
    ended_well = [r for r in children if r.status == "FINISHED" and r not in pruned]
    scored = [(r.run_id, r.metrics[objective]) for r in ended_well if objective in r.metrics]
    best = (max if direction == "maximize" else min)(scored, key=lambda x: x[1]) if scored else None
    failed = sum(r.status == "FAILED" for r in children)
    tags = {
        "layerprobe.children": str(len(children)),
        "layerprobe.failed_children": str(failed),
        "layerprobe.pruned_children": str(len(pruned)),
        "layerprobe.complete_children": str(sum(r.status == "FINISHED" for r in children) - len(pruned)),
    }
    metrics = {}
    if best:
        tags |= {"layerprobe.best_run_id": best[0], "layerprobe.best_objective": f"{objective}={best[1]:.6g}"}
        metrics[f"best/{objective}"] = best[1]
    return SweepSummary(["run_id", "name", "status", "overrides", *keys], rows, tags, metrics, best)


def finish_parent(
    uri: str,
    parent_id: str,
    objective: str,
    direction: str,
    out_dir: Path,
    error: str | None = None,
    killed: bool = False,
) -> tuple[str, float] | None:
    """Log the table of the sweep's children (of every parent of its sweep key: its reruns too;
    `out_dir`/sweep_summary.csv) and the best child to the parent, then
    end the parent run: KILLED when the sweep was interrupted (Ctrl-C), FAILED with `error` as a tag
    when it stopped early otherwise, FINISHED when it ran to its end. Returns the best child's (run
    id, objective value)."""
    from layerprobe import tracking

    summary = summarize(tracking.sweep_children(uri, parent_id), objective, direction)
    table = Path(out_dir) / "sweep_summary.csv"
    with table.open("w", newline="") as f:
        csv.writer(f).writerows([summary.header, *summary.rows])
    tags = summary.tags | ({"error": error} if error else {})
    status = "KILLED" if killed else "FAILED" if error else "FINISHED"
    tracking.finish_sweep_parent(uri, parent_id, tags, summary.metrics, [table], status=status)
    return summary.best


def _study_tags(config: DictConfig, overrides: list[str]) -> dict[str, str]:
    """The Optuna study of the sweep (storage without credentials, name, sampler, pruner), when
    layerprobe's Optuna sweeper runs it."""
    from layerprobe.sweeps.resume import optuna_study

    study = optuna_study(config, overrides)
    if study is None:
        return {}
    conf, _, s = study
    return {
        "layerprobe.study_storage": s.redacted_storage,
        "layerprobe.study_name": s.name,
        "layerprobe.sampler": str(conf["sampler"]["name"]),
        "layerprobe.pruner": str(conf["pruner"]["name"]),
    }


class SweepCallback(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        overrides = list(config.hydra.overrides.task)
        # What the sweep varies names the children: sweep overrides, and a sweeper's own search space
        # (hydra.sweeper.params of the Optuna sweeper).
        searched = list(config.hydra.sweeper.get("params") or {})
        from layerprobe.sweeps.resume import sweep_key

        info: dict[str, Any] = {"parent": None, "swept": swept_keys(overrides) + searched}
        info["key"] = sweep_key(config, overrides)
        if config.tracking.enabled:
            info["parent"] = self._start_parent(config, sweep_dir, overrides, info["key"])
            # A sweeper that raises (Optuna when every trial failed) skips on_multirun_end: the
            # parent is then ended at exit, FAILED, instead of staying RUNNING.
            self._ended = False
            atexit.register(self._end_abandoned_parent, config, sweep_dir)
        (sweep_dir / SWEEP_FILE).write_text(json.dumps(info))

    def _start_parent(self, config: DictConfig, sweep_dir: Path, overrides: list[str], key: str) -> str:
        """The parent run: the one this sweep had when it ran before (same sweep key), continued; else new."""
        from layerprobe import tracking

        uri = tracking.resolve_uri(config.tracking.uri)
        tracking.check_reachable(uri)
        experiment = config.tracking.experiment_name
        now = {"layerprobe.sweep_dir": str(sweep_dir.resolve())}
        run_id = tracking.reopen_sweep_parent(uri, experiment, key, now)
        if run_id:
            log.info("sweep parent run: %s (continued: this sweep ran before)", run_id)
            return run_id
        sweeper = OmegaConf.to_container(config.hydra.sweeper, resolve=False)
        launcher = OmegaConf.to_container(config.hydra.launcher, resolve=False)
        run_id = tracking.start_sweep_parent(
            uri,
            experiment,
            name="sweep: " + (" ".join(overrides) or config.model.name)[:200],
            tags={
                "layerprobe.sweep": "parent",
                tracking.SWEEP_KEY_TAG: key,
                "layerprobe.overrides": " ".join(overrides),
                "layerprobe.sweeper": str(sweeper.get("_target_", "")),  # type: ignore[union-attr]
                "layerprobe.launcher": str(launcher.get("_target_", "")),  # type: ignore[union-attr]
                **now,
                **_study_tags(config, overrides),
            },
        )
        log.info("sweep parent run: %s", run_id)
        return run_id

    def _compare_children(self, uri: str, parent: str, config: DictConfig, sweep_dir: Path) -> None:
        """CKA across the finished children, per layer they all expose, and the compare report
        (compare/report.html), logged to the parent."""
        from layerprobe import tracking
        from layerprobe.compare import compare_report, compare_runs
        from layerprobe.errors import LayerprobeError

        children = [r.run_id for r in tracking.sweep_children(uri, parent) if r.status == "FINISHED"]
        if len(children) < 2:
            return
        exposed = [set(tracking.run_tags(uri, r).get("layerprobe.exposed", "").split(",")) - {""} for r in children]
        for layer in sorted(set.intersection(*exposed)):
            try:
                compare_runs(uri, children, layer, sweep_dir, log_to=parent)
            except LayerprobeError as e:  # e.g. the children probed different examples
                log.warning("no CKA across runs for %s: %s", layer, e)
        compare_report(uri, children, sweep_dir, log_to=parent)

    def _end_abandoned_parent(self, config: DictConfig, sweep_dir: Path) -> None:
        if self._ended:
            return
        from layerprobe import tracking

        failed = _failed_jobs(sweep_dir)
        error = (
            "interrupted (Ctrl-C) before the sweep's end"
            if _INTERRUPTED
            else "the sweeper stopped before the sweep's end"
        )
        if failed:
            error += f"; {len(failed)} job(s) failed: {', '.join(failed)}"
        try:
            finish_parent(
                tracking.resolve_uri(config.tracking.uri),
                sweep_info(sweep_dir)["parent"],
                config.tracking.objective,
                config.tracking.direction,
                sweep_dir,
                error=error,
                killed=_INTERRUPTED,
            )
        except Exception as e:  # at exit: say it, never raise
            print(f"layerprobe: could not end the sweep's parent run: {e}", file=sys.stderr)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._ended = True
        sweep_dir = Path(config.hydra.sweep.dir)
        failed = _failed_jobs(sweep_dir)
        run_id = sweep_info(sweep_dir)["parent"]
        if run_id and config.tracking.enabled:
            from layerprobe import tracking

            uri = tracking.resolve_uri(config.tracking.uri)
            best = finish_parent(uri, run_id, config.tracking.objective, config.tracking.direction, sweep_dir)
            if best:
                log.info("best child run: %s (%s = %s)", best[0], config.tracking.objective, best[1])
                if config.tracking.register_model:  # a sweep registers its best trial's model only
                    tracking.register_model(uri, best[0], config.tracking.register_model)
            self._compare_children(uri, run_id, config, sweep_dir)
        if failed:
            print(f"layerprobe: {len(failed)} sweep job(s) failed: {', '.join(failed)}", file=sys.stderr)
            sys.exit(1)
