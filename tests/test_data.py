"""Declared data: every shipped source composes and yields batches; splits, order and augmentation are
seeded; transforms compute what numpy computes; every bad input is one ConfigError before training."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import sklearn.datasets
import tensorflow as tf

from layerprobe.config.validate import validate
from layerprobe.data.pipeline import check_against_inputs, dataset, prepare
from layerprobe.data.splits import split_indices
from layerprobe.errors import ConfigError
from tests.conftest import plain

RANGE = ("data.splits.method=range", "data.splits.train_range=[0,100]", "data.splits.eval_range=[100,null]")
IRIS_COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def data_cfg(*overrides: str) -> dict:
    c = plain(list(overrides))
    validate(c)
    return c["data"]


def first_batches(ds: tf.data.Dataset, n: int) -> list:
    return [(dict(f), dict(y)) for f, y in ds.take(n).as_numpy_iterator()]


def error_of(fn, *args) -> str:
    with pytest.raises(ConfigError) as e:
        fn(*args)
    assert "\n" not in str(e.value)
    return str(e.value)


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    d = sklearn.datasets.load_digits()
    return (d.images.astype(np.float32) / 16.0)[..., None], d.target.astype(np.int64)


def write_iris_csv(path: Path, rows: slice = slice(None), blank: tuple[int, int] | None = None) -> np.ndarray:
    iris = sklearn.datasets.load_iris()
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*IRIS_COLUMNS, "species"])
        for r, (x, y) in enumerate(zip(iris.data[rows], iris.target[rows])):
            cells = [repr(float(v)) for v in x] + [int(y)]
            if blank and blank[0] == r:
                cells[blank[1]] = ""
            w.writerow(cells)
    return iris.data[rows].astype(np.float32)


def example(**values) -> bytes:
    feats = {}
    for k, v in values.items():
        v = np.asarray(v).ravel()
        if v.dtype.kind == "f":
            feats[k] = tf.train.Feature(float_list=tf.train.FloatList(value=v.tolist()))
        else:
            feats[k] = tf.train.Feature(int64_list=tf.train.Int64List(value=v.tolist()))
    return tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString()


def write_digits_tfrecord(path: Path, n: int = 200) -> tuple[np.ndarray, np.ndarray, list[list[int]]]:
    images, labels = digits_arrays()
    tokens = [list(range(i % 4)) for i in range(n)]  # 0 to 3 values per record
    with tf.io.TFRecordWriter(str(path)) as w:
        for i in range(n):
            w.write(example(image=images[i], label=labels[i], tokens=np.asarray(tokens[i], np.int64)))
    return images[:n], labels[:n], tokens


# --- every shipped source ---------------------------------------------------------------------------

BUILT_IN = {  # config -> (feature shapes per example, label names, classes)
    "digits": ({"image": [8, 8, 1]}, {"label"}, 10),
    "iris": ({"x": [4]}, {"label"}, 3),
    "wine": ({"x": [13]}, {"label"}, 3),
    "breast_cancer": ({"x": [30]}, {"label"}, 2),
    "synthetic_image": ({"image": [16, 16, 3]}, {"label"}, 10),
    "synthetic_sequence": ({"sequence": [20, 4]}, {"label"}, 5),
    "synthetic_tabular": ({"x": [20]}, {"label", "target"}, 4),
}


@pytest.mark.parametrize("name", sorted(BUILT_IN))
def test_shipped_data_config_composes_and_yields_batches(name):
    shapes, labels, classes = BUILT_IN[name]
    c = data_cfg(f"data={name}")
    data = prepare(c)
    assert c["num_classes"] == classes and data.sizes()["eval"] == round(sum(data.sizes().values()) * 0.2)
    f, y = first_batches(dataset(data, "train", training=True, batch_size=8, seed=0), 1)[0]
    assert {k: list(v.shape) for k, v in f.items()} == {k: [8, *s] for k, s in shapes.items()}
    assert set(y) == labels and y["label"].dtype == np.int64 and 0 <= y["label"].min() <= y["label"].max() < classes


def test_npz_source_reads_the_arrays_and_the_fraction_split_is_the_seeded_permutation(tmp_path):
    images, labels = digits_arrays()
    np.savez(tmp_path / "d.npz", image=images, label=labels, unused=np.zeros(len(labels)))
    data = prepare(data_cfg("data=npz", f"data.params.path={tmp_path / 'd.npz'}"))
    idx = split_indices(len(labels), 0.2, 0)
    np.testing.assert_array_equal(data.splits["eval"].features["image"], images[idx["eval"]])
    np.testing.assert_array_equal(data.splits["train"].labels["label"], labels[idx["train"]])
    assert set(data.splits["train"].features) == {"image"}


def test_csv_source_types_columns_and_normalizes_with_train_statistics(tmp_path):
    x = write_iris_csv(tmp_path / "iris.csv")
    data = prepare(data_cfg("data=csv", f"data.params.path={tmp_path / 'iris.csv'}"))
    train = data.splits["train"]
    assert train.features["x"].dtype == np.float32 and train.labels["species"].dtype == np.int64
    idx = split_indices(150, 0.2, 0)
    np.testing.assert_array_equal(train.features["x"], x[idx["train"]])
    mean, std = x[idx["train"]].mean(0), x[idx["train"]].std(0)
    np.testing.assert_allclose(data.fitted["0/x/mean"], mean, rtol=1e-6)
    np.testing.assert_allclose(data.fitted["0/x/std"], std, rtol=1e-5)
    (f, _), *_ = first_batches(dataset(data, "eval", training=False, batch_size=30, seed=0), 1)
    np.testing.assert_allclose(f["x"], (x[idx["eval"]] - mean) / std, rtol=1e-5, atol=1e-5)


def test_csv_feature_groups_become_separate_features(tmp_path):
    x = write_iris_csv(tmp_path / "iris.csv")
    c = data_cfg("data=csv", f"data.params.path={tmp_path / 'iris.csv'}", "data.transforms=[]")
    c["params"]["features"] = {"sepal": IRIS_COLUMNS[:2], "petal": IRIS_COLUMNS[2:]}
    c["splits"] = {"method": "range", "train_range": [0, 100], "eval_range": [100, None]}
    data = prepare(c)
    np.testing.assert_array_equal(data.splits["eval"].features["petal"], x[100:, 2:])


def test_tfrecord_source_streams_fixed_and_var_len_features(tmp_path):
    images, labels, tokens = write_digits_tfrecord(tmp_path / "d.tfrecord")
    write_digits_tfrecord(tmp_path / "e.tfrecord", n=50)
    c = data_cfg(
        "data=tfrecord",
        f"data.params.path={tmp_path / 'd*.tfrecord'}",  # a glob
        "+data.params.features.tokens={dtype: int64, var_len: true, length: 5, default: -1}",
        "data.splits.method=files",
        f"+data.splits.eval_params.path={tmp_path / 'e.tfrecord'}",
        f"data.cache_dir={tmp_path / 'cache'}",
    )
    data = prepare(c)
    assert data.sizes() == {"train": 200, "eval": 50}
    batches = list(dataset(data, "eval", training=False, batch_size=16, seed=0).as_numpy_iterator())
    np.testing.assert_array_equal(np.concatenate([f["image"] for f, _ in batches]), images[:50])
    np.testing.assert_array_equal(np.concatenate([y["label"] for _, y in batches]), labels[:50])
    padded = np.asarray([t + [-1] * (5 - len(t)) for t in tokens[:50]])
    np.testing.assert_array_equal(np.concatenate([f["tokens"] for f, _ in batches]), padded)


# --- splits and order -------------------------------------------------------------------------------


def test_same_seed_same_split_and_order_other_seeds_differ():
    def stream(*overrides, seed=1):
        data = prepare(data_cfg("data=iris", *overrides))
        batches = first_batches(dataset(data, "train", training=True, batch_size=16, seed=seed), 4)
        return data, np.concatenate([y["label"] for _, y in batches]), np.concatenate([f["x"] for f, _ in batches])

    a, la, xa = stream()
    b, lb, xb = stream()
    np.testing.assert_array_equal(a.splits["eval"].features["x"], b.splits["eval"].features["x"])
    np.testing.assert_array_equal(xa, xb)
    np.testing.assert_array_equal(la, lb)
    other_split, _, _ = stream("data.splits.seed=1")
    assert not np.array_equal(a.splits["eval"].features["x"], other_split.splits["eval"].features["x"])
    _, _, other_order = stream(seed=2)
    assert not np.array_equal(xa, other_order)
    _, _, pinned = stream("data.shuffle_seed=1", seed=2)  # shuffle_seed wins over the trainer's seed
    np.testing.assert_array_equal(xa, pinned)


def test_range_split_keeps_file_order_and_refuses_overlap():
    c = data_cfg("data=digits", *RANGE, "data.splits.train_range=[0,1000]", "data.splits.eval_range=[1000,null]")
    data = prepare(c)
    images, labels = digits_arrays()
    np.testing.assert_array_equal(data.splits["train"].features["image"], images[:1000])
    np.testing.assert_array_equal(data.splits["eval"].labels["label"], labels[1000:])
    c["splits"]["eval_range"] = [900, None]
    msg = error_of(prepare, c)
    want = "data.splits.eval_range: overlaps train_range [0, 1000]: eval rows would be trained on."
    assert msg == want + " Received: [900, 1797]"


def test_separate_files_split_reads_eval_from_its_own_file(tmp_path):
    write_iris_csv(tmp_path / "train.csv", slice(0, 120))
    x_eval = write_iris_csv(tmp_path / "eval.csv", slice(120, None))
    base = ["data=csv", f"data.params.path={tmp_path / 'train.csv'}", "data.splits.method=files"]
    data = prepare(data_cfg(*base, f"+data.splits.eval_params.path={tmp_path / 'eval.csv'}"))
    assert data.sizes() == {"train": 120, "eval": 30}
    np.testing.assert_array_equal(data.splits["eval"].features["x"], x_eval)
    missing = data_cfg(*base, f"+data.splits.eval_params.path={tmp_path / 'nope.csv'}")
    assert (
        error_of(prepare, missing) == f"data.splits.eval_params.path: no such file. Received: '{tmp_path / 'nope.csv'}'"
    )


# --- transforms -------------------------------------------------------------------------------------


def test_augmentation_only_touches_the_train_stream_and_is_seeded():
    c = data_cfg("data=digits", "data.shuffle_buffer=1")  # buffer 1 keeps the file order
    c["transforms"] = [
        {"name": "random_crop", "padding": 1},
        {"name": "random_flip", "mode": "horizontal"},
        {"name": "random_noise", "stddev": 0.5},
    ]
    data = prepare(c)
    raw_train, raw_eval = data.splits["train"].features["image"], data.splits["eval"].features["image"]
    n = len(raw_train)

    def train_stream(seed, batches):
        ds = dataset(data, "train", training=True, batch_size=n, seed=seed, shuffle_buffer=1)
        return [f["image"] for f, _ in first_batches(ds, batches)]

    (ev, _), *_ = first_batches(dataset(data, "eval", training=False, batch_size=1000, seed=0), 1)
    np.testing.assert_array_equal(ev["image"], raw_eval)  # eval: untouched
    (tr, _), *_ = first_batches(dataset(data, "train", training=False, batch_size=n, seed=0), 1)
    np.testing.assert_array_equal(tr["image"], raw_train)  # train split read for probing: untouched
    epoch1, epoch2 = train_stream(3, 2)
    assert np.abs(epoch1 - raw_train).mean() > 0.3  # noise of std 0.5 on every pixel
    assert not np.allclose(epoch1, epoch2)  # fresh augmentation each epoch
    again1, again2 = train_stream(3, 2)
    np.testing.assert_array_equal(epoch1, again1)  # same seed, same augmented stream
    np.testing.assert_array_equal(epoch2, again2)
    assert not np.allclose(epoch1, train_stream(4, 1)[0])


def add_total(features, labels, weight=1.0):
    """A user's own transform, named in a config as tests.test_data.add_total."""
    return {**features, "total": tf.reduce_sum(features["a"]) * weight}, labels


