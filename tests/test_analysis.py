"""Representation analysis: linear CKA against a reference, linear probes on synthetic layers, the report."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from layerprobe.analysis import analyze, cka_matrix, linear_cka, linear_probe, write_report
from layerprobe.analysis.features import pool_features


def reference_cka(x: np.ndarray, y: np.ndarray) -> float:
    """CKA as HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) with Gram matrices and the centring matrix H."""
    x, y = x.reshape(len(x), -1), y.reshape(len(y), -1)
    n = len(x)
    h = np.eye(n) - np.ones((n, n)) / n
    k, l_ = x @ x.T, y @ y.T

    def hsic(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.trace(a @ h @ b @ h))

    return hsic(k, l_) / np.sqrt(hsic(k, k) * hsic(l_, l_))


def random_orthogonal(d: int, rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    return q * np.sign(np.diag(r))


@pytest.mark.parametrize(("n", "p", "q"), [(60, 5, 8), (40, 90, 7), (30, 50, 70)])
def test_linear_cka_matches_gram_reference(n: int, p: int, q: int) -> None:
    # covers the feature form (p, q <= n), the Gram form (p, q > n) and a mixed pair
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, p)) + 3.0  # offset: centring must happen inside
    y = np.tanh(x[:, : min(p, q)] @ rng.normal(size=(min(p, q), q))) + rng.normal(scale=0.5, size=(n, q))
    assert linear_cka(x, y) == pytest.approx(reference_cka(x, y), rel=1e-9)


def test_linear_cka_self_is_one_and_invariant_to_rotation_and_scale() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 12)) @ rng.normal(size=(12, 12))
    y = np.maximum(x @ rng.normal(size=(12, 20)), 0.0)
    q = random_orthogonal(12, rng)
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    base = linear_cka(x, y)
    assert 0.1 < base < 0.99  # a non-trivial value, so invariance is not 0 == 0 or 1 == 1
    assert linear_cka(x @ q, y) == pytest.approx(base, rel=1e-10)
    assert linear_cka(7.5 * x, 0.01 * y) == pytest.approx(base, rel=1e-10)
    assert linear_cka(x @ q * 3.0, y) == pytest.approx(base, rel=1e-10)


def test_linear_cka_accepts_conv_maps_and_flattens_them() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(25, 4, 4, 3))  # (examples, height, width, channels): 48 features > 25 examples
    y = rng.normal(size=(25, 6))
    assert linear_cka(x, y) == pytest.approx(reference_cka(x, y), rel=1e-9)


def test_linear_cka_of_independent_features_is_near_zero() -> None:
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(5000, 10)), rng.normal(size=(5000, 10))
    assert linear_cka(x, y) < 0.01  # expected bias is about sqrt(p q) / n = 0.002


def test_linear_cka_rejects_misaligned_examples_and_marks_constant_layers_nan() -> None:
    rng = np.random.default_rng(4)
    with pytest.raises(ValueError, match="same examples. Received: 10 and 11 rows"):
        linear_cka(rng.normal(size=(10, 3)), rng.normal(size=(11, 3)))
    assert np.isnan(linear_cka(np.ones((10, 3)), rng.normal(size=(10, 3))))


def test_cka_matrix_and_across_agree_with_pairwise_cka() -> None:
    rng = np.random.default_rng(5)
    a = rng.normal(size=(50, 6))
    layers = {"dense1": a, "conv": rng.normal(size=(50, 3, 3, 8)), "dense2": np.tanh(a @ rng.normal(size=(6, 4)))}
    m = cka_matrix(layers)
    assert m.names == ("dense1", "conv", "dense2")
    for i, x in enumerate(layers.values()):
        for j, y in enumerate(layers.values()):
            assert m.values[i, j] == pytest.approx(reference_cka(x, y), rel=1e-9)
    runs = cka_matrix({"run_a": a, "run_b": a @ random_orthogonal(6, rng)})
    np.testing.assert_allclose(runs.values, np.ones((2, 2)), atol=1e-12)
    with pytest.raises(ValueError, match="same examples"):
        cka_matrix({"a": a, "b": a[:40]})


def synthetic_layers(n: int, seed: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """`encoded` holds the label linearly (class means differ), `noise` is independent of it."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, size=n)
    means = rng.normal(scale=3.0, size=(3, 16))
    encoded = means[labels] + rng.normal(size=(n, 16))
    # a conv-shaped layer whose per-channel spatial mean encodes the label
    conv = means[labels][:, None, None, :8] + rng.normal(size=(n, 4, 4, 8))
    noise = rng.normal(size=(n, 16))
    return {"encoded": encoded, "conv": conv, "noise": noise}, labels


def test_linear_probe_finds_a_linearly_encoded_label_and_not_noise() -> None:
    layers, labels = synthetic_layers(600, seed=6)
    enc = linear_probe(layers["encoded"], labels, seed=0)
    conv = linear_probe(layers["conv"], labels, seed=0)
    noise = linear_probe(layers["noise"], labels, seed=0)
    assert enc.accuracy > 0.9 and conv.accuracy > 0.9
    assert conv.features == 8  # spatially pooled, not flattened to 4 * 4 * 8
    assert abs(noise.accuracy - noise.chance) < 0.12
    assert enc.chance == pytest.approx(np.bincount(labels).max() / len(labels), abs=0.05)
    assert (enc.train_size, enc.test_size, enc.stratified) == (420, 180, True)
    assert linear_probe(layers["encoded"], labels, seed=0) == enc  # seeded


