"""The streaming TFRecord source: shards read through tf.data (PNG and raw tensor bytes, GZIP), split by
a seeded hash or by files, digested from the files' bytes, fitted by a streaming pass, and every bad
input one line naming the file; a whole run trains, evaluates and probes on it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from layerprobe.data.digests import INDEX
from layerprobe.data.pipeline import check_against_inputs, prepare
from layerprobe.data.source import DataSource
from layerprobe.data.stream import TFRecordStream
from tests.test_data import data_cfg, digits_arrays, error_of, write_digits_tfrecord

IMAGE = "+data.params.features.png={dtype: string, decode: png, shape: [8, 8, 1]}"
RAW = "+data.params.features.raw={dtype: string, decode: raw, raw_dtype: float32, shape: [2, 3]}"
ID = "+data.params.features.id={dtype: int64, shape: []}"


def png_example(i: int, image: np.ndarray, label: int) -> bytes:
    pixels = tf.io.encode_png(tf.constant((image * 255).round().astype(np.uint8))).numpy()
    raw = (np.arange(6, dtype=np.float32) + i).tobytes()  # (2, 3) float32 as bytes
    feature = {
        "png": tf.train.Feature(bytes_list=tf.train.BytesList(value=[pixels])),
        "raw": tf.train.Feature(bytes_list=tf.train.BytesList(value=[raw])),
        "image": tf.train.Feature(float_list=tf.train.FloatList(value=image.ravel().tolist())),
        "id": tf.train.Feature(int64_list=tf.train.Int64List(value=[i])),
        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_png_shards(root: Path, shards: int = 3, per_shard: int = 60, compression: str = "GZIP") -> np.ndarray:
    """`shards` files of PNG-encoded digits; returns the uint8 images by id."""
    images, labels = digits_arrays()
    root.mkdir(parents=True, exist_ok=True)
    for s in range(shards):
        with tf.io.TFRecordWriter(str(root / f"part-{s}.tfrecord"), options=compression or None) as w:
            for i in range(s * per_shard, (s + 1) * per_shard):
                w.write(png_example(i, images[i], int(labels[i])))
    return (images[: shards * per_shard] * 255).round().astype(np.uint8)


def stream_cfg(root: Path, *overrides: str) -> dict:
    return data_cfg(
        "data=tfrecord_stream",
        f"data.params.path={root / '*.tfrecord'}",
        "data.params.compression=GZIP",
        f"data.cache_dir={root.parent / 'cache'}",
        IMAGE,
        RAW,
        ID,
        *overrides,
    )


def examples(data: DataSource, split: str, **kw) -> dict[str, np.ndarray]:
    batches = list(data.tf_dataset(split, batch_size=16, seed=kw.pop("seed", 0), **kw).as_numpy_iterator())
    return {k: np.concatenate([f[k] for f, _ in batches]) for k in batches[0][0]} | {
        "label": np.concatenate([y["label"] for _, y in batches])
    }


def test_png_and_raw_bytes_decode_and_the_hash_split_covers_every_record_once(tmp_path):
    pixels = write_png_shards(tmp_path / "shards")
    data = prepare(stream_cfg(tmp_path / "shards"))
    assert isinstance(data, TFRecordStream) and isinstance(data, DataSource)
    sizes = data.sizes()
    assert sizes["train"] + sizes["eval"] == 180 and 20 <= sizes["eval"] <= 52  # eval_fraction 0.2
    assert data.size("eval") == sizes["eval"] and not hasattr(data, "splits")  # never arrays, not even empty
    train, ev = examples(data, "train", training=False), examples(data, "eval", training=False)
    assert sorted([*train["id"], *ev["id"]]) == list(range(180))  # disjoint, complete
    for part in (train, ev):
        np.testing.assert_array_equal(part["png"], pixels[part["id"]])  # (n, 8, 8, 1) uint8, decoded
        np.testing.assert_array_equal(
            part["raw"], np.arange(6, dtype=np.float32).reshape(2, 3) + part["id"][:, None, None]
        )
        np.testing.assert_array_equal(part["label"], digits_arrays()[1][part["id"]])
    spec = data.element_spec[0]
    assert (spec["png"].dtype, spec["png"].shape.as_list()) == (tf.uint8, [8, 8, 1])
    check_against_inputs(
        data, {"image": {"shape": [8, 8, 1]}, "png": {"shape": [8, 8, 1], "dtype": "uint8"}}, {"label"}
    )
    # the split depends on file names and record indexes, never on where the files lie
    moved = tmp_path / "elsewhere" / "shards"
    moved.parent.mkdir()
    (tmp_path / "shards").rename(moved)
    again = prepare(stream_cfg(moved))
    assert again.digest == data.digest
    np.testing.assert_array_equal(examples(again, "eval", training=False)["id"], ev["id"])
    other_seed = prepare(stream_cfg(moved, "data.splits.seed=1"))
    assert not np.array_equal(examples(other_seed, "eval", training=False)["id"], ev["id"])


def test_training_order_is_seeded_and_shuffles_across_shards(tmp_path):
    write_png_shards(tmp_path / "shards")
    data = prepare(stream_cfg(tmp_path / "shards", "data.repeat=1"))
    a = examples(data, "train", training=True, seed=3)["id"]
    b = examples(data, "train", training=True, seed=3)["id"]
    c = examples(data, "train", training=True, seed=4)["id"]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c) and sorted(a) == sorted(c) == sorted(examples(data, "train", training=False)["id"])
    assert not np.array_equal(a, np.sort(a))


def test_eval_files_and_normalize_fitted_by_a_streaming_pass(tmp_path):
    (tmp_path / "train").mkdir()
    images, _, _ = write_digits_tfrecord(tmp_path / "train" / "a.tfrecord", n=150)
    write_digits_tfrecord(tmp_path / "eval.tfrecord", n=40)
    c = data_cfg(
        "data=tfrecord_stream",
        f"data.params.path={tmp_path / 'train' / '*.tfrecord'}",
        "data.splits.method=files",
        f"+data.splits.eval_params.path={tmp_path / 'eval.tfrecord'}",
        "+data.transforms=[{name: normalize, features: [image]}]",
        f"data.cache_dir={tmp_path / 'cache'}",
    )
    data = prepare(c)
    assert data.sizes() == {"train": 150, "eval": 40}
    overlap = {**c, "splits": {**c["splits"], "eval_params": {"path": str(tmp_path / "train" / "a.tfrecord")}}}
    assert error_of(prepare, overlap) == (
        f"data.splits.eval_params.path: names {tmp_path / 'train' / 'a.tfrecord'}, a train file too: its records "
        f"would be trained on. Received: '{tmp_path / 'train' / 'a.tfrecord'}'"
    )
    x = images.astype(np.float64)  # (150, 8, 8, 1): one channel, so one mean and one std
    np.testing.assert_allclose(data.fitted["0/image/mean"], [x.mean()], rtol=1e-6)
    np.testing.assert_allclose(data.fitted["0/image/std"], [x.std()], rtol=1e-5)
    got = examples(data, "eval", training=False)["image"]
    want = (digits_arrays()[0][:40] - data.fitted["0/image/mean"]) / data.fitted["0/image/std"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_the_digest_is_of_the_file_bytes_and_is_cached_by_size_and_mtime(tmp_path):
    write_png_shards(tmp_path / "shards", shards=2)
    first = prepare(stream_cfg(tmp_path / "shards")).digest
    index = json.loads((tmp_path / "cache" / INDEX).read_text())
    assert len(index) == 2 and all(len(v[2]) == 64 for v in index.values())
    assert prepare(stream_cfg(tmp_path / "shards")).digest == first
    write_png_shards(tmp_path / "shards", shards=2, per_shard=59)  # other bytes, other size
    assert prepare(stream_cfg(tmp_path / "shards")).digest != first


def test_bad_input_is_one_line_naming_the_file(tmp_path):
    assert error_of(prepare, stream_cfg(tmp_path / "none")) == (
        f"data.params.path: no file matches. Received: '{tmp_path / 'none' / '*.tfrecord'}'"
    )
    write_png_shards(tmp_path / "shards", shards=2)
    bad = tmp_path / "shards" / "part-1.tfrecord"
    msg = error_of(prepare, stream_cfg(tmp_path / "shards", "data.params.labels.label.dtype=float32"))
    assert msg.startswith("data.params.path: the file does not match the declared features (") and "label" in msg
    assert msg.endswith(f"Received: '{tmp_path / 'shards' / 'part-0.tfrecord'}'")
    garbage = tmp_path / "garbage" / "part-9.tfrecord"
    garbage.parent.mkdir()
    record = tf.train.Example.FromString(png_example(0, digits_arrays()[0][0], 0))
    record.features.feature["png"].bytes_list.value[0] = b"not an image"
    with tf.io.TFRecordWriter(str(garbage), options="GZIP") as w:
        w.write(record.SerializeToString())
    msg = error_of(prepare, stream_cfg(garbage.parent))  # an image that does not decode
    assert msg.startswith("data.params.path: the file does not match the declared features (")
    assert msg.endswith(f"Received: '{garbage}'")
    bad.write_bytes(bad.read_bytes()[:-100])  # a truncated shard: its first records still read
    msg = error_of(prepare, stream_cfg(tmp_path / "shards"))
    assert msg.startswith("data.params.path: cannot be read as records (")
    assert msg.endswith(f"Received: '{bad}'")
    ranges = ("data.splits.method=range", "data.splits.train_range=[0,10]", "data.splits.eval_range=[10,null]")
    assert error_of(stream_cfg, tmp_path / "shards", *ranges) == (  # in validate, without TensorFlow
        "data.splits.method: tfrecord_stream is split by its files or by a seeded hash of each record, "
        "not by row ranges. Received: 'range'. Allowed: files, fraction"
    )
    assert error_of(prepare, stream_cfg(tmp_path / "shards", "data.params.features.raw.raw_dtype=complex")).startswith(
        "data.params.features.raw.raw_dtype: decode: raw needs the tensor's dtype. Received: 'complex'"
    )


@pytest.mark.integration
@pytest.mark.estimator  # the default engine
def test_a_whole_run_trains_evaluates_and_probes_on_a_stream(tiny, tmp_path):
    from layerprobe.runner import run

    write_png_shards(tmp_path / "shards", compression="")
    shards, cache = tmp_path / "shards" / "*.tfrecord", tmp_path / "cache"
    c = tiny("data=tfrecord_stream", f"data.params.path={shards}", f"data.cache_dir={cache}")
    result = run(c, tmp_path / "out")
    assert result.global_step > 0 and 0 <= result.eval_metrics["eval/accuracy"] <= 1
    data = prepare(c["data"])
    assert {layer.examples for layer in result.probe.values()} == {data.sizes()["eval"]}
