"""The trained model as an MLflow Model: a pyfunc over the engine's SavedModel in the run's "Logged
models", with a signature, an input example, the run's eval metrics linked to it, and optionally a
new version of a registered model.

One pyfunc for both engines, not the keras/tensorflow flavors: the Estimator's export is no Keras
model, and the keras flavor's pyfunc (MLflow 3.17) calls the model with `DataFrame.values` or with
the inputs as one positional list and returns one array, while a layerprobe model takes named
inputs and returns one named output per head. Both engines' SavedModels answer the same
`serving_default` signature (named inputs -> named outputs), which is what this serves.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib.metadata import packages_distributions, version
from typing import Any

import mlflow
import numpy as np
from mlflow.entities import LoggedModelOutput, LoggedModelStatus
from mlflow.pyfunc import PythonModel, PythonModelContext

from layerprobe.tracking.store import client, retrying, sanitize_key

log = logging.getLogger(__name__)

MODEL_NAME = "model"  # the logged model's name in the run's "Logged models"
# What loading the model imports (the pyfunc below, TensorFlow, numpy; mlflow adds itself), pinned
# to the versions installed here: written as given, so logging resolves nothing against an index.
REQUIRED_MODULES = ("layerprobe", "tensorflow", "numpy", "pandas", "cloudpickle")


class SavedModelPredictor(PythonModel):  # type: ignore[misc]
    """A SavedModel's `serving_default` signature as a pyfunc: named arrays in, named arrays out
    (one input may also come as a bare array)."""

    # The signature validates the input, not a type hint (one would have to be list[...], which named
    # arrays are not). Without this MLflow warns at every import that predict has no hint, under a
    # warnings filter of its own that a filter of ours cannot silence.
    _skip_type_hint_validation = True

    def load_context(self, context: Any) -> None:
        import tensorflow as tf

        self._loaded = tf.saved_model.load(context.artifacts["saved_model"])  # keeps the variables alive
        self._serve = self._loaded.signatures["serving_default"]
        self._inputs = self._serve.structured_input_signature[1]  # name -> tf.TensorSpec

    # No type hint on model_input: MLflow reads one as a schema for the input and warns at Any.
    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        import tensorflow as tf

        if not isinstance(model_input, Mapping):
            if len(self._inputs) != 1:
                raise ValueError(f"the model takes named inputs {sorted(self._inputs)}; received one array")
            model_input = {next(iter(self._inputs)): model_input}
        feed = {n: tf.constant(np.asarray(model_input[n]), dtype=s.dtype) for n, s in self._inputs.items()}
        return {k: v.numpy() for k, v in self._serve(**feed).items()}


@contextlib.contextmanager
def _quiet(logger: str) -> Iterator[None]:
    """`logger` at ERROR for the block."""
    log_ = logging.getLogger(logger)
    level = log_.level
    log_.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log_.setLevel(level)


@dataclass(frozen=True)
class LoggedModel:
    model_id: str
    uri: str  # models:/<model_id>
    registered: str | None = None  # models:/<name>/<version> when registered


@functools.cache  # what is installed does not change under a running process; a scan takes ~0.2 s
def pinned_requirements() -> tuple[str, ...]:
    """`dist==version` for every distribution that provides a module loading the model imports."""
    provided = packages_distributions()
    dists = {d for m in REQUIRED_MODULES for d in provided.get(m, [])}
    return tuple(sorted(f"{d}=={version(d)}" for d in dists))


def predictions(saved_model: str, examples: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What the pyfunc answers for `examples`, loaded from `saved_model` the way MLflow loads it."""
    model = SavedModelPredictor()
    model.load_context(PythonModelContext(artifacts={"saved_model": saved_model}, model_config={}))
    return model.predict(None, examples)


def log_model(
    uri: str,
    run_id: str,
    saved_model: str,
    examples: Mapping[str, np.ndarray],
    metrics: Mapping[str, float],
    step: int,
    register: str | None = None,
    answers: Mapping[str, np.ndarray] | None = None,
) -> LoggedModel:
    """Log `saved_model` as the run's MLflow Model at `step`: its signature read off its `answers` to
    `examples` (a few examples of the probe split, also its input example; default: `predictions`),
    `metrics` (the run's eval metrics at `step`) as its params; with `register`, a new version of that
    registered model."""
    from mlflow.models import Model, infer_signature

    mlflow_client = client(uri)
    run = retrying(mlflow_client.get_run, run_id)
    signature = infer_signature(dict(examples), answers if answers is not None else predictions(saved_model, examples))
    model = retrying(
        mlflow_client.create_logged_model,
        run.info.experiment_id,
        name=MODEL_NAME,
        source_run_id=run_id,
        tags={"layerprobe.flavor": "saved_model"},
    )
    with tempfile.TemporaryDirectory() as tmp:
        local = f"{tmp}/model"
        with _quiet("mlflow.pyfunc"):  # its every-run warning about pickled python_models
            mlflow.pyfunc.save_model(
                local,
                python_model=SavedModelPredictor(),
                artifacts={"saved_model": saved_model},
                signature=signature,
                input_example=dict(examples),
                pip_requirements=list(pinned_requirements()),
                mlflow_model=Model(
                    artifact_path=model.artifact_location,
                    model_uuid=model.model_id,
                    run_id=run_id,
                    model_id=model.model_id,
                ),
            )
        retrying(mlflow_client.log_model_artifacts, model.model_id, local)
    retrying(mlflow_client.finalize_logged_model, model.model_id, LoggedModelStatus.READY)
    retrying(mlflow_client.log_outputs, run_id, [LoggedModelOutput(model.model_id, step=step)])
    # The eval metrics are not logged again with the model's id (MLflow's way to link them): that
    # would add a second point at the same step to the run's history of each. The model records
    # them as its params instead, and its run holds them once.
    params = {sanitize_key(k): f"{float(v):.6g}" for k, v in metrics.items()}
    retrying(mlflow_client.log_model_params, model.model_id, {**params, "step": str(step)})
    registered = register_model(uri, run_id, register, model.model_id) if register else None
    return LoggedModel(model.model_id, f"models:/{model.model_id}", registered)


def register_model(uri: str, run_id: str, name: str, model_id: str | None = None) -> str | None:
    """A new version of registered model `name` (created on first use) from run `run_id`'s MLflow
    Model (`model_id`, default: the one it logged at its latest step); returns models:/<name>/<version>,
    or None with a warning when the run logged none (a pruned trial, tracking.log_model=false)."""
    mlflow_client = client(uri)
    if model_id is None:
        run = retrying(mlflow_client.get_run, run_id)
        outputs = run.outputs.model_outputs if run.outputs else []
        if not outputs:
            log.warning(
                "tracking.register_model: run %s logged no MLflow Model, nothing registered as %s", run_id, name
            )
            return None
        model_id = max(outputs, key=lambda o: o.step).model_id
    source = f"models:/{model_id}"
    done = retrying(mlflow_client.search_model_versions, f"run_id='{run_id}'")
    same = [v for v in done if v.name == name and v.source == source]
    if same:  # registered already: a continued sweep whose best trial did not change
        return f"models:/{name}/{same[0].version}"
    try:
        mlflow_client.create_registered_model(name)
    except mlflow.exceptions.MlflowException as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    mv = retrying(
        mlflow_client.create_model_version,
        name,
        source,
        run_id=run_id,
        model_id=model_id,
        await_creation_for=0,
    )
    log.info("registered models:/%s as %s version %s", model_id, name, mv.version)
    return f"models:/{name}/{mv.version}"