def test_linear_probe_rejects_regression_targets_and_single_class() -> None:
    x = np.random.default_rng(7).normal(size=(30, 4))
    with pytest.raises(ValueError, match="regression target"):
        linear_probe(x, np.linspace(0, 1, 30), seed=0)
    with pytest.raises(ValueError, match="at least 2 classes"):
        linear_probe(x, np.zeros(30, int), seed=0)


def test_pool_features_mean_and_max_over_positions() -> None:
    x = np.arange(2 * 2 * 3 * 2, dtype=float).reshape(2, 2, 3, 2)  # (examples, h, w, channels)
    np.testing.assert_allclose(pool_features(x, "mean"), x.mean(axis=(1, 2)))
    np.testing.assert_allclose(pool_features(x, "mean_max"), np.hstack([x.mean(axis=(1, 2)), x.max(axis=(1, 2))]))
    with pytest.raises(ValueError, match="pool must be one of"):
        pool_features(x, "flatten")  # type: ignore[arg-type]


def test_analyze_writes_json_and_plots(tmp_path: Path) -> None:
    layers, labels = synthetic_layers(300, seed=8)
    result = analyze({k: (v, labels) for k, v in layers.items()}, seed=0, out_dir=tmp_path)
    assert result.layers == ("encoded", "conv", "noise")
    assert result.linear_acc["encoded"] > 0.9 and result.linear_acc["noise"] < result.chance["noise"] + 0.15
    assert set(result.files) == {"cka.json", "cka.png", "linear_probe.json", "linear_probe.png"}
    saved = json.loads((tmp_path / "analysis" / "cka.json").read_text())
    assert saved["layers"] == list(result.layers)
    assert result.cka is not None
    np.testing.assert_allclose(saved["cka"], result.cka)
    assert result.cka[0, 2] < 0.2 < result.cka[0, 1]  # noise is unlike the encoded layers
    for name in ("cka.png", "linear_probe.png"):
        assert (tmp_path / "analysis" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_analyze_skips_cka_when_layers_sampled_different_examples(tmp_path: Path) -> None:
    layers, labels = synthetic_layers(100, seed=9)
    samples = {k: (v, labels) for k, v in layers.items()}
    keys = {"encoded": np.arange(100.0), "conv": np.arange(100.0), "noise": np.arange(100.0) + 1}
    result = analyze(samples, seed=0, out_dir=tmp_path, keys=keys)
    assert result.cka is None and "different seeds" in result.notes["cka"]
    assert "cka.json" not in result.files and set(result.linear_acc) == set(layers)


def test_a_small_sample_gets_the_advice_that_helps(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """82 examples in the split and a reservoir of 512: raising the reservoir cannot help."""
    layers, labels = synthetic_layers(82, seed=12)
    samples = {k: (v, labels) for k, v in layers.items()}
    with caplog.at_level("WARNING", logger="layerprobe.analysis.analyze"):
        analyze(samples, seed=0, out_dir=tmp_path / "a", reservoir_size=512)
    assert "the 82 examples the probe split holds" in caplog.text and "raise probe.reservoir_size" not in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="layerprobe.analysis.analyze"):
        analyze(samples, seed=0, out_dir=tmp_path / "b", reservoir_size=82)  # a full reservoir: raise it
    assert "raise probe.reservoir_size" in caplog.text


def test_analyze_caps_the_sample(tmp_path: Path) -> None:
    layers, labels = synthetic_layers(500, seed=10)
    result = analyze({k: (v, labels) for k, v in layers.items()}, seed=0, out_dir=tmp_path, max_examples=200)
    assert result.examples == 200 and result.probes["encoded"].train_size + result.probes["encoded"].test_size == 200


def test_report_is_self_contained_html_with_escaped_names(tmp_path: Path) -> None:
    layers, labels = synthetic_layers(200, seed=11)
    layers["<script>x</script>"] = layers.pop("noise")
    result = analyze({k: (v, labels) for k, v in layers.items()}, seed=0, out_dir=tmp_path)
    stats = {n: {"mean": 0.125, "dead_count": 3.0, "dead_fraction": 0.1875, "count": 12800.0} for n in layers}
    plots = {"encoded": [result.files["cka.png"]]}
    path = write_report(tmp_path / "report.html", "run <1> & co", "layer  type\nconv  Conv2D", stats, plots, result)
    text = path.read_text()
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    assert text.count("<h2") == text.count("</h2>") and text.count("<table") == text.count("</table>")
    assert "<script" not in text and "&lt;script&gt;x&lt;/script&gt;" in text
    assert "<title>run &lt;1&gt; &amp; co</title>" in text
    assert "encoded" in text and "conv" in text
    assert len(re.findall(r'src="data:image/png;base64,[A-Za-z0-9+/=]+"', text)) == 3  # probe, CKA, one layer plot
    assert not re.search(r'(src|href)="(?!data:|#)', text)  # nothing external
    assert f"{result.linear_acc['encoded']:.3f}" in text and "0.125" in text and "12,800" in text
    assert "dead units: 3 (18.8%)" in text


@pytest.mark.integration  # starts a process
def test_analysis_imports_neither_tensorflow_nor_mlflow_nor_hydra() -> None:
    code = "import sys, layerprobe.analysis; print([m for m in ('tensorflow', 'mlflow', 'hydra') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
