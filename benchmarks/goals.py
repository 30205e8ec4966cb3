"""`python -m benchmarks.goals [--quick]`: every figure of the probe-speed goals, each printed with its goal.

Writes the section "Probe speed goals" of BENCHMARKS.md in place (before "Fused probe kernel"; the rest
of the file is left as it was). Every ratio is of two figures of this run, measured alternately, with
the load average beside it. The Keras engine's figure comes from `benchmarks.engines --engine keras`
run by the Keras venv's python (`--keras-python`; skipped when it does not exist).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.measure import Goal, fmt, median, say, spread

ROOT = Path(__file__).absolute().parents[1]
TITLE = "## Probe speed goals"
BEFORE = "## Fused probe kernel"
KERAS_PYTHON = ROOT / ".venv-keras" / "bin" / "python"


def _load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def probe_vs_bare(examples: int, repeats: int, workdir: Path) -> dict[str, Any]:
    """Seconds of bare predict and the probe phase (cold: a new engine; warm: its graph again),
    alternating; the host traffic of one pass; the naive per-example pattern once."""
    from benchmarks.probing import ProbeBench, _engine

    bench = ProbeBench(workdir)
    say(f"  training the benchmark CNN: {bench.train(examples):.1f} s")
    bench.probe(examples)  # warm-up: imports and graph-building caches
    bench.bare(examples)
    t: dict[str, Any] = {"bare": [], "probe": [], "pass_cold": [], "pass_warm": [], "outcome": []}
    for _ in range(repeats):
        t["bare"].append(bench.bare(examples))
        t["probe"].append(bench.probe(examples))
        cold, warm, outcome = _pass_parts(bench, examples, _engine)
        t["pass_cold"].append(cold)
        t["pass_warm"].append(warm)
        t["outcome"].append(outcome)
        say(f"  {examples} examples: bare {t['bare'][-1]:.2f} s, probe phase {t['probe'][-1]:.2f} s (load {_load()})")
    t["traffic"] = host_traffic(bench, examples)
    t["naive"] = bench.naive(examples)[0]
    say(f"  naive per-example pattern: {t['naive']:.1f} s")
    return t


def _experiment(bench: Any, examples: int, make_engine: Any) -> Any:
    from benchmarks.configs import cnn_config
    from layerprobe.config.loaded import load
    from layerprobe.experiment import Experiment
    from layerprobe.provenance import exposed_layers

    c = cnn_config(examples, bench.model_dir)
    cfg, data = load(c), bench.data(examples)
    names = tuple(exposed_layers(cfg))
    engine = make_engine(c, bench.model_dir)
    return Experiment(cfg, data, engine.spec, engine, engine.summary(data, set(names)), names)


def _pass_parts(bench: Any, examples: int, make_engine: Any) -> tuple[float, float, float]:
    """(a pass on a new engine: graph built, then run; the same pass again on its graph; writing the
    outcome, stats.json and reservoir.npz): where the probe phase's time goes."""
    from benchmarks.probing import cold
    from layerprobe.artifacts import probe_outcome

    x = _experiment(bench, examples, make_engine)
    cold(x.engine)
    t0 = time.perf_counter()
    x.session().run(x.data)
    t1 = time.perf_counter()
    state = x.session().run(x.data)
    t2 = time.perf_counter()
    probe_outcome(x.c, state, x.summary, bench.workdir / "outcome")
    return t1 - t0, t2 - t1, time.perf_counter() - t2


def host_traffic(bench: Any, examples: int) -> dict[str, float]:
    """Bytes per batch per layer the host receives: in-graph state (now) and every batch's summaries (before)."""
    from benchmarks.probing import _engine
    from layerprobe.engines.base import PredictRequest

    x = _experiment(bench, examples, _engine)
    s, p = x.session(), x.c.probe
    request = PredictRequest(p.split, p.batch_size or x.c.data.batch_size, s.label, p.max_examples, p.reservoir_size)
    sizes: list[tuple[int, int]] = []  # (all bytes, of which the reservoir candidates') per batch

    def count(host: dict[str, Any]) -> None:
        total = sum(v.nbytes for v in host.values())
        sizes.append((total, sum(v.nbytes for k, v in host.items() if k.rpartition("/")[2].startswith("res_"))))

    state = x.engine.reduce(x.data, request, s.outputs, count)
    layers = len(x.exposed)
    before = [sum(v.nbytes for v in b.values()) for b in x.engine.predict(x.data, request, s.outputs)]
    return {
        "per_batch_per_layer": median([a for a, _ in sizes]) / layers,
        "beyond_candidates": max(a - c for a, c in sizes) / layers,
        "candidates": median([c for _, c in sizes]) / layers,
        "state_once": sum(v.nbytes for v in state.values()) / layers,
        "before": median(before) / layers,
    }


