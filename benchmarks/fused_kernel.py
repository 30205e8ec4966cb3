"""`python -m benchmarks.fused_kernel [--quick]`: the fused probe kernel against the TensorFlow path.

Writes the section "Fused probe kernel" of BENCHMARKS.md in place (the rest of the file is left as the
last `make bench` wrote it). Every ratio is of two figures of this run, measured alternately.
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.measure import Goal, fmt, median, say, spread

ROOT = Path(__file__).absolute().parents[1]
TITLE = "## Fused probe kernel"


def summaries_ms(rounds: int, iters: int) -> dict[str, list[float]]:
    """ms per probe batch (conv1-3 summed), per round: one memory pass, fused, TF path, alternating."""
    import tensorflow as tf

    from benchmarks.configs import PROBE_BATCH
    from benchmarks.opcost import activations, forced_kernel
    from layerprobe.probe.graph_stats import LayerProbeSpec, batch_summaries
    from layerprobe.probe.sketch import SketchLayout

    arrays = activations(np.random.default_rng(0))
    layout = SketchLayout(0.005)
    out: dict[str, list[float]] = {"numpy sum": [], "reduce_sum": [], "fused": [], "tf": []}
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        xs = {n: tf.compat.v1.Variable(a) for n, a in arrays.items()}
        fetches: dict[str, Any] = {"reduce_sum": [tf.reduce_sum(x) for x in xs.values()]}
        for kernel in ("fused", "tf"):
            with forced_kernel(kernel):
                fetches[kernel] = [batch_summaries(x, LayerProbeSpec(n, layout)) for n, x in xs.items()]
        sess.run(tf.compat.v1.global_variables_initializer())
        for f in fetches.values():
            sess.run(f)  # warm-up
        for _ in range(rounds):
            for key, f in fetches.items():
                out[key].append(_ms(lambda f=f: sess.run(f), iters))
            out["numpy sum"].append(_ms(lambda: [a.sum() for a in arrays.values()], iters))
    say(f"  per batch of {PROBE_BATCH}: " + ", ".join(f"{k} {median(v):.2f} ms" for k, v in out.items()))
    return out


def _ms(fn: Any, iters: int) -> float:
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * float(np.median(times))


def probe_phase(examples: int, repeats: int, workdir: Path) -> dict[str, list[float]]:
    """Seconds: bare predict, the probe phase on each kernel, alternating; the naive pattern once."""
    from benchmarks.opcost import forced_kernel
    from benchmarks.probing import ProbeBench

    bench = ProbeBench(workdir)
    say(f"  training the benchmark CNN: {bench.train(examples):.1f} s")
    for kernel in ("fused", "tf"):  # warm-up: imports and graph-building caches
        with forced_kernel(kernel):
            bench.probe(examples)
    bench.bare(examples)
    t: dict[str, list[float]] = {"bare": [], "fused": [], "tf": []}
    for _ in range(repeats):
        t["bare"].append(bench.bare(examples))
        for kernel in ("fused", "tf"):
            with forced_kernel(kernel):
                t[kernel].append(bench.probe(examples))
        say(f"  {examples} examples: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in t.items()))
    t["naive"] = [bench.naive(examples)[0]]
    say(f"  naive per-example pattern: {t['naive'][0]:.1f} s")
    return t


def section(s: dict[str, list[float]], p: dict[str, list[float]], examples: int, loads: tuple[str, str]) -> str:
    """The markdown of the section: how, table, goals."""
    pass_ms = median(s["reduce_sum"])
    goals = [
        Goal("fused summaries / one memory pass (reduce_sum)", median(s["fused"]) / pass_ms, "<=", 2.0),
        Goal("(a) probe phase / bare predict, fused kernel", median(_ratio(p["fused"], p["bare"])), "<=", 1.3),
        Goal("(b) naive / layerprobe, fused kernel", p["naive"][0] / median(p["fused"]), ">=", 10.0),
    ]
    rows = [
        ["one memory pass: `reduce_sum` of each exposed layer", spread(s["reduce_sum"], " ms")],
        ["one memory pass: numpy `sum` of the same arrays", spread(s["numpy sum"], " ms")],
        ["all summaries, fused kernel", spread(s["fused"], " ms")],
        ["all summaries, TensorFlow path", spread(s["tf"], " ms")],
        ["fused / one memory pass (reduce_sum)", spread(_ratio(s["fused"], s["reduce_sum"]), "x")],
        ["TensorFlow path / fused (speed-up)", spread(_ratio(s["tf"], s["fused"]), "x")],
        [f"bare predict, logits only ({examples:,} examples)", spread(p["bare"], " s")],
        ["probe phase, fused kernel", spread(p["fused"], " s")],
        ["probe phase, TensorFlow path", spread(p["tf"], " s")],
        ["(a) probe phase / bare predict, fused (per repeat)", spread(_ratio(p["fused"], p["bare"]), "x")],
        ["(a) probe phase / bare predict, TensorFlow path (per repeat)", spread(_ratio(p["tf"], p["bare"]), "x")],
        ["naive per-example pattern, once", f"{fmt(p['naive'][0])} s"],
        ["(b) naive / probe phase, fused", f"{fmt(p['naive'][0] / median(p['fused']))}x"],
        ["(b) naive / probe phase, TensorFlow path", f"{fmt(p['naive'][0] / median(p['tf']))}x"],
    ]
    how = (
        "`python -m benchmarks.fused_kernel` (this section only). Summaries: the benchmark CNN's conv1-3 "
        "activations at batch 256 (ReLU-like, 28,672 floats per example, 29 MB per batch) in variables; per "
        "round, one `session.run` of each of: a `reduce_sum` of every layer (one memory pass), `batch_summaries` "
        "on the fused kernel, `batch_summaries` on the TensorFlow path (LAYERPROBE_PROBE_KERNEL forces each; "
        "median of the iterations of a round; figures are medians over rounds). Probe phase: as in section 2 "
        f"({examples:,} examples, 3 conv layers, the probe session), bare predict, fused and TensorFlow probe "
        f"alternating per repeat. Load average (1, 5, 15 min) at start {loads[0]}, at end {loads[1]}."
    )
    lines = [TITLE, "", how, "", "|  | value |", "|---|---|"] + [f"| {a} | {b} |" for a, b in rows]
    lines += [""] + [f"- {g.line()}" for g in goals] + ["", where_the_time_goes(s, p, examples)]
    return "\n".join(lines) + "\n"


def where_the_time_goes(s: dict[str, list[float]], p: dict[str, list[float]], examples: int) -> str:
    """A paragraph from this run's figures: the kernel's share of what the probe adds, and its floor."""
    from benchmarks.configs import PROBE_BATCH

    batches = -(-examples // PROBE_BATCH)
    added = median(p["fused"]) - median(p["bare"])
    kernel = batches * median(s["fused"]) / 1000
    budget = 0.3 * median(p["bare"]) / batches * 1000
    return (
        f"Where the time goes: the probe phase adds {fmt(added)} s to a bare predict; the fused kernel "
        f"accounts for {fmt(kernel)} s of it ({batches} batches x {fmt(median(s['fused']))} ms), the rest "
        f"({fmt(added - kernel)} s) is outside it (building the probe's graph and its first batch, the fold "
        "of the summaries into state on the device, the reservoir candidates' activations to the host and "
        f"their merge, stats.json and reservoir.npz). Goal (a) leaves {fmt(budget)} ms per batch for all of "
        "that. In the kernel (perf record on conv1 batches): the sketch's scatter increments, one per non-zero "
        "value into a 256 KB table (zeros are counted with vectors), and the single pass itself, which "
        "converts every value to double for the moments (two FMAs per value) and keeps 8 units' sums, "
        "extremes and counts in registers across positions. One memory pass only adds floats, so <= 2x it "
        "would need the sketch and the double-precision moments nearly free."
    )


def _ratio(a: list[float], b: list[float]) -> list[float]:
    return [x / y for x, y in zip(a, b)]


def splice(report: Path, text: str) -> None:
    """Replace the section in `report` (or insert it before "Why goals fell short", else append)."""
    old = report.read_text() if report.exists() else ""
    pattern = re.compile(re.escape(TITLE) + r"\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(old):
        new = pattern.sub(lambda _: text + "\n", old, count=1)
    elif "\n## Why goals fell short" in old:
        new = old.replace("\n## Why goals fell short", "\n" + text + "\n## Why goals fell short", 1)
    else:
        new = old.rstrip("\n") + "\n\n" + text
    report.write_text(new)


def _load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.fused_kernel", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes, one repeat")
    p.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from layerprobe.probe.fused.kernel import available

    if not available():
        say("the fused kernel's library does not load: run `python -m layerprobe.probe.fused.build` first")
        return 1
    start = _load()
    examples, repeats, rounds, iters = (1_000, 1, 2, 3) if args.quick else (20_000, 3, 7, 10)
    say("fused probe kernel: summaries per batch")
    s = summaries_ms(rounds, iters)
    say("fused probe kernel: probe phase")
    with tempfile.TemporaryDirectory(prefix="layerprobe-fused-") as tmp:
        t = probe_phase(examples, repeats, Path(tmp))
    text = section(s, t, examples, (start, _load()))
    splice(args.out, text)
    say(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
