"""Training overhead (layerprobe vs a hand-written Estimator) and the train input pipeline's rate."""

from __future__ import annotations

import tempfile
import time
from typing import Any

import numpy as np

from benchmarks.configs import default_config
from benchmarks.measure import Goal, Section, fmt, median, say, spread
from layerprobe.config.loaded import load

# The default experiment's model as the hand-written model_fn below builds it; if conf/ changes the
# default model, the comparison would be of two different models, so it stops instead.
EXPECTED_LAYERS = {
    "conv1": {"type": "Conv2D", "filters": 32, "kernel_size": 3, "padding": "same", "activation": "relu"},
    "pool1": {"type": "MaxPooling2D"},
    "conv2": {"type": "Conv2D", "filters": 64, "kernel_size": 3, "padding": "same", "activation": "relu"},
    "gap": {"type": "GlobalAveragePooling2D"},
    "drop": {"type": "Dropout", "rate": 0.2},
    "logits": {"type": "Dense", "units": 10},
}


def _check_default(c: dict[str, Any]) -> None:
    layers = {n: {k: v for k, v in s.items() if k != "expose"} for n, s in c["model"]["layers"].items()}
    d = c["data"]
    plain_data = d["name"] == "digits" and not d["transforms"] and d.get("cache", "memory") in ("memory", True)
    if layers != EXPECTED_LAYERS or not plain_data or d["splits"].get("method", "fraction") != "fraction":
        raise RuntimeError(
            "the default experiment no longer matches the hand-written baseline in benchmarks/training.py; "
            f"update EXPECTED_LAYERS and plain_model_fn (got layers {layers})"
        )


def plain_model_fn(features: Any, labels: Any, mode: str, params: dict[str, Any]) -> Any:
    """The default model written the plain way: tf.keras layers in a model_fn, a tf.compat.v1 optimizer."""
    import tensorflow as tf

    training = mode == tf.estimator.ModeKeys.TRAIN
    x = tf.keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv1")(features["image"])
    x = tf.keras.layers.MaxPooling2D(name="pool1")(x)
    x = tf.keras.layers.Conv2D(64, 3, padding="same", activation="relu", name="conv2")(x)
    x = tf.keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = tf.keras.layers.Dropout(0.2, name="drop")(x, training=training)
    logits = tf.keras.layers.Dense(10, name="logits")(x)
    loss = tf.compat.v1.losses.sparse_softmax_cross_entropy(labels, logits)
    opt = tf.compat.v1.train.AdamOptimizer(params["learning_rate"])
    train_op = opt.minimize(loss, global_step=tf.compat.v1.train.get_global_step())
    return tf.estimator.EstimatorSpec(mode, loss=loss, train_op=train_op)


def plain_input_fn(c: dict[str, Any]) -> Any:
    """The same digits split, shuffle, cache, batch and prefetch, written directly in tf.data."""
    import sklearn.datasets
    import tensorflow as tf

    digits = sklearn.datasets.load_digits()
    images = (digits.images.astype(np.float32) / 16.0)[..., None]
    n = len(images)
    n_eval = int(round(n * c["data"]["splits"]["eval_fraction"]))
    train = np.sort(np.random.default_rng(c["data"]["splits"]["seed"]).permutation(n)[n_eval:])
    x, y = images[train], digits.target[train].astype(np.int64)
    seed = c["data"].get("shuffle_seed")
    seed, batch = c["trainer"]["seed"] if seed is None else seed, c["data"]["batch_size"]

    def input_fn() -> Any:
        ds = tf.data.Dataset.from_tensor_slices(({"image": x}, y)).cache()
        ds = ds.shuffle(c["data"]["shuffle_buffer"] or len(x), seed=seed, reshuffle_each_iteration=True).repeat()
        return ds.batch(batch).prefetch(tf.data.AUTOTUNE)

    return input_fn


def _step_hook() -> Any:
    import tensorflow as tf

    class StepTimes(tf.estimator.SessionRunHook):
        def __init__(self) -> None:
            self.times: list[float] = []

        def after_run(self, run_context: Any, run_values: Any) -> None:
            self.times.append(time.perf_counter())

    return StepTimes()


def steps_per_second(times: list[float], warmup: int) -> float:
    """Steady-state rate: steps after the warm-up over the time they took (graph build, session start
    and the first steps' autotuning excluded)."""
    return (len(times) - 1 - warmup) / (times[-1] - times[warmup])


def _train_layerprobe(c: dict[str, Any], steps: int, model_dir: str) -> list[float]:
    from layerprobe.data.pipeline import prepare
    from layerprobe.engines import make_engine
    from layerprobe.engines.estimator.inputs import train_input_fn
    from layerprobe.engines.spec import model_spec

    data = prepare(c["data"])
    cfg = load(c)
    est = make_engine(model_spec(cfg), model_dir, cfg.trainer, cfg.data).estimator()  # type: ignore[attr-defined]
    hook = _step_hook()
    est.train(train_input_fn(data, cfg.data, cfg.trainer.seed), max_steps=steps, hooks=[hook])
    return hook.times