def keras_engine(python: Path, quick: bool) -> dict[str, Any] | None:
    if not python.exists():
        say(f"  {python} does not exist: the Keras engine's figure is not measured")
        return None
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [str(python), "-m", "benchmarks.engines", "--engine", "keras", *(["--quick"] if quick else [])]
    out = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    say(f"  keras engine: probe / bare {result['probe_over_bare']:.2f}x (load {result['load_1min']:.2f})")
    return result


def run_stages(repeats: int, quick: bool, workdir: Path) -> dict[str, list[float]]:
    """`make run`'s stages (RunResult.seconds) and wall, each run in a fresh model_dir, one store."""
    from benchmarks.configs import default_config
    from layerprobe.runner import run

    workdir.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    out: dict[str, list[float]] = {}
    from benchmarks.probing import as_first_run

    for i in range(repeats + 1):  # the first: imports and the store's migrations, not counted
        c = default_config(str(workdir / f"model{i}"), uri, quick)
        as_first_run()
        t = time.perf_counter()
        r = run(c, workdir / f"run{i}")
        wall = time.perf_counter() - t
        if i:
            for k, v in {**r.seconds, "wall": wall}.items():
                out.setdefault(k, []).append(v)
            say("  make run: " + ", ".join(f"{k} {v:.2f} s" for k, v in sorted({**r.seconds, "wall": wall}.items())))
    return out


AFTER_TRAINING = ("evaluate", "dynamics", "probe", "export")


