"""Sections 2 (probe phase) and 5 (scaling): runs ProbeBench and the memory subprocesses, in that order."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from benchmarks.configs import CNN_LAYERS, CONVS, PROBE_BATCH, PROBE_TRAIN_STEPS
from benchmarks.measure import Goal, Section, fmt, median, say, spread
from benchmarks.memory import STATIC_MMAP, measure_in_subprocess
from benchmarks.opcost import op_costs
from benchmarks.probing import ProbeBench

MB = 1024**2


@dataclass(frozen=True)
class Plan:
    main: int  # examples for 2(a), 2(b) and the layer-count scaling
    sizes: tuple[int, ...]  # examples for the size scaling; the first and last are 2(c)
    repeats: int
    naive_repeats: int
    opcost_iters: int
    layer_memory: bool  # a memory subprocess per exposed-layer set too


FULL = Plan(20_000, (5_000, 20_000, 50_000), 3, 2, 10, True)
QUICK = Plan(1_000, (500, 1_000), 1, 1, 3, False)
LAYER_SETS: dict[str, tuple[str, ...]] = {
    "1 (conv1)": ("conv1",),
    "3 (conv1-3)": CONVS,
    f"all ({len(CNN_LAYERS)})": tuple(CNN_LAYERS),
}


def probe_sections(plan: Plan, workdir: Path) -> tuple[Section, Section]:
    bench = ProbeBench(workdir)
    first = min(plan.sizes)
    say(f"  training the benchmark CNN for {PROBE_TRAIN_STEPS} steps: {bench.train(first):.1f} s")
    bench.probe(first)  # warm-up: first-use imports and graph-building caches
    bench.bare(first)
    fewer = max(1, plan.repeats - 1)  # the costliest rows (larger sizes, other layer sets) repeat less

    by_size: dict[int, dict[str, list[float]]] = {}
    for n in sorted(set(plan.sizes) | {plan.main}):
        t = by_size[n] = {"bare": [], "probe": []}
        for _ in range(plan.repeats if n <= plan.main else fewer):  # alternate: drifting load hits both alike
            t["bare"].append(bench.bare(n))
            t["probe"].append(bench.probe(n))
        say(f"  {n:>6} examples: bare predict {median(t['bare']):.2f} s, probe phase {median(t['probe']):.2f} s")

    n = plan.main
    naive, naive_mem, naive_ratio, naive_np = [], [], [], []
    for i in range(plan.naive_repeats):
        seconds, np_seconds, growth = bench.naive(n)
        naive.append(seconds)
        naive_np.append(np_seconds)
        naive_mem.append(growth)
        naive_ratio.append(seconds / by_size[n]["probe"][min(i, plan.repeats - 1)])
        say(
            f"  naive per-example pattern, {n} examples: {seconds:.1f} s ({np_seconds:.1f} s of it numpy statistics), "
            f"RSS growth {growth / MB:,.0f} MB"
        )

    extras = bench.probe(n, extras=True)
    say(f"  probe phase with the default plots and analysis on: {extras:.2f} s")

    by_layers: dict[str, list[float]] = {}
    for label, names in LAYER_SETS.items():
        by_layers[label] = by_size[n]["probe"] if names == CONVS else [bench.probe(n, names) for _ in range(fewer)]
        say(f"  {label} layers exposed: probe phase {median(by_layers[label]):.2f} s")

    mem_runs: list[tuple[int, tuple[str, ...]]] = [(s, CONVS) for s in plan.sizes]
    if plan.layer_memory:
        mem_runs += [(n, names) for names in LAYER_SETS.values() if names != CONVS]
    memory: dict[tuple[int, int], dict] = {}
    for size, names in mem_runs:
        m = measure_in_subprocess(size, names, bench.model_dir, workdir)
        memory[(size, len(names))] = m
        say(
            f"  memory, {size} examples, {len(names)} layers: RSS before {m['rss_before'] / MB:,.0f} MB, "
            f"probe-phase peak growth {m['growth'] / MB:,.0f} MB"
        )

    static: dict[int, int] = {}  # the same probe with glibc's mmap threshold fixed (see memory.py)
    for size in (plan.sizes[0], plan.sizes[-1]):
        static[size] = measure_in_subprocess(size, CONVS, bench.model_dir, workdir, STATIC_MMAP)["growth"]
        say(f"  memory, {size} examples, glibc mmap threshold fixed at 1 MB: peak growth {static[size] / MB:,.0f} MB")

    costs = op_costs(plan.opcost_iters)
    for what, ms in costs.items():
        say(f"  {ms:8.1f} ms/batch  {what}")

    return _probe_section(
        plan, by_size, naive, naive_np, naive_mem, naive_ratio, memory, static, costs, extras
    ), _scaling_section(plan, by_size, by_layers, memory)


def _probe_section(plan, by_size, naive, naive_np, naive_mem, naive_ratio, memory, static, costs, extras) -> Section:  # noqa: ANN001
    n = plan.main
    t = by_size[n]
    ratios = [p / b for p, b in zip(t["probe"], t["bare"])]
    lo, hi = plan.sizes[0], plan.sizes[-1]
    g_lo, g_hi = memory[(lo, 3)]["growth"], memory[(hi, 3)]["growth"]
    mem_growth = 100 * (g_hi - g_lo) / g_lo
    s_lo, s_hi = static[lo], static[hi]
    batches = -(-n // PROBE_BATCH)
    s = Section(
        "probe",
        "2. Probe phase",
        f"The 3-conv CNN (conv1 32x32x16, conv2 16x16x32, conv3 8x8x64: 28,672 activation floats per example) "
        f"trained {PROBE_TRAIN_STEPS} steps once; every measurement restores that model_dir. {n:,} synthetic "
        f"32x32x3 examples in the eval split, batch {PROBE_BATCH} ({batches} batches), 3 conv layers exposed. "
        "*Probe phase* = `ProbeSession.run` + `artifacts.probe_outcome`, what `runner.run` times as its "
        "probe stage (a new engine: build the probe's graph, restore, one pass folding the summaries into "
        "state on the device, the reservoir candidates to the host; then stats.json and reservoir.npz with the "
        "default 512-example reservoir; plots and the representation analysis off, their cost is one row apart). "
        "*Bare predict* "
        "= `Estimator.predict` of the same model returning only the logits, same input_fn and batch, "
        "`yield_single_examples=False`, consumed in a loop. Both include graph building and restore. *Naive* = "
        "a hand-written model_fn returning the three activations via `tf.identity`, "
        "`yield_single_examples=True`, every example appended to lists, then numpy statistics over the "
        "stacked arrays (mean, std, min, max, zero fraction, percentiles, per-unit mean/std/max/active, L2 "
        "norms, 60-bin histogram, spatial mean). Memory: one fresh subprocess per size; peak RSS during "
        "the probe phase minus RSS just before it, peak = max(VmHWM after resetting it through "
        "`/proc/self/clear_refs`, VmRSS sampled every 5 ms in a thread). The naive RSS growth is sampled "
        "the same way in the main process.",
        ["", "value"],
        [
            [f"bare predict, logits only ({n:,} examples)", spread(t["bare"], " s")],
            [f"layerprobe probe phase ({n:,} examples, 3 layers)", spread(t["probe"], " s")],
            ["(a) probe phase / bare predict (per repeat)", spread(ratios, "x")],
            [
                "probe phase with the default plots + analysis (linear probes, CKA, report.html), once",
                f"{fmt(extras)} s",
            ],
            [f"naive per-example pattern ({n:,} examples)", spread(naive, " s")],
            ["of which numpy statistics at the end", spread(naive_np, " s")],
            ["(b) naive / probe phase", spread(naive_ratio, "x")],
            ["naive pattern: RSS growth", spread([m / MB for m in naive_mem], " MB")],
            [f"(c) probe-phase peak RSS growth at {lo:,} examples", f"{g_lo / MB:,.0f} MB"],
            [f"(c) probe-phase peak RSS growth at {hi:,} examples", f"{g_hi / MB:,.0f} MB"],
            [f"(c) growth of that figure from {lo:,} to {hi:,} examples", f"{fmt(mem_growth)} %"],
            [
                f"diagnostic: the same with glibc's mmap threshold fixed at 1 MB ({lo:,} / {hi:,} examples)",
                f"{s_lo / MB:,.0f} / {s_hi / MB:,.0f} MB ({fmt(100 * (s_hi - s_lo) / s_lo)} %)",
            ],
        ],
        [
            Goal("(a) probe phase / bare predict", median(ratios), "<=", 1.3),
            Goal("(b) naive / layerprobe", median(naive_ratio), ">=", 10.0),
            Goal(f"(c) probe-phase RSS growth, {hi:,} vs {lo:,} examples", mem_growth, "<", 10.0, " %"),
        ],
        data={
            "costs": costs,
            "naive_np": median(naive_np),
            "naive": median(naive),
            "probe": median(t["probe"]),
            "bare": median(t["bare"]),
            "mem_lo": g_lo / MB,
            "mem_hi": g_hi / MB,
            "static_lo": s_lo / MB,
            "static_hi": s_hi / MB,
            "lo": lo,
            "hi": hi,
        },
    )
    s.notes.append(
        f"The probe phase's RSS growth is {g_lo / MB:,.0f} MB already at {lo:,} examples: building the predict "
        "graph, creating the session and restoring the checkpoint, TensorFlow's allocator pools, the prefetch "
        "buffers and the 512-example reservoir. That part does not scale with the number of examples; (c) "
        "checks that nothing else does."
    )
    return s


def _scaling_section(plan, by_size, by_layers, memory) -> Section:  # noqa: ANN001
    rows = []
    for n in plan.sizes:
        t = by_size[n]
        m = memory.get((n, 3))
        rows.append(
            [
                f"{n:,}",
                "3",
                spread(t["probe"], " s"),
                spread(t["bare"], " s"),
                f"{fmt(median(t['probe']) / median(t['bare']))}x",
                f"{fmt(n / median(t['probe']))}" if n else "",
                f"{m['growth'] / MB:,.0f} MB" if m else "",
            ]
        )
    for label, times in by_layers.items():
        k = len(LAYER_SETS[label])
        m = memory.get((plan.main, k))
        rows.append(
            [
                f"{plan.main:,}",
                label,
                spread(times, " s"),
                spread(by_size[plan.main]["bare"], " s"),
                f"{fmt(median(times) / median(by_size[plan.main]['bare']))}x",
                fmt(plan.main / median(times)),
                f"{m['growth'] / MB:,.0f} MB" if m else "",
            ]
        )
    return Section(
        "scaling",
        "5. Scaling",
        "The probe phase (as in section 2) against the number of examples with the 3 conv layers exposed, "
        "and against the number of exposed layers at the section-2 size. Times are medians over repeats in "
        "this process; memory is the probe-phase peak RSS growth from one fresh subprocess per row.",
        ["examples", "layers exposed", "probe phase", "bare predict", "probe / bare", "examples/s", "RSS growth"],
        rows,
        data={
            "sizes": list(plan.sizes),
            "probe": [median(by_size[n]["probe"]) for n in plan.sizes],
            "bare": [median(by_size[n]["bare"]) for n in plan.sizes],
            "memory": [memory[(n, 3)]["growth"] / MB for n in plan.sizes],
            "layers": [len(v) for v in LAYER_SETS.values()],
            "layer_probe": [median(v) for v in by_layers.values()],
            "layer_memory": [
                memory[(plan.main, len(v))]["growth"] / MB if (plan.main, len(v)) in memory else float("nan")
                for v in LAYER_SETS.values()
            ],
        },
    )
