"""`layerprobe [overrides]`: the Hydra app, and the entry point that dispatches the subcommands.

The only module that runs a Hydra app. One path for every mode: Hydra's own argument parser, every
override parsed by Hydra's grammar up front, one composition (with `--config-dir` on the search path),
one validation before Hydra makes an output dir; then Hydra's job runner (a run) or its sweeper and
launcher (`-m`). Every mistake in that input is one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import errno
import functools
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from layerprobe.cli.commands import COMMANDS, SUBCOMMANDS
from layerprobe.cli.report import fail, print_run
from layerprobe.errors import LayerprobeError

log = logging.getLogger("layerprobe")
INTERRUPTED = 130  # what shells report for Ctrl-C
# Errors writing where the user pointed (output dir, model_dir): one line, not a traceback.
_USER_OS_ERRORS = {errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EISDIR, errno.EROFS, errno.ENOSPC, errno.EDQUOT}


def main(argv: Sequence[str] | None = None) -> int:
    """Run `layerprobe ARGS` (default: sys.argv) and return the exit code."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if args and args[0] in COMMANDS:
            return COMMANDS[args[0]](args[1:])
        return run_command(args)
    except KeyboardInterrupt:
        from layerprobe.sweeps.parent import mark_interrupted

        mark_interrupted()  # a sweep's parent, ended at exit, is KILLED
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print("layerprobe: interrupted; checkpoints written so far are kept, the MLflow run is KILLED", file=sys.stderr)
        return INTERRUPTED


def subcommand_help() -> str:
    width = max(len(n) for n in SUBCOMMANDS)
    lines = ["usage: layerprobe [-m] [--config-dir DIR] [--config-name NAME] [--cfg job|hydra|all] [overrides ...]"]
    lines.append("       layerprobe COMMAND [--help] [args ...]")
    lines.append("")
    lines.append("Without a command: train (or resume), evaluate, probe and log one run; -m: a sweep.")
    lines.append("Commands:")
    lines += [f"  {name:<{width}}  {line}" for name, (_, line) in SUBCOMMANDS.items()]
    return "\n".join(lines) + "\n"


def _hydra_args(argv: Sequence[str]) -> argparse.Namespace:
    """Hydra's own command line (`-m`, `--cfg`, `--config-dir`, ...); a mistake in it is one line."""
    from layerprobe.config.hydra_private import get_args_parser

    parser = get_args_parser()

    def error(message: str) -> NoReturn:
        raise LayerprobeError(f"{message} (layerprobe --help lists the options)")

    parser.error = error  # type: ignore[method-assign]
    args = parser.parse_args(list(argv))
    modes = {"--run": args.run, "--multirun": args.multirun, "--cfg": args.cfg, "--info": args.info}
    chosen = [flag for flag, on in {**modes, "--shell-completion": args.shell_completion}.items() if on]
    if len(chosen) > 1:
        raise LayerprobeError(f"{' and '.join(chosen)}: give only one of --run, --multirun, --cfg, --info")
    if args.resolve and args.cfg is None and not args.help:
        raise LayerprobeError("--resolve: only with --cfg or --help")
    if args.experimental_rerun is not None:
        raise LayerprobeError("--experimental-rerun is not supported: rerun the overrides in .hydra/overrides.yaml")
    return args


def run_command(argv: Sequence[str]) -> int:
    """`layerprobe [hydra flags] [overrides]`: compose once, validate once, run (or sweep)."""
    from layerprobe.config import compose_in, hydra_session, parse_overrides

    try:
        args = _hydra_args(argv)
        overrides = list(args.overrides)
        parse_overrides(overrides)
        name = args.config_name or "config"
        with hydra_session(args.config_dir) as hydra:
            if args.help or args.hydra_help:
                return _help(hydra, name, args)
            if args.cfg or args.info or args.shell_completion:
                return _show(hydra, name, args)
            if not any(o.startswith("hydra.mode=") for o in overrides):
                overrides.append(f"hydra.mode={'MULTIRUN' if args.multirun else 'RUN'}")  # as hydra.main does
            cfg = compose_in(hydra, overrides, name, multirun=args.multirun)
            loaded = None
            if args.multirun:
                done = _check_sweep_values(hydra, cfg, overrides, name)
                if done:  # a rerun of a sweep that has nothing left: no output dir, no parent run
                    print(f"layerprobe: {done}")
                    return 0
            else:
                loaded = _check_run(cfg)
            return _launch(hydra, cfg, name, args.multirun, loaded)
    except LayerprobeError as e:
        return fail(e)


def _check_run(cfg: Any) -> Any:
    """The run's config, loaded (checked, expanded, typed) before Hydra makes an output dir."""
    from layerprobe.config.compose import plain
    from layerprobe.config.loaded import load
    from layerprobe.config.validate import check_writable_dir

    loaded = load({k: plain(cfg[k]) for k in cfg if k != "hydra"})
    check_writable_dir("hydra.run.dir", str(cfg.hydra.run.dir))
    return loaded


def _check_sweep_values(hydra: Any, cfg: Any, overrides: list[str], name: str) -> str | None:
    """Hydra composes a sweep's jobs only after the sweep has started: compose and validate each
    job's config here (a grid's cross product, an Optuna search's choices and bounds) and check the
    Optuna study's settings, so that a sweep that cannot run is one line before anything starts.
    Returns the line to print instead of running when a rerun of the sweep finds nothing left."""
    from layerprobe.config import parse_overrides
    from layerprobe.sweeps.checks import check_jobs, check_study
    from layerprobe.sweeps.resume import nothing_left

    task = [o for o, p in zip(overrides, parse_overrides(overrides)) if p.get_key_element() != "hydra.mode"]
    check_jobs(hydra, cfg, task, name)
    check_study(cfg, task)
    return nothing_left(cfg, [o for o in task if not o.split("=", 1)[0].lstrip("+~").startswith("hydra.")])


