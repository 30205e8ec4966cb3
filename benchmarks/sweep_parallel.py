"""Wall time of a 4-job sweep: the basic launcher (one job after another) vs joblib with 2 workers.

    python -m benchmarks.sweep_parallel [--steps 200] [--repeats 1]

Each sweep is the real CLI in a fresh temporary directory (its own mlflow.db and models/), timed
from spawn to exit: Hydra start-up, the MLflow parent run, 4 trainings + evaluations + probes.
`sweep_parallel()` returns a `Section` for `python -m benchmarks`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

from benchmarks.measure import Section, median, say, spread

SWEEP = ["model=tiny_cnn", "trainer=quick", "probe.plots=false", "model.layers.conv1.filters=2,4", "trainer.seed=1,2"]
LAUNCHERS = {"basic (sequential)": [], "joblib, 2 workers": ["+sweep=joblib", "hydra.launcher.n_jobs=2"]}


def time_sweep(extra: list[str], steps: int) -> float:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    with tempfile.TemporaryDirectory() as cwd:
        cmd = [sys.executable, "-m", "layerprobe", "-m", *SWEEP, f"trainer.train_steps={steps}", *extra]
        t = time.perf_counter()
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=1800)
        seconds = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr[-2000:]}")
    return seconds


def sweep_parallel(steps: int = 200, repeats: int = 1) -> Section:
    times: dict[str, list[float]] = {name: [] for name in LAUNCHERS}
    for _ in range(repeats):  # interleaved, so that a busy moment of the machine hits both
        for name, extra in LAUNCHERS.items():
            times[name].append(time_sweep(extra, steps))
            say(f"  4-job sweep, {name}: {times[name][-1]:.1f} s")
    sequential, parallel = (median(times[n]) for n in LAUNCHERS)
    ratio = sequential / parallel
    say(f"  speed-up of joblib with 2 workers: {ratio:.2f}x (cores: {os.cpu_count()})")
    return Section(
        "sweep_parallel",
        "Sweeps: sequential vs parallel jobs",
        f"A 4-job grid sweep (tiny_cnn, {steps} training steps, probe without plots) through the CLI in a fresh "
        "directory, timed from spawn to exit: once with Hydra's basic launcher (jobs one after another, in "
        "the launching process), once with `+sweep=joblib` (2 worker processes, each importing TensorFlow).",
        ["launcher", "wall time"],
        [[name, spread(times[name], " s")] for name in LAUNCHERS] + [["speed-up", f"{ratio:.2f}x"]],
        data={"seconds": times, "ratio": ratio},
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=200, help="training steps per job")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args(argv)
    sweep_parallel(args.steps, args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
