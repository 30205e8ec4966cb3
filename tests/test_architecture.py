"""The shape the code promises in docs/architecture.md: no import cycles, small modules.

The import-linter contracts in pyproject.toml (run by `make test` as `lint-imports`) check the
layering; this checks what a contract cannot say.
"""

from __future__ import annotations

from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1] / "layerprobe"
MAX_LINES = 400  # aim for ~300; split a module before it passes this


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), imports inside functions included."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    modules = sorted(m for m in graph.modules if m.startswith("layerprobe"))

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.find_modules_directly_imported_by(v)):
            if not w.startswith("layerprobe") or _is_parent(w, v):
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for m in modules:
        if m not in index:
            visit(m)
    return found


def _is_parent(package: str, module: str) -> bool:
    """`import layerprobe.x` from layerprobe.x.y runs the package's __init__: not a dependency cycle."""
    return module.startswith(package + ".")


def test_no_import_cycles():
    assert _cycles(grimp.build_graph("layerprobe")) == []


def test_a_cycle_is_found_when_there_is_one():
    graph = grimp.ImportGraph()
    for m in ("layerprobe.a", "layerprobe.b", "layerprobe.c"):
        graph.add_module(m)
    graph.add_import(importer="layerprobe.a", imported="layerprobe.b")
    graph.add_import(importer="layerprobe.b", imported="layerprobe.a")
    graph.add_import(importer="layerprobe.c", imported="layerprobe.a")
    assert _cycles(graph) == [["layerprobe.a", "layerprobe.b"]]


def test_no_module_is_too_long():
    long = {
        str(p.relative_to(ROOT)): n for p in ROOT.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_the_engine_seam_contract_covers_every_module_and_every_engine():
    """Nothing outside engines/ imports an engine's own package: the contract lists every top-level
    module of layerprobe but engines, and forbids every engine the registry names."""
    import tomllib

    from layerprobe.engines import ENGINES

    contracts = tomllib.loads((ROOT.parent / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    seam = next(c for c in contracts if c["name"].startswith("engines are reached only through the seam"))
    top = {p.stem for p in ROOT.iterdir() if (p.suffix == ".py" or (p / "__init__.py").is_file())}
    expected = {f"layerprobe.{m}" for m in top - {"__init__", "__main__", "engines"}}
    assert set(seam["source_modules"]) == expected
    assert set(seam["forbidden_modules"]) == {path.partition(":")[0].rpartition(".")[0] for path in ENGINES.values()}
