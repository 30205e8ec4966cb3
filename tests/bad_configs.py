"""A corpus of malformed configs and overrides, each with what its one-line error must name.

Every case is run as `layerprobe <TINY> <overrides>` (tests/test_bad_inputs.py). `{dir}` is a folder of
hand-written YAML files (FILES below, put on Hydra's search path with `hydra.searchpath`); `{file}` is a
plain file, so a directory under it can never be created; `{port}` a port nobody listens on.
`expect` holds substrings of the message: the config path (or file) and the value received.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Case:
    id: str
    overrides: tuple[str, ...]
    expect: tuple[str, ...]
    stage: str = "validate"  # validate: fails before TensorFlow; run: in data/graph/store checks


def case(id: str, overrides: str | tuple[str, ...], *expect: str, stage: str = "validate") -> Case:
    return Case(id, (overrides,) if isinstance(overrides, str) else overrides, expect, stage)


SP = "hydra.searchpath=[file://{dir}]"

# Model files with mistakes that overrides cannot express (keys with '/', duplicate keys).
FILES = {
    "model/dupe.yaml": """
name: dupe
inputs:
  image: {shape: [8, 8, 1]}
layers:
  conv1: {type: Conv2D, filters: 4, kernel_size: 3}
  conv1: {type: Flatten}
  logits: {type: Dense, units: 10}
""",
    "model/dots.yaml": """
name: dots
inputs:
  image: {shape: [8, 8, 1]}
layers:
  ../x: {type: Flatten}
  logits: {type: Dense, units: 10}
""",
    "model/slash.yaml": """
name: slash
inputs:
  image: {shape: [8, 8, 1]}
layers:
  a/b: {type: Flatten}
  logits: {type: Dense, units: 10}
""",
    "model/likeinput.yaml": """
name: likeinput
inputs:
  image: {shape: [8, 8, 1]}
layers:
  image: {type: Flatten}
  logits: {type: Dense, units: 10}
""",
    "model/badoutput.yaml": """
name: badoutput
inputs:
  image: {shape: [8, 8, 1]}
layers:
  flat: {type: Flatten}
  logits: {type: Dense, units: 10}
outputs:
  nope: {loss: mean_squared_error}
""",
    "model/empty.yaml": """
name: empty
inputs:
  image: {shape: [8, 8, 1]}
layers: {}
""",
    "model/noinputs.yaml": """
name: noinputs
inputs: {}
layers:
  logits: {type: Dense, units: 10}
""",
    "model/badindent.yaml": """
