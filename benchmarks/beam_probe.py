"""The probe as a Beam pipeline (`layerprobe probe RUN --beam`) against the plain probe; one JSON line each.

    .venv/bin/python -m benchmarks.beam_probe cnn [examples] [repeats]    # in-process Beam / plain, benchmark CNN
    .venv/bin/python -m benchmarks.beam_probe resnet [examples] [repeats] # 2 local workers vs 1, ResNet50 64x64
    .venv/bin/python -m benchmarks.beam_probe scale DIR [GB]              # the data-at-scale set through Beam

cnn: the probe benchmark's 3-conv CNN (benchmarks/configs.py), `probe_existing` and `probe_with_beam`
alternating in one process (each rebuilds the experiment, as the command does). resnet and scale: each
probe a fresh `python -m layerprobe probe` process; the peak RSS of every process of its tree (the driver
and Beam's worker processes) sampled every 0.2 s with psutil. scale generates raw-float TFRecord shards
(benchmarks/data_scale.py), trains on them, probes with `--shard 0/2`, `1/2` and `--merge`, then with Beam
in-process and with 2 local workers, and says whether the statistics equal the merged shards'.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).absolute().parents[1]
TWO_WORKERS = ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]
ONE_THREAD = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f}, n={len(values)})"


def cnn(examples: int = 20_000, repeats: int = 3) -> dict[str, Any]:
    """In-process Beam / plain probe of the benchmark CNN, per alternating pair."""
    from benchmarks.configs import cnn_config
    from layerprobe.beam.options import check_flags
    from layerprobe.beam.pipeline import probe_with_beam
    from layerprobe.reprobe import probe_existing
    from layerprobe.runner import run

    work = Path(tempfile.mkdtemp(prefix="beam_bench_"))
    run(cnn_config(examples, str(work / "model")), work / "train")
    flags = check_flags([], None)
    plain, beam = [], []
    for i in range(repeats):
        t = time.perf_counter()
        probe_existing(str(work / "model"), [], work / f"plain-{i}")
        plain.append(time.perf_counter() - t)
        t = time.perf_counter()
        probe_with_beam(str(work / "model"), [], flags, work / f"beam-{i}")
        beam.append(time.perf_counter() - t)
    shutil.rmtree(work, ignore_errors=True)
    ratios = [b / p for b, p in zip(beam, plain)]
    return {"cnn_examples": examples, "plain_s": _spread(plain), "beam_in_process_s": _spread(beam),
            "beam_over_plain": _spread(ratios), "load": os.getloadavg()[0]}  # fmt: skip


def probe_process(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Wall time and the peak RSS (GB) of each process of `python -m layerprobe probe ARGV`'s tree."""
    import psutil

    full = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT), **(env or {})}
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "layerprobe", "probe", *argv], cwd=cwd, env=full,
                            stdout=subprocess.DEVNULL, stderr=open(cwd / "probe.err", "w"))  # fmt: skip  # noqa: SIM115
    peaks: dict[int, tuple[str, int]] = {}
    root = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            for p in [root, *root.children(recursive=True)]:
                rss = p.memory_info().rss
                role = "worker" if "sdk_worker" in " ".join(p.cmdline()) else "driver" if p.pid == proc.pid else "other"
                if rss > peaks.get(p.pid, ("", 0))[1]:
                    peaks[p.pid] = (role, rss)
        except psutil.Error:
            pass
        time.sleep(0.2)
    seconds = time.perf_counter() - t
    if proc.returncode:
        raise RuntimeError(f"{argv} failed ({proc.returncode}): {(cwd / 'probe.err').read_text()[-2000:]}")
    rss = sorted(((role, round(b / 1e9, 2)) for role, b in peaks.values()), key=lambda r: -r[1])
    return {"seconds": round(seconds, 1), "peak_rss_gb": rss}


def resnet(examples: int = 600, repeats: int = 2) -> dict[str, Any]:
    """ResNet50 at 64x64 (forward pass dominates): Beam in-process (1 worker) vs 2 local worker
    processes with TensorFlow's default threads (2 per process on 2 cores) and with 1 thread each."""
    from benchmarks.archs import config
    from layerprobe.runner import run

    work = Path(tempfile.mkdtemp(prefix="beam_bench_resnet_"))
    model = str(work / "model")
    run(config(examples, model), work / "train")
    variants = {
        "1 worker (in-process)": ([], None),
        "2 workers, default threads": (TWO_WORKERS, None),
        "2 workers, 1 intra/inter-op thread each": (TWO_WORKERS, ONE_THREAD),
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    rss: dict[str, Any] = {}
    for i in range(repeats):
        for name, (flags, env) in variants.items():
            out = work / f"out-{i}-{len(times[name])}-{name[:1]}"
            got = probe_process([model, "--beam", *flags, "--output-dir", str(out)], work, env)
            times[name].append(got["seconds"])
            rss[name] = got["peak_rss_gb"]
    shutil.rmtree(work, ignore_errors=True)
    return {"resnet_examples": examples, **{f"{k} s": _spread(v) for k, v in times.items()},
            "peak_rss_gb": rss, "load": os.getloadavg()[0]}  # fmt: skip


def scale(base: Path, gigabytes: float = 8.0) -> list[dict[str, Any]]:
    """The data-at-scale set probed with --shard/--merge, Beam in-process and Beam with 2 workers."""
    from benchmarks.data_scale import generate, whole_run
    from tests.test_beam import assert_same_files

    data, work = base / f"data-{gigabytes:g}", base / f"work-{gigabytes:g}"
    work.mkdir(parents=True, exist_ok=True)
    n = generate(data, gigabytes)
    lines: list[dict[str, Any]] = [{"examples": n, "load": os.getloadavg()[0], **whole_run(data, work)}]
    model = str(work / "model")
    t = time.perf_counter()
    for i in range(2):  # one after the other: the figure is the Beam paths' RSS, the shards are the reference
        probe_process([model, "--shard", f"{i}/2", "--state-dir", str(work / "states")], work)
    merged = probe_process([model, "--merge", str(work / "states"), "--output-dir", str(work / "shards")], work)
    lines.append({"shards_then_merge_s": round(time.perf_counter() - t, 1), "merge": merged})
    for name, flags in (("beam in-process", []), ("beam 2 workers", [*TWO_WORKERS, "--blocks", "2"])):
        out = work / name.replace(" ", "-")
        got = probe_process([model, "--beam", *flags, "--output-dir", str(out)], work)
        try:
            assert_same_files(work / "shards", out)
            equal = "yes"
        except AssertionError as e:
            equal = f"NO: {e}"
        lines.append({"variant": name, **got, "equal_to_shards": equal, "load": os.getloadavg()[0]})
    shutil.rmtree(data)
    shutil.rmtree(work)
    return lines


def main(argv: list[str]) -> None:
    what, rest = (argv[0], argv[1:]) if argv else ("cnn", [])
    if what == "cnn":
        print(json.dumps(cnn(*(int(a) for a in rest))), flush=True)
    elif what == "resnet":
        print(json.dumps(resnet(*(int(a) for a in rest))), flush=True)
    elif what == "scale":
        for line in scale(Path(rest[0]), *(float(a) for a in rest[1:])):
            print(json.dumps(line), flush=True)
    else:
        raise SystemExit(f"python -m benchmarks.beam_probe: cnn, resnet or scale DIR [GB]. Received: {what!r}")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main(sys.argv[1:])
