"""The one renderer of the HTML reports (analysis/render.py): the run's report and the compare report
extend the same base page and escape what they show."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

from layerprobe import __version__
from layerprobe.analysis import browser, write_report
from layerprobe.analysis.compare_report import RunView, compare_title, write_compare_report
from layerprobe.analysis.render import breakable, data_uri, fmt, render

EVIL = "<script>alert(1)</script>"


def both_reports(tmp_path: Path) -> dict[str, str]:
    """The two pages, each showing a layer named EVIL (no training: stats only, no images)."""
    run = write_report(tmp_path / "run.html", f"run {EVIL}", "layer  type", {EVIL: {"mean": 0.5}}, {}, None)
    runs = [RunView(run_id=f"id{i}", name=f"seed={i}", overrides="", step=1, metrics={}) for i in (1, 2)]
    cmp = write_compare_report(tmp_path / "cmp" / "report.html", runs, [EVIL], {EVIL: "no activations"}, "compare")
    return {"run": run.read_text(), "compare": cmp.read_text()}


def test_both_reports_extend_the_one_base_page(tmp_path: Path) -> None:
    base = (Path(__file__).parents[1] / "layerprobe/analysis/templates/base.html.j2").read_text()
    shared = base.split("<style>\n")[1].split("{% block style %}")[0]  # the CSS both pages share
    for name, html in both_reports(tmp_path).items():
        assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>"), name
        assert shared in html, f"{name} lacks the shared style"
        assert f"<footer>layerprobe {__version__}</footer>" in html, name
        assert html.count("<h1>") == 1 and html.count("<style>") == 1, name


def test_both_reports_escape_a_layer_name(tmp_path: Path) -> None:
    for name, html in both_reports(tmp_path).items():
        assert "<script" not in html, name
        assert f'id="layer-0">{EVIL.replace("<", "&lt;").replace(">", "&gt;")}</h2>' in html, name
        assert not re.search(r'(src|href)="(?!data:|#)', html), name  # nothing external


@pytest.mark.parametrize(
    ("value", "shown"),
    [(12800.0, "12,800"), (3, "3"), (0.125, "0.125"), (0.0, "0"), (2 / 3, "0.6667"), (None, ""),
     (math.nan, "nan"), (True, "True"), ("n/a", "n/a")],
)  # fmt: skip
def test_fmt_shows_integers_with_separators_and_the_rest_to_4_digits(value: object, shown: str) -> None:
    assert fmt(value) == shown


def test_images_are_inlined_or_noted_as_missing(tmp_path: Path) -> None:
    png = tmp_path / "a.png"
    png.write_bytes(b"\x89PNG")
    assert data_uri(png) == "data:image/png;base64,iVBORw=="
    assert data_uri(tmp_path / "gone.png") is None
    with pytest.raises(ValueError, match=r"report images must be one of .*Received: .*a\.gif"):
        data_uri(tmp_path / "a.gif")
    runs = [RunView(run_id=f"id{i}", name=f"r{i}", overrides="", step=1, metrics={}) for i in (1, 2)]
    html = write_compare_report(tmp_path / "c.html", runs, ["conv"], {"conv": tmp_path / "gone.png"}, "t").read_text()
    assert '<p class="note">missing plot: gone.png</p>' in html


def test_a_misspelt_name_in_a_template_fails_the_render(tmp_path: Path) -> None:
    from jinja2 import UndefinedError

    with pytest.raises(UndefinedError):
        render("base.html.j2", tmp_path / "x.html")  # no title


def test_dead_units_are_marked_red_where_their_bars_have_no_height(tmp_path: Path) -> None:
    import dataclasses

    import matplotlib.image

    from layerprobe.probe.accumulate import LayerStats
    from layerprobe.probe.plots import layer_plots

    units, dead = 32, [2, 7, 30]
    alive = [0.0 if u in dead else 0.5 + u / 100 for u in range(units)]
    zeros = {f.name: 0 for f in dataclasses.fields(LayerStats) if f.name != "spatial_mean"}
    given = {"layer": "conv1", "shape": [units], "units": units, "percentiles": {}, "saturation_fraction": None}
    given |= {"unit_mean": alive, "unit_std": [0.0] * units, "unit_max": alive, "unit_active_fraction": alive}
    given |= {"dead_units": dead, "dead_count": len(dead), "histogram_edges": [0.0, 1.0], "histogram_counts": [1]}
    s = LayerStats(**zeros | given)
    png = next(p for p in layer_plots(s, tmp_path) if p.name == "units.png")
    rgb = matplotlib.image.imread(png)[..., :3]
    red = (rgb[..., 0] > 0.7) & (rgb[..., 1] < 0.35) & (rgb[..., 2] < 0.35)
    assert red.sum() > 50 * len(dead), f"{red.sum()} red pixels"
    columns = np.flatnonzero(red.any(axis=0))  # the red marks sit in three separate places along x
    assert len(np.split(columns, np.flatnonzero(np.diff(columns) > 1) + 1)) >= len(dead)


def test_channels_png_tiles_every_channel_at_its_row_and_column() -> None:
    """channels.png draws the channel maps as one image (one axes; a grid of axes took ~0.5 s a
    layer): channel i at row i // columns, column i % columns, blank between tiles."""
    from layerprobe.probe.plots import tiled

    h, w, c = 5, 3, 10  # 4 columns, 3 rows, the last two tiles empty
    spatial = np.arange(h * w * c, dtype=float).reshape(h, w, c)
    mosaic, pad = tiled(spatial)
    assert mosaic.shape == (3 * h + 2 * pad, 4 * w + 3 * pad)
    for i in range(c):
        r, q = divmod(i, 4)
        np.testing.assert_array_equal(
            mosaic[r * (h + pad) : r * (h + pad) + h, q * (w + pad) : q * (w + pad) + w], spatial[..., i]
        )
    assert np.isnan(mosaic).sum() == mosaic.size - spatial.size


