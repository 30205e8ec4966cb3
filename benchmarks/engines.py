"""`python -m benchmarks.engines [--quick]`: the same config on this environment's engine, one JSON line.

Run once per environment and read the two lines side by side (BENCHMARKS.md, "Keras engine"):

    .venv/bin/python -m benchmarks.engines --engine estimator
    .venv-keras/bin/python -m benchmarks.engines --engine keras

The 3-conv CNN of the probe benchmark (benchmarks/configs.py): training steps/s as the engine's own
progress records report it (steady state, median of the logged windows) and the wall time of the whole
train call; the probe phase (the probe session's pass, 3 layers exposed) and a bare predict of the
logits over the same eval split, each restoring the same checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from layerprobe.config.loaded import load


def measure(engine_name: str, examples: int, steps: int, repeats: int, workdir: Path) -> dict[str, Any]:
    from benchmarks.configs import cnn_config
    from layerprobe._tf import tf  # quiet: TF 2.21 logs C++ lines at import otherwise
    from layerprobe.data.pipeline import prepare
    from layerprobe.engines import make_engine
    from layerprobe.engines.base import PredictRequest
    from layerprobe.engines.spec import model_spec
    from layerprobe.experiment import Experiment
    from layerprobe.probe.fused import kernel
    from layerprobe.provenance import exposed_layers

    c = cnn_config(examples, str(workdir / "model"))
    c["trainer"].update(engine=engine_name, train_steps=steps, log_every_steps=max(steps // 10, 1))
    c["trainer"]["save_checkpoints_steps"] = steps
    cfg = load(c)
    data, spec = prepare(c["data"]), model_spec(cfg)
    engine = make_engine(spec, c["trainer"]["model_dir"], cfg.trainer, cfg.data)
    records: list[float] = []
    t = time.perf_counter()
    engine.train(data, steps, lambda rs: records.extend(r["train/steps_per_sec"] for r, _ in rs))
    train_wall = time.perf_counter() - t

    names = tuple(exposed_layers(cfg))
    x = Experiment(cfg, data, spec, engine, engine.summary(data, set(names)), names)
    probe, warm, bare = [], [], []
    for _ in range(repeats):
        session = x.session()  # a new session, as each run's probe phase makes one
        t = time.perf_counter()
        session.run(data)
        probe.append(time.perf_counter() - t)
        t = time.perf_counter()
        session.run(data)  # the same session again: what probing checkpoint after checkpoint costs
        warm.append(time.perf_counter() - t)
        t = time.perf_counter()
        for _batch in engine.predict(data, PredictRequest("eval", c["probe"]["batch_size"]), lambda ts, f: {}):
            pass
        bare.append(time.perf_counter() - t)

    return {
        "engine": engine_name,
        "tensorflow": tf.__version__,
        "train_steps": steps,
        "train_steps_per_sec": statistics.median(records[1:] or records),
        "train_wall_s": train_wall,
        "probe_s": statistics.median(probe),
        "bare_predict_s": statistics.median(bare),
        "probe_over_bare": statistics.median(p / b for p, b in zip(probe, bare)),
        "probe_same_session_s": statistics.median(warm),
        "probe_kernel": kernel.choose(),
        "examples": examples,
        "repeats": repeats,
        "load_1min": os.getloadavg()[0],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.engines", description=__doc__.splitlines()[0])
    p.add_argument("--engine", required=True, choices=("estimator", "keras"))
    p.add_argument("--quick", action="store_true", help="tiny sizes, one repeat (a smoke run)")
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    examples, steps, repeats = (512, 20, 1) if args.quick else (20_000, 300, 3)
    with tempfile.TemporaryDirectory(prefix="layerprobe-engines-") as tmp:
        print(json.dumps(measure(args.engine, examples, steps, repeats, Path(tmp))), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
