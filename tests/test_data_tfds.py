"""Prepared TensorFlow Datasets streamed from disk: a tiny set built here with tfds's own builder API
(generated digits, two splits, nothing downloaded) read through the DataSource seam, a whole run on it,
and every bad input one line with exit code 2."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from layerprobe.config.validate import validate
from layerprobe.data.checks import require_tfds
from layerprobe.data.keys import sample_rank, smallest
from layerprobe.data.pipeline import prepare
from tests.conftest import plain
from tests.test_bad_inputs import TINY, assert_clean_failure, run_in_process
from tests.test_data import data_cfg, digits_arrays, error_of
from tests.test_shard import assert_same_stats, reservoirs

tfds = pytest.importorskip("tensorflow_datasets")  # the tfds extra: `make venv` installs it

SIZES = {"train": 60, "test": 20}


class LayerprobeDigits(tfds.core.GeneratorBasedBuilder):
    """For testing only: sklearn's 8x8 digits as a tfds set (uint8 images, 10 classes, two splits)."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        features = tfds.features.FeaturesDict(
            {
                "image": tfds.features.Image(shape=(8, 8, 1)),
                "label": tfds.features.ClassLabel(num_classes=10),
                "weight": tfds.features.Tensor(shape=(), dtype=np.float32),
            }
        )
        return tfds.core.DatasetInfo(builder=self, features=features, supervised_keys=("image", "label"))

    def _split_generators(self, dl_manager):
        return {
            "train": self._generate_examples(0, SIZES["train"]),
            "test": self._generate_examples(100, SIZES["test"]),
        }

    def _generate_examples(self, start, n):
        images, labels = generated()
        for i in range(start, start + n):
            yield f"digit-{i}", {"image": images[i], "label": int(labels[i]), "weight": float(i)}


def generated() -> tuple[np.ndarray, np.ndarray]:
    """The digits as uint8 (n, 8, 8, 1) images and their labels: what the builder writes."""
    images, labels = digits_arrays()
    return (images * 255).round().astype(np.uint8), labels


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("tfds")
    LayerprobeDigits(data_dir=str(d)).download_and_prepare()  # generated: no download manager use
    return d


def tfds_cfg(data_dir: Path, *overrides: str) -> dict:
    return data_cfg(
        "data=tfds",
        "data.params.name=layerprobe_digits",
        f"data.params.data_dir={data_dir}",
        f"data.cache_dir={data_dir.parent / 'cache'}",
        *overrides,
    )


def pass_over(data, split: str, **kw) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    batches = list(data.probe_dataset(split, batch_size=7, **kw).as_numpy_iterator())
    images = np.concatenate([f["image"] for f, _, _ in batches])
    labels = np.concatenate([y["label"] for _, y, _ in batches])
    return images, labels, np.concatenate([k for _, _, k in batches])


def by_pixels(images: np.ndarray, labels: np.ndarray, index: range) -> dict[bytes, int]:
    return {images[i].tobytes(): int(labels[i]) for i in index}


def test_the_stream_yields_exactly_the_generated_examples_counted_by_the_info(data_dir):
    data = prepare(tfds_cfg(data_dir, "data.transforms=[]"))
    assert type(data).__name__ == "TFDSStream" and data.name == "tfds"
    assert data.sizes() == {"train": 60, "eval": 20}  # from the dataset info, not a pass
    features, labels = data.element_spec
    assert (features["image"].dtype.name, features["image"].shape.as_list()) == ("uint8", [8, 8, 1])
    images, labels_, keys = generated()[0], generated()[1], None
    for split, index in (("train", range(0, 60)), ("eval", range(100, 120))):
        got_images, got_labels, keys = pass_over(data, split)
        assert got_images.dtype == np.uint8 and len(got_images) == len(index) == len(set(keys))
        assert by_pixels(got_images, got_labels, range(len(got_images))) == by_pixels(images, labels_, index)
    # the declared dtype through the transforms: the shipped config casts and scales to [0, 1]
    scaled = prepare(tfds_cfg(data_dir))
    (f, y), *_ = scaled.tf_dataset("eval", training=False, batch_size=20, seed=0).as_numpy_iterator()
    raw, _, _ = pass_over(data, "eval")
    assert f["image"].dtype == np.float32
    np.testing.assert_allclose(f["image"], raw.astype(np.float32) / 255, rtol=1e-6)