def _train_plain(c: dict[str, Any], steps: int, model_dir: str) -> list[float]:
    import tensorflow as tf

    t = c["trainer"]
    config = tf.estimator.RunConfig(  # the same checkpoint and summary cadence as layerprobe's
        model_dir=model_dir,
        tf_random_seed=t["seed"],
        save_checkpoints_steps=t["save_checkpoints_steps"],
        save_summary_steps=t["log_every_steps"],
        keep_checkpoint_max=t["keep_checkpoint_max"],
        log_step_count_steps=t["log_every_steps"],
    )
    params = {"learning_rate": float(t["optimizer"]["learning_rate"])}
    est = tf.estimator.Estimator(plain_model_fn, config=config, params=params)
    hook = _step_hook()
    est.train(plain_input_fn(c), max_steps=steps, hooks=[hook])
    return hook.times


def training_overhead(quick: bool, repeats: int) -> Section:
    """Steps/s of the default experiment from config vs the hand-written Estimator, interleaved.

    Must run before anything enables op determinism in this process (it cannot be switched off):
    the plain baseline is first timed as a plain user runs it (no op determinism), then both are
    timed alternately with op determinism on, as layerprobe's default `trainer.deterministic=true` sets.
    """
    steps, warmup = (150, 30) if quick else (700, 100)
    c = default_config("unused")
    _check_default(c)
    rates: dict[str, list[float]] = {"plain_nondet": [], "plain": [], "layerprobe": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):
            rates["plain_nondet"].append(steps_per_second(_train_plain(c, steps, f"{tmp}/pn{r}"), warmup))
            say(f"  plain Estimator (no op determinism) {rates['plain_nondet'][-1]:.1f} steps/s")
        for r in range(repeats):
            lp = steps_per_second(_train_layerprobe(c, steps, f"{tmp}/lp{r}"), warmup)  # enables determinism
            pl = steps_per_second(_train_plain(c, steps, f"{tmp}/pl{r}"), warmup)
            rates["layerprobe"].append(lp)
            rates["plain"].append(pl)
            say(f"  layerprobe {lp:.1f} steps/s, plain {pl:.1f} steps/s (ratio {lp / pl:.3f})")
    ratios = [a / b for a, b in zip(rates["layerprobe"], rates["plain"])]
    ratio_nondet = median(rates["layerprobe"]) / median(rates["plain_nondet"])
    s = Section(
        "training",
        "1. Training overhead",
        f"The default experiment (digits CNN, batch {c['data']['batch_size']}, Adam) trained for {steps} steps "
        f"from a fresh model_dir each time; steps/s is the steady-state rate after step {warmup} (a "
        "SessionRunHook stamps every step, so graph building and session start are excluded). The baseline is "
        "a hand-written `model_fn` of the same layers (tf.keras layers called in the model_fn, "
        "`tf.compat.v1.train.AdamOptimizer`) and the same tf.data pipeline written directly (same split, "
        "cache, shuffle buffer, batch, prefetch) with the same RunConfig checkpoint/summary cadence. "
        "layerprobe and the baseline alternate within each repeat; the ratio is taken per repeat.",
        ["", "steps/s"],
        [
            ["plain Estimator, no op determinism (how a plain user runs it)", spread(rates["plain_nondet"])],
            ["plain Estimator, op determinism on", spread(rates["plain"])],
            ["layerprobe from config (default: op determinism on)", spread(rates["layerprobe"])],
            ["ratio layerprobe / plain, same determinism (per repeat)", spread(ratios, "x")],
            ["ratio layerprobe / plain without determinism (medians)", f"{fmt(ratio_nondet)}x"],
        ],
        [Goal("layerprobe / hand-written steps/s", median(ratios), ">=", 0.95)],
        data={"rates": rates},
    )
    s.notes.append(
        "Op determinism is process-wide and cannot be switched off once on, so the no-determinism baseline "
        "runs first; the goal compares like with like (both with op determinism)."
    )
    return s


def input_pipeline(quick: bool, train_rate: float) -> Section:
    """Examples/s of the default train input pipeline alone, iterated eagerly, vs the training rate."""
    from layerprobe.data.pipeline import prepare
    from layerprobe.engines.estimator.inputs import train_input_fn

    c = default_config("unused")
    data, cfg = prepare(c["data"]), load(c)
    batches = 300 if quick else 3000
    ds = train_input_fn(data, cfg.data, cfg.trainer.seed)()
    it = iter(ds)
    for _ in range(20):  # fill the cache and the shuffle buffer
        next(it)
    t = time.perf_counter()
    n = 0
    for _ in range(batches):
        f, _ = next(it)
        n += int(f["image"].shape[0])
    rate = n / (time.perf_counter() - t)
    need = train_rate * c["data"]["batch_size"]
    say(f"  input pipeline alone {rate:,.0f} examples/s; training consumes {need:,.0f} examples/s")
    return Section(
        "pipeline",
        "6. Input pipeline",
        f"The default experiment's train `input_fn` (layerprobe's `dataset(...)`: map, cache, shuffle, repeat, "
        f"batch {c['data']['batch_size']}, prefetch) iterated alone in eager mode for {batches} batches after 20 "
        "warm-up batches, against the rate training consumes examples (median layerprobe steps/s from section "
        "1 x batch size). Eager iteration adds Python overhead per batch, so this is a lower bound.",
        ["", "examples/s"],
        [
            ["input pipeline alone", f"{rate:,.0f}"],
            ["training consumes (steps/s x batch)", f"{need:,.0f}"],
            ["headroom (pipeline / training)", f"{fmt(rate / need)}x"],
        ],
        [Goal("pipeline examples/s / training examples/s", rate / need, ">", 1.0)],
    )