def test_declared_transforms_compute_what_numpy_computes(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(40, 6)).astype(np.float32)
    a[3, 2] = np.nan
    b = rng.integers(0, 3, size=40)
    np.savez(tmp_path / "t.npz", a=a, b=b, label=b)
    c = data_cfg(
        "data=npz", f"data.params.path={tmp_path / 't.npz'}", "data.params.features=[a,b]", "data.num_classes=3"
    )
    c["splits"] = {"method": "range", "train_range": [0, 30], "eval_range": [30, None]}
    c["transforms"] = [
        {"name": "fill_nan", "value": 0.5},
        {"name": "scale", "factor": 2.0, "offset": 1.0},
        {"name": "clip", "min": -2.0, "max": 3.0},
        {"name": "normalize"},
        {"name": "one_hot", "features": ["b"], "depth": 3},
        {"name": "reshape", "features": ["a"], "shape": [2, 3]},
        {"name": "tests.test_data.add_total", "weight": 0.5},  # a user's function, by its dotted path
        {"name": "rename", "features": {"a": "signal"}},
        {"name": "select", "features": ["signal", "b", "total"]},
    ]
    data = prepare(c)
    filled = np.where(np.isnan(a), 0.5, a)
    clipped = np.clip(filled * 2 + 1, -2, 3)
    mean, std = clipped[:30].mean(0), clipped[:30].std(0)  # fitted on train rows, after the clip
    np.testing.assert_allclose(data.fitted["3/a/mean"], mean, rtol=1e-5)
    np.testing.assert_allclose(data.fitted["3/a/std"], std, rtol=1e-5)
    (f, _), *_ = first_batches(dataset(data, "eval", training=False, batch_size=10, seed=0), 1)
    assert set(f) == {"signal", "b", "total"}
    want = ((clipped[30:] - mean) / std).reshape(10, 2, 3)
    np.testing.assert_allclose(f["signal"], want, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(f["b"], np.eye(3)[b[30:]])
    np.testing.assert_allclose(f["total"], want.sum((1, 2)) * 0.5, rtol=1e-4, atol=1e-4)


def test_normalize_with_given_statistics_and_refuses_fitting_on_eval(tmp_path):
    c = data_cfg("data=iris")
    c["transforms"] = [{"name": "normalize", "mean": [5.0, 3.0, 4.0, 1.0], "std": 2.0}]
    data = prepare(c)
    np.testing.assert_array_equal(data.fitted["0/x/mean"], [5.0, 3.0, 4.0, 1.0])  # stored with the run
    (f, _), *_ = first_batches(dataset(data, "eval", training=False, batch_size=30, seed=0), 1)
    np.testing.assert_allclose(f["x"], (data.splits["eval"].features["x"] - [5.0, 3.0, 4.0, 1.0]) / 2.0, rtol=1e-6)
    for fit in ("eval", "all"):
        c["transforms"] = [{"name": "normalize", "fit": fit}]
        msg = error_of(prepare, c)
        assert msg.startswith(
            "data.transforms[0].fit: statistics are fitted on the train split only: fitting on eval data "
            f"would leak it into training. Received: '{fit}'"
        )
        assert msg.endswith("Allowed: train")


def test_a_mismatch_with_the_model_inputs_names_feature_and_shapes():
    c = plain(["data=digits"])
    c["data"]["transforms"] = [{"name": "reshape", "shape": [64]}]
    data = prepare(c["data"])
    msg = error_of(check_against_inputs, data, c["model"]["inputs"], {"label"})
    assert msg == (
        "model.inputs.image: the model declares float32[8, 8, 1] but feature 'image' of the train split is "
        "float32[64]; to take it as it is, set model.inputs.image.shape=[64]. Received: 'float32[64]'"
    )
    c["data"]["transforms"] = [{"name": "cast", "dtype": "float64"}]
    msg = error_of(check_against_inputs, prepare(c["data"]), c["model"]["inputs"], {"label"})
    assert msg.startswith("model.inputs.image: the model declares float32[8, 8, 1] but feature 'image'")
    assert msg.endswith(
        "is float64[8, 8, 1]; to take it as it is, set model.inputs.image.dtype=float64. Received: 'float64[8, 8, 1]'"
    )


def test_cache_in_a_file_gives_the_same_batches(tmp_path):
    c = data_cfg("data=iris", "data.cache=file", f"data.cache_dir={tmp_path / 'cache'}")
    data = prepare(c)
    mem = first_batches(dataset(data, "train", training=True, batch_size=32, seed=0, cache="memory"), 6)
    for _ in range(2):  # the first run writes the cache, the second reads it
        got = first_batches(dataset(data, "train", training=True, batch_size=32, seed=0, cache="file"), 6)
        for (fa, _), (fb, _) in zip(mem, got):
            np.testing.assert_array_equal(fa["x"], fb["x"])
    assert any(p.name.startswith("iris-train-") for p in (tmp_path / "cache").iterdir())


def test_repeat_limits_the_training_epochs():
    data = prepare(data_cfg("data=iris", "data.repeat=2"))
    rows = sum(len(y["label"]) for _, y in dataset(data, "train", training=True, batch_size=50, seed=0))
    assert rows == 2 * data.sizes()["train"]


# --- bad input: one line, before any training --------------------------------------------------------


def test_missing_file(tmp_path):
    c = data_cfg("data=npz", f"data.params.path={tmp_path / 'nope.npz'}")
    assert error_of(prepare, c) == f"data.params.path: no such file. Received: '{tmp_path / 'nope.npz'}'"
    c = data_cfg("data=tfrecord", f"data.params.path={tmp_path / 'shards' / '*.tfrecord'}")
    assert (
        error_of(prepare, c) == f"data.params.path: no file matches. Received: '{tmp_path / 'shards' / '*.tfrecord'}'"
    )
    assert error_of(prepare, data_cfg("data=csv")) == (
        "data.params.path: no value given: give one on the command line (data.params.path=...). Received: '???'"
    )


def test_wrong_column(tmp_path):
    write_iris_csv(tmp_path / "iris.csv")
    c = data_cfg("data=csv", f"data.params.path={tmp_path / 'iris.csv'}", "data.params.features=[sepal_lenght]")
    msg = error_of(prepare, c)
    assert msg.startswith(
        "data.params.features[0]: no such column. Received: 'sepal_lenght'. Did you mean 'sepal_length'?"
    )


def test_wrong_dtype(tmp_path):
    path = tmp_path / "iris.csv"
    write_iris_csv(path)
    path.write_text(path.read_text().replace(",0\n", ",setosa\n", 1))
    c = data_cfg("data=csv", f"data.params.path={path}")
    assert (
        error_of(prepare, c)
        == "data.params.dtypes.species: column 'species' on line 2 is not int64. Received: 'setosa'"
    )

    write_digits_tfrecord(tmp_path / "d.tfrecord", n=10)
    c = data_cfg(
        "data=tfrecord", f"data.params.path={tmp_path / 'd.tfrecord'}", "data.params.labels.label.dtype=float32"
    )
    msg = error_of(prepare, c)  # a stream: the file and the record that do not match
    assert msg.startswith("data.params.path: the file does not match the declared features (")
    assert "label" in msg and msg.endswith(f"; record 0). Received: '{tmp_path / 'd.tfrecord'}'")


def test_empty_split_and_a_fraction_that_leaves_nothing(tmp_path):
    c = data_cfg("data=digits", *RANGE, "data.splits.train_range=[0,1000]", "data.splits.eval_range=[1797,null]")
    assert (
        error_of(prepare, c)
        == "data.splits.eval_range: leaves the eval split empty (the source has 1797 rows). Received: [1797, 1797]"
    )
    c = data_cfg("data=iris", "data.splits.eval_fraction=0.001")
    assert (
        error_of(prepare, c) == "data.splits.eval_fraction: leaves an empty split of the 150 examples. Received: 0.001"
    )
    write_iris_csv(tmp_path / "train.csv")
    write_iris_csv(tmp_path / "eval.csv", slice(0, 0))  # the header only
    c = data_cfg(
        "data=csv",
        f"data.params.path={tmp_path / 'train.csv'}",
        "data.splits.method=files",
        f"+data.splits.eval_params.path={tmp_path / 'eval.csv'}",
    )
    assert (
        error_of(prepare, c)
        == f"data.splits.eval_params: the eval split is empty. Received: {{'path': '{tmp_path / 'eval.csv'}'}}"
    )


def test_label_out_of_range_for_the_declared_classes(tmp_path):
    images, labels = digits_arrays()
    labels = labels.copy()
    labels[5] = 12
    np.savez(tmp_path / "d.npz", image=images, label=labels)
    c = data_cfg(
        "data=npz",
        f"data.params.path={tmp_path / 'd.npz'}",
        *RANGE,
        "data.splits.train_range=[0,1000]",
        "data.splits.eval_range=[1000,null]",
    )
    assert (
        error_of(prepare, c)
        == "data.num_classes: label 'label' of the train split holds 12, outside [0, 10). Received: 10"
    )


def test_nan_before_a_transform_that_cannot_take_it(tmp_path):
    x = write_iris_csv(tmp_path / "iris.csv", blank=(140, 1))  # row 140, column 1 empty -> NaN
    c = data_cfg(
        "data=csv",
        f"data.params.path={tmp_path / 'iris.csv'}",
        *RANGE,
        "data.splits.train_range=[0,120]",
        "data.splits.eval_range=[120,null]",
    )
    assert error_of(prepare, c) == (
        "data.transforms[0]: normalize cannot take NaN, and feature 'x' of the eval split holds 1: "
        "put {name: fill_nan} before it. Received: 'x'"
    )
    c["transforms"] = [{"name": "fill_nan", "value": 3.0}, *c["transforms"]]
    data = prepare(c)
    (f, _), *_ = first_batches(dataset(data, "eval", training=False, batch_size=30, seed=0), 1)
    assert np.isfinite(f["x"]).all()
    np.testing.assert_allclose(f["x"][20, 1], (3.0 - x[:120, 1].mean()) / x[:120, 1].std(), rtol=1e-5)


def test_static_rules_fail_in_validate_without_reading_data():
    c = plain(["data=digits"])
    c["data"]["transforms"] = [{"name": "normalise"}]
    assert error_of(validate, c).startswith(
        "data.transforms[0].name: unknown transform (or give a dotted path to your own function). "
        "Received: 'normalise'. Did you mean 'normalize'?"
    )
    c["data"]["transforms"] = [{"name": "clip", "minimum": 0}]
    assert error_of(validate, c).startswith("data.transforms[0].minimum: clip takes no argument 'minimum'")
    c["data"]["transforms"] = [{"name": "no_such_pkg.mod.fn"}]
    validate(c)  # a dotted name is imported when the data is prepared
    assert error_of(prepare, c["data"]).startswith(
        "data.transforms[0].name: cannot import this function (No module named 'no_such_pkg')"
    )
    c["data"]["transforms"], c["data"]["cache"] = [], "disk"
    msg = error_of(validate, c)
    assert msg.startswith("data.cache: unknown cache. Received: 'disk'") and msg.endswith("Allowed: file, memory, none")


def test_the_cli_prints_one_line_and_exits_2(tmp_path, capsys):
    from layerprobe.cli import main

    assert main(["data", "data=npz", f"data.params.path={tmp_path / 'nope.npz'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"layerprobe: error: data.params.path: no such file. Received: '{tmp_path / 'nope.npz'}'"