def sweep_in_one_process(trials: int, quick: bool, workdir: Path) -> tuple[float, float]:
    """(wall, sum of the training stages) of `trials` grid points run one after another in this
    process, as Hydra's basic launcher runs a sweep's jobs, into one store."""
    from benchmarks.configs import plain
    from layerprobe.runner import run

    workdir.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{workdir / 'sweep.db'}"
    grid = [(lr, seed) for lr in (0.001, 0.003) for seed in range(trials // 2)]
    train = 0.0
    t = time.perf_counter()
    for i, (lr, seed) in enumerate(grid):
        overrides = [f"trainer.model_dir={workdir / f'trial{i}'}", f"tracking.uri={uri}"]
        overrides += [f"trainer.optimizer.learning_rate={lr}", f"trainer.seed={seed}"]
        overrides += ["trainer.train_steps=100"] if quick else []
        train += run(plain(overrides), workdir / f"trial{i}-out").seconds["train"]
    wall = time.perf_counter() - t
    say(f"  {len(grid)}-trial sweep: wall {wall:.1f} s, training stages {train:.1f} s")
    return wall, train


@dataclass(frozen=True)
class Figures:
    """What one run of this benchmark measured (see the functions that fill each)."""

    probe: dict[str, Any]  # probe_vs_bare
    summaries: dict[str, list[float]]  # fused_kernel.summaries_ms
    keras: dict[str, Any] | None  # keras_engine
    dynamics: dict[str, list[float]]  # dynamics.measure
    stages: dict[str, list[float]]  # run_stages
    sweep: tuple[float, float]  # sweep_in_one_process


def goals(f: Figures) -> list[Goal]:
    p, s, k, dyn, stages, sweep = f.probe, f.summaries, f.keras, f.dynamics, f.stages, f.sweep
    after = [
        sum(stages.get(x, [0.0] * len(stages["train"]))[i] for x in AFTER_TRAINING) for i in range(len(stages["train"]))
    ]
    traffic = p["traffic"]
    out = [
        Goal("probe phase / bare predict, benchmark CNN, Estimator", median(_ratio(p["probe"], p["bare"])), "<=", 1.3),
    ]
    if k is not None:
        out.append(Goal("the same, Keras engine", k["probe_over_bare"], "<=", 1.3))
    out += [
        Goal("summaries / one memory pass", median(_ratio(s["fused"], s["reduce_sum"])), "<=", 2.0),
        Goal(
            "bytes to the host per batch per layer beyond the reservoir candidates",
            traffic["beyond_candidates"],
            "<=",
            1024,
            " B",
        ),
        Goal(
            "training + dynamics stage / training (default run)",
            median([1 + a / b for a, b in zip(dyn["stage"], dyn["off"])]),
            "<=",
            1.1,
        ),
        Goal("`make run` stages after training / training stage", median(_ratio(after, stages["train"])), "<=", 1.5),
        Goal("8-trial grid sweep in one process, wall / sum of training stages", sweep[0] / sweep[1], "<=", 2.0),
        Goal("naive per-example pattern / probe phase", p["naive"] / median(p["probe"]), ">=", 25.0),
    ]
    return out


def _ratio(a: list[float], b: list[float]) -> list[float]:
    return [x / y for x, y in zip(a, b)]


def section(f: Figures, examples: int, loads: tuple[str, str]) -> str:
    gs = goals(f)
    p, k, stages, sweep = f.probe, f.keras, f.stages, f.sweep
    lines = [
        TITLE,
        "",
        "`python -m benchmarks.goals` (this section only). Probe phase: the benchmark CNN (section 2), "
        f"{examples:,} examples, 3 conv layers, bare predict and the probe phase alternating per repeat, "
        "each on a new engine that builds its own graph (the graph a process keeps for its next run is "
        "dropped first). "
        'Summaries: as in "Fused probe kernel". Host traffic: what `Engine.reduce` hands the host per '
        "batch (the default 512-example reservoir's candidates; the state once per pass) against what the "
        'former per-batch path fetched. Dynamics: as in "Training dynamics". `make run`: the default '
        "experiment through `runner.run` into a sqlite store, a fresh model_dir per repeat after one "
        "warm-up run (imports), with what a process keeps for its next run dropped before each (the probe "
        "graph, the installed-package scans): what one `make run` process pays but its imports. Sweep: 8 "
        "grid points (2 learning rates x 4 seeds) of the default experiment run one "
        "after another in one process into one store, as Hydra's basic launcher runs them. "
        f"Load average (1, 5, 15 min) at start {loads[0]}, at end {loads[1]}.",
        "",
        "| figure | value | goal | status |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {g.what} | {fmt(g.value)}{g.unit} | {g.op} {fmt(g.target)}{g.unit} | {'met' if g.met else '**not met**'} |"
        for g in gs
    ]
    traffic = p["traffic"]
    rows = [
        ["bare predict, logits only", spread(p["bare"], " s")],
        ["probe phase (pass + stats.json + reservoir.npz)", spread(p["probe"], " s")],
        ["of a probe phase: the pass on a new engine (graph built, restored, run)", spread(p["pass_cold"], " s")],
        ["the same pass again on that engine's graph (restore, run)", spread(p["pass_warm"], " s")],
        ["writing the outcome (stats, stats.json, reservoir.npz)", spread(p["outcome"], " s")],
        ["host bytes per batch per layer, now (median)", f"{fmt(traffic['per_batch_per_layer'])} B"],
        ["of which reservoir candidates (median)", f"{fmt(traffic['candidates'])} B"],
        ["host bytes per batch per layer, every batch's summaries (before)", f"{fmt(traffic['before'])} B"],
        ["state read once per pass, per layer", f"{fmt(traffic['state_once'])} B"],
        ["naive per-example pattern, once", f"{fmt(p['naive'])} s"],
    ]
    if k is not None:
        rows.append(
            [
                "Keras engine: bare predict / probe phase",
                f"{fmt(k['bare_predict_s'])} s / {fmt(k['probe_s'])} s (load {k['load_1min']:.2f})",
            ]
        )
    rows += [[f"`make run` stage: {name}", spread(v, " s")] for name, v in sorted(stages.items())]
    rows.append(["8-trial sweep: wall / sum of training stages", f"{fmt(sweep[0])} s / {fmt(sweep[1])} s"])
    lines += ["", "|  | value |", "|---|---|"] + [f"| {a} | {b} |" for a, b in rows]
    lines += [""] + [f"- {g.line()}" for g in gs]
    return "\n".join(lines) + "\n"


def splice(report: Path, text: str) -> None:
    """Replace the section in `report` (or insert it before "Fused probe kernel", else append)."""
    old = report.read_text() if report.exists() else ""
    pattern = re.compile(re.escape(TITLE) + r"\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(old):
        new = pattern.sub(lambda _: text + "\n", old, count=1)
    elif "\n" + BEFORE in old:
        new = old.replace("\n" + BEFORE, "\n" + text + "\n" + BEFORE, 1)
    else:
        new = old.rstrip("\n") + "\n\n" + text
    report.write_text(new)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.goals", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, one repeat")
    ap.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    ap.add_argument("--keras-python", type=Path, default=KERAS_PYTHON)
    args = ap.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from benchmarks.dynamics import measure as dynamics
    from benchmarks.fused_kernel import summaries_ms

    start = _load()
    examples, repeats, rounds, iters = (1_000, 1, 2, 3) if args.quick else (20_000, 3, 7, 10)
    with tempfile.TemporaryDirectory(prefix="layerprobe-goals-") as tmp:
        say("probe phase / bare predict, host traffic, naive pattern")
        p = probe_vs_bare(examples, repeats, Path(tmp) / "probe")
        say("summaries / one memory pass")
        s = summaries_ms(rounds, iters)
        say("training dynamics")
        dyn = dynamics(repeats, ["trainer.train_steps=100"] if args.quick else [])
        say("make run stages")
        stages = run_stages(repeats, args.quick, Path(tmp) / "run")
        say("sweep in one process")
        sweep = sweep_in_one_process(8, args.quick, Path(tmp) / "sweep")
    say("Keras engine")
    k = keras_engine(args.keras_python, args.quick)
    figures = Figures(p, s, k, dyn, stages, sweep)
    text = section(figures, examples, (start, _load()))
    splice(args.out, text)
    say(text)
    for g in goals(figures):
        say(g.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
