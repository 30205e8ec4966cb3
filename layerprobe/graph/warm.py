"""Initial values from elsewhere: a checkpoint, a model_dir or a Keras weights file (.h5) -> an
assignment of checkpoint keys to the model's variables, checked name by name and shape by shape.

A Keras weights file becomes a TF checkpoint once (cached under .cache/layerprobe/weights by the
file's digest), so one mechanism (`tf.compat.v1.train.init_from_checkpoint` in the model_fn, what
the Estimator's WarmStartSettings does inside) serves every source. It sets the variables' initial
values only: a model_dir that already has a checkpoint restores from it instead.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from layerprobe.errors import ConfigError
from layerprobe.schema import TrainerConfig

CACHE_DIR = Path(".cache/layerprobe/weights")
H5_SUFFIXES = (".h5", ".hdf5", ".keras")
# Keras 3's `save_weights` layout keys each layer by an object path (`layers/conv2d_17/vars/0`), not
# by the layer's name, so it cannot be matched to a config's layers here.
KERAS3_FILE = (
    "a Keras 3 weights file (layers/<object path>/vars/<i>, no layer names) cannot be matched by name: "
    "give a Keras 2 .h5 weights file, a checkpoint or a model_dir"
)


@dataclass(frozen=True)
class WarmStart:
    """Where initial values come from and which variables take them."""

    path: str  # config path, for errors (`trainer.warm_start.source`, `model.layers.backbone.weights`)
    source: str  # a checkpoint prefix, a model_dir or a Keras weights file
    variables: str = ".*"  # regex over the model's variable names (without `:0`)
    rename: Mapping[str, str] = field(default_factory=dict)  # model variable -> name in the source
    scope: str = ""  # a weights file of a nested model: its layers are under this scope in the graph
    layer_order: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (layer name in the file, its variables)
    origin: str = ""  # where `source` came from, when it is not the config's own file (a URL, a saved model)
    sha256: str = ""  # of what `origin` names


def checkpoint_of(ws: WarmStart) -> str:
    """The checkpoint prefix to read: the latest of a model_dir, a given prefix, or a converted .h5."""
    import tensorflow as tf

    p = Path(ws.source)
    if p.is_file() and p.suffix in H5_SUFFIXES:
        return _converted(ws)
    if p.is_dir():
        latest = tf.train.latest_checkpoint(str(p))
        if latest is None:
            raise ConfigError(ws.path, ws.source, "the directory holds no checkpoint")
        return str(latest)
    if Path(str(p) + ".index").is_file():
        return str(p)
    raise ConfigError(ws.path, ws.source, "not a checkpoint, a model_dir with a checkpoint, or a .h5 weights file")


def _converted(ws: WarmStart) -> str:
    """A Keras weights file as a checkpoint: with `layer_order`, values matched by layer and order
    (as Keras loads them) to our variable names; else keyed by the names the file stores."""
    import h5py
    import tensorflow as tf

    key = hashlib.sha256(Path(ws.source).read_bytes() + f":{ws.scope}:{ws.layer_order}".encode()).hexdigest()[:20]
    prefix = CACHE_DIR / key / "weights"
    if Path(str(prefix) + ".index").is_file():
        return str(prefix)
    values: dict[str, Any] = {}
    with h5py.File(ws.source, "r") as f:
        root = f["model_weights"] if "model_weights" in f else f
        if "layer_names" not in root.attrs and "layers" in root and "vars" in root:
            raise ConfigError(ws.path, ws.source, KERAS3_FILE)
        if ws.layer_order:
            for layer, names in ws.layer_order:
                if layer not in root:
                    raise ConfigError(ws.path, ws.source, f"the file has no weights for layer {layer!r}")
                g = root[layer]
                stored = [n.decode() if isinstance(n, bytes) else n for n in g.attrs["weight_names"]]
                if len(stored) != len(names):
                    rule = f"layer {layer!r} has {len(names)} weights here and {len(stored)} in the file"
                    raise ConfigError(ws.path, ws.source, rule)
                for ours, theirs in zip(names, stored):
                    values[ours] = g[theirs][()]
        else:
            for layer in root.attrs.get("layer_names", []):
                g = root[layer]
                for n in g.attrs["weight_names"]:
                    n = n.decode() if isinstance(n, bytes) else n
                    values[n.split(":")[0]] = g[n][()]
    prefix.parent.mkdir(parents=True, exist_ok=True)
    with tf.Graph().as_default():
        variables = {k: tf.compat.v1.Variable(v, name=k.replace("/", "__")) for k, v in values.items()}
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            tf.compat.v1.train.Saver(variables).save(sess, str(prefix), write_meta_graph=False)
    return str(prefix)


def assignment(ws: WarmStart, checkpoint: str, model_vars: Mapping[str, list[int]]) -> dict[str, str]:
    """{name in the checkpoint: model variable} for every model variable matching `variables`;
    ConfigError naming the first variable the checkpoint lacks or holds with another shape."""
    import tensorflow as tf

    source = {n: list(s) for n, s in tf.train.list_variables(checkpoint)}
    try:
        pattern = re.compile(ws.variables)
    except re.error as e:
        raise ConfigError(f"{ws.path.rpartition('.')[0]}.variables", ws.variables, f"not a regex: {e}") from None
    chosen = {n: s for n, s in model_vars.items() if pattern.fullmatch(n)}
    if not chosen:
        raise ConfigError(f"{ws.path.rpartition('.')[0]}.variables", ws.variables, "matches no variable of the model")
    out: dict[str, str] = {}
    for name, shape in chosen.items():
        theirs = ws.rename.get(name, name)
        if theirs not in source:
            rule = f"variable {name!r} is not in {checkpoint} (as {theirs!r})"
            raise ConfigError(ws.path, ws.source, rule, list(source))
        if source[theirs] != list(shape):
            rule = f"variable {name!r} has shape {list(shape)} here and {source[theirs]} in the source ({theirs!r})"
            raise ConfigError(ws.path, ws.source, rule)
        out[theirs] = name
    return out


def init_from(ws: WarmStart, model_vars: Mapping[str, Any]) -> dict[str, str]:
    """Make `model_vars` (name -> variable) start from the source; returns the assignment used."""
    import tensorflow as tf

    checkpoint = checkpoint_of(ws)
    shapes = {n: v.shape.as_list() for n, v in model_vars.items()}
    assigned = assignment(ws, checkpoint, shapes)
    tf.compat.v1.train.init_from_checkpoint(checkpoint, {k: model_vars[v] for k, v in assigned.items()})
    return assigned


def from_trainer(trainer: TrainerConfig) -> WarmStart | None:
    """trainer.warm_start as a WarmStart, or None without a source."""
    ws = trainer.warm_start
    if not ws.source:
        return None
    return WarmStart("trainer.warm_start.source", ws.source, ws.variables, dict(ws.rename))


def assign_from(ws: WarmStart, model_vars: Mapping[str, Any]) -> dict[str, str]:
    """The eager twin of `init_from` (Keras 3 variables, no graph): assign the source's values to
    `model_vars` (name -> variable) now; returns the assignment used."""
    import tensorflow as tf

    checkpoint = checkpoint_of(ws)
    assigned = assignment(ws, checkpoint, {n: list(v.shape) for n, v in model_vars.items()})
    reader = tf.train.load_checkpoint(checkpoint)
    for theirs, ours in assigned.items():
        model_vars[ours].assign(reader.get_tensor(theirs))
    return assigned
