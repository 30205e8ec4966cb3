"""The subcommands: each looks at configs, data or logged runs; `layerprobe [overrides]` trains."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from layerprobe.cli.report import example_values, fail, print_stats
from layerprobe.errors import LayerprobeError
from layerprobe.shell import installed_command


def _plain(cfg: Any) -> dict[str, Any]:
    from layerprobe.config.compose import plain

    return plain(cfg)  # type: ignore[no-any-return]


def validate_command(argv: Sequence[str]) -> int:
    """`layerprobe validate [--static] [overrides]`: check everything that can be checked before
    training (config rules, the data against the model's inputs and labels, the dry build's shapes
    and losses) and say which checks ran; --static: the config rules only, without TensorFlow."""
    import argparse

    from layerprobe.config import compose
    from layerprobe.config.loaded import load

    parser = argparse.ArgumentParser(prog="layerprobe validate", description=validate_command.__doc__)
    parser.add_argument("--static", action="store_true", help="config rules only: no data, no TensorFlow")
    args, overrides = parser.parse_known_args(argv)
    try:
        c = load(compose(overrides))
        if args.static:
            from layerprobe.preflight import static_checks

            checks, exposed = static_checks(c), None
        else:
            from layerprobe.preflight import preflight

            pre = preflight(c)
            checks, exposed = pre.checks, pre.exposed
    except LayerprobeError as e:
        return fail(e)
    if exposed is None:
        from layerprobe.provenance import exposed_layers

        exposed = tuple(exposed_layers(c))
    for check in checks:
        print(f"ok  {check}")
    if args.static:
        print("not checked (--static): the data against the model's inputs, layer shapes, losses against outputs")
    print(f"config OK: model {c.model.name} ({len(c.model.layers)} layers), data {c.data.name}")
    print(f"exposed layers: {', '.join(exposed) or '(none)'}")
    return 0


def data_command(argv: Sequence[str]) -> int:
    """`layerprobe data [overrides]`: split sizes, element spec and a few examples; no model."""
    from layerprobe.config import compose
    from layerprobe.schema import data_config

    try:
        raw = _plain(compose(argv))["data"]  # the data section alone: no model rules
        from layerprobe.data.checks import check_data_config
        from layerprobe.data.pipeline import dataset, prepare

        check_data_config(raw)
        d = data_config(raw)

        data = prepare(d)
    except LayerprobeError as e:
        return fail(e)
    print(f"data {data.name}: sizes {data.sizes()} sha256 {data.digest[:16]}")
    ds = dataset(data, "train", training=False, batch_size=d.batch_size, seed=0, max_examples=3)
    feats, labels = ds.element_spec
    for kind, spec in (("feature", feats), ("label", labels)):
        for name, s in spec.items():
            print(f"  {kind} {name}: {s.dtype.name} {s.shape.as_list()[1:]}")
    for f, y in ds.unbatch().take(3).as_numpy_iterator():
        shown = ", ".join(f"{k}: {example_values(v)}" for k, v in f.items())
        print(f"  example: {shown}; labels { ({k: v.tolist() for k, v in y.items()}) }")
    return 0


def probe_command(argv: Sequence[str]) -> int:
    """`layerprobe probe RUN_ID|MODEL_DIR [--checkpoints all] [--allow-imports] [overrides]`: probe
    without retraining; --checkpoints all: also every kept checkpoint, as training dynamics.
    `--shard I/N --state-dir DIR` probes the I-th of N disjoint parts of the split and writes its
    mergeable state to DIR; `--merge DIR` folds the N states into one pass's statistics and logs them.
    `--beam [--blocks N] [BEAM FLAGS]` runs the blocks as an Apache Beam pipeline (in-process by default;
    --direct_running_mode=multi_processing --direct_num_workers=N, or --runner=PortableRunner
    --job_endpoint=HOST:PORT --environment_type=...): docs/probe-at-scale.md."""
    import argparse
    import time

    import yaml

    from layerprobe.config import one_line_hydra_error

    parser = argparse.ArgumentParser(prog="layerprobe probe", description=probe_command.__doc__)
    parser.add_argument("source", help="an MLflow run id or a model_dir trained by layerprobe")
    parser.add_argument("--allow-imports", action="store_true", help="trust dotted `type` paths in its config")
    parser.add_argument("--output-dir", default=None, help="where the probe files go (default outputs/reprobe-*)")
    parser.add_argument("--shard", default=None, metavar="I/N", help="probe only shard I of N (0 <= I < N)")
    parser.add_argument("--state-dir", default=None, help="--shard: where the shard's state file goes")
    parser.add_argument("--merge", default=None, metavar="DIR", help="merge the shard states in DIR and log")
    parser.add_argument(
        "--checkpoints", choices=["latest", "all"], default="latest", help="all: every kept checkpoint too"
    )
    parser.add_argument("--beam", action="store_true", help="probe as a Beam pipeline; other --flags are Beam's")
    parser.add_argument(
        "--blocks", type=int, default=None, help="--beam: cut the split into N blocks (default: workers)"
    )
    args, overrides = parser.parse_known_args(argv)
    out = args.output_dir or f"outputs/reprobe-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        from layerprobe import reprobe

        if args.blocks is not None and not args.beam:
            raise LayerprobeError("--blocks N cuts the split for --beam: add --beam")
        if args.beam and args.shard is not None:
            raise LayerprobeError("--beam probes every block itself: drop --shard")
        if args.shard is not None:
            from layerprobe.data.keys import parse_shard

            shard = parse_shard(args.shard)
            if args.merge or not args.state_dir:
                raise LayerprobeError("--shard I/N writes a state file: give --state-dir DIR (and merge later)")
            path = reprobe.probe_shard(args.source, overrides, shard, args.state_dir, args.allow_imports)
            print(
                f"shard {shard[0]}/{shard[1]}: state in {path}; merge with: "
                f"{installed_command('layerprobe')} probe {args.source} --merge {args.state_dir}"
            )
            return 0
        if args.beam:
            stats, run_id = _probe_with_beam(args, overrides, out)
        elif args.merge:
            stats, run_id = reprobe.merge_shards(args.source, overrides, args.merge, out, args.allow_imports)
        else:
            stats, run_id = reprobe.probe_existing(
                args.source, overrides, out, args.allow_imports, args.checkpoints == "all"
            )
    except LayerprobeError as e:
        return fail(e)
    except yaml.YAMLError as e:  # a logged config is read with safe_load: tags such as !!python are refused
        first = one_line_hydra_error(e)
        return fail(LayerprobeError(f"{args.source}: the logged config is not plain YAML, refused: {first}"))
    print_stats(stats)
    print(f"files: {out}/probe" + (f"; logged into run {run_id}" if run_id else ""))
    return 0


def _probe_with_beam(args: Any, rest: Sequence[str], out: str) -> tuple[dict[str, Any], str | None]:
    """probe_command's --beam path: Beam's flags checked before anything is read or built."""
    from layerprobe.beam.options import check_flags, split_flags

    if args.merge:
        raise LayerprobeError("--beam probes and merges every block itself: drop --merge")
    flags, overrides = split_flags(rest)
    beam_flags = check_flags(flags, args.blocks)
    from layerprobe.beam.pipeline import probe_with_beam

    all_checkpoints = args.checkpoints == "all"
    return probe_with_beam(args.source, overrides, beam_flags, out, args.allow_imports, all_checkpoints, args.state_dir)


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
        return fail(e)
    print(report.text())
    return 1 if report.failures else 0


def check_command(argv: Sequence[str]) -> int:
    """`layerprobe check [NAME ...] [--engine keras]`: run experiments and compare with their
    baselines; exit 1 on a regression."""
    import argparse
    from pathlib import Path

    from layerprobe.check import DEFAULT_ENGINE

    parser = argparse.ArgumentParser(prog="layerprobe check", description=check_command.__doc__)
    parser.add_argument("names", nargs="*", help="experiments (default: all in experiments/)")
    parser.add_argument("--full", action="store_true", help="the full experiment, not the CI budget variant")
    parser.add_argument("--update", action="store_true", help="rewrite this engine's baseline values from this run")
    parser.add_argument("--engine", default=DEFAULT_ENGINE, help=f"trainer.engine of every run ({DEFAULT_ENGINE})")
    parser.add_argument("--output-dir", default="outputs/check")
    args = parser.parse_args(argv)
    try:
        from layerprobe.check import check, table

        gate = check(args.names, Path(args.output_dir), ci=not args.full, update=args.update, engine=args.engine)
    except LayerprobeError as e:
        return fail(e)
    print(table(gate))
    rows, failed = len(gate.rows), len(gate.failed)
    print(f"check ({gate.engine}): {rows - failed} of {rows} metrics within their baseline tolerance")
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
        return fail(e)
    for path, n in done.items():
        print(f"{path}: {n} buffered call(s) delivered")
    if not done:
        print(f"nothing pending under {args.dir}")
    return 0


def compare_command(argv: Sequence[str]) -> int:
    """`layerprobe compare RUN_ID ...` or `--sweep PARENT_ID` [--layer L]: one HTML report of the runs,
    layer by layer (statistics, histograms, dynamics, linear probes by depth, CKA across runs); with
    --layer, that layer's CKA matrix is printed too (and everything is logged to the parent with --sweep)."""
    import argparse
    from pathlib import Path

    parser = argparse.ArgumentParser(prog="layerprobe compare", description=compare_command.__doc__)
    parser.add_argument("run_ids", nargs="*")
    parser.add_argument("--layer", default=None, help="only this layer (default: every exposed layer)")
    parser.add_argument("--sweep", default=None, help="a sweep's parent run: compare its children, log there")
    parser.add_argument("--tracking-uri", default=None)
    parser.add_argument("--output-dir", default="outputs")
    args = parser.parse_args(argv)
    try:
        from layerprobe import tracking
        from layerprobe.compare import compare_report, compare_runs

        uri = args.tracking_uri or tracking.resolve_uri(None)
        children = tracking.sweep_children(uri, args.sweep) if args.sweep else []  # over the sweep's reruns
        ids = list(args.run_ids) or [r.run_id for r in children]
        if len(ids) < 2:
            raise LayerprobeError("compare needs at least two runs (run ids, or --sweep PARENT_ID)")
        out = Path(args.output_dir)
        result = compare_runs(uri, ids, args.layer, out, log_to=args.sweep) if args.layer else None
        report = compare_report(uri, ids, out, [args.layer] if args.layer else None, log_to=args.sweep)
    except LayerprobeError as e:
        return fail(e)
    if result is not None:
        width = max(len(n) for n in result.runs)
        print(f"linear CKA of {result.layer} across {len(result.runs)} runs ({result.examples} examples)")
        for name, row in zip(result.runs, result.cka):
            print(f"  {name:<{width}}  " + "  ".join(f"{v:.3f}" for v in row))
        print(f"files: {', '.join(str(f) for f in result.files)}")
    print(f"report: {report}")
    return 0


# name -> (function, what it does in one line); `layerprobe --help` lists them in this order.
SUBCOMMANDS: dict[str, tuple[Callable[[Sequence[str]], int], str]] = {
    "probe": (probe_command, "probe a finished run or model_dir again, any layers, without retraining"),
    "compare": (compare_command, "one HTML report comparing runs (or a sweep's children) layer by layer"),
    "reproduce": (reproduce_command, "rerun a logged run from its config and diff every metric"),
    "check": (check_command, "run experiments/ and compare with their baselines (the CI gate)"),
    "data": (data_command, "a data config's split sizes, element spec and a few examples; no model"),
    "validate": (validate_command, "check a config before training (--static: without TensorFlow)"),
    "cluster": (cluster_command, "a distributed training job on 127.0.0.1, one process per task"),
    "upload-pending": (upload_pending_command, "send tracking calls buffered while the store was away"),
}
COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {name: fn for name, (fn, _) in SUBCOMMANDS.items()}
