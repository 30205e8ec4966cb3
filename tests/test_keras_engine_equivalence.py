"""The same config on both engines (run on .venv-keras, the Estimator side in .venv by subprocess):
the same layer table and metric keys, and the Estimator's checkpoint read by the Keras engine (the
two write the same checkpoint keys) reproduces its logits, probe statistics and accuracy."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.keras, pytest.mark.integration]

REPO = Path(__file__).resolve().parents[1]
ESTIMATOR_PYTHON = REPO / ".venv" / "bin" / "python"
OVERRIDES = ["model=tiny_cnn", "trainer=quick", "tracking.enabled=false", "probe.plots=false", "probe.analysis=false"]

# Trains with the Estimator engine and writes what the Keras side compares: the layer table, the eval
# metrics, the probe statistics and the logits of the eval split (.npz).
ESTIMATOR_SIDE = """
import json, sys
import numpy as np
from layerprobe.config.loaded import load
from layerprobe.engines.base import PredictRequest
from layerprobe.experiment import prepare
from layerprobe.runner import run
from tests.conftest import plain

out, overrides = sys.argv[1], json.loads(sys.argv[2])
c = plain(overrides)
result = run(c, out + "/run")
x = prepare(load(c))
batches = x.engine.predict(x.data, PredictRequest("eval", 64), lambda tensors, feed: {})
np.savez(out + "/estimator.npz", logits=np.concatenate([b["logits"] for b in batches]))
rows = [[r.name, r.type, list(r.output_shape), r.params, list(r.weight_names)] for r in x.summary.rows]
probe = {n: {"mean": s.mean, "std": s.std, "min": s.min, "max": s.max, "p": list(s.percentiles.values())}
         for n, s in result.probe.items()}
json.dump({"rows": rows, "eval": result.eval_metrics, "probe": probe, "model_dir": result.model_dir},
          open(out + "/estimator.json", "w"))
"""


@pytest.fixture(scope="module")
def estimator_side(tmp_path_factory) -> tuple[dict, np.ndarray]:
    if not ESTIMATOR_PYTHON.exists():
        pytest.skip("the Estimator side needs .venv (`make venv`)")
    out = tmp_path_factory.mktemp("estimator")
    overrides = [*OVERRIDES, f"trainer.model_dir={out / 'model'}"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run(
        [str(ESTIMATOR_PYTHON), "-c", ESTIMATOR_SIDE, str(out), json.dumps(overrides)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=out,
        env=env,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads((out / "estimator.json").read_text()), np.load(out / "estimator.npz")["logits"]


def test_same_layer_table_parameter_count_and_metric_keys(estimator_side, tmp_path):
    from layerprobe.runner import run
    from tests.conftest import plain

    est, _ = estimator_side
    c = plain([*OVERRIDES, "trainer.engine=keras", f"trainer.model_dir={tmp_path / 'model'}"])
    result = run(c, tmp_path / "run")
    from layerprobe.config.loaded import load
    from layerprobe.experiment import prepare

    rows = [
        [r.name, r.type, list(r.output_shape), r.params, list(r.weight_names)] for r in prepare(load(c)).summary.rows
    ]
    assert rows == est["rows"]
    assert sum(r[3] for r in rows) == 426
    assert set(result.eval_metrics) == set(est["eval"])
    assert set(result.probe) == set(est["probe"])


def test_the_estimators_checkpoint_in_the_keras_engine_gives_its_logits_and_probe_statistics(estimator_side):
    from layerprobe.config.loaded import load
    from layerprobe.engines.base import PredictRequest
    from layerprobe.experiment import prepare
    from tests.conftest import plain

    est, est_logits = estimator_side
    c = plain([*OVERRIDES, "trainer.engine=keras", f"trainer.model_dir={est['model_dir']}"])
    x = prepare(load(c))  # the Keras engine over the Estimator's model_dir: it only reads it here
    assert x.engine.name == "keras"
    batches = x.engine.predict(x.data, PredictRequest("eval", 64), lambda tensors, feed: {})
    logits = np.concatenate([b["logits"] for b in batches])
    np.testing.assert_allclose(logits, est_logits, rtol=1e-5, atol=1e-5)
    stats = x.session().run(x.data).stats(x.summary)
    for name, want in est["probe"].items():
        s = stats[name]
        np.testing.assert_allclose(
            [s.mean, s.std, s.min, s.max], [want[k] for k in ("mean", "std", "min", "max")], rtol=1e-5, atol=1e-6
        )
        np.testing.assert_allclose(list(s.percentiles.values()), want["p"], rtol=1e-5, atol=1e-6)
    metrics = x.engine.evaluate(x.data)
    assert metrics["accuracy"] == pytest.approx(est["eval"]["eval/accuracy"], abs=1e-6)
    assert metrics["loss"] == pytest.approx(est["eval"]["eval/loss"], rel=1e-4)
    assert metrics["global_step"] == 20
