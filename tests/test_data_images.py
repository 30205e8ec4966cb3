"""A directory of image files, one subfolder per class: decoded and resized in the pipeline, split by a
seeded hash of class/name or by a second directory, and every bad input one line naming the file."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from layerprobe.data.images import ImageFolder
from layerprobe.data.pipeline import prepare
from tests.conftest import ENGINE
from tests.test_data import data_cfg, digits_arrays, error_of

CLASSES = ("cat", "dog", "emu")


def write_folder(root: Path, per_class: int = 20, offset: int = 0) -> dict[str, np.ndarray]:
    """PNGs of digits (8x8 grey, as RGB) in one folder per class; returns 'class/name' -> uint8 pixels."""
    images = (digits_arrays()[0] * 255).round().astype(np.uint8)
    written = {}
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True, exist_ok=True)
        for j in range(per_class):
            pixels = np.repeat(images[offset + c * per_class + j], 3, axis=-1)  # (8, 8, 3)
            (root / name / f"{j:03d}.png").write_bytes(tf.io.encode_png(pixels).numpy())
            written[f"{name}/{j:03d}.png"] = pixels
    return written


def folder_cfg(root: Path, *overrides: str) -> dict:
    return data_cfg(
        "data=image_folder",
        f"data.params.path={root}",
        "data.params.image_size=[8,8]",
        f"data.cache_dir={root.parent / 'cache'}",
        *overrides,
    )


def test_images_decode_with_their_class_and_the_hash_split_covers_every_file_once(tmp_path):
    written = write_folder(tmp_path / "photos")
    data = prepare(folder_cfg(tmp_path / "photos", "data.transforms=[]"))
    assert isinstance(data, ImageFolder) and data.classes == list(CLASSES)
    sizes = data.sizes()
    assert sizes["train"] + sizes["eval"] == 60 and 4 <= sizes["eval"] <= 20
    seen = []
    for split in ("train", "eval"):
        batches = list(data.probe_dataset(split, batch_size=7).as_numpy_iterator())
        images = np.concatenate([f["image"] for f, _, _ in batches])
        labels = np.concatenate([y["label"] for _, y, _ in batches])
        assert images.dtype == np.uint8 and images.shape[1:] == (8, 8, 3) and len(images) == sizes[split]
        by_pixels = {v.tobytes(): k for k, v in written.items()}
        names = [by_pixels[im.tobytes()] for im in images]  # each image is exactly one written file
        assert [CLASSES[label] for label in labels] == [n.split("/")[0] for n in names]
        seen += names
    assert sorted(seen) == sorted(written)
    # resized in the pipeline, scaled by the shipped transforms
    big = prepare(folder_cfg(tmp_path / "photos", "data.params.image_size=[16,12]"))
    (f, _), *_ = big.tf_dataset("eval", training=False, batch_size=4, seed=0).as_numpy_iterator()
    assert f["image"].shape == (4, 16, 12, 3) and f["image"].dtype == np.float32 and 0 <= f["image"].min()
    assert f["image"].max() <= 1.0


def test_eval_directory_and_its_class_folders(tmp_path):
    write_folder(tmp_path / "train", per_class=10)
    write_folder(tmp_path / "val", per_class=4, offset=100)
    files = ("data.splits.method=files", f"+data.splits.eval_params.path={tmp_path / 'val'}")
    data = prepare(folder_cfg(tmp_path / "train", *files))
    assert data.sizes() == {"train": 30, "eval": 12}
    (tmp_path / "val" / "emu").rename(tmp_path / "val" / "owl")
    assert error_of(prepare, folder_cfg(tmp_path / "train", *files)) == (
        "data.splits.eval_params.path: has class folders ['cat', 'dog', 'owl'], the train directory "
        f"['cat', 'dog', 'emu']: they must be the same. Received: '{tmp_path / 'val'}'"
    )


def test_bad_input_is_one_line_naming_the_file(tmp_path):
    assert error_of(prepare, folder_cfg(tmp_path / "none")) == (
        f"data.params.path: not a directory (give one with a subfolder per class). Received: '{tmp_path / 'none'}'"
    )
    write_folder(tmp_path / "photos", per_class=5)
    bad = tmp_path / "photos" / "dog" / "002.png"
    bad.write_bytes(b"not an image")
    msg = error_of(prepare, folder_cfg(tmp_path / "photos"))
    assert msg.startswith("data.params.path: the image does not decode (") and msg.endswith(f"Received: '{bad}'")
    data = prepare(folder_cfg(tmp_path / "photos", "data.skip_corrupt=true"))
    assert data.skipped == 1 and sum(data.sizes().values()) == 14
    assert error_of(prepare, folder_cfg(tmp_path / "photos", "data.params.image_size=[8]")) == (
        "data.params.image_size: give [height, width] in pixels. Received: [8]"
    )


@pytest.mark.integration
@pytest.mark.estimator  # the default engine
def test_a_whole_run_on_an_image_folder(tiny, tmp_path):
    from layerprobe.runner import run

    write_folder(tmp_path / "photos")
    c = tiny(
        "data=image_folder",
        f"data.params.path={tmp_path / 'photos'}",
        "data.params.image_size=[8,8]",
        "data.params.channels=1",
        f"data.cache_dir={tmp_path / 'cache'}",
    )
    result = run(c, tmp_path / "out")
    assert result.global_step > 0 and 0 <= result.eval_metrics["eval/accuracy"] <= 1
    assert {layer.examples for layer in result.probe.values()} == {prepare(c["data"]).size("eval")}


def shown_image_folder_command() -> list[str]:
    """The Data page's command that trains on a folder of images."""
    from tests.docs import commands, page

    (line,) = [c for c in commands("layerprobe", [page("data.md")]) if "data=image_folder" in c and "photos/train" in c]
    return shlex.split(line)[1:]