def test_train_order_is_fixed_by_the_seed_and_the_keys_are_stable(data_dir):
    data = prepare(tfds_cfg(data_dir, "data.transforms=[]"))

    def labels(seed: int) -> list[int]:
        ds = data.tf_dataset("train", training=True, batch_size=10, seed=seed, shuffle_buffer=16)
        return [int(v) for _, y in ds.take(12).as_numpy_iterator() for v in y["label"]]  # two epochs

    assert labels(1) == labels(1) and labels(1) != labels(2)
    assert sorted(labels(1)[:60]) == sorted(int(v) for v in generated()[1][:60])  # an epoch is the split
    again = prepare(tfds_cfg(data_dir, "data.transforms=[]"))
    np.testing.assert_array_equal(pass_over(data, "eval")[2], pass_over(again, "eval")[2])
    assert data.digest == again.digest and len(data.digest) == 64


def test_two_probe_shards_are_the_one_pass_batch_for_batch(data_dir):
    data = prepare(tfds_cfg(data_dir))
    whole = pass_over(data, "train")
    shards = [pass_over(data, "train", shard=(i, 2)) for i in range(2)]
    assert sum(len(s[2]) for s in shards) == len(whole[2]) == 60
    batches = [whole[2][j : j + 7] for j in range(0, 60, 7)]  # batch j goes to shard j mod 2
    for i, shard in enumerate(shards):
        np.testing.assert_array_equal(shard[2], np.concatenate(batches[i::2]))


def test_a_fraction_split_hashes_the_tfds_ids_within_the_train_split(data_dir):
    fraction = ("data.splits.method=fraction", "data.splits.eval_fraction=0.25", "data.transforms=[]")
    data = prepare(tfds_cfg(data_dir, *fraction))
    sizes = data.sizes()
    assert sizes["train"] + sizes["eval"] == 60 and 5 <= sizes["eval"] <= 25
    train, evaluation = pass_over(data, "train"), pass_over(data, "eval")
    assert (len(train[2]), len(evaluation[2])) == (sizes["train"], sizes["eval"])
    assert not set(train[2]) & set(evaluation[2])
    images, labels = generated()
    merged = {**by_pixels(*train[:2], range(len(train[0]))), **by_pixels(*evaluation[:2], range(len(evaluation[0])))}
    assert merged == by_pixels(images, labels, range(60))
    other = prepare(tfds_cfg(data_dir, *fraction, "data.splits.seed=5"))
    assert set(pass_over(other, "eval")[2]) != set(evaluation[2]) and other.digest != data.digest
    sliced = prepare(tfds_cfg(data_dir, "data.params.split='train[:50%]'", "data.transforms=[]"))
    assert sliced.sizes() == {"train": 30, "eval": 20}  # tfds's split slicing, counted by the info


@pytest.mark.integration  # trains
@pytest.mark.estimator  # the default engine
def test_a_whole_run_trains_probes_and_logs_the_tfds_digest(data_dir, tmp_path, monkeypatch, capsys):
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    argv = [
        *TINY,
        f"trainer.model_dir={tmp_path / 'model'}",
        f"tracking.uri={store}",
        "data=tfds",
        "data.name=digits_tfds",
        "data.params.name=layerprobe_digits",
        f"data.params.data_dir={data_dir}",
        f"data.cache_dir={tmp_path / 'cache'}",
    ]
    rc, err = run_in_process(argv, capsys)
    assert rc == 0, err[-3000:]
    client = MlflowClient(tracking_uri=store)
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.data.metrics["eval/accuracy"] >= 0 and "probe/conv1/mean" in run.data.metrics
    inputs = {i.tags[0].value: i.dataset for i in client.get_run(run.info.run_id).inputs.dataset_inputs}
    data = prepare(plain(argv)["data"])
    assert {k: json.loads(d.profile)["num_rows"] for k, d in inputs.items()} == {"train": 60, "eval": 20}
    assert {d.name for d in inputs.values()} == {"digits_tfds"}
    for split, d in inputs.items():
        assert d.digest == hashlib.sha256(f"{data.digest}:{split}".encode()).hexdigest()[:16]
        assert json.loads(d.source)["tags"]["layerprobe.data.source"] == "tfds"


