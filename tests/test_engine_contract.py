"""The engine seam (engines.base.Engine), one suite for every engine: each venv runs it for the engine
its TensorFlow has (conftest.ENGINE), so both engines answer the same questions the same way."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from layerprobe.config import compose
from layerprobe.config.loaded import load
from layerprobe.config.names import LOSSES, METRICS, OPTIMIZERS
from layerprobe.engines import ENGINES
from layerprobe.engines.base import PredictRequest
from layerprobe.probe.session import ProbeSession
from tests.conftest import ENGINE

pytestmark = pytest.mark.integration


def _model_module() -> object:
    package = ENGINES[ENGINE].partition(":")[0].rpartition(".")[0]
    return importlib.import_module(f"{package}.{'model_fn' if ENGINE == 'estimator' else 'model'}")


def test_the_engine_implements_every_loss_metric_and_optimizer_name_and_no_other():
    module = _model_module()
    assert set(module.LOSSES) == set(LOSSES)  # type: ignore[attr-defined]
    assert set(module.METRICS) == set(METRICS)  # type: ignore[attr-defined]
    assert set(module.OPTIMIZERS) == set(OPTIMIZERS)  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained to step 6 with a checkpoint every 3 steps, through the runner."""
    from layerprobe.runner import run

    tmp = tmp_path_factory.mktemp("contract")
    c = load(
        compose(
            [
                "model=tiny_cnn",
                "trainer=quick",
                f"trainer.engine={ENGINE}",
                "trainer.train_steps=6",
                "trainer.save_checkpoints_steps=3",
                f"trainer.model_dir={tmp / 'model'}",
                "tracking.enabled=false",
                "probe.enabled=false",
            ]
        )
    )
    result = run(c, tmp / "out")
    from layerprobe.experiment import prepare

    return c, prepare(c, result.model_dir)


def test_checkpoints_are_listed_by_step_and_found_by_step(trained):
    _, x = trained
    kept = x.engine.checkpoints()
    steps = [k.step for k in kept]
    assert steps == sorted(steps) and steps[-1] == 6 and 3 in steps
    assert x.engine.latest() == kept[-1]
    assert x.engine.at_step(3) == next(k for k in kept if k.step == 3)
    assert x.engine.at_step(4) is None


def test_a_checkpoint_holds_every_weight_of_the_layer_table_under_its_row_key(trained):
    _, x = trained
    names = x.engine.variable_names(x.engine.latest())
    weights = [w for r in x.summary.rows for w in r.weight_names]
    assert weights and set(weights) <= names
    assert "conv1/kernel" in names


def test_digests_tell_checkpoints_apart_and_repeat(trained):
    _, x = trained
    latest, earlier = x.engine.latest(), x.engine.at_step(3)
    assert x.engine.digest(latest) == x.engine.digest(latest)
    assert x.engine.digest(latest) != x.engine.digest(earlier)
    assert len(x.engine.digest(latest)) == 64


def test_evaluating_an_earlier_checkpoint_reads_that_checkpoint(trained):
    _, x = trained
    at3 = x.engine.evaluate(x.data, "eval", x.engine.at_step(3).path)
    at6 = x.engine.evaluate(x.data, "eval", x.engine.latest().path)
    assert at3["global_step"] == 3 and at6["global_step"] == 6
    assert not np.isclose(at3["loss"], at6["loss"], rtol=0, atol=1e-9)


def test_a_kept_checkpoint_outlives_its_rotation_and_is_found_by_step_and_digest(trained, tmp_path):
    """What a run's probe reads after a later run continued its model_dir (tests/test_own_checkpoint.py)."""
    import shutil

    from layerprobe.engines import make_engine

    c, x = trained
    model_dir = tmp_path / "model"
    shutil.copytree(x.engine.model_dir, model_dir)  # the module's model_dir stays as the other tests read it
    engine = make_engine(x.spec, str(model_dir), c.trainer, c.data)
    at3 = engine.at_step(3)
    digest, before = engine.digest(at3), engine.evaluate(x.data, "eval", at3.path)
    kept = engine.keep(at3)
    assert engine.keep(at3) == kept and engine.keep(kept) == kept  # made once
    assert kept.step == 3 and kept.path.startswith(str(model_dir / "kept" / f"3-{digest[:16]}"))
    assert engine.digest(kept) == digest
    # rotation, as a Saver with keep_checkpoint_max=1 does it: files deleted, the state file rewritten
    for f in model_dir.glob("model.ckpt-3.*"):
        f.unlink()
    (model_dir / "checkpoint").write_text(
        'model_checkpoint_path: "model.ckpt-6"\nall_model_checkpoint_paths: "model.ckpt-6"\n'
    )
    assert [k.step for k in engine.checkpoints()] == [3, 6] and engine.latest().step == 6
    assert engine.at_step(3) == kept == engine.at_step(3, digest)
    assert engine.at_step(3, "0" * 64) is None  # another model's step 3 is not this run's
    assert engine.evaluate(x.data, "eval", kept.path) == before