def _help(hydra: Any, name: str, args: argparse.Namespace) -> int:
    from layerprobe.config.hydra_private import get_args_parser

    if args.help:
        print(subcommand_help())
        _reported(lambda: hydra.app_help(config_name=name, args_parser=get_args_parser(), args=args), args, name)
    else:
        _reported(lambda: hydra.hydra_help(config_name=name, args_parser=get_args_parser(), args=args), args, name)
    return 0


def _show(hydra: Any, name: str, args: argparse.Namespace) -> int:
    if args.cfg:
        show = lambda: hydra.show_cfg(name, args.overrides, args.cfg, args.package, args.resolve)  # noqa: E731
    elif args.info:
        show = lambda: hydra.show_info(args.info, config_name=name, overrides=args.overrides)  # noqa: E731
    else:
        show = lambda: hydra.shell_completion(config_name=name, overrides=args.overrides)  # noqa: E731
    _reported(show, args, name)
    return 0


def _reported(fn: Any, args: argparse.Namespace, name: str) -> Any:
    """A Hydra call that composes (help, --cfg, --info): its config errors as one line."""
    from layerprobe.config.compose import folded_error

    try:
        return fn()
    except (LayerprobeError, SystemExit):
        raise
    except Exception as e:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        raise folded_error(e, args.overrides, name) from None


def _launch(hydra: Any, cfg: Any, name: str, multirun: bool, loaded: Any = None) -> int:
    """What `Hydra.run` / `Hydra.multirun` do after composing: callbacks, then the job in its output
    dir, or the sweeper that launches one job per point. An exception a job raises is a bug: Hydra
    reports it (exit 1)."""
    from hydra.core.plugins import Plugins
    from hydra.core.utils import configure_log, run_job
    from hydra.types import HydraContext

    from layerprobe.config.hydra_private import Callbacks, run_and_report

    configure_log(cfg.hydra.hydra_logging, cfg.hydra.verbose)
    callbacks = Callbacks(cfg)
    context = HydraContext(config_loader=hydra.config_loader, callbacks=callbacks)

    def launch() -> None:
        if multirun:
            callbacks.on_multirun_start(config=cfg, config_name=name)
            sweeper = Plugins.instance().instantiate_sweeper(config=cfg, hydra_context=context, task_function=task)
            sweeper.sweep(arguments=list(cfg.hydra.overrides.task))
            callbacks.on_multirun_end(config=cfg, config_name=name)
        else:
            callbacks.on_run_start(config=cfg, config_name=name)
            ret = run_job(functools.partial(task, loaded=loaded), cfg, "hydra.run.dir", None, hydra_context=context)
            callbacks.on_run_end(config=cfg, config_name=name, job_return=ret)
            _ = ret.return_value  # raises what the job raised

    run_and_report(launch)
    return 0


def task(cfg: Any, loaded: Any = None) -> Any:
    """The Hydra task: one run, or one job of a sweep. A run's config was loaded (`loaded`) before
    Hydra made its output dir; a sweep job's config is its own, loaded here (a bad one fails that job).
    Returns the objective (None when the job failed), or `trial.Pruned` when a pruner stopped it."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    overrides = list(hc.overrides.task)
    parent, run_name, tags, on_evaluation = None, None, {}, None
    if multirun:  # children are named by what the sweep varies
        from layerprobe.sweeps import trial
        from layerprobe.sweeps.parent import sweep_job

        job = sweep_job(hc, cfg)
        if job.done is not None:
            log.info("job %s (%s): finished before as run %s; not run again", hc.job.num, job.run_name, job.done.run_id)
            return job.done.metrics.get(cfg.tracking.objective)
        parent, run_name, tags = job.parent, job.run_name, job.tags
    try:
        from layerprobe.config.loaded import load
        from layerprobe.runner import run

        if loaded is None:  # a sweep's job, composed by Hydra: its files' relative paths, as compose_in does
            from layerprobe.config.locations import resolve_paths

            resolve_paths(cfg, overrides, hc.runtime.choices)
            written: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
            if run_name and not written["tracking"]["run_name"]:
                written["tracking"]["run_name"] = run_name
            loaded = load(written)
        if multirun:
            on_evaluation = trial.reporter(hc)  # an Optuna sweep with a pruner
        result = run(loaded, hc.runtime.output_dir, overrides, tags, parent, on_evaluation=on_evaluation)
    except Exception as e:
        if not multirun:
            if isinstance(e, LayerprobeError):
                sys.exit(fail(e))
            if isinstance(e, OSError) and e.errno in _USER_OS_ERRORS:  # a directory the user named
                sys.exit(fail(LayerprobeError(f"cannot write {e.filename}: {e.strerror}")))
            raise
        # In a sweep a failed job is recorded (its MLflow run is FAILED) and the other jobs go on;
        # the sweep callback makes the process exit non-zero at the end.
        from pathlib import Path

        from layerprobe.sweeps.parent import FAILED_FILE

        out = Path(hc.runtime.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / FAILED_FILE).write_text(f"{type(e).__name__}: {e}\n")
        log.error("job %s failed: %s: %s", hc.job.num, type(e).__name__, e)
        return None
    if result.pruned_at_step is not None:
        return trial.Pruned(result.pruned_at_step)  # type: ignore[return-value]
    print_run(result)
    objective = loaded.tracking.objective
    return result.eval_metrics.get(objective, result.probe_metrics.get(objective))
