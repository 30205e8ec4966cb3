"""The commands the README and the documentation site (docs/*.md) show, for the tests that run them.

A command is a line of a fenced shell code block (```bash, ```sh or an untagged ```) that starts with
the program's name; a `$ ` line is a terminal transcript (an error and its output), not a command to
run. Comments are dropped and backslash continuations joined. Generated pages (reference.md and
benchmarks.md, written by docs/hooks.py) hold no commands.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = (README, *sorted(DOCS.glob("*.md")))
SHELL = ("bash", "sh", "shell", "")
_FENCE = re.compile(r"^([ \t]*)```(\w*)[^\n]*\n(.*?)^\1```", re.M | re.S)


def page(name: str) -> Path:
    """A page of the site by its file name (`engines.md`); README.md by its own."""
    return README if name == README.name else DOCS / name


def shell_lines(pages: Iterable[Path] = PAGES) -> list[str]:
    """Every line of every shell code block of `pages`, continuations joined, comments dropped."""
    out = []
    for p in pages:
        for indent, lang, body in _FENCE.findall(p.read_text()):
            if lang not in SHELL:
                continue
            body = "\n".join(ln[len(indent) :] for ln in body.splitlines()).replace("\\\n", " ")
            out += [re.sub(r"\s+#.*$", "", ln).strip() for ln in body.splitlines()]
    return [ln for ln in out if ln]


def commands(prefix: str, pages: Iterable[Path] = PAGES) -> list[str]:
    """The command lines of `pages` that run `prefix` (`layerprobe`, `layerprobe validate`, `make`),
    each once, in the order the pages show them."""
    lines = [ln for ln in shell_lines(pages) if ln.startswith(prefix + " ") or ln == prefix]
    return list(dict.fromkeys(lines))  # a command shown on two pages is one command
