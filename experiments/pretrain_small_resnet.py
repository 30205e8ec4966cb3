"""Pretrain the small ResNet's backbone on half of scikit-learn's bundled digits (classes 0-4) and
write it as a Keras weights file, experiments/weights/small_resnet_digits04.h5: the backbone that
experiments/small_resnet_frozen.yaml starts from and keeps frozen.
    .venv/bin/python experiments/pretrain_small_resnet.py

Nothing is downloaded: the digits ship inside scikit-learn. Only the `train` split of data=digits
(the same seeded split the experiment uses) and only its classes 0-4 are seen, so the experiment's
eval images and its classes 5-9 are new to the backbone. The whole network (conf/model/small_resnet.yaml
at the digits' 8x8x1) trains with layerprobe itself; only the backbone (stem, stage*) is written,
under its config layer names (`stem/kernel`, `stage1_block1_conv1/kernel`, ...), which is how
trainer.warm_start reads a Keras weights file. Seeded: a rerun writes the same file, byte for byte.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

OUT = Path(__file__).with_name("weights") / "small_resnet_digits04.h5"
INPUT = "model.inputs.image.shape=[8,8,1]"  # the digits as they are
SOURCE_CLASSES = 5  # pretrain on 0..4; the experiment's head learns all 10
BACKBONE_END = "stage2_out"  # the last layer written; gap and logits are the target task's own
STEPS = 800  # ~25 s on 2 cores; the source task's held-out accuracy is printed


def _loaded(overrides: list[str]) -> Any:
    """The config a command would run (config.loaded.Config)."""
    from layerprobe.config import compose
    from layerprobe.config.loaded import load

    return load(compose(overrides))


def pretrain(work: Path, steps: int) -> str:
    """Train small_resnet on the digits 0-4 of data=digits' train split, in `work`; returns its model_dir."""
    from layerprobe.data.pipeline import prepare
    from layerprobe.runner import run

    train = prepare(_loaded(["data=digits"]).data).splits["train"]
    keep = train.labels["label"] < SOURCE_CLASSES
    np.savez(work / "digits04.npz", image=train.features["image"][keep], label=train.labels["label"][keep])
    overrides = ["model=small_resnet", INPUT, "data=npz", f"data.params.path={work / 'digits04.npz'}"]
    overrides += [f"trainer.train_steps={steps}", f"trainer.model_dir={work / 'model'}"]
    result = run(_loaded([*overrides, "tracking.enabled=false", "probe.enabled=false"]), work / "out")
    print(f"digits 0-4, held out: accuracy {result.eval_metrics['eval/accuracy']:.3f} after {result.global_step} steps")
    return result.model_dir


def write_backbone(model_dir: str, out: Path) -> int:
    """The backbone's trained values, as a Keras model's save_weights file; returns its variable count."""
    import tensorflow as tf

    from layerprobe.engines.spec import model_spec
    from layerprobe.graph import build

    spec = model_spec(_loaded(["model=small_resnet", INPUT]))
    inputs = {n: tf.keras.Input(s["shape"], name=n) for n, s in spec.inputs.items()}
    layers = dict(list(spec.layers.items())[: list(spec.layers).index(BACKBONE_END) + 1])
    graph = build(layers, inputs, training=False, keras=tf.keras)
    model = tf.keras.Model(list(inputs.values()), graph.tensors[BACKBONE_END])
    ckpt = tf.train.latest_checkpoint(model_dir)
    for w in model.weights:
        w.assign(tf.train.load_variable(ckpt, w.name.split(":")[0]))
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save_weights(str(out))
    return len(model.weights)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        n = write_backbone(pretrain(Path(work), args.steps), args.out)
    print(f"wrote {args.out} ({n} variables, {args.out.stat().st_size / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
