"""`python -m benchmarks [--quick] [--out BENCHMARKS.md]`: measure, print as it goes, write the report.

make bench                      # the full run (~10-15 minutes on 2 cores)
make bench ARGS=--quick         # tiny sizes, one repeat (< 90 s): checks the benchmarks run
make bench ARGS="--only goals"  # the probe-speed goals alone, each figure with its goal (benchmarks/goals.py)
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).absolute().parents[1]
SECTIONS = ("startup", "training", "probe", "tracking", "sweeps")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes and one repeat (< 90 s)")
    p.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md", help="the report to write")
    p.add_argument("--repeats", type=int, default=None, help="repeats per figure (default: 3, quick: 1)")
    p.add_argument(
        "--only",
        nargs="+",
        choices=(*SECTIONS, "goals"),
        default=SECTIONS,
        help="run only these sections; `goals` (alone): the probe-speed goals, spliced into --out",
    )
    args = p.parse_args(argv)
    if "goals" in args.only:
        from benchmarks import goals

        return goals.main(["--out", str(args.out), *(["--quick"] if args.quick else [])])
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    warnings.filterwarnings("ignore")

    from benchmarks import analysis, report
    from benchmarks.machine import describe
    from benchmarks.measure import median, say

    machine = describe()
    mode = "quick" if args.quick else "full"
    repeats = args.repeats or (1 if args.quick else 3)
    say(f"layerprobe benchmarks, {mode} mode, {repeats} repeat(s); {machine['cores']} cores, {machine['cpu']}")
    start = time.perf_counter()
    sections = []
    plot = None
    with tempfile.TemporaryDirectory(prefix="layerprobe-bench-") as tmp:
        if "startup" in args.only:  # before this process imports TensorFlow: nothing else competes
            say("3. start-up")
            sections.append(_startup(repeats))
        import layerprobe._tf  # noqa: F401  (quiets TensorFlow's logger)

        if "training" in args.only:  # first: op determinism, once on, stays on in this process
            from benchmarks.training import input_pipeline, training_overhead

            say("1. training overhead")
            train = training_overhead(args.quick, repeats)
            sections.append(train)
            say("6. input pipeline")
            sections.append(input_pipeline(args.quick, median(train.data["rates"]["layerprobe"])))
        if "probe" in args.only:
            from benchmarks.probe_sections import FULL, QUICK, probe_sections

            plan = QUICK if args.quick else FULL
            if args.repeats:
                plan = dataclasses.replace(plan, repeats=repeats, naive_repeats=min(repeats, plan.naive_repeats))
            say("2. probe phase and 5. scaling")
            probe, scaling = probe_sections(plan, Path(tmp))
            sections += [probe, scaling]
            plot_path = args.out.parent / "benchmarks" / "scaling.png"
            report.scaling_plot(scaling, plot_path)
            plot = plot_path.relative_to(args.out.parent).as_posix()
        if "tracking" in args.only:
            from benchmarks.tracking_cost import tracking_cost

            say("4. tracking cost")
            sections.append(tracking_cost(args.quick, repeats))
        if "sweeps" in args.only:
            from benchmarks.sweep_parallel import sweep_parallel

            sections.append(sweep_parallel(steps=20 if args.quick else 200))
    keys = ("training", "probe", "startup", "tracking", "scaling", "pipeline", "sweep_parallel")
    order = {k: i for i, k in enumerate(keys)}
    sections.sort(key=lambda s: order[s.key])
    wall = time.perf_counter() - start
    report.write(args.out, sections, machine, mode, wall, plot, analysis.explain(sections))
    say(f"wrote {args.out} in {wall:.0f} s")
    for s in sections:
        for g in s.goals:
            say(f"  {g.line()}")
    return 0


def _startup(repeats: int):  # noqa: ANN202
    from benchmarks.startup import startup

    return startup(repeats)


if __name__ == "__main__":
    raise SystemExit(main())
