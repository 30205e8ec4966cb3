"""Property: any mutation of a valid config either validates and builds, or fails with one clean line.

Never an unhandled exception: a KeyError from a dropped key, a TypeError deep in Keras, a crash on a
renamed or rewired layer. Mutations drop keys, swap types, put random strings, negatives and huge
integers anywhere, rename layers, rewire inputs and add layers of random Keras types.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from layerprobe.config.layer_table import load_table
from layerprobe.config.loaded import load
from layerprobe.config.validate import validate
from layerprobe.errors import LayerprobeError
from tests.conftest import plain

BASES = {
    "tiny_cnn": plain(["model=tiny_cnn", "trainer=quick"]),
    "tabular": plain(["experiments=tabular_two_heads"]),
}
LAYER_TYPES = sorted(load_table()["layers"])
EDGE_NAMES = ["../x", "a/b", "", "conv1", "image", "x" * 100, "ok_name", "1st", "gap"]

values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.integers(-3, 40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["relu", "same", "valid", "conv1", "Dense", "adam", "eval"]),
    st.lists(st.integers(-3, 40), max_size=4),
    st.dictionaries(st.text(max_size=5), st.integers(-3, 5), max_size=2),
)


def paths(tree: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix] if prefix else []
    if isinstance(tree, dict):
        for k, v in tree.items():
            out += paths(v, (*prefix, k))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            out += paths(v, (*prefix, i))
    return out


def parent_of(c: dict, path: tuple) -> Any:
    node = c
    for k in path[:-1]:
        node = node[k]
    return node


@st.composite
def mutation(draw, c: dict) -> None:
    kind = draw(st.sampled_from(["drop", "set", "rename", "rewire", "add", "arg"]))
    model = c.get("model") if isinstance(c.get("model"), dict) else {}
    layers = model.get("layers")
    if kind in ("rename", "rewire", "add", "arg") and not (isinstance(layers, dict) and layers):
        kind = "set"
    if kind in ("drop", "set"):
        all_paths = paths(c) or [("model",)]
        path = draw(st.sampled_from(all_paths))
        parent = parent_of(c, path)
        if kind == "drop" and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(values)
    elif kind == "rename":
        old = draw(st.sampled_from(list(layers)))
        new = draw(st.one_of(st.sampled_from(EDGE_NAMES), st.text(max_size=8)))
        model["layers"] = {(new if k == old else k): v for k, v in layers.items()}
    elif kind == "rewire":
        name = draw(st.sampled_from(list(layers)))
        if isinstance(layers[name], dict):
            inputs = model.get("inputs") if isinstance(model.get("inputs"), dict) else {}
            targets = st.sampled_from([*layers, *inputs, "nope"])
            layers[name]["inputs"] = draw(st.one_of(targets, st.lists(targets, max_size=3)))
    elif kind == "add":
        name = draw(st.sampled_from(["extra", "conv1", "x1"]))
        ltype = draw(st.sampled_from(LAYER_TYPES))
        table = load_table()["layers"][ltype]
        spec = {"type": ltype}
        for arg in table["required"]:
            spec[arg] = draw(st.one_of(st.integers(1, 8), values))
        layers[name] = spec
    else:  # a known argument of the layer's own type, any value
        name = draw(st.sampled_from(list(layers)))
        spec = layers[name]
        ltype = spec.get("type") if isinstance(spec, dict) else None
        if isinstance(ltype, str) and ltype in load_table()["layers"]:
            arg = draw(st.sampled_from(load_table()["layers"][ltype]["args"] or ["units"]))
            spec[arg] = draw(values)


@st.composite
def mutated_configs(draw) -> dict:
    c = copy.deepcopy(BASES[draw(st.sampled_from(sorted(BASES)))])
    for _ in range(draw(st.integers(1, 3))):
        draw(mutation(c))
    return c


def dry_build(c: dict) -> None:
    """The TRAIN graph of the model_fn on placeholders, as `dry_run` builds it, without data."""
    from layerprobe._tf import tf
    from layerprobe.engines.estimator.model_fn import ModeKeys, make_model_fn
    from layerprobe.engines.spec import model_spec

    spec = model_spec(load(c))
    with tf.Graph().as_default():
        tf.compat.v1.set_random_seed(0)
        tf.compat.v1.train.get_or_create_global_step()
        feats = {
            n: tf.compat.v1.placeholder(s.get("dtype", "float32"), [None, *s["shape"]], name=n)
            for n, s in spec.inputs.items()
        }
        labels = {h.label: tf.compat.v1.placeholder(tf.int64, [None], name=h.label) for h in spec.heads.values()}
        make_model_fn(spec)(feats, labels, ModeKeys.TRAIN)


def check(c: dict) -> str:
    try:
        validate(c)
        dry_build(c)
    except LayerprobeError as e:
        msg = str(e)
        assert msg and "\n" not in msg, msg
        return "error"
    return "ok"


FAST = settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
SLOW = settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))


@FAST
@given(mutated_configs())
def test_mutated_configs_fail_cleanly_or_build(c):
    check(c)


@pytest.mark.slow
@SLOW
@given(mutated_configs())
def test_mutated_configs_fail_cleanly_or_build_many(c):
    check(c)


@pytest.mark.estimator  # the Estimator's dry build
def test_the_unmutated_bases_build():
    for c in BASES.values():
        assert check(copy.deepcopy(c)) == "ok"


@pytest.mark.estimator  # the Estimator's dry build (on the Keras venv the estimator engine is refused)
def test_a_lookup_layer_whose_weights_list_a_table_handler_builds():
    """Found by the slow tier: Keras 2 lists StringLookup's table handler (no name, no shape) among its
    weights, and the warm-start variable map raised AttributeError on it."""
    c = copy.deepcopy(BASES["tabular"])
    c["model"]["layers"]["extra"] = {"type": "StringLookup"}
    assert check(c) == "ok"
