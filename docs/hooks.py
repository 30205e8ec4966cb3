"""MkDocs hook (mkdocs.yml `hooks:`): the pages written from the code at build time, never by hand.

- reference.md: every config key, its default and its meaning, from the schema's dataclasses
  (layerprobe/schema.py) and the comments beside each field; the defaults are the composed default
  config's (`layerprobe --cfg job`), with the schema's own default where a shipped file changes it.
- benchmarks.md: the repository root's BENCHMARKS.md (`make bench` writes it there), with the images
  it shows, so that the docs link to the current figures under --strict.
"""

from __future__ import annotations

import dataclasses
import io
import re
import sys
import tokenize
import typing
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "layerprobe" / "schema.py"
BENCHMARKS = ROOT / "BENCHMARKS.md"
LONG = 60  # characters: a default longer than this (a model's layers) points at its file instead
if str(ROOT) not in sys.path:  # the schema of this checkout, whichever one the venv's editable install names
    sys.path.insert(0, str(ROOT))


def field_comments(source: str) -> dict[tuple[str, str], str]:
    """(class, field) -> the comments of that field in the source: the lines right above it, the one
    beside it, and the lines after the class's last field (a trailing comment carried on)."""
    comments: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
    lines = source.splitlines()
    out: dict[tuple[str, str], str] = {}
    cls = None
    last: tuple[str, str] | None = None
    pending: list[str] = []
    for n, line in enumerate(lines, start=1):
        if m := re.match(r"class (\w+)", line):
            cls, last, pending = m.group(1), None, []
        elif cls and (m := re.match(r"    (\w+): ", line)):
            last = (cls, m.group(1))
            beside = [comments[n]] if n in comments and not line.lstrip().startswith("#") else []
            out[last] = " ".join(pending + beside)
            pending = []
        elif cls and line.lstrip().startswith("#"):
            pending.append(comments[n])
        elif cls and not line.strip() and pending and last:  # the last field's comment carried on
            out[last] = f"{out[last]} {' '.join(pending)}".strip()
            pending = []
        elif line and not line.startswith(" "):
            if cls and pending and last:
                out[last] = f"{out[last]} {' '.join(pending)}".strip()
            cls, pending = None, []
    return out


def _yaml(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_yaml(v)}" for k, v in value.items()) + "}"
    return str(value)


def _schema_default(f: dataclasses.Field) -> Any:
    from omegaconf import MISSING

    if f.default is not dataclasses.MISSING:
        return "???" if f.default == MISSING else f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return "???"


def _is_section(tp: Any) -> bool:
    return dataclasses.is_dataclass(tp)


def _mapped_section(tp: Any) -> Any:
    """The dataclass of a `Dict[str, <dataclass>]` field (a model's inputs, its heads), else None."""
    args = typing.get_args(tp)
    return args[1] if typing.get_origin(tp) is dict and len(args) == 2 and _is_section(args[1]) else None


def _markdown_text(text: str) -> str:
    """A code comment as table-cell text: `<`, `*` and `|` outside code spans are shown, not read as markup."""
    parts = text.split("`")
    for i in range(0, len(parts), 2):
        parts[i] = parts[i].replace("<", "&lt;").replace("*", "\\*").replace("|", "&#124;")
    return "`".join(parts)  # a pipe inside a code span stays in its cell


def _rows(cls: type, prefix: str, composed: Any, notes: dict[tuple[str, str], str]) -> list[tuple[str, str, str]]:
    """(key, default, meaning) for every field of `cls` under `prefix`, nested sections inline."""
    hints = typing.get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}"
        tp = hints[f.name]
        value = composed.get(f.name) if isinstance(composed, dict) else None
        if _is_section(tp):
            doc = (tp.__doc__ or "").strip().splitlines()[0] if tp.__doc__ else ""
            if doc and not doc.startswith(tp.__name__ + "("):
                rows.append((key, "", doc))
            rows += _rows(tp, key, value if isinstance(value, dict) else {}, notes)
            continue
        schema = _schema_default(f)
        shown = _yaml(value) if isinstance(composed, dict) and f.name in composed else _yaml(schema)
        default = f"`{shown}`" if len(shown) <= LONG else "(the chosen file's)"
        if shown != _yaml(schema) and len(shown) <= LONG:
            default += " (schema: required)" if schema == "???" else f" (schema: `{_yaml(schema)}`)"
        if shown == "???":
            default = "required"
        rows.append((key, default, notes.get((cls.__name__, f.name), "")))
        if (entry := _mapped_section(tp)) is not None:  # one row per field of each entry
            rows += _rows(entry, f"{key}.<name>", {}, notes)
    return rows


def _choices(group: str) -> str:
    names = sorted(p.stem for p in (ROOT / "conf" / group).glob("*.yaml"))
    return ", ".join(f"`{group}={n}`" for n in names)


def reference_markdown() -> str:
    """The reference page: one table per config section, in the order of the schema."""
    from layerprobe import schema
    from layerprobe.config.compose import compose, plain

    notes = field_comments(SCHEMA.read_text())
    composed = plain(compose([]))
    defaults = {s: composed[s] for s in ("data", "model", "trainer", "probe", "tracking")}
    hints = typing.get_type_hints(schema.LayerprobeConfig)
    parts = [
        "# Reference: every config key",
        "",
        "Generated from the schema's dataclasses (`layerprobe/schema.py`) when the site is built: each key, "
        "its default and the comment beside it in the code. The default is what the default experiment "
        "composes (`layerprobe --cfg job` prints it whole); where a shipped file (`conf/<group>/default.yaml`, "
        "the default model and data) sets another value than the schema, the schema's own default follows "
        "in brackets. `required` is a key every file of that group must give. Unknown keys are refused "
        "with the closest key that exists ([Troubleshooting](troubleshooting.md)).",
        "",
        "Options of each config group (`conf/<group>/<option>.yaml`), chosen on the command line as "
        "`<group>=<option>` (a sweep's launcher or sweeper as `+sweep=<option>`):",
        "",
        *[f"- {g}: {_choices(g)}" for g in ("data", "model", "trainer")],
        "- sweep: " + _choices("sweep").replace("`sweep=", "`+sweep="),
        "",
    ]
    for section in ("data", "model", "trainer", "probe", "tracking"):
        cls = hints[section]
        doc = (cls.__doc__ or "").strip()
        parts += [f"## `{section}`", ""]
        if doc and not doc.startswith(cls.__name__ + "("):
            parts += [doc.splitlines()[0], ""]
        parts += ["| key | default | meaning |", "|---|---|---|"]
        for key, default, meaning in _rows(cls, section, defaults[section], notes):
            parts.append(f"| `{key}` | {default} | {_markdown_text(meaning)} |")
        parts.append("")
    return "\n".join(parts)


def _benchmark_files() -> list[str]:
    """The repository files BENCHMARKS.md shows or links to (its images), relative to the root."""
    targets = re.findall(r"\]\(([^)#\s]+)\)", BENCHMARKS.read_text())
    return [t for t in targets if "://" not in t and (ROOT / t).is_file()]


def on_files(files: Any, config: Any) -> Any:
    from mkdocs.structure.files import File

    files.append(File.generated(config, "reference.md", content=reference_markdown()))
    files.append(File.generated(config, "benchmarks.md", content=BENCHMARKS.read_text()))
    for rel in _benchmark_files():
        files.append(File.generated(config, rel, abs_src_path=str(ROOT / rel)))
    return files
