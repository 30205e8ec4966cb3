"""Blocks: a network part declared once (`model.blocks.<name>`), instantiated in `model.layers` by
name with arguments and `repeat: N`. Expanded here into plain layers, without TensorFlow.

    blocks:
      basic:                                    # a residual block
        params: {filters: null, strides: 1}     # null = the instance must give it
        layers:
          conv1: {type: Conv2D, filters: $filters, kernel_size: 3, strides: $strides, padding: same}
          add: {type: Add, inputs: [conv1, input]}  # `input`: what the instance is fed
    layers:
      stage1: {block: basic, filters: 16, repeat: 2}

gives `stage1_block1_conv1`, `stage1_block1_add`, `stage1_block2_conv1`, ... (`stage1_conv1` when
repeat is 1): plain layers whose names are their checkpoint keys, metric keys and exposable names,
so a block-built model and the same layers written out by hand are the same model. A later layer
naming `stage1` reads the instance's output (the block's `output`, default its last layer).
`trainable` and `expose` on an instance apply to every layer it makes (`expose` to each repeat's
output).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from layerprobe.errors import ConfigError

BLOCK_INPUT = "input"  # the default name, inside a block, of what the instance is fed
INSTANCE_KEYS = ("block", "repeat", "inputs", "expose", "trainable")  # the rest are block parameters
BLOCK_KEYS = ("params", "inputs", "layers", "output")


def is_instance(spec: Any) -> bool:
    return isinstance(spec, Mapping) and "block" in spec


def expand_model(model: Mapping[str, Any]) -> dict[str, Any]:
    """The model with every block instance in `layers` replaced by its layers, and names of instances
    in `inputs` and `outputs` replaced by the instance's output layer. A model without blocks comes
    back unchanged (same layers, same order, same specs)."""
    blocks = model.get("blocks") or {}
    layers = model.get("layers") or {}
    if not blocks and not any(is_instance(s) for s in layers.values()):
        return dict(model)
    for bname, block in blocks.items():
        _check_block(bname, block)
    out: dict[str, Any] = {}
    alias: dict[str, str] = {}  # instance name -> the layer that is its output
    previous: str | None = next(iter(model.get("inputs") or {}), None) if len(model.get("inputs") or {}) == 1 else None
    for name, spec in layers.items():
        if not is_instance(spec):
            spec = dict(spec) if isinstance(spec, Mapping) else spec
            if isinstance(spec, dict) and previous is not None and "inputs" not in spec and out:
                last = list(out)[-1]
                if previous != last:  # after an instance whose output is not its last layer
                    spec["inputs"] = previous
            if isinstance(spec, dict) and "inputs" in spec:
                spec["inputs"] = _renamed(spec["inputs"], alias)
            out[name] = spec
            previous = name
            continue
        made, output = _instantiate(name, spec, blocks, alias, previous)
        for lname in made:
            if lname in out:
                raise ConfigError(f"model.layers.{name}", lname, "the instance makes a layer whose name is taken")
        out.update(made)
        alias[name] = output
        previous = output
    expanded = {k: v for k, v in model.items() if k != "blocks"}
    expanded["layers"] = out
    if model.get("outputs"):
        expanded["outputs"] = {alias.get(k, k): v for k, v in model["outputs"].items()}
    return expanded


def origins(model: Mapping[str, Any]) -> dict[str, str]:
    """Generated layer name -> where it was declared (`model.blocks.basic.layers.conv1 (in
    model.layers.stage1, repeat 2)`), so that a rule broken inside a block names the block."""
    out: dict[str, str] = {}
    blocks = model.get("blocks") or {}
    for name, spec in (model.get("layers") or {}).items():
        if not is_instance(spec) or spec["block"] not in blocks:
            continue
        repeat = spec.get("repeat", 1)
        for i in range(1, (repeat if isinstance(repeat, int) else 1) + 1):
            for lname in blocks[spec["block"]].get("layers") or {}:
                where = f"model.blocks.{spec['block']}.layers.{lname}"
                suffix = f", repeat {i}" if repeat != 1 else ""
                out[_generated(name, i, repeat, lname)] = f"{where} (in model.layers.{name}{suffix})"
    return out


def _generated(instance: str, i: int, repeat: int, layer: str) -> str:
    return f"{instance}_{layer}" if repeat == 1 else f"{instance}_block{i}_{layer}"


def _check_block(bname: str, block: Any) -> None:
    path = f"model.blocks.{bname}"
    if not isinstance(block, Mapping):
        raise ConfigError(path, block, "a block is a mapping with `layers` (and optional params, inputs, output)")
    for key in block:
        if key not in BLOCK_KEYS:
            raise ConfigError(f"{path}.{key}", key, "a block has no such key", BLOCK_KEYS)
    layers = block.get("layers")
    if not isinstance(layers, Mapping) or not layers:
        raise ConfigError(f"{path}.layers", layers, "declare at least one layer")
    params = block.get("params") or {}
    if not isinstance(params, Mapping):
        raise ConfigError(f"{path}.params", params, "give a mapping of parameter name -> default (null: required)")
    for p in params:
        if p in INSTANCE_KEYS:
            raise ConfigError(f"{path}.params.{p}", p, "is a key of every instance, not a parameter", INSTANCE_KEYS)
    inputs = _names(block.get("inputs", [BLOCK_INPUT]))
    if inputs is None:
        raise ConfigError(f"{path}.inputs", block.get("inputs"), "give a name or a list of names")
    output = block.get("output", list(layers)[-1])
    if output not in layers:
        raise ConfigError(f"{path}.output", output, "must name a layer of the block", list(layers))
    for lname, lspec in layers.items():
        if is_instance(lspec):
            raise ConfigError(f"{path}.layers.{lname}.block", lspec["block"], "blocks do not nest: write its layers")
        for value in _references(lspec):
            if value not in params:
                raise ConfigError(f"{path}.layers.{lname}", f"${value}", "refers to an undeclared parameter", params)


def _instantiate(
    name: str, spec: Mapping[str, Any], blocks: Mapping[str, Any], alias: Mapping[str, str], previous: str | None
) -> tuple[dict[str, Any], str]:
    path = f"model.layers.{name}"
    bname = spec["block"]
    if bname not in blocks:
        raise ConfigError(f"{path}.block", bname, "unknown block", list(blocks))
    block = blocks[bname]
    repeat = spec.get("repeat", 1)
    if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
        raise ConfigError(f"{path}.repeat", repeat, "must be an integer >= 1")
    params = dict(block.get("params") or {})
    for key, value in spec.items():
        if key in INSTANCE_KEYS:
            continue
        if key not in params:
            raise ConfigError(f"{path}.{key}", key, f"block {bname!r} has no parameter {key!r}", params)
        params[key] = value
    for key, value in params.items():
        if value is None:
            raise ConfigError(f"{path}.{key}", None, f"block {bname!r} requires the parameter {key!r}")
    block_inputs = _names(block.get("inputs", [BLOCK_INPUT])) or []
    given = _names(spec["inputs"]) if "inputs" in spec else ([previous] if previous is not None else None)
    if given is None or len(given) != len(block_inputs):
        rule = f"block {bname!r} takes {len(block_inputs)} input(s) ({', '.join(block_inputs)}): name them"
        raise ConfigError(f"{path}.inputs", spec.get("inputs"), rule)
    feed = [alias.get(g, g) for g in given]
    layers: Mapping[str, Any] = block["layers"]
    output = block.get("output", list(layers)[-1])
    made: dict[str, Any] = {}
    for i in range(1, repeat + 1):
        local = {ln: _generated(name, i, repeat, ln) for ln in layers}
        local.update(zip(block_inputs, feed))
        first = True
        for lname, lspec in layers.items():
            new = {k: _substitute(v, params) for k, v in lspec.items()}
            if "inputs" in new:
                new["inputs"] = _renamed(new["inputs"], local)
            elif first:
                new["inputs"] = feed[0] if len(feed) == 1 else list(feed)
            for key in ("trainable",):
                if key in spec:
                    new[key] = spec[key]
            if spec.get("expose") and lname == output:
                new["expose"] = True
            made[local[lname]] = new
            first = False
        feed = [local[output]]
    return made, feed[0]


def _names(raw: Any) -> list[str] | None:
    names = [raw] if isinstance(raw, str) else raw
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        return None
    return list(names)


def _renamed(raw: Any, mapping: Mapping[str, str]) -> Any:
    if isinstance(raw, str):
        return mapping.get(raw, raw)
    if isinstance(raw, list):
        return [mapping.get(n, n) if isinstance(n, str) else n for n in raw]
    return raw


def _references(value: Any) -> list[str]:
    if isinstance(value, str) and value.startswith("$"):
        return [value[1:]]
    if isinstance(value, Mapping):
        return [r for v in value.values() for r in _references(v)]
    if isinstance(value, list):
        return [r for v in value for r in _references(v)]
    return []


def _substitute(value: Any, params: Mapping[str, Any]) -> Any:
    """`$name` -> the parameter's value (of any type), inside lists and mappings too."""
    if isinstance(value, str) and value.startswith("$") and value[1:] in params:
        return params[value[1:]]
    if isinstance(value, Mapping):
        return {k: _substitute(v, params) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, params) for v in value]
    return value
