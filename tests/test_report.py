"""report.html in a real headless browser, and heat-maps from a detector that localises."""

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from conftest import XSS_IMG_NAME, XSS_SCRIPT_NAME, read_rows
from robustsdd import ConfigError, Featurizer, GaussianDetector, Model, ViewSpec, fit_folder
from robustsdd.cli import main
from robustsdd.detectors import registered_detector
from robustsdd.detectors.base import check_features

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TINY = dict(
    weights=None,
    views=ViewSpec(size=64, scales=(1,), rotations=(0, 180)),
    cache_dir=False,
    progress=False,
    engine="torch",
)


LOCALIZING = "_localizing_for_tests"  # registered only while a test (or fixture) needs it


class LocalizingGaussian(GaussianDetector):
    """A stand-in for a detector that localises: the Gaussian score painted on a patch."""

    def anomaly_maps(self, X):
        X = check_features(X, n_features=self.n_features_)
        maps = np.zeros((len(X), 8, 8))
        maps[:, 2:5, 3:6] = self.decision_function(X)[:, None, None]
        return maps


@pytest.fixture(scope="module")
def model_dir(planted_folder, tmp_path_factory):
    root, _ = planted_folder
    out = tmp_path_factory.mktemp("report") / "model"
    fit_folder(
        root, out, detector="gaussian", featurizer=Featurizer(**TINY), rule="fraction", fraction=0.1
    )
    return out


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip(
            f"{CHROMIUM} is absent: install Debian's chromium (apt-get install chromium "
            "chromium-driver; .ci/run does) to open the report in a real browser"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


def open_report(browser, path):
    page = browser.new_page()
    requests = []
    page.on("request", lambda r: requests.append(r.url))
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(Path(path).as_uri(), wait_until="load")
    return page, requests, errors


@pytest.mark.slow
def test_report_renders_offline_with_every_image_and_the_csv_counts(browser, model_dir):
    rows = read_rows(model_dir / "train_scores.csv")
    removed = sorted((r for r in rows if r["kept"] == "0"), key=lambda r: -float(r["removal"]))
    page, requests, errors = open_report(browser, model_dir / "report.html")
    try:
        assert page.title().startswith("robustsdd review")
        images = page.evaluate("Array.from(document.images).map(i => [i.complete, i.naturalWidth])")
        # two histograms (removal scores, out-of-fold scores), removed, closest to the cut
        assert len(images) == 2 + len(removed) + 12
        assert all(done and width > 0 for done, width in images)
        assert page.inner_text("#n-images") == str(len(rows)) == "40"
        assert page.inner_text("#n-removed") == str(len(removed)) == "4"
        assert page.inner_text("#n-kept") == "36"
        info = json.loads((model_dir / "robustsdd.json").read_text())
        # The estimate read off the out-of-fold removal scores, with its interval.
        estimate = info["training"]["contamination_estimate"]
        assert float(page.inner_text("#contamination")) == pytest.approx(
            100 * estimate["share"], abs=0.05
        )
        low, high = page.inner_text("#contamination-interval").split("–")
        assert float(low) == pytest.approx(100 * estimate["low"], abs=0.05)
        assert float(high) == pytest.approx(100 * estimate["high"], abs=0.05)
        assert estimate["low"] <= estimate["share"] <= estimate["high"]
        threshold = info["decision"]["threshold"]
        assert float(page.inner_text("#decision-threshold")) == pytest.approx(threshold, rel=1e-5)
        shown = page.eval_on_selector_all("#removed .name", "els => els.map(e => e.textContent)")
        assert shown == [r["name"] for r in removed]  # highest score first
        assert page.locator("#near figure").count() == 12
        # nothing from outside: only the page itself was requested, every picture is inline
        assert requests == [Path(model_dir / "report.html").as_uri()]
        assert not errors
    finally:
        page.close()


@pytest.mark.slow
def test_file_names_cannot_inject_script_or_markup(browser, model_dir):
    html = (model_dir / "report.html").read_text()
    assert "<script" not in html and "onerror=window" not in html.replace(
        "onerror=window.__pwned=2&gt;", ""
    )
    page, _, _ = open_report(browser, model_dir / "report.html")
    try:
        assert page.evaluate("typeof window.__pwned") == "undefined"
        assert page.evaluate("document.querySelectorAll('script').length") == 0
        assert page.evaluate("document.querySelectorAll('[onerror]').length") == 0
        names = page.eval_on_selector_all(".name", "els => els.map(e => e.textContent)")
        assert XSS_SCRIPT_NAME in names and XSS_IMG_NAME in names  # shown, as text
        assert all(
            src.startswith("data:image/")
            for src in page.eval_on_selector_all(
                "img", "els => els.map(e => e.getAttribute('src'))"
            )
        )
    finally:
        page.close()


def test_report_escapes_names_without_a_browser(model_dir):
    html = (model_dir / "report.html").read_text()
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;.png" in html
    assert "&lt;img src=x onerror=window.__pwned=2&gt;.png" in html
    assert "Content-Security-Policy" in html
    assert not re.search(r"""(src|href)=["']?(https?:|//|file:)""", html)


# ---------------------------------------------------------------------------------------------
# detectors that localise: overlays in the report, heat-map PNGs from predict
@pytest.fixture(scope="module")
def localizing_model(planted_folder, tmp_path_factory):
    root, _ = planted_folder
    out = tmp_path_factory.mktemp("localizing") / "model"
    with registered_detector(LOCALIZING, LocalizingGaussian):
        fit_folder(
            root,
            out,
            detector=LocalizingGaussian(),
            featurizer=Featurizer(**TINY),
            rule="fraction",
            fraction=0.1,
        )
    return out


@pytest.fixture
def localizing_registered(register_test_detector):
    """Loading the localizing model needs its detector registered (for this test only)."""
    return register_test_detector(LOCALIZING, LocalizingGaussian)


def test_report_shows_heat_maps_when_the_detector_localises(localizing_model, model_dir):
    config = json.loads((localizing_model / "robustsdd.json").read_text())
    assert config["detector"] == {"name": LOCALIZING, "localizes": True}
    html = (localizing_model / "report.html").read_text()
    assert html.count('class="heat"') == 4 + 12  # one per card
    assert 'class="heat"' not in (model_dir / "report.html").read_text()


@pytest.mark.slow
def test_heat_maps_render_in_the_browser(browser, localizing_model):
    page, _, _ = open_report(browser, localizing_model / "report.html")
    try:
        widths = page.eval_on_selector_all("img.heat", "els => els.map(e => e.naturalWidth)")
        assert len(widths) == 16 and all(w > 0 for w in widths)
    finally:
        page.close()


@pytest.mark.usefixtures("localizing_registered")
def test_predict_writes_heat_maps(localizing_model, planted_folder, tmp_path):
    root, _ = planted_folder
    model = Model.load(localizing_model, cache_dir=False)
    assert model.localizes
    files = [root / "part_19.png", root / "line_a" / "part_00.png"]
    result = model.predict(files, heatmap_dir=tmp_path / "maps")
    assert [Path(p).name for p in result.heatmaps] == ["00000_part_19.png", "00001_part_00.png"]
    from PIL import Image

    for p, f in zip(result.heatmaps, files):
        with Image.open(p) as img, Image.open(f) as source:
            assert img.format == "PNG" and img.size == source.size  # the whole image
    maps = model.anomaly_maps(files)
    with Image.open(files[0]) as source:
        assert maps[0].shape == (source.height, source.width)
    with pytest.raises(ConfigError, match="inside the input folder"):
        model.predict([root], heatmap_dir=root / "maps")
    assert not (root / "maps").exists()

    out = tmp_path / "r.csv"
    assert (
        main(
            [
                "predict",
                str(localizing_model),
                str(files[0]),
                "--out",
                str(out),
                "--heatmaps",
                str(tmp_path / "cli_maps"),
                "--no-cache",
                "--quiet",
            ]
        )
        == 0
    )
    (row,) = read_rows(out)
    assert Path(row["heatmap"]).is_file() and Path(row["heatmap"]).parent == tmp_path / "cli_maps"


def test_heat_maps_need_a_detector_that_localises(model_dir, planted_folder, tmp_path, capsys):
    root, _ = planted_folder
    model = Model.load(model_dir, cache_dir=False)
    with pytest.raises(ConfigError, match="does not localise"):
        model.anomaly_maps([root / "part_19.png"])
    assert (
        main(
            [
                "predict",
                str(model_dir),
                str(root),
                "--heatmaps",
                str(tmp_path / "m"),
                "--no-cache",
                "--quiet",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "does not localise" in err and "Traceback" not in err
    assert not (tmp_path / "m").exists()


def test_the_localizing_model_needs_its_detector_registered_to_load(localizing_model):
    from robustsdd import ModelFileError, detector_names

    assert LOCALIZING not in detector_names()  # registered only inside the tests that load it
    with pytest.raises(ModelFileError, match=f"unknown detector '{LOCALIZING}'"):
        Model.load(localizing_model, cache_dir=False)
