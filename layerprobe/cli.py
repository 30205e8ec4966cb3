"""`layerprobe [overrides]` trains, evaluates, probes and logs; subcommands look without training.

The only module with `@hydra.main`. TensorFlow and mlflow are imported inside the commands that
need them, so `--help`, `--cfg job` and `validate` answer in well under a second and a half.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf

from layerprobe.config import CONF_DIR, compose
from layerprobe.errors import LayerprobeError

log = logging.getLogger("layerprobe")
USER_ERROR = 2
INTERRUPTED = 130  # what shells report for Ctrl-C
# Errors writing where the user pointed (output dir, model_dir): one line, not a traceback.
_USER_OS_ERRORS = {errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EISDIR, errno.EROFS, errno.ENOSPC, errno.EDQUOT}


def _fail(e: LayerprobeError) -> int:
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise e
    print(f"layerprobe: error: {e}", file=sys.stderr)
    return USER_ERROR


def _plain(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def _task(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from layerprobe.config.validate import validate

    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    overrides = list(hc.overrides.task)
    parent, run_name = None, None
    if multirun:  # children are named by what the sweep varies
        from layerprobe.runner import readable_run_name
        from layerprobe.sweep import sweep_info

        info = sweep_info(hc.sweep.dir)
        parent = info["parent"]
        run_name = readable_run_name([o for o in overrides if o.split("=", 1)[0].lstrip("+~") in info["swept"]])
    try:
        c = _plain(cfg)
        if run_name and not c["tracking"]["run_name"]:
            c["tracking"]["run_name"] = run_name
        validate(c)
        from layerprobe.runner import run

        result = run(c, hc.runtime.output_dir, overrides, parent_run_id=parent)
    except Exception as e:
        if not multirun:
            if isinstance(e, LayerprobeError):
                sys.exit(_fail(e))
            if isinstance(e, OSError) and e.errno in _USER_OS_ERRORS:  # a directory the user named
                sys.exit(_fail(LayerprobeError(f"cannot write {e.filename}: {e.strerror}")))
            raise
        # In a sweep a failed job is recorded (its MLflow run is FAILED) and the other jobs go on;
        # the sweep callback makes the process exit non-zero at the end.
        from pathlib import Path

        from layerprobe.sweep import FAILED_FILE

        out = Path(hc.runtime.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / FAILED_FILE).write_text(f"{type(e).__name__}: {e}\n")
        log.error("job %s failed: %s: %s", hc.job.num, type(e).__name__, e)
        return None
    _report(result)
    objective = c["tracking"]["objective"]
    return result.eval_metrics.get(objective, result.probe_metrics.get(objective))


def _report(result: Any) -> None:
    print(f"model_dir: {result.model_dir} (global step {result.global_step})")
    for k, v in result.eval_metrics.items():
        print(f"{k}: {v:.4f}")
    _print_stats(result.probe)
    if result.run_id:
        print(f"mlflow run: {result.run_id}")
        print(f"open the UI: mlflow ui --backend-store-uri {result.tracking_uri}")
        if result.experiment_id:
            from layerprobe.tracking import ui_link

            print(f"this run in the UI: {ui_link(result.tracking_uri, result.experiment_id, result.run_id)}")


def _print_stats(stats: dict[str, Any]) -> None:
    for layer, s in stats.items():
        dead = f"{s.dead_count}/{s.units}"
        print(f"probe/{layer}: mean {s.mean:.4g} std {s.std:.4g} zeros {s.zero_fraction:.1%} dead units {dead}")


def run_command(argv: Sequence[str]) -> int:
    import hydra

    from layerprobe.config.schema import register_configs

    if not any(a.startswith("-") for a in argv):  # a single run: compose once to fail early and briefly
        try:
            from layerprobe.config.validate import check_writable_dir, validate

            validate(compose(argv))
            run_dir = next((a.split("=", 1)[1] for a in argv if a.startswith("hydra.run.dir=")), "outputs")
            check_writable_dir("hydra.run.dir", run_dir)
        except LayerprobeError as e:
            return _fail(e)
    register_configs()
    sys.argv = [sys.argv[0], *argv]
    hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")(_task)()
    return 0


def validate_command(argv: Sequence[str]) -> int:
    """`layerprobe validate [overrides]`: compose and check the config, print the layer plan."""
    from layerprobe.config.validate import validate
    from layerprobe.provenance import exposed_layers

    try:
        c = _plain(compose(argv))
        validate(c)
    except LayerprobeError as e:
        return _fail(e)
    exposed = exposed_layers(c)
    print(f"config OK: model {c['model']['name']} ({len(c['model']['layers'])} layers), data {c['data']['name']}")
    print(f"exposed layers: {', '.join(exposed) or '(none)'}")
    return 0


def data_command(argv: Sequence[str]) -> int:
    """`layerprobe data [overrides]`: split sizes, element spec and a few examples; no model."""
    try:
        c = _plain(compose(argv))
        from layerprobe.data.pipeline import dataset, prepare

        data = prepare(c["data"])
    except LayerprobeError as e:
        return _fail(e)
    print(f"data {data.name}: sizes {data.sizes()} sha256 {data.digest[:16]}")
    ds = dataset(data, "train", training=False, batch_size=c["data"]["batch_size"], seed=0, max_examples=3)
    feats, labels = ds.element_spec
    for kind, spec in (("feature", feats), ("label", labels)):
        for name, s in spec.items():
            print(f"  {kind} {name}: {s.dtype.name} {s.shape.as_list()[1:]}")
    for f, y in ds.unbatch().take(3).as_numpy_iterator():
        shown = {k: (v.round(3).ravel()[:6].tolist(), "...") for k, v in f.items()}
        print(f"  example: {shown} labels { ({k: v.tolist() for k, v in y.items()}) }")
    return 0


def probe_command(argv: Sequence[str]) -> int:
    """`layerprobe probe RUN_ID|MODEL_DIR [--allow-imports] [overrides]`: probe without retraining."""
    import argparse
    import time

    import yaml

    from layerprobe.config import one_line_hydra_error

    parser = argparse.ArgumentParser(prog="layerprobe probe", description=probe_command.__doc__)
    parser.add_argument("source", help="an MLflow run id or a model_dir trained by layerprobe")
    parser.add_argument("--allow-imports", action="store_true", help="trust dotted `type` paths in its config")
    parser.add_argument("--output-dir", default=None, help="where the probe files go (default outputs/reprobe-*)")
    args, overrides = parser.parse_known_args(argv)
    out = args.output_dir or f"outputs/reprobe-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        from layerprobe.reprobe import probe_existing

        stats, run_id = probe_existing(args.source, overrides, out, args.allow_imports)
    except LayerprobeError as e:
        return _fail(e)
    except yaml.YAMLError as e:  # a logged config is read with safe_load: tags such as !!python are refused
        first = one_line_hydra_error(e)
        return _fail(LayerprobeError(f"{args.source}: the logged config is not plain YAML, refused: {first}"))
    _print_stats(stats)
    print(f"files: {out}/probe" + (f"; logged into run {run_id}" if run_id else ""))
    return 0


def reproduce_command(argv: Sequence[str]) -> int:
    """`layerprobe reproduce RUN_ID`: rerun a logged run from its config, diff every metric and
    probe statistic; exit 1 when they differ beyond tolerance."""
    import argparse
    import time

    parser = argparse.ArgumentParser(prog="layerprobe reproduce", description=reproduce_command.__doc__)
    parser.add_argument("run_id")
    parser.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI or ./mlflow.db")
    parser.add_argument("--rtol", type=float, default=0.0, help="relative tolerance (default 0: bitwise)")
    parser.add_argument("--atol", type=float, default=0.0, help="absolute tolerance")
    parser.add_argument("--allow-imports", action="store_true", help="trust dotted `type` paths in its config")
    parser.add_argument("--output-dir", default=None)
    args = parser.parse_args(argv)
    out = args.output_dir or f"outputs/reproduce-{args.run_id[:8]}-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        from layerprobe.reproduce import reproduce

        report = reproduce(args.run_id, out, args.tracking_uri, args.rtol, args.atol, args.allow_imports)
    except LayerprobeError as e:
        return _fail(e)
    print(report.text())
    return 1 if report.failures else 0


def check_command(argv: Sequence[str]) -> int:
    """`layerprobe check [NAME ...]`: run experiments and compare with their baselines; exit 1 on a
    regression."""
    import argparse
    from pathlib import Path

    parser = argparse.ArgumentParser(prog="layerprobe check", description=check_command.__doc__)
    parser.add_argument("names", nargs="*", help="experiments (default: all in experiments/)")
    parser.add_argument("--full", action="store_true", help="the full experiment, not the CI budget variant")
    parser.add_argument("--update", action="store_true", help="rewrite the baselines from this run")
    parser.add_argument("--output-dir", default="outputs/check")
    args = parser.parse_args(argv)
    try:
        from layerprobe.check import check, table

        rows = check(args.names, Path(args.output_dir), ci=not args.full, update=args.update)
    except LayerprobeError as e:
        return _fail(e)
    print(table(rows))
    failed = [r for r in rows if not r.passed]
    print(f"check: {len(rows) - len(failed)} of {len(rows)} metrics within their baseline tolerance")
    return 1 if failed else 0


def cluster_command(argv: Sequence[str]) -> int:
    """`layerprobe cluster --workers N [--ps P] [--evaluator] [overrides]`: a cluster job on 127.0.0.1."""
    from layerprobe.distributed import main as cluster_main

    return cluster_main(argv)


def upload_pending_command(argv: Sequence[str]) -> int:
    """`layerprobe upload-pending DIR [--tracking-uri URI]`: send the tracking calls a run buffered
    while its store was away (mlflow-pending.jsonl files under DIR, e.g. outputs/) and end those runs."""
    import argparse

    parser = argparse.ArgumentParser(prog="layerprobe upload-pending", description=upload_pending_command.__doc__)
    parser.add_argument("dir", help="a run's output dir, or a parent such as outputs/")
    parser.add_argument("--tracking-uri", default=None, help="default: the store each file was meant for")
    args = parser.parse_args(argv)
    try:
        from layerprobe.tracking import upload_pending

        done = upload_pending(args.dir, args.tracking_uri)
    except LayerprobeError as e:
        return _fail(e)
    for path, n in done.items():
        print(f"{path}: {n} buffered call(s) delivered")
    if not done:
        print(f"nothing pending under {args.dir}")
    return 0


def compare_command(argv: Sequence[str]) -> int:
    """`layerprobe compare RUN_ID ... --layer L` or `--sweep PARENT_ID`: linear CKA of one layer
    across runs, as cka_across.json and a heatmap (logged to the sweep's parent with --sweep)."""
    import argparse
    from pathlib import Path

    parser = argparse.ArgumentParser(prog="layerprobe compare", description=compare_command.__doc__)
    parser.add_argument("run_ids", nargs="*")
    parser.add_argument("--layer", required=True)
    parser.add_argument("--sweep", default=None, help="a sweep's parent run: compare its children, log there")
    parser.add_argument("--tracking-uri", default=None)
    parser.add_argument("--output-dir", default="outputs")
    args = parser.parse_args(argv)
    try:
        from layerprobe import tracking
        from layerprobe.compare import compare_runs

        uri = args.tracking_uri or tracking.resolve_uri(None)
        ids = list(args.run_ids) or (tracking.child_runs(uri, args.sweep) if args.sweep else [])
        if len(ids) < 2:
            raise LayerprobeError("compare needs at least two runs (run ids, or --sweep PARENT_ID)")
        result = compare_runs(uri, ids, args.layer, Path(args.output_dir), log_to=args.sweep)
    except LayerprobeError as e:
        return _fail(e)
    width = max(len(n) for n in result.runs)
    print(f"linear CKA of {result.layer} across {len(result.runs)} runs ({result.examples} examples)")
    for name, row in zip(result.runs, result.cka):
        print(f"  {name:<{width}}  " + "  ".join(f"{v:.3f}" for v in row))
    print(f"files: {', '.join(str(f) for f in result.files)}")
    return 0


COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "validate": validate_command,
    "data": data_command,
    "probe": probe_command,
    "reproduce": reproduce_command,
    "check": check_command,
    "cluster": cluster_command,
    "upload-pending": upload_pending_command,
    "compare": compare_command,
}


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if args and args[0] in COMMANDS:
            return COMMANDS[args[0]](args[1:])
        return run_command(args)
    except KeyboardInterrupt:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print("layerprobe: interrupted; checkpoints written so far are kept, the MLflow run is KILLED", file=sys.stderr)
        return INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
