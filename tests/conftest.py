"""Shared fixtures: tiny images, a tiny backbone setting, an isolated feature cache, and
detectors registered for one test only."""

import contextlib

import numpy as np
import pytest

from robustsdd.data import ImageSet
from robustsdd.detectors import registered_detector
from robustsdd.features.views import ViewSpec


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    # Never write into the user's real cache from a test.
    monkeypatch.setenv("ROBUSTSDD_CACHE_DIR", str(tmp_path_factory.mktemp("feature-cache")))


@pytest.fixture
def register_test_detector():
    """``register_test_detector(name, cls)`` registers a test-only detector class until the
    end of the test (then the registry is restored), instead of at import time for the
    whole session. Returns ``cls``. Module-scoped fixtures that must save a model use
    ``with robustsdd.detectors.registered_detector(name, cls):`` themselves."""
    with contextlib.ExitStack() as stack:
        yield lambda name, cls: stack.enter_context(registered_detector(name, cls))


@pytest.fixture
def tiny_views():
    return ViewSpec(size=32, scales=(1.0, 0.5), rotations=(0, 90), flips=True)


@pytest.fixture
def tiny_images():
    rng = np.random.default_rng(0)
    items = [rng.integers(0, 256, size=(40, 48), dtype=np.uint8) for _ in range(5)]
    return ImageSet(items, [0, 0, 0, 1, 1], [f"img{i}" for i in range(5)])


# ---------------------------------------------------------------------------------------------
# An unlabeled folder with planted defects, as an inspector would get it (tests of fit/predict
# and the review report). Nested folders, PNG and JPEG, grayscale/RGB/RGBA, varied sizes, and
# two file names that try to inject HTML into the report.
XSS_SCRIPT_NAME = "<script>window.__pwned=1</script>.png"  # a folder "<script>…<" + "script>.png"
XSS_IMG_NAME = "<img src=x onerror=window.__pwned=2>.png"
PLANT_AT = {3: XSS_SCRIPT_NAME, 17: XSS_IMG_NAME, 25: None, 36: None}


def _texture(rng, h, w):
    from PIL import Image

    small = rng.normal(128, 30, size=(h // 8 + 1, w // 8 + 1)).clip(0, 255).astype(np.uint8)
    smooth = np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC), np.float64)
    return (smooth + rng.normal(0, 4, size=(h, w))).clip(0, 255).astype(np.uint8)


def _scratch(gray, rng):
    from PIL import Image, ImageDraw

    img = Image.fromarray(gray)
    draw = ImageDraw.Draw(img)
    h, w = gray.shape
    for _ in range(3):  # bright scratches across the part
        draw.line(
            [
                (int(rng.integers(0, w // 3)), int(rng.integers(0, h))),
                (int(rng.integers(2 * w // 3, w)), int(rng.integers(0, h))),
            ],
            fill=255,
            width=5,
        )
    return np.asarray(img)


def make_planted_folder(root, n=40):
    """Write ``n`` smooth textures under ``root``, 4 with painted scratches; return the
    planted images' names (paths relative to ``root``)."""
    from pathlib import Path

    from PIL import Image

    rng = np.random.default_rng(0)
    root = Path(root)
    planted = []
    for i in range(n):
        gray = _texture(rng, int(rng.integers(64, 100)), int(rng.integers(64, 100)))
        if i in PLANT_AT:
            gray = _scratch(gray, rng)
        kind = i % 5
        if kind == 0:
            img, ext = Image.fromarray(gray), ".png"  # L
        elif kind == 1:
            img, ext = Image.fromarray(np.dstack([gray] * 3)), ".jpg"  # RGB JPEG
        elif kind == 2:
            img, ext = Image.fromarray(np.dstack([gray] * 3 + [np.full_like(gray, 255)])), ".png"
        else:
            img, ext = (
                Image.fromarray(np.dstack([gray, gray, (gray * 0.9).astype(np.uint8)])),
                ".png",
            )
        sub = ("line_a", "line_b/batch1", "line_b/batch2", "")[i % 4]
        rel = PLANT_AT.get(i) or (f"{sub}/part_{i:02d}{ext}" if sub else f"part_{i:02d}{ext}")
        if PLANT_AT.get(i):
            img = img.convert("RGB") if ext == ".jpg" else img
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        img.save(path, format="JPEG" if path.suffix == ".jpg" else "PNG")
        if i in PLANT_AT:
            planted.append(rel)
    return planted


@pytest.fixture(scope="session")
def planted_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("inspection") / "images"
    return root, make_planted_folder(root)


def read_rows(path):
    """The rows of a CSV file the library wrote (train_scores.csv, predictions, skip lists)."""
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))
