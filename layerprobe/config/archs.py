"""Config rules of real architectures, without TensorFlow: block expansion errors pointed back at the
block, exposed names and glob patterns (inner layers of nested models: `backbone/*_out`), warm start.

What needs the real model (the inner layer names, a weights file's variables) is checked in the dry
build (`resolve_exposed` over the built graph's names, graph.warm against its variables).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from layerprobe.config.applications import MODEL_FILE, application_name
from layerprobe.config.blocks import expand_model, origins
from layerprobe.errors import ConfigError

GLOB_CHARS = "*?["
RUN_ID = re.compile(r"[0-9a-f]{32}\Z")


def check_expanded(model: Mapping[str, Any], check: Callable[[Mapping[str, Any]], None]) -> dict[str, Any]:
    """Run `check` on the block-expanded model; an error about a generated layer names the block
    layer it came from. Returns the expanded model."""
    expanded = expand_model(model)
    try:
        check(expanded)
    except ConfigError as e:
        where = origins(model)
        parts = e.path.split(".")
        if len(parts) >= 3 and parts[:2] == ["model", "layers"] and parts[2] in where:
            rest = ".".join(parts[3:])
            path = where[parts[2]].replace(" (in", f"{'.' + rest if rest else ''} (in", 1)
            raise ConfigError(path, e.value, e.rule, e.options) from None
        raise
    return expanded


def is_nested(spec: Mapping[str, Any]) -> bool:
    """A layer that is a whole model (a Keras application, a saved model file, or a dotted type that may
    be a function)."""
    ltype = spec.get("type")
    return isinstance(ltype, str) and (application_name(ltype) is not None or "." in ltype or ltype == MODEL_FILE)


def is_pattern(name: str) -> bool:
    return any(ch in name for ch in GLOB_CHARS)


def check_probe_layers(names: Sequence[Any], model: Mapping[str, Any]) -> None:
    """probe.layers: layer names, `<nested model>/<inner layer>`, or glob patterns over both. What
    only the built model knows (inner names, what a pattern over them matches) waits for the dry build."""
    layers = model["layers"]
    nested = [n for n, s in layers.items() if is_nested(s)]
    for i, name in enumerate(names):
        path = f"probe.layers[{i}]"
        if not isinstance(name, str) or not name:
            raise ConfigError(path, name, "give a layer name or a glob pattern")
        head = name.split("/", 1)[0]
        if "/" in name and not is_pattern(head):
            if head not in nested:
                rule = "only the inner layers of a nested model (a Keras application, a model_file) are named "
                rule += "`<layer>/<inner>`"
                raise ConfigError(path, name, rule, nested)
        elif is_pattern(name):
            if not fnmatch.filter(layers, name) and not nested:
                raise ConfigError(path, name, "the pattern matches no layer of the model", layers)
        elif name not in layers:
            raise ConfigError(path, name, "can only expose a layer of the model", layers)


def resolve_exposed(requested: Sequence[str], names: Sequence[str]) -> list[str]:
    """Names and patterns -> the names they select, in `names` order (the model's). `names`: every
    exposable name of the built model, inner layers included. One line for a name or pattern that
    matches nothing."""
    chosen: set[str] = set()
    for i, req in enumerate(requested):
        hits = fnmatch.filter(names, req) if is_pattern(req) else [req] if req in names else []
        if not hits:
            rule = "the pattern matches no layer of the built model" if is_pattern(req) else "no such layer"
            raise ConfigError(f"probe.layers[{i}]", req, rule, [n for n in names if "/" in req or "/" not in n])
        chosen.update(hits)
    return [n for n in names if n in chosen]


def check_warm_start(ws: Mapping[str, Any]) -> None:
    source = ws.get("source")
    if source is not None:
        if not isinstance(source, str) or not source:
            raise ConfigError("trainer.warm_start.source", source, "give a path or a run id")
        p = Path(source)
        if not (p.exists() or Path(source + ".index").is_file() or RUN_ID.match(source)):
            rule = "not an existing checkpoint, model_dir or .h5 weights file, nor an MLflow run id (32 hex digits)"
            raise ConfigError("trainer.warm_start.source", source, rule)
    try:
        re.compile(ws.get("variables", ".*"))
    except (re.error, TypeError) as e:
        raise ConfigError("trainer.warm_start.variables", ws.get("variables"), f"not a regex ({e})") from None
    for key, value in (ws.get("rename") or {}).items():
        if not isinstance(value, str) or not value:
            raise ConfigError(f"trainer.warm_start.rename.{key}", value, "give the variable's name in the source")
