"""The data source seam: the protocol, the registry by name, and an import graph without cycles."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from layerprobe.data import registry
from layerprobe.data.memory import InMemorySource
from layerprobe.data.pipeline import dataset, prepare
from layerprobe.data.source import DataSource
from layerprobe.errors import ConfigError
from tests.test_data import data_cfg, error_of

PACKAGE = Path(__file__).resolve().parents[1] / "layerprobe"


def imports_of(path: Path) -> set[str]:
    """Every layerprobe module a file imports, at module level or inside functions."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}  # `from pkg import module`
    return {m for m in found if m.startswith("layerprobe")}


def import_graph() -> dict[str, set[str]]:
    modules = {
        ".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"): p
        for p in PACKAGE.rglob("*.py")
    }
    return {name: imports_of(path) & set(modules) - {name} for name, path in modules.items()}


def in_cycles(graph: dict[str, set[str]], prefix: str) -> list[str]:
    """The modules under `prefix` that can reach themselves through imports (each is on a cycle)."""
    out = []
    for start in sorted(m for m in graph if m.startswith(prefix)):
        seen, todo = set(), list(graph[start])
        while todo:
            node = todo.pop()
            if node not in seen:
                seen.add(node)
                todo += graph[node]
        if start in seen:
            out.append(start)
    return out


def test_the_data_package_has_no_import_cycle_even_inside_functions():
    graph = import_graph()
    assert "layerprobe.data.registry" in graph["layerprobe.data.checks"]  # the graph sees real edges
    assert in_cycles(graph, "layerprobe.data") == []


def test_the_cycle_finder_finds_a_cycle_inside_a_function():
    graph = {"a.x": {"a.y"}, "a.y": {"b.z"}, "b.z": {"a.x"}, "a.w": {"a.x"}}
    assert in_cycles(graph, "a.") == ["a.x", "a.y"]


@pytest.mark.integration  # starts a process
def test_config_checks_and_the_registry_import_no_tensorflow():
    code = (
        "import json, sys\n"
        "import layerprobe.data.checks, layerprobe.data.registry, layerprobe.data.source, layerprobe.data.splits\n"
        "print(json.dumps([m for m in ('tensorflow', 'layerprobe.data.sources') if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == []  # not even the loaders: the registry holds only import paths


def test_every_registered_source_resolves_and_every_shipped_config_names_one():
    for name, target in {**registry.ARRAY_LOADERS, **registry.STREAMS}.items():
        assert callable(registry.resolve(target)), name
    shipped = {yaml.safe_load(p.read_text())["source"] for p in (PACKAGE.parent / "conf" / "data").glob("*.yaml")}
    assert shipped == set(registry.SOURCE_NAMES)


def test_an_unknown_source_name_is_one_line_with_a_did_you_mean():
    with pytest.raises(ConfigError) as e:
        registry.load_arrays("digit", {})
    assert str(e.value) == (
        "data.source: unknown data source. Received: 'digit'. Did you mean 'digits'? "
        "Allowed: breast_cancer, csv, digits, image_folder, iris, npz, synthetic, tfds, tfrecord, tfrecord_stream, wine"
    )
    assert error_of(prepare, {**data_cfg("data=iris"), "source": "iriss"}).startswith(
        "data.source: unknown data source. Received: 'iriss'. Did you mean 'iris'?"
    )


def test_in_memory_data_is_a_data_source_with_sizes_specs_and_batches():
    data = prepare(data_cfg("data=iris"))
    assert isinstance(data, InMemorySource) and isinstance(data, DataSource)
    assert data.split_names() == ("train", "eval")
    assert data.sizes() == {"train": 120, "eval": 30} == {s: data.size(s) for s in data.split_names()}
    features, labels = data.element_spec
    assert {k: (v.dtype.name, v.shape.as_list()) for k, v in features.items()} == {"x": ("float32", [4])}
    assert {k: (v.dtype.name, v.shape.as_list()) for k, v in labels.items()} == {"label": ("int64", [])}
    assert set(data.fitted) == {"0/x/mean", "0/x/std"} and len(data.digest) == 64

    seam = data.tf_dataset("eval", training=False, batch_size=7, seed=0, max_examples=10)
    legacy = dataset(data, "eval", training=False, batch_size=7, seed=0, max_examples=10)
    got, want = list(seam.as_numpy_iterator()), list(legacy.as_numpy_iterator())
    assert [len(f["x"]) for f, _ in got] == [7, 3]
    for (f1, y1), (f2, y2) in zip(got, want):
        np.testing.assert_array_equal(f1["x"], f2["x"])
        np.testing.assert_array_equal(y1["label"], y2["label"])
    expected = (data.splits["eval"].features["x"][:10] - data.fitted["0/x/mean"]) / data.fitted["0/x/std"]
    np.testing.assert_allclose(np.concatenate([f["x"] for f, _ in got]), expected, rtol=1e-6)
