"""The configs the benchmarks run, composed through Hydra exactly as the CLI composes them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from layerprobe.config import compose

# The probe benchmark's model: 3 convolutions on 32x32x3, 28,672 activation floats per example
# over conv1 (32x32x16) + conv2 (16x16x32) + conv3 (8x8x64).
CNN_LAYERS: dict[str, dict[str, Any]] = {
    "conv1": {"type": "Conv2D", "filters": 16, "kernel_size": 3, "padding": "same", "activation": "relu"},
    "pool1": {"type": "MaxPooling2D"},  # -> (16, 16, 16)
    "conv2": {"type": "Conv2D", "filters": 32, "kernel_size": 3, "padding": "same", "activation": "relu"},
    "pool2": {"type": "MaxPooling2D"},  # -> (8, 8, 32)
    "conv3": {"type": "Conv2D", "filters": 64, "kernel_size": 3, "padding": "same", "activation": "relu"},
    "gap": {"type": "GlobalAveragePooling2D"},  # -> (64,)
    "logits": {"type": "Dense", "units": 10},
}
CONVS = ("conv1", "conv2", "conv3")
TRAIN_EXAMPLES = 1000  # the train split of the probe data: probing does not need a good model
PROBE_BATCH = 256
PROBE_TRAIN_STEPS = 20


def plain(overrides: Sequence[str]) -> dict[str, Any]:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(compose(list(overrides)), resolve=True)  # type: ignore[return-value]


def default_config(model_dir: str, tracking_uri: str | None = None, quick: bool = False) -> dict[str, Any]:
    """The default experiment (digits CNN), with its model_dir and MLflow store where we say."""
    overrides = [f"trainer.model_dir={model_dir}"]
    if tracking_uri:
        overrides.append(f"tracking.uri={tracking_uri}")
    else:
        overrides.append("tracking.enabled=false")
    if quick:
        overrides.append("trainer.train_steps=100")
    return plain(overrides)


def cnn_config(examples: int, model_dir: str, exposed: Sequence[str] = CONVS) -> dict[str, Any]:
    """The 3-conv CNN over synthetic 32x32x3 images whose eval (probe) split holds `examples`."""
    size = examples + TRAIN_EXAMPLES
    c = plain(
        [
            "data=synthetic_image",
            f"data.params.size={size}",
            "data.params.shape=[32,32,3]",
            f"data.splits.eval_fraction={examples / size!r}",
            f"trainer.train_steps={PROBE_TRAIN_STEPS}",
            f"trainer.model_dir={model_dir}",
            "tracking.enabled=false",
            "probe.plots=false",
            "probe.analysis=false",
            f"probe.batch_size={PROBE_BATCH}",
        ]
    )
    layers = {name: {**spec, "expose": name in exposed} for name, spec in CNN_LAYERS.items()}
    c["model"] = {
        "name": "bench_cnn",
        "inputs": {"image": {"shape": [32, 32, 3], "dtype": "float32"}},
        "layers": layers,
        "outputs": {
            "logits": {"label": "label", "loss": "sparse_softmax_cross_entropy", "weight": 1.0, "metrics": ["accuracy"]}
        },
    }
    return c