# The probe's state folded on the device (graph_fold, Engine.reduce): the same bits as merging every
# batch's summaries on the host, and per-batch host traffic that does not grow with the sketch: only
# the reservoir candidates cross per batch, the state once per pass.
FOLD_LAYERS = ["conv1", "logits"]


def _session(x, **probe):
    """A probe session of the FOLD_LAYERS with probe.* replaced by `probe`."""
    from dataclasses import replace

    c = replace(x.c, probe=replace(x.c.probe, batch_size=64, **probe))
    return ProbeSession(c, x.engine, FOLD_LAYERS, next(iter(x.spec.heads.values())).label)


def _request(s: ProbeSession) -> PredictRequest:
    p = s.c.probe
    return PredictRequest("eval", p.batch_size, s.label, p.max_examples, p.reservoir_size, p.sample_seed)


def test_the_folded_state_equals_the_host_merge_of_every_batch_bitwise(trained):
    _, x = trained
    s = _session(x, reservoir_size=8)
    folded = s.run(x.data, "eval").stats(x.summary)
    accs = s.accumulators()  # the former path: every batch's summaries merged on the host
    for batch in x.engine.predict(x.data, _request(s), s.outputs):
        for name, acc in accs.items():
            acc.update({k.rpartition("/")[2]: v for k, v in batch.items() if k.rpartition("/")[0] == name})
    for name, acc in accs.items():
        want, got = acc.result(x.summary.shape_of(name)).to_dict(), folded[name].to_dict()
        assert got == want, name  # equal floats, to the bit
        assert acc.batches == s.run(x.data, "eval").layers[name].batches == 6  # 359 examples in 64s
        np.testing.assert_array_equal(s.run(x.data, "eval").layers[name].reservoir()["keys"], acc.reservoir()["keys"])


def _host_bytes(x, s: ProbeSession) -> list[int]:
    sizes: list[int] = []
    x.engine.reduce(x.data, _request(s), s.outputs, lambda host: sizes.append(sum(v.nbytes for v in host.values())))
    return sizes