@pytest.mark.integration  # trains
@pytest.mark.estimator  # the default engine
def test_two_probe_shards_of_a_trained_run_merge_to_the_one_pass(data_dir, tiny, tmp_path):
    from layerprobe.reprobe import merge_shards, probe_existing, probe_shard
    from layerprobe.runner import run

    c = tiny(
        "data=tfds",
        "data.params.name=layerprobe_digits",
        f"data.params.data_dir={data_dir}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "probe.reservoir_size=8",
        "probe.batch_size=6",
    )
    result = run(c, tmp_path / "train")
    one, _ = probe_existing(result.model_dir, [], tmp_path / "one")
    for i in (0, 1):
        probe_shard(result.model_dir, [], (i, 2), tmp_path / "states")
    merged, _ = merge_shards(result.model_dir, [], tmp_path / "states", tmp_path / "merged")
    assert_same_stats(one, merged)
    assert one["conv1"].examples == 20
    a, b = reservoirs(tmp_path / "one"), reservoirs(tmp_path / "merged")
    for layer in a:
        for key in ("keys", "activations", "labels"):
            np.testing.assert_array_equal(a[layer][key], b[layer][key])
    # the reservoir is the 8 eval examples whose seeded ranks of their tfds_id keys are smallest
    keys = pass_over(prepare(c["data"]), "eval")[2]
    np.testing.assert_array_equal(a["conv1"]["keys"], np.sort(keys[smallest(sample_rank(keys, 0), keys, 8)]))


BAD = {
    "unknown-name": (
        ["data.params.name=layerprobe_digit"],
        "data.params.name: is not prepared in {dir} (prepare it there first: layerprobe never downloads). "
        "Received: 'layerprobe_digit'. Did you mean 'layerprobe_digits'? Allowed: layerprobe_digits",
    ),
    "not-prepared-dir": (
        ["data.params.data_dir={empty}"],
        "data.params.name: is not prepared in {empty} (prepare it there first: layerprobe never downloads). "
        "Received: 'layerprobe_digits'",
    ),
    "unknown-split": (
        ["data.params.split=trian"],
        "data.params.split: unknown split of the prepared set. Received: 'trian'. Did you mean 'train'? "
        "Allowed: test, train",
    ),
    "unknown-eval-split": (
        ["data.splits.eval_params.split=validation"],
        "data.splits.eval_params.split: unknown split of the prepared set. Received: 'validation'. "
        "Allowed: test, train",
    ),
    "unknown-feature": (
        ["data.params.features.image=imag"],
        "data.params.features.image: the prepared set has no such feature. Received: 'imag'. "
        "Did you mean 'image'? Allowed: image, label, weight",
    ),
    "unknown-label": (
        ["data.params.labels.label=lable"],
        "data.params.labels.label: the prepared set has no such feature. Received: 'lable'. "
        "Did you mean 'label'? Allowed: image, label, weight",
    ),
    "too-few-classes": (
        ["data.num_classes=3"],
        "data.num_classes: label 'label' (tfds key 'label') has 10 classes, more than data.num_classes. Received: 3",
    ),
    "no-name": (
        ["data.params.name=???"],
        "data.params.name: no value given: give one on the command line (data.params.name=...). Received: '???'",
    ),
    "not-a-prepared-path": (
        ["+data.params.path={empty}"],
        "data.params.path: is not a prepared tfds directory (no dataset_info.json in it); layerprobe never "
        "downloads. Received: '{empty}'",
    ),
}


@pytest.mark.parametrize("overrides, line", list(BAD.values()), ids=list(BAD))
@pytest.mark.estimator  # through a default-engine run
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(overrides, line, data_dir, tmp_path, monkeypatch, capsys):
    work, empty = tmp_path / "work", tmp_path / "empty"
    work.mkdir(), empty.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    fill = {"{dir}": str(data_dir), "{empty}": str(empty)}
    for key, value in fill.items():
        overrides, line = [o.replace(key, value) for o in overrides], line.replace(key, value)
    argv = [
        *TINY,
        f"trainer.model_dir={work / 'model'}",
        f"tracking.uri=sqlite:///{work / 'mlflow.db'}",
        "data=tfds",
        "data.params.name=layerprobe_digits",
        f"data.params.data_dir={data_dir}",
        f"data.cache_dir={work / 'cache'}",
        *overrides,
    ]
    rc, err = run_in_process(argv, capsys)
    assert_clean_failure(rc, err, [line], work)
    assert err == f"layerprobe: error: {line}\n"
    assert sorted(p.name for p in empty.iterdir()) == []  # never a download, nothing written there


def test_without_tensorflow_datasets_the_run_and_validate_say_how_to_install_it(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # what Python does for a missing package
    line = (
        "data.source: needs tensorflow-datasets, which is not installed (pip install 'layerprobe[tfds]', "
        "then prepare the data set once; layerprobe never downloads). Received: 'tfds'"
    )
    c = plain(["data=tfds_mnist"])
    assert error_of(require_tfds) == line
    assert error_of(validate, c) == line and error_of(prepare, c["data"]) == line
    monkeypatch.chdir(tmp_path)
    rc, err = run_in_process([*TINY, "data=tfds_mnist", f"tracking.uri=sqlite:///{tmp_path / 'm.db'}"], capsys)
    assert_clean_failure(rc, err, [line], tmp_path)
