"""One self-contained HTML report per run: images inlined as data URIs, no scripts, no external files."""

from __future__ import annotations

import base64
import html
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from layerprobe import __version__
from layerprobe.analysis.analyze import AnalysisResult

log = logging.getLogger(__name__)

MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml"}

CSS = """
body { font-family: "DejaVu Sans", "Segoe UI", Roboto, Helvetica, Arial, sans-serif; font-size: 16px;
       line-height: 1.45; color: #1f2328; max-width: 1120px; margin: 0 auto; padding: 24px 28px 60px; }
h1 { font-size: 28px; margin: 0 0 4px; overflow-wrap: anywhere; }
h2 { font-size: 22px; margin: 40px 0 12px; padding-bottom: 4px; border-bottom: 2px solid #d0d7de;
     overflow-wrap: anywhere; }
h3 { font-size: 17px; margin: 20px 0 8px; }
.sub { color: #57606a; margin: 0 0 16px; }
nav { font-size: 14px; background: #f6f8fa; padding: 8px 12px; border-radius: 6px; }
nav a { margin-right: 14px; white-space: nowrap; }
pre { background: #f6f8fa; border: 1px solid #d0d7de; border-radius: 6px; padding: 12px; font-size: 13px;
      line-height: 1.35; overflow-x: auto; }
table { border-collapse: collapse; font-size: 14px; margin: 4px 0 12px; }
th, td { padding: 4px 12px; border-bottom: 1px solid #d8dee4; text-align: left; vertical-align: top; }
th { background: #f6f8fa; font-weight: 600; }
td.num { text-align: right; font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace;
         font-variant-numeric: tabular-nums; white-space: nowrap; }
td.key { overflow-wrap: anywhere; }
.layer { display: flex; flex-wrap: wrap; gap: 24px; align-items: flex-start; }
.stats { flex: 0 0 290px; }
.stats table { width: 100%; }
.figs { flex: 1 1 520px; min-width: 0; }
img { display: block; max-width: 100%; height: auto; margin: 0 0 14px; border: 1px solid #d8dee4; }
.facts { margin: 0 0 10px; }
.facts span { display: inline-block; margin: 0 8px 6px 0; padding: 2px 10px; border-radius: 12px;
              background: #eef1f4; font-size: 14px; }
.facts span.dead { background: #ffebe9; color: #a40e26; font-weight: 600; }
.note { background: #fff8c5; border: 1px solid #d4a72c; border-radius: 6px; padding: 6px 10px; font-size: 14px; }
footer { margin-top: 48px; color: #57606a; font-size: 13px; }
"""


def write_report(
    path: Path,
    title: str,
    model_summary: str,
    layer_stats: Mapping[str, Mapping[str, float]],
    plots: Mapping[str, Sequence[Path]],
    analysis: AnalysisResult | None,
    context: Mapping[str, str] | None = None,
    dynamics: Mapping[str, Any] | None = None,
) -> Path:
    """Write the run's report to path; layers appear in layer_stats order, then any others.

    context: what names the run (run id, overrides, step, eval metrics), shown under the title.
    dynamics: trace.report_section of the run's training dynamics (examples, steps, rows, images).
    """
    layers = _layer_order(layer_stats, plots, analysis)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="sub">{len(layers)} exposed layer{"s" if len(layers) != 1 else ""}'
        + (f", {analysis.examples} sampled examples per layer" if analysis else "")
        + "</p>",
        _context(context or {}),
        _nav(layers),
        '<h2 id="model">Model</h2>',
        f"<pre>{_e(model_summary.rstrip())}</pre>",
        _analysis_section(analysis),
        _dynamics_section(dynamics),
    ]
    for i, name in enumerate(layers):
        parts.append(_layer_section(i, name, layer_stats.get(name, {}), plots.get(name, ()), analysis))
    parts.append(f"<footer>layerprobe {_e(__version__)}</footer></body></html>")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts) + "\n", encoding="utf-8")
    log.info("report written to %s", path)
    return path


def _e(x: object) -> str:
    return html.escape(str(x), quote=True)


def _layer_order(
    stats: Mapping[str, object], plots: Mapping[str, object], analysis: AnalysisResult | None
) -> list[str]:
    names = list(stats) + list(plots) + (list(analysis.layers) if analysis else [])
    return list(dict.fromkeys(names))


def _nav(layers: Sequence[str]) -> str:
    links = ['<a href="#model">Model</a>', '<a href="#analysis">Representation analysis</a>']
    links += ['<a href="#dynamics">Training dynamics</a>']
    links += [f'<a href="#layer-{i}">{_e(n)}</a>' for i, n in enumerate(layers)]
    return "<nav>" + " ".join(links) + "</nav>"


def _fmt(v: object) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return _e(v)
    f = float(v)
    if math.isnan(f) or math.isinf(f):
        return _e(f)
    if f.is_integer() and abs(f) < 1e15 and (isinstance(v, int) or abs(f) >= 1):
        return f"{int(f):,}"
    return f"{f:.4g}"