def test_the_per_batch_host_outputs_do_not_grow_with_the_sketch_size(trained):
    _, x = trained
    coarse = _session(x, relative_accuracy=0.02, reservoir_size=0)
    fine = _session(x, relative_accuracy=0.0005, reservoir_size=0)
    assert coarse.outputs.specs[0].layout.size * 32 == fine.outputs.specs[0].layout.size  # 16,384 vs 524,288 slots
    assert _host_bytes(x, coarse) == _host_bytes(x, fine) == [0] * 6  # no reservoir: nothing per batch
    # the per-batch path fetched every sketch, every batch
    per_batch = [sum(v.nbytes for v in b.values()) for b in x.engine.predict(x.data, _request(fine), fine.outputs)]
    assert min(per_batch) > 2 * fine.outputs.specs[0].layout.size * 4
    # with a reservoir, a batch sends its candidates' activations, keys and labels, nothing more
    sampled = _session(x, relative_accuracy=0.0005, reservoir_size=8)
    activations = 4 * (int(np.prod(x.summary.shape_of("conv1"))) + int(np.prod(x.summary.shape_of("logits"))))
    candidates: list[int] = []
    x.engine.reduce(
        x.data, _request(sampled), sampled.outputs, lambda host: candidates.append(len(host["conv1/res_keys"]))
    )
    sizes = _host_bytes(x, sampled)
    assert sum(candidates) >= 8
    per_example = {size // n for size, n in zip(sizes, candidates) if n}
    assert len(per_example) == 1 and activations < min(per_example) <= activations + 32  # + keys and labels
    assert all(size == 0 for size, n in zip(sizes, candidates) if not n)


def test_passes_over_other_examples_reuse_the_engines_graph_and_equal_a_fresh_engines(trained):
    """The dynamics points probe a subset, then the run probes the whole split: the second pass runs
    on the first one's graph (only its input pipeline added) and gives what a fresh engine gives."""
    from dataclasses import replace

    from layerprobe.experiment import prepare

    c, x = trained
    s = _session(x, reservoir_size=8)
    first_100, whole = replace(_request(s), max_examples=100), _request(s)
    runs = [(first_100, "eval"), (whole, "eval"), (first_100, "train"), (whole, "eval")]
    graphs, got = [], []
    for request, split in runs:
        got.append(x.engine.reduce(x.data, replace(request, split=split), s.outputs, lambda host: None))
        graphs.append(getattr(x.engine, "_reducer", None))
    if ENGINE == "estimator":
        assert all(g is graphs[0] for g in graphs)  # one model graph and session for the four passes
    for (request, split), state in zip(runs, got):
        fresh = prepare(c, x.engine.model_dir)  # a new engine: a graph of its own
        want = fresh.engine.reduce(fresh.data, replace(request, split=split), s.outputs, lambda host: None)
        assert sorted(state) == sorted(want)
        for k in want:
            np.testing.assert_array_equal(state[k], want[k], err_msg=f"{split} {request.max_examples} {k}")
    assert got[0]["batches"] == 2 and got[1]["batches"] == 6  # 100 and 359 examples in batches of 64


def test_the_reduce_graph_holds_no_sketch_sized_constant(trained):
    """The state starts as fills, not constants: a 0.5 MB sketch constant per layer was copied by every
    graph optimisation pass of a session's first run."""
    if ENGINE != "estimator":
        pytest.skip("the Keras engine's state variables are made eagerly, outside any graph")
    _, x = trained
    s = _session(x, relative_accuracy=0.0005, reservoir_size=0)  # 524,288 slots: 4 MB of int64 state a layer
    x.engine.reduce(x.data, _request(s), s.outputs, lambda host: None)
    nodes = x.engine._reducer.graph.as_graph_def().node
    biggest = max(n.ByteSize() for n in nodes if n.op == "Const")
    assert biggest < s.outputs.specs[0].layout.size  # bytes, against one byte a slot


def test_a_run_of_another_learning_rate_and_seed_restores_into_the_last_runs_graph(trained):
    """A sweep's next trial (another learning rate and seed, the same model and probe) probes on the
    graph the last trial built, and gets what a graph of its own gives; another model builds its own."""
    from dataclasses import replace

    from layerprobe.engines.spec import model_spec
    from layerprobe.experiment import prepare

    if ENGINE != "estimator":
        pytest.skip("the Keras engine traces its pass per model object; a trial builds its own model")
    from layerprobe.engines.estimator import predictor

    c, x = trained
    t = c.trainer
    other = replace(c, trainer=replace(t, seed=t.seed + 1, optimizer=replace(t.optimizer, learning_rate=0.5)))
    s = _session(x, reservoir_size=8)
    x.engine.reduce(x.data, _request(s), s.outputs, lambda host: None)
    first = x.engine._reducer
    y = prepare(other, x.engine.model_dir)  # its own engine and data, as the next trial prepares them
    got = y.engine.reduce(y.data, _request(s), s.outputs, lambda host: None)
    assert y.engine._reducer is first and not first.seeded
    assert first.held == 2 * predictor._held_bytes(x.data) > 0  # both data objects' arrays, kept alive
    with pytest.MonkeyPatch.context() as mp:  # data past the bytes a graph may hold: a graph of its own
        mp.setattr(predictor, "MAX_HELD_BYTES", first.held)
        z = prepare(other, x.engine.model_dir)
        z.engine.reduce(z.data, _request(s), s.outputs, lambda host: None)
        assert z.engine._reducer is not first
    predictor.forget()
    fresh = prepare(other, x.engine.model_dir)
    want = fresh.engine.reduce(fresh.data, _request(s), s.outputs, lambda host: None)
    assert fresh.engine._reducer is not first and fresh.engine._reducer is not z.engine._reducer
    assert sorted(got) == sorted(want)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    wider = c.written["model"]["layers"]
    conv = next(n for n, spec in wider.items() if "filters" in spec)
    changed = load(compose(["model=tiny_cnn", f"trainer.engine={ENGINE}", f"model.layers.{conv}.filters=3"]))
    assert model_spec(changed).layers[conv] != first.spec.layers[conv]
    assert not first.fits(model_spec(changed), s.outputs, x.engine.config)
    assert first.fits(model_spec(other), s.outputs, y.engine.config)
