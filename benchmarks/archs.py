"""Real architectures: the probe phase / bare predict on ResNet50 at 64x64 with 4 inner layers exposed.

    .venv/bin/python -m benchmarks.archs [examples] [repeats]

One model_dir trained 1 step (probing needs a checkpoint, not a good model); then bare predict (the
logits only) and the probe session's pass alternate, `repeats` times each, in one process.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

from layerprobe.config.loaded import load

INNER = ["conv2_block3_out", "conv3_block4_out", "conv4_block6_out", "conv5_block3_out"]


def config(examples: int, model_dir: str) -> dict[str, Any]:
    from omegaconf import OmegaConf

    from layerprobe.config import compose

    c: dict[str, Any] = OmegaConf.to_container(  # type: ignore[assignment]
        compose(
            [
                "data=synthetic_image",
                f"data.params.size={examples * 5 // 4}",
                "data.params.shape=[64,64,3]",
                "data.splits.eval_fraction=0.8",  # the eval split (what is probed) holds `examples`
                "data.batch_size=64",
                "trainer=quick",
                "trainer.train_steps=1",
                f"trainer.model_dir={model_dir}",
                "tracking.enabled=false",
                "probe.plots=false",
                "probe.analysis=false",
            ]
        ),
        resolve=True,
    )
    c["model"] = {
        "name": "resnet50_64",
        "inputs": {"image": {"shape": [64, 64, 3], "dtype": "float32"}},
        "layers": {
            "backbone": {"type": "ResNet50", "include_top": False, "pooling": "avg", "weights": None},
            "logits": {"type": "Dense", "units": 10},
        },
        "outputs": {},
        "blocks": {},
    }
    c["probe"]["layers"] = [f"backbone/{n}" for n in INNER]
    return c


def main(examples: int = 1000, repeats: int = 3) -> None:
    from layerprobe.engines.base import PredictRequest
    from layerprobe.experiment import prepare

    model_dir = tempfile.mkdtemp(prefix="archs_bench_")
    c = config(examples, model_dir)
    x = prepare(load(c))
    t = time.perf_counter()
    x.engine.train(x.data, 1)
    print(f"train 1 step (ResNet50 64x64, batch 64): {time.perf_counter() - t:.1f} s")
    n = x.data.size("eval")
    request = PredictRequest("eval", 64)
    bare, probe = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        batches = sum(1 for _ in x.engine.predict(x.data, request, lambda tensors, feed: {}))
        bare.append(time.perf_counter() - t)
        t = time.perf_counter()
        state = x.session().run(x.data)
        probe.append(time.perf_counter() - t)
        assert state.batches == batches
    ratios = [p / b for p, b in zip(probe, bare)]
    print(f"examples {n}, layers exposed {len(x.exposed)}: {', '.join(x.exposed)}; load {os.getloadavg()[0]:.1f}")
    print(f"bare predict: {statistics.median(bare):.2f} s ({min(bare):.2f}-{max(bare):.2f}, n={repeats})")
    print(f"probe phase: {statistics.median(probe):.2f} s ({min(probe):.2f}-{max(probe):.2f}, n={repeats})")
    print(f"probe / bare: {statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})")
    shutil.rmtree(model_dir, ignore_errors=True)


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
