"""Data at scale: peak RSS of whole runs on generated TFRecord shards, pipeline throughput (raw floats
and PNG-encoded images) against a hand-written pipeline and against what training consumes, and the
probe phase on 2 shards vs 1 process.

`python -m benchmarks.data_scale DIR [GB ...]` generates the data under DIR (deleted afterwards), nothing
downloaded, and prints one JSON line per measurement. Records are 32x32x3 float32 images as raw bytes
(`decode: raw`), written fast: one serialized tf.train.Example template per label, the pixels put in
with numpy, many records per write call. The PNG set (uint8 pixels, `decode: png`) is a fixed
20,000 examples: encoding is the slow part of writing it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).absolute().parents[1]
SHAPE = (32, 32, 3)
RECORD_FLOATS = int(np.prod(SHAPE))
RAW = "{dtype: string, decode: raw, raw_dtype: float32, shape: [32, 32, 3]}"
PNG = "{dtype: string, decode: png, shape: [32, 32, 3]}"
PNG_EXAMPLES = 20_000


def generate(out: Path, gigabytes: float, shards: int = 20) -> int:
    """Raw-float records of ~gigabytes in `shards` files; returns the number of examples."""
    import tensorflow as tf

    out.mkdir(parents=True, exist_ok=True)
    pad = np.zeros(RECORD_FLOATS, np.float32).tobytes()
    templates = []
    for label in range(10):
        feature = {
            "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[pad])),
            "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
        }
        blob = tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()
        templates.append((blob[: blob.index(pad)], blob[blob.index(pad) + len(pad) :]))
    n = int(gigabytes * 1e9 / (RECORD_FLOATS * 4))
    rng = np.random.default_rng(0)
    per = -(-n // shards)
    for s in range(shards):
        with tf.io.TFRecordWriter(str(out / f"part-{s:05d}.tfrecord")) as w:
            for start in range(s * per, min(n, (s + 1) * per), 4096):
                count = min(4096, min(n, (s + 1) * per) - start)
                pixels = rng.random((count, RECORD_FLOATS), dtype=np.float32)
                labels = (pixels[:, :64].sum(1) * 10 / 64).astype(int) % 10  # learnable from the pixels
                for row, label in zip(pixels, labels):
                    head, tail = templates[label]
                    w.write(head + row.tobytes() + tail)
    return n


def generate_png(out: Path, examples: int = PNG_EXAMPLES, shards: int = 10) -> int:
    """PNG-encoded uint8 32x32x3 images (label learnable from the pixels) in `shards` files."""
    import tensorflow as tf

    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    per = -(-examples // shards)
    for s in range(shards):
        with tf.io.TFRecordWriter(str(out / f"part-{s:05d}.tfrecord")) as w:
            for _ in range(s * per, min(examples, (s + 1) * per)):
                pixels = rng.integers(0, 256, SHAPE, dtype=np.uint8)
                label = int(pixels[0, :, 0].sum()) % 10
                feature = {
                    "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[tf.io.encode_png(pixels).numpy()])),
                    "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
                }
                w.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    return examples


def run_overrides(data: Path, work: Path, image: str = RAW) -> list[str]:
    return [
        "model=tiny_cnn",
        "trainer=quick",
        "trainer.train_steps=50",
        "model.inputs.image.shape=[32,32,3]",
        "data=tfrecord",
        f"data.params.path={data / '*.tfrecord'}",
        f"++data.params.features.image={image}",
        f"data.cache_dir={work / 'cache'}",
        "data.batch_size=256",
        f"trainer.model_dir={work / 'model'}",
        f"tracking.uri=sqlite:///{work / 'mlflow.db'}",
        "probe.plots=false",
        *(["data.transforms=[{name: cast, features: [image], dtype: float32}]"] if image == PNG else []),
    ]


def whole_run(data: Path, work: Path, image: str = RAW) -> dict[str, Any]:
    """Peak RSS (its own, from wait4) and wall time of `layerprobe <overrides>` in a fresh process, and
    what its training consumed: examples/s = 256 x the median of its train/steps_per_sec records."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT)}
    t = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "layerprobe", *run_overrides(data, work, image)],
        cwd=work,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(work / "run.err", "w"),  # noqa: SIM115 - closed with the process
    )
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{work / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    rates = [m.value for m in client.get_metric_history(runs[0].info.run_id, "train/steps_per_sec")] if runs else []
    consumed = 256 * float(np.median(rates)) if rates else float("nan")
    return {
        "status": status,
        "peak_rss_gb": usage.ru_maxrss / 1e6,
        "seconds": seconds,
        "train_examples_per_s": consumed,
    }


def shards(work: Path) -> dict[str, float]:
    """Wall seconds of the probe phase of the trained model_dir in 1 process, and in 2 shard processes
    at once (2 cores) plus the merge (`layerprobe probe --shard I/2 --state-dir`, `--merge`)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT)}
    model = str(work / "model")

    def cli(*args: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "layerprobe", "probe", model, *args],
            cwd=work,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    t = time.perf_counter()
    one = cli("--output-dir", str(work / "p1")).wait()
    single = time.perf_counter() - t
    t = time.perf_counter()
    procs = [cli("--shard", f"{i}/2", "--state-dir", str(work / "states")) for i in range(2)]
    codes = [p.wait() for p in procs]
    sharded = time.perf_counter() - t
    t = time.perf_counter()
    merged = cli("--merge", str(work / "states"), "--output-dir", str(work / "p2")).wait()
    merge = time.perf_counter() - t
    if one or merged or any(codes):
        raise RuntimeError(f"probe processes failed: {one} {codes} {merged}")
    return {"probe_1_process_s": single, "probe_2_shards_s": sharded, "merge_s": merge}


def throughput(data: Path, work: Path, batches: int = 300, image: str = RAW, rounds: int = 3) -> dict[str, float]:
    """Examples/s: layerprobe's train pipeline vs a hand-written tf.data pipeline of the same files,
    each timed over `batches` batches in `rounds` alternating rounds (the median round; a shared
    machine's load moves between rounds, so alternating exposes both to it alike)."""
    import tensorflow as tf

    from layerprobe.data.pipeline import prepare
    from tests.conftest import plain

    c = plain(run_overrides(data, work, image))
    source = prepare(c["data"])
    ours = source.tf_dataset("train", training=True, batch_size=256, seed=0, cache=False)
    spec = {"image": tf.io.FixedLenFeature([], tf.string), "label": tf.io.FixedLenFeature([], tf.int64)}

    def parse(r: Any) -> Any:
        e = tf.io.parse_single_example(r, spec)
        if image == PNG:
            pixels = tf.cast(tf.io.decode_png(e["image"], channels=3), tf.float32)
        else:
            pixels = tf.reshape(tf.io.decode_raw(e["image"], tf.float32), SHAPE)
        return {"image": pixels}, {"label": e["label"]}

    files = tf.data.Dataset.list_files(str(data / "*.tfrecord"), shuffle=True, seed=0)
    hand = files.interleave(tf.data.TFRecordDataset, cycle_length=8, num_parallel_calls=8, deterministic=True)
    hand = hand.map(parse, num_parallel_calls=tf.data.AUTOTUNE).shuffle(10_000, seed=0).repeat()
    hand = hand.batch(256).prefetch(tf.data.AUTOTUNE)
    rates: dict[str, list[float]] = {"layerprobe": [], "hand_written": []}
    iterators = {"layerprobe": iter(ours), "hand_written": iter(hand)}
    for it in iterators.values():
        for _ in range(20):  # fill the shuffle buffer and the prefetch
            next(it)
    for _ in range(rounds):
        for name, it in iterators.items():
            t = time.perf_counter()
            for _ in range(batches):
                next(it)
            rates[name].append(batches * 256 / (time.perf_counter() - t))
    return {f"{name}_examples_per_s": float(np.median(r)) for name, r in rates.items()}


def main(argv: list[str]) -> None:
    base = Path(argv[0])
    if argv[1:] == ["png"]:  # the PNG-encoded variant: pipelines, training consumption, 2 shards vs 1
        data, work = base / "data-png", base / "work-png"
        work.mkdir(parents=True, exist_ok=True)
        n = generate_png(data)
        print(json.dumps({"png_examples": n, "load": os.getloadavg()[0], **whole_run(data, work, PNG)}), flush=True)
        print(json.dumps({"png": True, **throughput(data, work, image=PNG)}), flush=True)
        print(json.dumps({"png": True, **shards(work)}), flush=True)
        shutil.rmtree(data)
        shutil.rmtree(work)
        return
    for gigabytes in [float(g) for g in argv[1:]] or [0.5]:
        data, work = base / f"data-{gigabytes:g}", base / f"work-{gigabytes:g}"
        work.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        n = generate(data, gigabytes)
        size = sum(f.stat().st_size for f in data.glob("*.tfrecord")) / 1e9
        print(json.dumps({"gb": round(size, 2), "examples": n, "generate_s": round(time.perf_counter() - t, 1)}))
        print(json.dumps({"gb": round(size, 2), "load": os.getloadavg()[0], **whole_run(data, work)}), flush=True)
        if gigabytes < 2:
            print(json.dumps({"gb": round(size, 2), **throughput(data, work)}), flush=True)
            print(json.dumps({"gb": round(size, 2), **shards(work)}), flush=True)
        shutil.rmtree(data)
        shutil.rmtree(work)


if __name__ == "__main__":
    main(sys.argv[1:])
