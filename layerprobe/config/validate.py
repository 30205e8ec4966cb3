"""Checks a composed config before TensorFlow is imported; every failure is one ConfigError."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

from layerprobe.config.applications import MODEL_FILE, application_name, check_application, check_model_file
from layerprobe.config.archs import check_expanded, check_probe_layers, check_warm_start
from layerprobe.config.dynamics import check_dynamics
from layerprobe.config.layer_table import load_table
from layerprobe.config.names import ENGINES, LOSSES, METRICS, OPTIMIZERS, SAFE_NAME, SAFE_NAME_RULE, STRATEGIES
from layerprobe.errors import ConfigError

RESERVED_LAYER_KEYS = ("type", "inputs", "expose")
DTYPES = ("float32", "float64", "float16", "int32", "int64", "uint8", "bool", "string")


def validate(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """Raise ConfigError for the first rule the config breaks; returns the block-expanded model
    (config.loaded.load keeps it, so that a command expands the model once)."""
    c = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    assert isinstance(c, dict)
    try:
        engine = _check_engine(c["trainer"])
        model = check_expanded(c["model"], lambda m: _check_model(m, engine))  # block instances -> their layers
        _check_trainer(c["trainer"])
        _check_data(c["data"])
        _check_probe(c["probe"], model)
        check_dynamics(c["probe"]["dynamics"], c["trainer"])
        _check_tracking(c["tracking"])
    except (KeyError, TypeError, AttributeError, IndexError):
        # A key missing or of the wrong kind (a plain dict that never met the schema): name it.
        _missing_keys(c, _against_schema(cfg), "")
        raise
    # A plain dict never met the schema, and `+trainer.x=1` force-adds a key the schema lacks.
    full = _against_schema(c, throw_on_missing=False)  # type: ignore[arg-type]
    if not isinstance(cfg, DictConfig):  # every key must be there
        _missing_keys(c, full, "")
    return model


FREE_FORM = ("model.inputs", "model.layers", "data.params", "data.splits.eval_params")  # no fixed keys
ADDED_LATER = ("model.blocks", "trainer.warm_start")  # configs logged before these keys existed still load


def _missing_keys(given: Mapping[Any, Any], full: Mapping[str, Any], prefix: str) -> None:
    """A key the schema has (with its default filled in `full`) that `given` lacks is an error: the
    engine reads what it was given, not the default."""
    for key, value in full.items():
        path = f"{prefix}{key}"
        if key not in given and path not in ADDED_LATER:
            raise ConfigError(path, None, "missing: every key of the schema must be given")
        if isinstance(value, Mapping) and isinstance(given.get(key), Mapping) and path not in FREE_FORM:
            _missing_keys(given[key], value, path + ".")


def _against_schema(cfg: Mapping[str, Any], throw_on_missing: bool = True) -> dict[str, Any]:
    """A plain dict (from `run`, a logged config, a test) checked against the schema as Hydra would:
    missing keys and wrong types become one ConfigError naming the key, never a KeyError later."""
    from layerprobe.schema import LayerprobeConfig, schema_error

    with schema_error():
        merged = OmegaConf.merge(OmegaConf.structured(LayerprobeConfig), dict(cfg))
        out = OmegaConf.to_container(merged, resolve=True, throw_on_missing=throw_on_missing)
    assert isinstance(out, dict)
    return out  # type: ignore[return-value]


def check_writable_dir(path: str, directory: str) -> None:
    """ConfigError unless `directory` exists as a writable directory or can be created."""
    import os
    from pathlib import Path

    d = Path(directory).absolute()
    probe = d
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(path, directory, f"cannot be created: {probe} is a file, not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(path, directory, f"is not writable ({probe} does not allow writing)")


MAX_NAME = 64  # a layer name is a file name and part of metric keys (<= 250 characters in MLflow)


def _check_name(path: str, name: Any) -> None:
    if not isinstance(name, str) or not SAFE_NAME.match(name) or len(name) > MAX_NAME:
        raise ConfigError(path, name, f"name {SAFE_NAME_RULE}, at most {MAX_NAME} characters")


def _positive_int(path: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(path, value, "must be a positive integer")


# How a layer-table error names the Keras it was checked against (each engine has its own table).
ENGINE_KERAS = {"estimator": "tf.keras 2.15 (trainer.engine=estimator)", "keras": "Keras 3 (trainer.engine=keras)"}


def _check_engine(trainer: Mapping[str, Any]) -> str:
    engine = trainer.get("engine", "estimator")
    if engine not in ENGINES:
        raise ConfigError("trainer.engine", engine, "unknown engine", ENGINES)
    if engine == "keras" and trainer.get("distribute", "none") != "none":
        rule = "the keras engine trains in one process; distribution strategies need trainer.engine=estimator"
        raise ConfigError("trainer.distribute", trainer["distribute"], rule, ["none"])
    return str(engine)


def _check_model(model: Mapping[str, Any], engine: str = "estimator") -> None:
    inputs = model.get("inputs") or {}
    if not inputs:
        raise ConfigError("model.inputs", inputs, "declare at least one input with its shape")
    for name, spec in inputs.items():
        _check_name(f"model.inputs.{name}", name)
        shape = (spec or {}).get("shape")
        if not isinstance(shape, list) or not shape:
            raise ConfigError(f"model.inputs.{name}.shape", shape, "give the per-example shape")
        for i, dim in enumerate(shape):
            _size(f"model.inputs.{name}.shape[{i}]", dim)
        if spec.get("dtype", "float32") not in DTYPES:
            raise ConfigError(f"model.inputs.{name}.dtype", spec.get("dtype"), "unknown dtype", DTYPES)

    layers = model.get("layers") or {}
    if not layers:
        raise ConfigError("model.layers", layers, "declare at least one layer")
    table = load_table(engine)["layers"]
    defined = list(inputs)
    for name, spec in layers.items():
        path = f"model.layers.{name}"
        _check_name(path, name)
        if name in inputs:
            raise ConfigError(path, name, "a layer cannot have the name of a model input")
        if not isinstance(spec, Mapping):
            raise ConfigError(path, spec, "a layer is a mapping with at least a `type`")
        _check_layer_type_and_args(path, spec, table, engine)
        first = len(defined) == len(inputs)
        _check_layer_inputs(path, spec, defined, needs_inputs=first and len(inputs) > 1, all_layers=layers)
        expose = spec.get("expose", False)
        if not isinstance(expose, bool):
            raise ConfigError(f"{path}.expose", expose, "must be true or false")
        defined.append(name)

    for name, head in (model.get("outputs") or {}).items():
        path = f"model.outputs.{name}"
        if name not in layers:
            raise ConfigError(path, name, "an output must name a layer", layers)
        if not isinstance(head.get("label"), str) or not head["label"]:
            raise ConfigError(f"{path}.label", head.get("label"), "name the data label this output is trained on")
        if head["loss"] not in LOSSES:
            raise ConfigError(f"{path}.loss", head["loss"], "unknown loss", LOSSES)
        for i, metric in enumerate(head.get("metrics") or []):
            if metric not in METRICS:
                raise ConfigError(f"{path}.metrics[{i}]", metric, "unknown metric", METRICS)
        if not isinstance(head.get("weight"), (int, float)) or head["weight"] < 0:
            raise ConfigError(f"{path}.weight", head.get("weight"), "must be a number >= 0")


def _check_layer_type_and_args(
    path: str, spec: Mapping[str, Any], table: Mapping[str, Any], engine: str = "estimator"
) -> None:
    ltype = spec.get("type")
    if not isinstance(ltype, str) or not ltype:
        raise ConfigError(f"{path}.type", ltype, "every layer needs a `type`", table)
    args = {k: v for k, v in spec.items() if k not in RESERVED_LAYER_KEYS}
    if "name" in args:
        raise ConfigError(f"{path}.name", args["name"], "the layer's name is its key in model.layers")
    if application_name(ltype) is not None:  # a whole Keras model as one layer
        check_application(path, ltype, args)
        return
    if ltype == MODEL_FILE:  # a saved Keras model as one layer
        check_model_file(path, args, engine)
        return
    if "." in ltype:  # a user's own class, checked when it is imported
        module, _, cls = ltype.rpartition(".")
        if not module or not cls.isidentifier():
            raise ConfigError(f"{path}.type", ltype, "a dotted type must be 'package.module.Class'")
        return
    if ltype not in table:
        rule = (
            "not a tf.keras.layers class" if engine == "estimator" else f"not a layers class of {ENGINE_KERAS[engine]}"
        )
        others = [e for e in ENGINES if e != engine and ltype in load_table(e)["layers"]]
        rule += f" (only trainer.engine={others[0]} has it)" if others else ""
        raise ConfigError(f"{path}.type", ltype, rule, table)
    known = table[ltype]["args"]
    for arg in args:
        if arg not in known:
            rule = f"{ltype} takes no argument {arg!r} in {ENGINE_KERAS[engine]}"
            raise ConfigError(f"{path}.{arg}", arg, rule, known)
    for arg in table[ltype]["required"]:
        if arg not in args:
            raise ConfigError(f"{path}.{arg}", None, f"{ltype} requires {arg!r}")
    for arg, value in args.items():
        _check_arg_value(f"{path}.{arg}", ltype, arg, value)


# Values of the common constructor arguments, checked here because Keras takes some garbage silently
# (Dense(units=-3) builds) and rejects the rest deep inside TensorFlow, after the 7 s import.
MAX_SIZE = 2**24  # a layer or input size above this is a typo, and would overflow int32 element counts
SIZE_ARGS = ("units", "filters", "num_heads", "key_dim", "output_dim", "input_dim", "depth_multiplier", "n")
WINDOW_ARGS = ("kernel_size", "pool_size", "strides", "dilation_rate", "size")  # int or list of ints
RATE_ARGS = ("rate", "dropout", "recurrent_dropout")  # a fraction of units dropped: [0, 1)
BOOL_ARGS = ("use_bias", "return_sequences", "return_state", "go_backwards", "stateful", "center", "scale", "trainable")
PADDINGS = ("valid", "same", "causal")
LAYER_DTYPES = ("float32",)
ACTIVATIONS = (
    "elu", "exponential", "gelu", "hard_sigmoid", "leaky_relu", "linear", "log_softmax", "mish", "relu",
    "relu6", "selu", "sigmoid", "silu", "softmax", "softplus", "softsign", "swish", "tanh",
)  # fmt: skip


def _check_arg_value(path: str, ltype: str, arg: str, value: Any) -> None:
    if arg in SIZE_ARGS:
        _size(path, value)
    elif arg in WINDOW_ARGS and not (arg == "strides" and value is None):
        values = value if isinstance(value, list) else [value]
        if not values:
            raise ConfigError(path, value, "give a positive integer or a list of them")
        for v in values:
            _size(path, v, rule="give a positive integer or a list of them")
    elif arg in RATE_ARGS:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
            raise ConfigError(path, value, "a rate is a number in [0, 1)")
    elif arg in BOOL_ARGS:
        if not isinstance(value, bool):
            raise ConfigError(path, value, "must be true or false")
    elif arg == "padding" and not ltype.startswith(("ZeroPadding", "Cropping")):
        if not isinstance(value, str) or value not in PADDINGS:
            raise ConfigError(path, value, "unknown padding", PADDINGS)
    elif arg in ("activation", "recurrent_activation") and value is not None:
        if not isinstance(value, str) or value not in ACTIVATIONS:
            raise ConfigError(path, value, "unknown activation", ACTIVATIONS)
    elif arg.endswith(("_regularizer", "_initializer", "_constraint")) and value is not None:
        if not (isinstance(value, str) and value) and not isinstance(value, Mapping):
            raise ConfigError(path, value, "give the name of a Keras object (e.g. l2, glorot_uniform) or null")
        kind = arg.rsplit("_", 1)[1]
        if isinstance(value, str) and value not in KERAS_NAMES[kind] and _camel(value) not in KERAS_NAMES[kind]:
            raise ConfigError(path, value, f"unknown {kind}", KERAS_NAMES[kind])
    elif arg == "dtype" and value not in LAYER_DTYPES:
        # Keras would build such a layer and fail in the first training step (float64 meets float32).
        rule = "every layer computes in float32 (the data's dtype is model.inputs.<name>.dtype)"
        raise ConfigError(path, value, rule, LAYER_DTYPES)
    elif arg in ("momentum", "epsilon", "alpha", "stddev") and (
        isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0
    ):
        raise ConfigError(path, value, "must be a number >= 0")


# String names tf.keras 2.15 resolves for these arguments (CamelCase class names work too).
KERAS_NAMES = {
    "regularizer": ("l1", "l2", "l1_l2", "orthogonal_regularizer"),
    "constraint": ("max_norm", "min_max_norm", "non_neg", "unit_norm", "radial_constraint"),
    "initializer": (
        "constant",
        "glorot_normal",
        "glorot_uniform",
        "he_normal",
        "he_uniform",
        "identity",
        "lecun_normal",
        "lecun_uniform",
        "ones",
        "orthogonal",
        "random_normal",
        "random_uniform",
        "truncated_normal",
        "variance_scaling",
        "zeros",
    ),
}


def _camel(name: str) -> str:
    """`GlorotUniform` -> `glorot_uniform`, `L2` -> `l2`."""
    import re

    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def _size(path: str, value: Any, rule: str = "must be a positive integer") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(path, value, rule)
    if value > MAX_SIZE:
        raise ConfigError(path, value, f"must be at most {MAX_SIZE}")


def _check_layer_inputs(
    path: str, spec: Mapping[str, Any], defined: list[str], needs_inputs: bool, all_layers: Mapping[str, Any]
) -> None:
    raw = spec.get("inputs")
    if raw is None:
        if needs_inputs:  # the first layer defaults to the single model input
            raise ConfigError(
                f"{path}.inputs", None, "the model has several inputs: name the ones this layer takes", defined
            )
        return
    names = [raw] if isinstance(raw, str) else raw
    if not isinstance(names, list) or not names:
        raise ConfigError(f"{path}.inputs", raw, "give a name or a list of names of inputs or earlier layers")
    for name in names:
        if name in all_layers and name not in defined:
            rule = "names this layer or a later one, which would form a cycle: name an input or an earlier layer"
            raise ConfigError(f"{path}.inputs", name, rule, defined)
        if name not in defined:
            raise ConfigError(f"{path}.inputs", name, "must name a model input or an earlier layer", defined)


def _check_trainer(trainer: Mapping[str, Any]) -> None:
    if isinstance(trainer["seed"], bool) or not isinstance(trainer["seed"], int) or trainer["seed"] < 0:
        raise ConfigError("trainer.seed", trainer["seed"], "must be an integer >= 0")
    steps = trainer["train_steps"]
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ConfigError("trainer.train_steps", steps, "must be an integer >= 0 (0: probe the model as initialised)")
    for key in ("save_checkpoints_steps", "keep_checkpoint_max", "log_every_steps"):
        _positive_int(f"trainer.{key}", trainer[key])
    if trainer.get("eval_steps") is not None:
        _positive_int("trainer.eval_steps", trainer["eval_steps"])
    opt = trainer["optimizer"]
    if opt["name"] not in OPTIMIZERS:
        raise ConfigError("trainer.optimizer.name", opt["name"], "unknown optimizer", OPTIMIZERS)
    if not isinstance(opt["learning_rate"], (int, float)) or opt["learning_rate"] <= 0:
        raise ConfigError("trainer.optimizer.learning_rate", opt["learning_rate"], "must be > 0")
    if trainer.get("distribute", "none") not in STRATEGIES:
        raise ConfigError("trainer.distribute", trainer["distribute"], "unknown distribution strategy", STRATEGIES)
    _positive_int("trainer.cpu_replicas", trainer.get("cpu_replicas", 1))
    check_warm_start(trainer.get("warm_start") or {})


def _check_data(data: Mapping[str, Any]) -> None:
    from layerprobe.data.checks import check_data_config  # no TensorFlow there either

    check_data_config(data)


def _check_probe(probe: Mapping[str, Any], model: Mapping[str, Any]) -> None:
    check_probe_layers(probe.get("layers") or [], model)
    if probe["split"] not in ("train", "eval"):
        raise ConfigError("probe.split", probe["split"], "unknown split", ("train", "eval"))
    for i, q in enumerate(probe["percentiles"]):
        if not isinstance(q, (int, float)) or not 0 <= q <= 100:
            raise ConfigError(f"probe.percentiles[{i}]", q, "a percentile is between 0 and 100")
    acc = probe["relative_accuracy"]
    if not isinstance(acc, (int, float)) or not 0 < acc < 0.5:
        raise ConfigError("probe.relative_accuracy", acc, "must be between 0 and 0.5")
    for key in ("histogram_bins",):
        _positive_int(f"probe.{key}", probe[key])
    if probe["max_examples"] is not None:
        _positive_int("probe.max_examples", probe["max_examples"])
    if probe.get("batch_size") is not None:
        _positive_int("probe.batch_size", probe["batch_size"])
    res = probe["reservoir_size"]
    if isinstance(res, bool) or not isinstance(res, int) or res < 0:
        raise ConfigError("probe.reservoir_size", res, "must be an integer >= 0")


def _check_tracking(tracking: Mapping[str, Any]) -> None:
    name = tracking["experiment_name"]
    if (
        not isinstance(name, str)
        or not name.strip()
        or "/" in name
        or ".." in name
        or any(ord(ch) < 32 for ch in name)
        or len(name) > 200
    ):
        rule = "must be a non-empty name of at most 200 characters without '/', '..' or control characters"
        raise ConfigError("tracking.experiment_name", name, rule)
    uri = tracking.get("uri")
    if uri is not None:
        scheme = uri.split(":", 1)[0].split("+", 1)[0] if isinstance(uri, str) and ":" in uri else ""
        if scheme not in URI_SCHEMES:
            raise ConfigError("tracking.uri", uri, "unknown tracking URI scheme", [f"{s}://" for s in URI_SCHEMES])
    _check_register_model(tracking)


def _check_register_model(tracking: Mapping[str, Any]) -> None:
    """A name MLflow's Model Registry takes, for a model this config logs."""
    name = tracking["register_model"]
    if name is None:
        return
    if not isinstance(name, str) or not name.strip() or any(ch in name for ch in "/:") or len(name) > 200:
        rule = "must be a registered model name of at most 200 characters without '/' or ':'"
        raise ConfigError("tracking.register_model", name, rule)
    if not tracking["log_model"]:
        raise ConfigError("tracking.register_model", name, "registers the logged model: set tracking.log_model=true")
    if not tracking["enabled"]:
        raise ConfigError(
            "tracking.register_model", name, "registers into the tracking store: set tracking.enabled=true"
        )


URI_SCHEMES = ("http", "https", "sqlite", "postgresql", "mysql", "mssql", "file", "databricks")
