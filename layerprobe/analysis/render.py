"""The one HTML renderer of layerprobe's reports (the run's report.html and the compare report).

One Jinja2 environment over analysis/templates, autoescaped; the filters the pages share; every page
extends base.html.j2, which holds the style, the title and the footer with the layerprobe version.
Pages are self-contained: images are inlined as data URIs, no scripts, no external files.
"""

from __future__ import annotations

import base64
import functools
import logging
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from layerprobe import __version__

if TYPE_CHECKING:
    from jinja2 import Environment
    from markupsafe import Markup

log = logging.getLogger(__name__)

MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml"}


def render(template_name: str, path: Path, **context: Any) -> Path:
    """Render templates/<template_name> with context into path (directories created); returns path."""
    html = _environment().get_template(template_name).render(**context)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html + "\n", encoding="utf-8")
    log.info("report written to %s", path)
    return path


@functools.cache
def _environment() -> Environment:
    # Imported here: `import layerprobe.analysis` stays cheap for the commands that draw no page.
    from jinja2 import Environment, PackageLoader, StrictUndefined

    env = Environment(
        loader=PackageLoader("layerprobe.analysis", "templates"),
        autoescape=True,  # every template is HTML (select_autoescape would not match *.html.j2)
        undefined=StrictUndefined,  # a misspelt name fails the render instead of printing nothing
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["fmt"] = fmt
    env.filters["data_uri"] = data_uri
    env.filters["breakable"] = breakable
    env.globals["version"] = __version__
    return env


def fmt(v: object) -> str:
    """A table cell's number: integers with thousands separators, other numbers to 4 significant
    digits, None as an empty cell; anything else as str() (the template escapes it)."""
    if v is None:
        return ""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    f = float(v)
    if math.isnan(f) or math.isinf(f):
        return str(f)
    if f.is_integer() and abs(f) < 1e15 and (isinstance(v, int) or abs(f) >= 1):
        return f"{int(f):,}"
    return f"{f:.4g}"


def breakable(text: object) -> Markup:
    """`text` escaped, with a line-break opportunity (<wbr>) after each `,` `=` `/` and each `.` that
    a name follows: a long run name or override wraps between its parts, never inside a number."""
    from markupsafe import Markup, escape

    return Markup(_BREAK_AFTER.sub(r"\1<wbr>", str(escape(text))))


_BREAK_AFTER = re.compile(r"([,=/]|\.(?=[A-Za-z_]))")


def data_uri(p: Path | str) -> str | None:
    """The image at p as a data URI, or None (with a warning) when the file is missing."""
    p = Path(p)
    mime = MIME.get(p.suffix.lower())
    if mime is None:
        raise ValueError(f"report images must be one of {sorted(MIME)}. Received: {p}")
    if not p.is_file():
        log.warning("report: plot %s not found, left out", p)
        return None
    return f"data:{mime};base64," + base64.b64encode(p.read_bytes()).decode("ascii")
