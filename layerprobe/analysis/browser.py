"""The report pages in a real browser (headless Chromium), for developers and tests: a full-page
screenshot at a window width, and layout facts the browser measures (does the page scroll sideways,
where does each table header end, is it inside the visible part of its scroll box).

    python -m layerprobe.analysis.browser [PAGE.html ...] [--out DIR] [--width 1400]

Without pages: the newest run report (outputs/*/*/probe/report.html) and compare report
(multirun/*/*/compare/report.html) under the working directory. `make screenshots` runs it.
"""

from __future__ import annotations

import argparse
import html
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

WIDTH = 1400  # the window the issue measured the pages at: a laptop's browser, not maximised
CHROMIUM = ("chromium", "chromium-browser", "google-chrome")
TIMEOUT = 60  # seconds per page; a headless Chromium renders a report in 1-3 s here
MAX_HEIGHT = 16000  # px of a full-page screenshot; taller pages are cut there

# Appended to a copy of the page: measures once everything (inlined images too) is laid out, and writes
# the facts into the DOM, where --dump-dom prints them. The report itself never holds a script.
_MEASURE = """<script>
addEventListener("load", () => {
  const vw = innerWidth;
  const clip = (el) => {  // the right edge of the nearest box that clips el sideways, else the window's
    for (let a = el.parentElement; a; a = a.parentElement) {
      if (["auto", "scroll", "hidden"].includes(getComputedStyle(a).overflowX)) {
        return Math.min(vw, a.getBoundingClientRect().right);
      }
    }
    return vw;
  };
  const headers = [...document.querySelectorAll("th")].map((th) => {
    const r = th.getBoundingClientRect();
    return [th.textContent.trim(), r.left, r.right, clip(th)];
  });
  const out = document.createElement("pre");
  out.id = "layerprobe-layout";
  out.textContent = JSON.stringify({viewport: vw, scrollWidth: document.documentElement.scrollWidth,
                                    scrollHeight: document.documentElement.scrollHeight, headers});
  document.body.appendChild(out);
});
</script>"""


@dataclass(frozen=True)
class Header:
    """One table header cell as laid out: its text, its left and right edge, and the right edge of what
    shows of it without scrolling (its scroll box's, or the window's)."""

    text: str
    left: float
    right: float
    shown_until: float

    @property
    def visible(self) -> bool:
        return self.right <= self.shown_until + 0.5  # sub-pixel rounding


@dataclass(frozen=True)
class Layout:
    viewport: int  # the window's width in CSS pixels
    scroll_width: int  # the page's: wider than viewport means the page scrolls sideways
    scroll_height: int
    headers: tuple[Header, ...]

    def header(self, text: str) -> Header:
        """The first header cell reading `text`."""
        found = [h for h in self.headers if h.text == text]
        if not found:
            raise KeyError(f"no table header {text!r}; the page has {sorted({h.text for h in self.headers})}")
        return found[0]


def chromium() -> str | None:
    """The Chromium binary on PATH, None when there is none."""
    return next((p for name in CHROMIUM if (p := shutil.which(name))), None)


def layout(page: Path, width: int = WIDTH, height: int = 1000) -> Layout:
    """Lay `page` out in a `width` x `height` window and return what the browser measured."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / page.name
        text = page.read_text(encoding="utf-8")
        copy.write_text(text.replace("</body>", _MEASURE + "</body>", 1), encoding="utf-8")
        dom = _chromium(["--dump-dom"], copy, width, height).stdout
    found = re.search(r'<pre id="layerprobe-layout">(.*?)</pre>', dom, re.S)
    if found is None:
        raise RuntimeError(f"chromium printed no layout for {page} (did the page load?): {dom[-300:]!r}")
    facts = json.loads(html.unescape(found.group(1)))
    return Layout(
        viewport=facts["viewport"],
        scroll_width=facts["scrollWidth"],
        scroll_height=facts["scrollHeight"],
        headers=tuple(Header(*h) for h in facts["headers"]),
    )


def screenshot(page: Path, png: Path, width: int = WIDTH) -> tuple[Path, Layout]:
    """A screenshot of the whole of `page` (up to MAX_HEIGHT px) in a window `width` px wide."""
    facts = layout(page, width)
    png.parent.mkdir(parents=True, exist_ok=True)
    _chromium([f"--screenshot={png.resolve()}"], page, width, min(facts.scroll_height, MAX_HEIGHT))
    return png, facts


def _chromium(args: Sequence[str], page: Path, width: int, height: int) -> subprocess.CompletedProcess[str]:
    binary = chromium()
    if binary is None:
        raise RuntimeError(f"no Chromium on PATH (looked for {', '.join(CHROMIUM)})")
    command = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--mute-audio"]
    command += [f"--window-size={width},{height}", "--virtual-time-budget=5000", *args, page.resolve().as_uri()]
    return subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, check=True)


def _newest(pattern: str) -> list[Path]:
    found = sorted(Path.cwd().glob(pattern), key=lambda p: p.stat().st_mtime)
    return found[-1:]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m layerprobe.analysis.browser", description=__doc__.split("\n\n")[0])
    parser.add_argument("pages", nargs="*", type=Path, help="report pages (default: the newest run and compare report)")
    parser.add_argument(
        "--out", type=Path, default=Path("outputs/screenshots"), help="PNGs go here (default: %(default)s)"
    )
    parser.add_argument("--width", type=int, default=WIDTH, help="window width in px (default: %(default)s)")
    args = parser.parse_args(argv)
    pages = args.pages or _newest("outputs/*/*/probe/report.html") + _newest("multirun/*/*/compare/report.html")
    if not pages:
        print("no report pages given and none under outputs/ or multirun/", file=sys.stderr)
        return 2
    for i, page in enumerate(pages):
        name = "-".join(page.resolve().with_suffix("").parts[-3:])  # e.g. 09-50-09-probe-report
        png, facts = screenshot(page, args.out / f"{i}-{name}-{args.width}px.png", args.width)
        hidden = sorted({h.text for h in facts.headers if not h.visible})
        wide = facts.scroll_width > facts.viewport
        sideways = f", the page scrolls sideways ({facts.scroll_width} px)" if wide else ""
        print(f"{png}: {page}{sideways}; headers scrolled out of view: {', '.join(hidden) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