@pytest.mark.integration  # starts a browser
@pytest.mark.skipif(
    browser.chromium() is None, reason="no Chromium on PATH: the pages' layout is measured in a real browser"
)
def test_the_reports_fit_a_1400px_window_with_the_key_columns_in_view(tmp_path: Path) -> None:
    """Eight runs with long swept names, ten dynamics columns: the page never scrolls sideways, wide
    tables scroll inside their box, and the columns that matter are in view without scrolling."""
    stats = {f"probe/conv1/{k}": 0.123456 for k in ("count", "mean", "std", "max", "dead_fraction", "p50")}
    runs = [
        RunView(
            run_id=f"{i:032x}",
            name=f"optimizer.learning_rate={0.0110862828 * i:.4g},conv1.filters={8 * i},trainer.seed={i}",
            overrides=f"trainer.optimizer.learning_rate={0.011086282889727999 * i} model.layers.conv1.filters={8 * i}",
            step=1000,
            metrics={"eval/accuracy": 0.9, "eval/loss": 0.3, **stats},
        )
        for i in range(1, 9)
    ]
    cmp = write_compare_report(tmp_path / "cmp" / "report.html", runs, ["conv1"], {"conv1": "n/a"}, "compare")
    layers = [f"block_{i}_expand_relu" for i in range(5)]
    rows = [{"step": s, **{f"{n} linear acc": 0.5 for n in layers}, **{f"{n} CKA to final": 0.5 for n in layers}}
            for s in (0, 500, 1000)]  # fmt: skip
    dynamics = {"examples": 256, "steps": [0, 500, 1000], "rows": rows}
    context = {"run id": runs[0].run_id, "overrides": runs[0].overrides, "step": "1000", "eval/accuracy": "0.9"}
    run = write_report(
        tmp_path / "run.html", "run", "layer  type", {"conv1": {"mean": 0.5}}, {}, None, context, dynamics
    )
    for page, key_columns in ((cmp, ["run", "eval/accuracy", "eval/loss", "step"]), (run, ["step"])):
        facts = browser.layout(page, width=1400)
        assert facts.viewport == 1400 and facts.scroll_width <= 1400, f"{page.name} scrolls sideways"
        for text in key_columns:
            h = facts.header(text)
            assert h.visible and h.right <= 1400, (
                f"{page.name}: column {text} ends at {h.right} px, shown to {h.shown_until}"
            )


def test_the_compare_reports_title_names_what_the_runs_trained() -> None:
    runs = [RunView(run_id=f"id{i}", name=f"r{i}", overrides="", step=1, metrics={}, model="digits_cnn", data="digits")
            for i in (1, 2, 3)]  # fmt: skip
    assert compare_title(runs, ["conv1", "conv2"]) == "layerprobe compare: digits_cnn on digits, 3 runs, 2 layers"
    runs.append(RunView(run_id="id4", name="r4", overrides="", step=1, metrics={}, model="tiny_cnn", data="digits"))
    assert compare_title(runs, ["conv1"]) == "layerprobe compare: digits_cnn, tiny_cnn on digits, 4 runs, 1 layer"
    assert compare_title(runs[:2] + [RunView("id5", "r5", "", 1, {})], ["conv1"]).startswith(
        "layerprobe compare: digits_cnn"
    )


def test_long_names_break_between_their_parts_never_inside_a_number() -> None:
    shown = breakable("optimizer.learning_rate=0.005612,conv1.filters=16")
    assert shown == "optimizer.<wbr>learning_rate=<wbr>0.005612,<wbr>conv1.<wbr>filters=<wbr>16"
    assert breakable(EVIL) == "&lt;script&gt;alert(1)&lt;/<wbr>script&gt;"