def test_the_default_model_on_an_image_folder_names_the_override_that_fixes_it(tmp_path, monkeypatch, capsys):
    from layerprobe.cli.main import main

    write_folder(tmp_path / "photos" / "train", per_class=5)
    monkeypatch.chdir(tmp_path)
    args = [a for a in shown_image_folder_command() if not a.startswith("model=")] + [f"trainer.engine={ENGINE}"]
    assert main(["validate", *args, "data.cache_dir=cache"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "layerprobe: error: model.inputs.image: the model declares float32[8, 8, 1] "
        "but feature 'image' of the train split is "
        "float32[32, 32, 3]; to take it as it is, set model.inputs.image.shape=[32,32,3]. "
        "Received: 'float32[32, 32, 3]'"
    )
    fixed = [*args, "model.inputs.image.shape=[32,32,3]", "data.cache_dir=cache"]
    assert main(["validate", *fixed]) == 0


@pytest.mark.integration
@pytest.mark.estimator  # the default engine
def test_the_shown_image_folder_command_runs_as_printed(tmp_path, monkeypatch, capsys):
    """From a directory holding photos/train, the Data page's command trains the shipped image_cnn on it."""
    from mlflow.tracking import MlflowClient

    from layerprobe.cli.main import main

    write_folder(tmp_path / "photos" / "train")
    monkeypatch.chdir(tmp_path)
    budget = ["trainer=quick", "trainer.train_steps=4", "probe.plots=false", "tracking.uri=sqlite:///mlflow.db"]
    assert main([*shown_image_folder_command(), *budget]) == 0, capsys.readouterr().err[-2000:]
    run_id = re.search(r"^mlflow run: (\w+)$", capsys.readouterr().out, re.M).group(1)  # type: ignore[union-attr]
    data = MlflowClient(tracking_uri="sqlite:///mlflow.db").get_run(run_id).data
    assert data.params["model.name"] == "image_cnn"
    eval_images = prepare(folder_cfg(tmp_path / "photos" / "train", "data.params.image_size=[32,32]")).size("eval")
    assert data.metrics["probe/conv1/count"] == eval_images * 32 * 32 * 16  # conv1: 32x32x16 per image
