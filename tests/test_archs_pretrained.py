"""The pretrained backbone shipped for experiments/small_resnet_frozen.yaml: the script in the repo
writes it (docs/configs.md's command, on a short budget here) and it fits the experiment's model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import pytest
import tensorflow as tf

from layerprobe.graph import warm
from tests.conftest import plain

pytestmark = pytest.mark.estimator  # tf.keras 2.15's applications and weights

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "experiments" / "weights" / "small_resnet_digits04.h5"


def _layout(path: Path) -> dict[str, tuple[int, ...]]:
    """Every weight in a Keras weights file by its stored name, with its shape."""
    out: dict[str, tuple[int, ...]] = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.update({name: obj.shape}) if isinstance(obj, h5py.Dataset) else None)
    return out


@pytest.mark.integration  # starts a process
def test_the_script_writes_the_shipped_backbone_layout(tmp_path):
    out = tmp_path / "backbone.h5"
    r = subprocess.run(
        [sys.executable, "experiments/pretrain_small_resnet.py", "--steps", "10", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "digits 0-4, held out: accuracy" in r.stdout and f"wrote {out} (43 variables" in r.stdout
    layout = _layout(out)
    assert layout == _layout(SHIPPED) and len(layout) == 43
    assert layout["stem/stem/kernel:0"] == (3, 3, 1, 16)  # the digits' one channel
    assert not any(name.startswith(("gap", "logits")) for name in layout)  # the head is the target's own
    assert SHIPPED.stat().st_size < 300_000


def test_the_frozen_experiment_warm_starts_every_backbone_variable_from_the_shipped_file(tmp_path, monkeypatch):
    from layerprobe.preflight import preflight

    monkeypatch.setattr(warm, "CACHE_DIR", tmp_path / "cache")  # the converted file, out of the checkout
    c = plain(["experiments=small_resnet_frozen", f"trainer.model_dir={tmp_path / 'm'}"])
    ws = c["trainer"]["warm_start"]
    assert ws["source"] == str(SHIPPED) and ws["variables"] == "(stem|stage).*"  # the file's path: from the root
    x = preflight(c).experiment  # the dry build checks every variable's name and shape against the file
    backbone = [w for r in x.summary.rows if r.name.startswith(("stem", "stage")) for w in r.weight_names]
    assert len(backbone) == 43
    converted = warm.checkpoint_of(warm.WarmStart("trainer.warm_start.source", str(SHIPPED)))
    assert sorted(n for n, _ in tf.train.list_variables(converted)) == sorted(backbone)
