"""Opening a stream reads each file once: the digest and what the scan finds (record counts, the first
bad record) are remembered by (path, size, mtime), so a second open of unchanged files reads nothing;
a bad record is still one line naming the file and the record, or skipped and counted."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import tensorflow as tf

from layerprobe.data import digests
from layerprobe.data.digests import INDEX
from layerprobe.data.opening import deferred
from layerprobe.data.pipeline import prepare
from tests.test_data import digits_arrays, error_of
from tests.test_data_images import folder_cfg, write_folder
from tests.test_data_stream import png_example, stream_cfg, write_png_shards


def reads() -> dict[str, int]:
    return dict(digests.READS)


def same_size_garbage(path: Path) -> None:
    """Other bytes of the same size and mtime: what a reader of the file would see, and a stat would not."""
    st = path.stat()
    path.write_bytes(b"\x00" * st.st_size)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_a_second_open_of_unchanged_files_reads_nothing(tmp_path):
    write_png_shards(tmp_path / "shards", shards=3, per_shard=40)
    first = prepare(stream_cfg(tmp_path / "shards"))
    index = json.loads((tmp_path / "cache" / INDEX).read_text())
    facts = [next(iter(v[3].values())) for v in index.values()]  # [records, parsed, eval records, first bad]
    assert sorted(f[:2] for f in facts) == [[40, 40]] * 3 and {f[3] for f in facts} == {-1}
    assert sum(f[2] for f in facts) == first.sizes()["eval"] and first.sizes() == {"train": 100, "eval": 20}
    before = reads()
    again = prepare(stream_cfg(tmp_path / "shards"))
    assert reads() == before
    assert (again.sizes(), again.digest) == (first.sizes(), first.digest)
    for path in (tmp_path / "shards").glob("*.tfrecord"):
        same_size_garbage(path)  # were it read, it would not parse
    assert prepare(stream_cfg(tmp_path / "shards")).sizes() == first.sizes()
    os.utime(tmp_path / "shards" / "part-1.tfrecord")  # a changed mtime: read again
    msg = error_of(prepare, stream_cfg(tmp_path / "shards"))
    assert msg.startswith("data.params.path: cannot be read as records (")
    assert msg.endswith(f"Received: '{tmp_path / 'shards' / 'part-1.tfrecord'}'")
    assert reads()["hashed"] == before["hashed"] + 1 and reads()["scanned"] == before["scanned"] + 1


def test_another_declared_parse_scans_again(tmp_path):
    write_png_shards(tmp_path / "shards", shards=2, per_shard=30)
    prepare(stream_cfg(tmp_path / "shards"))
    before = reads()
    data = prepare(stream_cfg(tmp_path / "shards", "data.splits.eval_fraction=0.5"))
    assert reads()["hashed"] == before["hashed"] and reads()["scanned"] == before["scanned"] + 2
    assert sum(data.sizes().values()) == 60


def test_a_bad_record_mid_file_is_one_line_or_skipped_and_counted_and_remembered(tmp_path):
    write_png_shards(tmp_path / "shards", shards=2, per_shard=30)
    bad = tmp_path / "shards" / "part-1.tfrecord"
    images, labels = digits_arrays()
    with tf.io.TFRecordWriter(str(bad), options="GZIP") as w:
        for i in range(30, 60):
            record = tf.train.Example.FromString(png_example(i, images[i], int(labels[i])))
            if i == 47:
                record.features.feature["png"].bytes_list.value[0] = b"not an image"
            w.write(record.SerializeToString())
    line = error_of(prepare, stream_cfg(tmp_path / "shards"))
    assert line.startswith(
        "data.params.path: the file does not match the declared features (Unknown image file format."
    )
    assert line.endswith(f"required.; record 17). Received: '{bad}'")
    assert not any(noise in line for noise in ("{{", "[[", "Op:", "transformation"))  # TF's context: not the user's
    before = reads()
    assert error_of(prepare, stream_cfg(tmp_path / "shards")) == line
    assert reads() == before  # remembered: only the bad record is read again to explain it
    data = prepare(stream_cfg(tmp_path / "shards", "data.skip_corrupt=true"))
    assert data.skipped == 1 and sum(data.sizes().values()) == 59 and reads() == before
    batches = [data.tf_dataset(s, training=False, batch_size=16, seed=0) for s in ("train", "eval")]
    ids = np.concatenate([f["id"] for ds in batches for f, _ in ds.as_numpy_iterator()])
    assert sorted(ids.tolist()) == [i for i in range(60) if i != 47]


def test_an_image_folder_remembers_which_files_decode(tmp_path, caplog):
    write_folder(tmp_path / "photos", per_class=5)
    broken = tmp_path / "photos" / "dog" / "002.png"
    broken.write_bytes(b"not an image")
    with caplog.at_level("WARNING", logger="layerprobe.data.images"):
        data = prepare(folder_cfg(tmp_path / "photos", "data.skip_corrupt=true"))
    assert data.skipped == 1 and sum(data.sizes().values()) == 14
    assert "skipped 1 image(s)" in caplog.text and str(broken) in caplog.text  # never silently (docs/data.md's word)
    before = reads()
    again = prepare(folder_cfg(tmp_path / "photos", "data.skip_corrupt=true"))
    assert reads() == before and (again.skipped, again.sizes()) == (1, data.sizes())
    msg = error_of(prepare, folder_cfg(tmp_path / "photos"))
    assert msg.startswith("data.params.path: the image does not decode (") and msg.endswith(f"Received: '{broken}'")


def test_a_deferred_open_reads_nothing_until_asked(tmp_path):
    write_png_shards(tmp_path / "shards", shards=2, per_shard=30)
    before = reads()
    with deferred():
        data = prepare(stream_cfg(tmp_path / "shards"))
    assert set(data.element_spec[0]) == {"image", "png", "raw", "id"}
    assert reads() == before and not (tmp_path / "cache" / INDEX).exists()
    assert sum(data.sizes().values()) == 60  # asked: read now
    assert reads()["hashed"] == before["hashed"] + 2 and reads()["scanned"] == before["scanned"] + 2
    assert data.digest == prepare(stream_cfg(tmp_path / "shards")).digest


def test_records_parsed_in_batches_are_those_parsed_one_by_one_in_the_same_order(tmp_path):
    write_png_shards(tmp_path / "shards", shards=3, per_shard=50)
    batched = prepare(stream_cfg(tmp_path / "shards"))
    one_by_one = prepare(stream_cfg(tmp_path / "shards", "data.skip_corrupt=true"))  # never batches a parse
    for split, training in (("train", True), ("eval", False)):
        pipes = [
            d.tf_dataset(split, training=training, batch_size=16, seed=3, cache=False) for d in (batched, one_by_one)
        ]
        a, b = (list(p.take(6).as_numpy_iterator()) for p in pipes)
        for (fa, ya), (fb, yb) in zip(a, b):
            assert set(fa) == {"png", "raw", "image", "id"}
            for name in fa:
                np.testing.assert_array_equal(fa[name], fb[name])
            np.testing.assert_array_equal(ya["label"], yb["label"])
    a, b = (
        list(d.probe_dataset("eval", batch_size=8, shard=(1, 2)).as_numpy_iterator()) for d in (batched, one_by_one)
    )
    assert len(a) == len(b) > 0
    for (fa, ya, ka), (fb, yb, kb) in zip(a, b):
        np.testing.assert_array_equal(ka, kb)
        np.testing.assert_array_equal(fa["png"], fb["png"])
        np.testing.assert_array_equal(ya["label"], yb["label"])


def test_transforms_folded_into_the_batched_parse_are_those_mapped_record_by_record(tmp_path):
    """The deterministic transforms run in the batched parse's own map (one per-record stage, not two);
    the values and the order are those of the one-by-one parse with the transforms mapped per record,
    and the eval images are the written pixels cast and scaled."""
    pixels = write_png_shards(tmp_path / "shards", shards=3, per_shard=50)
    transforms = (
        "data.transforms=[{name: cast, features: [png], dtype: float32},"
        " {name: scale, features: [png], factor: 0.5, offset: 1.0}, {name: random_flip, features: [png]}]"
    )
    batched = prepare(stream_cfg(tmp_path / "shards", transforms))
    one_by_one = prepare(stream_cfg(tmp_path / "shards", transforms, "data.skip_corrupt=true"))
    for split, training in (("train", True), ("eval", False)):
        pipes = [
            d.tf_dataset(split, training=training, batch_size=16, seed=3, cache=False) for d in (batched, one_by_one)
        ]
        a, b = (list(p.take(6).as_numpy_iterator()) for p in pipes)
        assert len(a) == len(b) > 0
        for (fa, ya), (fb, yb) in zip(a, b):
            assert fa["png"].dtype == np.float32 and fa["png"].shape[1:] == (8, 8, 1)
            for name in fa:
                np.testing.assert_array_equal(fa[name], fb[name])
            np.testing.assert_array_equal(ya["label"], yb["label"])
            expected = pixels[fa["id"]].astype(np.float32) * np.float32(0.5) + np.float32(1.0)
            if not training:  # no augmentation: the written pixels, cast and scaled
                np.testing.assert_array_equal(fa["png"], expected)
                continue
            flipped = [bool((x == e[:, ::-1]).all() and (x != e).any()) for x, e in zip(fa["png"], expected)]
            assert all(f or (x == e).all() for f, x, e in zip(flipped, fa["png"], expected))
            assert 0 < sum(flipped) < len(flipped)  # augmented after the folded transforms, train only
