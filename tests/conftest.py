"""Shared fixtures: tiny images, a tiny backbone setting and an isolated feature cache."""

import numpy as np
import pytest

from robustsdd.data import ImageSet
from robustsdd.features.views import ViewSpec


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    # Never write into the user's real cache from a test.
    monkeypatch.setenv("ROBUSTSDD_CACHE_DIR", str(tmp_path_factory.mktemp("feature-cache")))


@pytest.fixture
def tiny_views():
    return ViewSpec(size=32, scales=(1.0, 0.5), rotations=(0, 90), flips=True)


@pytest.fixture
def tiny_images():
    rng = np.random.default_rng(0)
    items = [rng.integers(0, 256, size=(40, 48), dtype=np.uint8) for _ in range(5)]
    return ImageSet(items, [0, 0, 0, 1, 1], [f"img{i}" for i in range(5)])