def _image(p: Path) -> str:
    p = Path(p)
    mime = MIME.get(p.suffix.lower())
    if mime is None:
        raise ValueError(f"report images must be one of {sorted(MIME)}. Received: {p}")
    if not p.is_file():
        log.warning("report: plot %s not found, left out", p)
        return f'<p class="note">missing plot: {_e(p.name)}</p>'
    data = base64.b64encode(p.read_bytes()).decode("ascii")
    return f'<img src="data:{mime};base64,{data}" alt="{_e(p.stem)}">'


def _analysis_section(a: AnalysisResult | None) -> str:
    out = ['<h2 id="analysis">Representation analysis</h2>']
    if a is None:
        out.append('<p class="note">No representation analysis for this run.</p>')
        return "\n".join(out)
    out.append("<h3>Linear probes (held-out accuracy of a logistic regression per layer)</h3>")
    if a.probes:
        rows = [
            "<table><tr><th>layer</th><th>accuracy</th><th>± stderr</th><th>chance</th>"
            "<th>train / test</th><th>features</th><th>classes</th></tr>"
        ]
        for n, s in a.probes.items():
            rows.append(
                f'<tr><td class="key">{_e(n)}</td><td class="num">{s.accuracy:.3f}</td>'
                f'<td class="num">{s.stderr:.3f}</td><td class="num">{s.chance:.3f}</td>'
                f'<td class="num">{s.train_size} / {s.test_size}</td><td class="num">{s.features}</td>'
                f'<td class="num">{s.classes}</td></tr>'
            )
        out.append("".join(rows) + "</table>")
        if "linear_probe.png" in a.files:
            out.append(_image(a.files["linear_probe.png"]))
    else:
        out.append('<p class="note">No layer could be probed.</p>')
    out.append("<h3>Linear CKA between layers (same sampled examples)</h3>")
    if "cka.png" in a.files:
        out.append(_image(a.files["cka.png"]))
    notes = [f'<p class="note">{_e(k)}: {_e(v)}</p>' for k, v in a.notes.items()]
    return "\n".join(out + notes)


def _context(context: Mapping[str, str]) -> str:
    if not context:
        return ""
    rows = "".join(f'<tr><th>{_e(k)}</th><td class="key">{_e(v)}</td></tr>' for k, v in context.items())
    return f'<table class="context">{rows}</table>'


def _dynamics_section(d: Mapping[str, Any] | None) -> str:
    out = ['<h2 id="dynamics">Training dynamics</h2>']
    if not d:
        out.append('<p class="note">No probe points during training for this run (probe.dynamics).</p>')
        return "\n".join(out)
    steps = ", ".join(str(s) for s in d["steps"])
    out.append(f'<p class="sub">{d["examples"]} examples of the probe split at steps {_e(steps)}.</p>')
    rows = d.get("rows") or []
    cols = list(dict.fromkeys(k for r in rows for k in r))
    if len(cols) > 1:
        head = "".join(f"<th>{_e(k)}</th>" for k in cols)
        body = "".join(
            "<tr>" + "".join(f'<td class="num">{_fmt(r[k]) if k in r else ""}</td>' for k in cols) + "</tr>"
            for r in rows
        )
        out.append(f"<table><tr>{head}</tr>{body}</table>")
    if d.get("note"):
        out.append(f'<p class="sub">{_e(d["note"])}</p>')
    out.extend(_image(p) for p in d.get("images") or ())
    return "\n".join(out)


def _layer_section(
    i: int, name: str, stats: Mapping[str, float], plots: Sequence[Path], a: AnalysisResult | None
) -> str:
    facts = []
    if "dead_count" in stats:
        dead = int(stats["dead_count"])
        share = f" ({stats['dead_fraction']:.1%})" if "dead_fraction" in stats else ""
        facts.append(f'<span class="{"dead" if dead else ""}">dead units: {dead}{_e(share)}</span>')
    else:
        facts.append("<span>dead units: n/a</span>")
    if a and name in a.probes:
        s = a.probes[name]
        facts.append(f"<span>linear probe: {s.accuracy:.3f} ± {s.stderr:.3f} (chance {s.chance:.3f})</span>")
    elif a and name in a.notes:
        facts.append(f"<span>{_e(a.notes[name])}</span>")
    rows = "".join(f'<tr><td class="key">{_e(k)}</td><td class="num">{_fmt(v)}</td></tr>' for k, v in stats.items())
    table = f"<table><tr><th>statistic</th><th>value</th></tr>{rows}</table>" if rows else "<p>no statistics</p>"
    figs = "".join(_image(p) for p in plots) or "<p>no plots</p>"
    return (
        f'<h2 id="layer-{i}">{_e(name)}</h2><div class="facts">{"".join(facts)}</div>'
        f'<div class="layer"><div class="stats">{table}</div><div class="figs">{figs}</div></div>'
    )
