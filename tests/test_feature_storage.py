"""Features of many images without holding them all in memory: memory-mapped output above a
size, block-wise checks and scoring, and no whole copies of views."""

import hashlib

import numpy as np
import pytest

from robustsdd import PatchCore
from robustsdd._errors import DataError
from robustsdd._hashing import array_digest
from robustsdd.data import ImageSet
from robustsdd.detectors.base import check_features
from robustsdd.detectors.ensemble import EnsembleDetector, pooled_vectors
from robustsdd.features import Featurizer, ViewSpec, storage
from robustsdd.features.patches import PatchFeaturizer


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of about two images of the arrays below, so every block path is crossed."""
    monkeypatch.setattr(storage, "_BLOCK_BYTES", 2 * 12 * 6 * 4)


def _patches(n=9, p=12, c=6, seed=0):
    return np.random.default_rng(seed).normal(size=(n, p, c)).astype(np.float32)


def test_arrays_above_the_limit_are_memory_mapped(monkeypatch):
    monkeypatch.setenv("ROBUSTSDD_FEATURES_IN_MEMORY_MB", "1")
    small = storage.empty_features((10, 256, 100))  # 1,024,000 bytes: below 1 MiB
    big = storage.empty_features((11, 256, 100))  # 1,126,400 bytes: above
    assert not isinstance(small, np.memmap) and isinstance(big, np.memmap)
    big[:] = 2.5
    assert big.dtype == np.float32 and float(big.sum()) == 2.5 * big.size
    monkeypatch.setenv("ROBUSTSDD_FEATURES_IN_MEMORY_MB", "lots")
    with pytest.raises(ValueError, match="ROBUSTSDD_FEATURES_IN_MEMORY_MB.*'lots'"):
        storage.empty_features((2, 2))
    monkeypatch.setenv("ROBUSTSDD_FEATURES_IN_MEMORY_MB", "-1")
    with pytest.raises(ValueError, match=">= 0"):
        storage.in_memory_limit()


def test_no_room_for_the_features_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("ROBUSTSDD_FEATURES_IN_MEMORY_MB", "0")

    def full(fd, offset, length):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(storage.os, "posix_fallocate", full, raising=False)
    with pytest.raises(OSError, match=r"no room for .* GiB of features in .*TMPDIR"):
        storage.empty_features((4, 3))


def test_image_blocks_cover_every_image_once():
    X = np.zeros((10, 3, 4), np.float32)  # 48 bytes per image
    blocks = list(storage.image_blocks(X, block_bytes=100))  # 2 images per block
    assert [(b.start, b.stop) for b in blocks] == [(0, 2), (2, 4), (4, 6), (6, 8), (8, 10)]
    assert [(b.start, b.stop) for b in storage.image_blocks(X, block_bytes=1)][-1] == (9, 10)


@pytest.mark.parametrize("cls", [Featurizer, PatchFeaturizer])
def test_memory_mapped_features_equal_in_memory_ones(cls, tmp_path, monkeypatch):
    views = ViewSpec(size=32, scales=(1,), rotations=(0,), flips=False)
    rng = np.random.default_rng(0)
    # Mixed shapes: the patch features of the square image are padded with NaN rows.
    images = ImageSet(
        [rng.integers(0, 256, size=s, dtype=np.uint8) for s in [(32, 32), (32, 96), (40, 48)]],
        [0, 0, 0],
        ["a", "b", "c"],
    )

    def make():
        return cls(weights=None, views=views, cache_dir=tmp_path, progress=False, engine="torch")

    in_memory = make().transform(images)
    monkeypatch.setenv("ROBUSTSDD_FEATURES_IN_MEMORY_MB", "0")
    cold = make()  # a fresh cache folder would compute; this one reads what the first wrote
    mapped = cold.transform(images)
    assert isinstance(mapped, np.memmap) and not isinstance(in_memory, np.memmap)
    assert cold.n_computed == 0 and cold.cache.hits == 3
    np.testing.assert_array_equal(mapped, in_memory)  # NaN padding included
    computed = cls(weights=None, views=views, cache_dir=False, progress=False, engine="torch")
    np.testing.assert_array_equal(computed.transform(images), in_memory)
    assert computed.n_computed == 3


def test_check_features_does_not_copy_a_float32_view_when_asked():
    X = _patches()
    view = X[:, :, :4]
    kept = check_features(view, contiguous=False)
    assert np.shares_memory(kept, X) and kept.shape == (9, 12, 4)
    assert not np.shares_memory(check_features(view), X)  # the default: contiguous copy
    flipped = check_features(X[::-1], contiguous=False)  # negative strides: copied
    assert not np.shares_memory(flipped, X) and all(s > 0 for s in flipped.strides)


def test_check_features_finds_a_bad_value_in_a_late_block(small_blocks):
    X = _patches()
    X[8, 3, 2] = np.nan  # the last image, part of a row: not padding
    with pytest.raises(DataError, match="not whole padding rows"):
        check_features(X, padded=True)
    X[8, 3] = np.nan  # now a whole padding row
    check_features(X, padded=True)
    X[7] = np.nan
    with pytest.raises(DataError, match="all padding"):
        check_features(X, padded=True)


def test_pooled_vectors_in_blocks_match_the_mean_of_finite_rows(small_blocks):
    X = _patches()
    X[4, 10:] = np.nan  # padding rows are left out of the mean
    pooled = pooled_vectors(X)
    assert pooled.shape == (9, 1, 6)
    np.testing.assert_allclose(pooled[4, 0], X[4, :10].mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(pooled[0, 0], X[0].mean(axis=0), rtol=1e-6)


def test_patchcore_on_a_view_and_in_blocks_equals_the_copied_input(small_blocks):
    X = _patches(n=9, p=12, c=6)
    X[2, 9:] = np.nan
    view = X[:, :, :4]  # the ensemble's patch member reads the leading columns like this
    copied = np.ascontiguousarray(view)
    a = PatchCore(coreset_ratio=0.2, projection_dim=None).fit(view)
    b = PatchCore(coreset_ratio=0.2, projection_dim=None).fit(copied)
    np.testing.assert_array_equal(a.bank_indices_, b.bank_indices_)
    np.testing.assert_array_equal(a.bank_, copied.reshape(-1, 4)[a.bank_indices_])
    scores = a.patch_scores(view)
    # By hand: each patch's distance to its nearest bank patch, padding NaN.
    flat = copied.reshape(-1, 4).astype(np.float64)
    dist = np.sqrt(((flat[:, None] - a.bank_[None].astype(np.float64)) ** 2).sum(-1)).min(1)
    expected = dist.reshape(9, 12)
    expected[2, 9:] = np.nan
    # atol: a bank patch's distance to itself is |q|² − 2 q·b + |b|² in float32, ~1e-3 off 0.
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=2e-3)


def test_ensemble_fits_memory_mapped_features_as_in_memory_ones(monkeypatch):
    X = _patches(n=20, p=16, c=6, seed=1)
    monkeypatch.setattr(storage, "in_memory_limit", lambda: 0)
    mapped = storage.empty_features(X.shape)
    mapped[:] = X
    assert isinstance(mapped, np.memmap)
    params = dict(patch_channels=4, member_params={"knn": {"k": 2}})
    a = EnsembleDetector(**params).fit(X)
    b = EnsembleDetector(**params).fit(mapped)
    np.testing.assert_allclose(a.out_of_fold_scores_, b.out_of_fold_scores_, rtol=1e-6)
    np.testing.assert_allclose(a.decision_function(X), b.decision_function(mapped), rtol=1e-6)


def test_array_digest_hashes_the_bytes_in_place():
    X = _patches(n=3)
    by_hand = hashlib.sha256()
    by_hand.update(repr(("float32", (3, 12, 6))).encode())
    by_hand.update(X.tobytes())
    assert array_digest(X) == by_hand.hexdigest()
    assert array_digest(X[:, :, :3]) == array_digest(np.ascontiguousarray(X[:, :, :3]))