name: badindent
inputs:
  image: {shape: [8, 8, 1]
layers:
""",
    "data/dupe_data.yaml": """
name: dupe_data
source: digits
batch_size: 32
batch_size: 64
""",
}

CASES = [
    # --- layers: types, arguments, values ---
    case("unknown-layer-type", "model.layers.conv1.type=Conv2d", "model.layers.conv1.type", "'Conv2d'"),
    case("lowercase-layer-type", "model.layers.pool1.type=maxpooling2d", "model.layers.pool1.type", "MaxPooling2D"),
    case(
        "misspelt-argument",
        ("~model.layers.conv1.filters", "+model.layers.conv1.filtres=4"),
        "model.layers.conv1.filtres",
        "'filters'",
    ),
    case("reserved-name-argument", "+model.layers.conv1.name=x", "model.layers.conv1.name", "'x'"),
    case("missing-required-argument", "~model.layers.logits.units", "model.layers.logits.units", "requires"),
    case("missing-type", "~model.layers.pool1.type", "model.layers.pool1.type", "None"),
    case("layer-not-a-mapping", "model.layers.pool1=5", "model.layers.pool1", "5"),
    case("filters-not-a-number", "model.layers.conv1.filters=abc", "model.layers.conv1.filters", "'abc'"),
    case("filters-zero", "model.layers.conv1.filters=0", "model.layers.conv1.filters", "Received: 0"),
    case("units-negative", "model.layers.logits.units=-3", "model.layers.logits.units", "-3"),
    case("units-boolean", "model.layers.logits.units=true", "model.layers.logits.units", "True"),
    case("units-float", "model.layers.logits.units=2.5", "model.layers.logits.units", "2.5"),
    case("units-huge", "model.layers.logits.units=1000000000", "model.layers.logits.units", "1000000000"),
    case("kernel-size-string", "model.layers.conv1.kernel_size=abc", "model.layers.conv1.kernel_size", "'abc'"),
    case("kernel-size-zero-in-list", "model.layers.conv1.kernel_size=[3,0]", "model.layers.conv1.kernel_size", "0"),
    case("strides-negative", "+model.layers.conv2.strides=-1", "model.layers.conv2.strides", "-1"),
    case("padding-unknown", "model.layers.conv1.padding=bogus", "model.layers.conv1.padding", "'bogus'"),
    case("activation-misspelt", "model.layers.conv1.activation=rellu", "model.layers.conv1.activation", "'relu'"),
    case("use-bias-not-bool", "+model.layers.conv1.use_bias=maybe", "model.layers.conv1.use_bias", "'maybe'"),
    case("dropout-rate-above-one", "+model.layers.drop={type:Dropout,rate:1.5}", "model.layers.drop.rate", "1.5"),
    case("dropout-rate-negative", "+model.layers.drop={type:Dropout,rate:-0.1}", "model.layers.drop.rate", "-0.1"),
    case("dropout-rate-string", "+model.layers.drop={type:Dropout,rate:half}", "model.layers.drop.rate", "'half'"),
    case("dotted-type-empty-class", "model.layers.conv1.type=foo.", "model.layers.conv1.type", "'foo.'"),
    case(
        "dotted-type-missing-module",
        "model.layers.pool1.type=nosuch_pkg_lp.mod.Layer",
        "model.layers.pool1.type",
        "nosuch_pkg_lp",
        stage="run",
    ),
    case("expose-not-bool", "model.layers.conv1.expose=yes", "model.layers.conv1.expose", "'yes'"),
    # --- inputs and wiring ---
    case("missing-input-shape", "model.inputs.image.shape=null", "model.inputs.image.shape", "not Optional"),
    case("negative-input-dim", "model.inputs.image.shape=[8,-8,1]", "model.inputs.image.shape[1]", "-8"),
    case("empty-input-shape", "model.inputs.image.shape=[]", "model.inputs.image.shape", "[]"),
    case("input-dtype-unknown", "model.inputs.image.dtype=float8", "model.inputs.image.dtype", "'float8'"),
    case("no-inputs", (SP, "model=noinputs"), "model.inputs", "{}"),
    case("inputs-unknown-layer", "+model.layers.gap.inputs=conv3", "model.layers.gap.inputs", "'conv3'"),
    case("inputs-later-layer", "+model.layers.conv1.inputs=gap", "model.layers.conv1.inputs", "cycle", "'gap'"),
    case("inputs-itself", "+model.layers.conv2.inputs=conv2", "model.layers.conv2.inputs", "cycle", "'conv2'"),
    case("inputs-empty-list", "+model.layers.conv2.inputs=[]", "model.layers.conv2.inputs", "[]"),
    case("layer-named-like-input", (SP, "model=likeinput"), "model.layers.image", "'image'"),
    case("duplicate-layer-names-yaml", (SP, "model=dupe"), "dupe.yaml", "duplicate key conv1"),
    case("duplicate-data-keys-yaml", (SP, "data=dupe_data"), "dupe_data.yaml", "duplicate key batch_size"),
    case("yaml-syntax-error", (SP, "model=badindent"), "badindent.yaml"),
    case("unsafe-name-dots", (SP, "model=dots"), "model.layers.../x", "'../x'"),
    case("unsafe-name-slash", (SP, "model=slash"), "model.layers.a/b", "'a/b'"),
    case("empty-layer-list", (SP, "model=empty"), "model.layers", "{}"),
    case(
        "dense-into-conv2d",
        ("model.layers.gap.type=Flatten", "+model.layers.conv3={type:Conv2D,filters:2,kernel_size:3}"),
        "model.layers.conv3",
        "[None, 10]",
        stage="run",
    ),
    case(
        "pooling-too-small",
        ("+model.layers.pool1.pool_size=16",),
        "model.layers.pool1",
        "[None, 8, 8, 4]",
        stage="run",
    ),
    # --- outputs and losses ---
    case(
        "loss-does-not-fit-outputs",
        "model.outputs.logits.loss=mean_squared_error",
        "model.outputs.logits.loss",
        "'mean_squared_error'",
        stage="run",
    ),
    case("loss-unknown", "model.outputs.logits.loss=crossentropy", "model.outputs.logits.loss", "'crossentropy'"),
    case("output-unknown-layer", (SP, "model=badoutput"), "model.outputs.nope", "'nope'"),
    case("output-weight-negative", "model.outputs.logits.weight=-1", "model.outputs.logits.weight", "-1"),
    case("metric-unknown", "model.outputs.logits.metrics=[acc]", "model.outputs.logits.metrics[0]", "'acc'"),
    case("expose-unknown-layer", "probe.layers=[conv9]", "probe.layers[0]", "'conv9'"),
    # --- data ---
    case(
        "npz-path-missing",
        ("data=npz", "data.params.path=/nonexistent/x.npz"),
        "data.params.path",
        "x.npz",
        stage="run",
    ),
    case("npz-path-not-given", "data=npz", "data.params.path", "'???'", stage="run"),
    case("csv-path-is-a-dir", ("data=csv", "data.params.path=/tmp"), "data.params.path", "'/tmp'", stage="run"),
    case("split-fraction-zero", "data.splits.eval_fraction=0", "data.splits.eval_fraction", "0.0"),
    case("split-fraction-above-one", "data.splits.eval_fraction=1.5", "data.splits.eval_fraction", "1.5"),
    case("split-fraction-negative", "data.splits.eval_fraction=-0.2", "data.splits.eval_fraction", "-0.2"),
    case("split-fraction-string", "data.splits.eval_fraction=most", "data.splits.eval_fraction", "'most'"),
    case("split-method-unknown", "data.splits.method=random", "data.splits.method", "'random'"),
    case(
        "split-range-reversed",
        ("data.splits.method=range", "data.splits.train_range=[100,10]"),
        "data.splits.train_range",
        "[100, 10]",
    ),
    case("batch-size-zero", "data.batch_size=0", "data.batch_size", "Received: 0"),
    case("num-classes-zero", "data.num_classes=0", "data.num_classes", "Received: 0"),
    case("cache-unknown", "data.cache=disk", "data.cache", "'disk'"),
    case("transform-misspelt", "+data.transforms=[{name:scael}]", "data.transforms[0].name", "'scale'"),
    case("data-source-unknown", "data.source=digit", "data.source", "'digit'"),
    # --- trainer ---
    case("train-steps-negative", "trainer.train_steps=-1", "trainer.train_steps", "Received: -1"),
    case("train-steps-string", "trainer.train_steps=abc", "trainer.train_steps=abc", "'abc'"),
    case("learning-rate-negative", "trainer.optimizer.learning_rate=-1", "trainer.optimizer.learning_rate", "-1"),
    case("optimizer-unknown", "trainer.optimizer.name=adamw", "trainer.optimizer.name", "'adamw'"),
    case("unknown-trainer-key", "trainer.epochs=3", "trainer.epochs"),
    case("model-dir-under-a-file", "trainer.model_dir={file}/m", "trainer.model_dir", "{file}/m", stage="run"),
    case("run-dir-under-a-file", "hydra.run.dir={file}/out", "hydra.run.dir", "{file}/out"),
    # --- probe ---
    case("probe-split-unknown", "probe.split=test", "probe.split", "'test'"),
    case("probe-percentile-above-100", "probe.percentiles=[50,101]", "probe.percentiles[1]", "101"),
    case("probe-accuracy-too-big", "probe.relative_accuracy=0.9", "probe.relative_accuracy", "0.9"),
    # --- tracking ---
    case("tracking-uri-unknown-scheme", "tracking.uri=ftp://x", "tracking.uri", "'ftp://x'"),
    case("tracking-uri-no-scheme", "tracking.uri=nonsense", "tracking.uri", "'nonsense'"),
    case(
        "tracking-sqlite-missing-dir",
        "tracking.uri=sqlite:////nonexistent_lp/dir/m.db",
        "tracking.uri",
        "/nonexistent_lp/dir",
        stage="run",
    ),
    case(
        "tracking-http-unreachable",
        "tracking.uri=http://127.0.0.1:{port}",
        "tracking.uri",
        "127.0.0.1:{port}",
        stage="run",
    ),
    case("experiment-name-traversal", "tracking.experiment_name=../x", "tracking.experiment_name", "'../x'"),
    case("experiment-name-slash", "tracking.experiment_name=a/b", "tracking.experiment_name", "'a/b'"),
    case("experiment-name-empty", "tracking.experiment_name=''", "tracking.experiment_name", "''"),
    case("register-model-slash", "tracking.register_model=a/b", "tracking.register_model", "'a/b'"),
    case(
        "register-model-not-logged",
        ("tracking.register_model=digits", "tracking.log_model=false"),
        "tracking.register_model",
        "tracking.log_model=true",
    ),
    # --- config groups and override syntax ---
    case("unknown-model-option", "model=nope", "model/nope", "tiny_cnn"),
    case("unknown-data-option", "data=nope", "data/nope", "digits"),
    case("unknown-experiment", "experiments=nope", "experiments", "'nope'"),
    case("override-syntax-error", "model.layers.conv1.filters=[", "model.layers.conv1.filters=["),
    case("unknown-top-level-key", "optimizer.lr=1", "optimizer.lr"),
]
