"""PatchCore, kNN, their neighbour search and coreset, patch features, the automatic cut."""

import itertools

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from robustsdd import ConfigError, OneShotRemoval
from robustsdd.cleaning.rules import auto_cut
from robustsdd.data import ImageSet
from robustsdd.detectors import KNNDetector, PatchCore, load_detector
from robustsdd.detectors._neighbours import greedy_coreset, knn_distances
from robustsdd.features import ViewSpec
from robustsdd.features.patches import PatchFeaturizer


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_knn_distances_equal_brute_force(rng):
    q, b = rng.normal(size=(50, 7)), rng.normal(size=(40, 7))
    full = cdist(q, b)
    np.testing.assert_allclose(knn_distances(q, b, 1), full.min(1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(knn_distances(q, b, 3), np.sort(full, 1)[:, :3].mean(1),
                               rtol=1e-5, atol=1e-5)
    own = cdist(b, b) + np.diag(np.full(40, np.inf))
    np.testing.assert_allclose(knn_distances(b, b, 2, exclude_self=True),
                               np.sort(own, 1)[:, :2].mean(1), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError):
        knn_distances(q, b[:2], 3)


def test_greedy_coreset_covers_the_bank(rng):
    x = rng.normal(size=(200, 5))
    chosen, radius = greedy_coreset(x, 20, projection_dim=None, random_state=3)
    assert len(set(chosen.tolist())) == 20
    # The radius it reports is the true coverage radius (brute force) ...
    np.testing.assert_allclose(radius, cdist(x, x[chosen]).min(1).max(), rtol=1e-4)
    # ... which beats a random subset of the same size, and is deterministic.
    random_radius = cdist(x, x[rng.choice(200, 20, replace=False)]).min(1).max()
    assert radius < random_radius
    np.testing.assert_array_equal(greedy_coreset(x, 20, projection_dim=None, random_state=3)[0],
                                  chosen)


def test_greedy_coreset_is_within_twice_the_optimal_radius(rng):
    x = rng.normal(size=(12, 2))
    _, radius = greedy_coreset(x, 3, projection_dim=None)
    d = cdist(x, x)
    optimal = min(d[:, list(c)].min(1).max() for c in itertools.combinations(range(12), 3))
    assert optimal <= radius + 1e-6 <= 2 * optimal + 1e-6


def test_patchcore_scores_are_brute_force_nearest_neighbour_scores(rng):
    X = rng.normal(size=(8, 9, 4))
    det = PatchCore(coreset="none").fit(X)
    T = rng.normal(size=(5, 9, 4)) * 2
    bank = X.reshape(-1, 4)
    raw = np.array([cdist(img, bank).min(1).max() for img in T])
    np.testing.assert_allclose(det.decision_function(T), raw, rtol=1e-5)
    np.testing.assert_allclose(det.patch_scores(T), np.stack([cdist(i, bank).min(1) for i in T]),
                               rtol=1e-4, atol=1e-5)


def test_patchcore_coreset_bank_size_maps_and_save_load(tmp_path, rng):
    X = rng.normal(size=(10, 16, 6))
    det = PatchCore(coreset="greedy", coreset_ratio=0.25, grid=(4, 4), random_state=1).fit(X)
    assert det.bank_.shape == (40, 6)
    maps = det.anomaly_maps(X[:2], size=(32, 32))
    assert maps.shape == (2, 32, 32)
    det.save(tmp_path / "m")
    again = load_detector(tmp_path / "m")
    np.testing.assert_array_equal(again.decision_function(X), det.decision_function(X))
    assert tuple(again.grid) == (4, 4)
    with pytest.raises(ConfigError, match="coreset"):
        PatchCore(coreset="kmeans").fit(X)
    assert PatchCore(coreset="none").fit(X).grid_ == (4, 4)  # 16 patches: inferred
    with pytest.raises(ConfigError, match="grid"):
        PatchCore(coreset="none").fit(X[:, :15]).anomaly_maps(X[:, :15])


def test_knn_detector_matches_hand_computation_and_flags_outliers(rng, tmp_path):
    X = rng.normal(size=(30, 2, 5))
    det = KNNDetector(k=2).fit(X)
    bank = X.reshape(-1, 5)
    own = cdist(bank, bank) + np.diag(np.full(60, np.inf))
    scale = np.median(np.sort(own, 1)[:, :2].mean(1))
    T = rng.normal(size=(4, 2, 5)) + 3
    expected = np.sort(cdist(T.reshape(-1, 5), bank), 1)[:, :2].mean(1).reshape(4, 2).mean(1)
    np.testing.assert_allclose(det.decision_function(T), expected / scale, rtol=1e-5)
    det.save(tmp_path / "knn")
    np.testing.assert_array_equal(load_detector(tmp_path / "knn").decision_function(T),
                                  det.decision_function(T))


def test_auto_cut_by_hand():
    # Positive scores: on their logarithm. e^0, e^1, e^2, e^3, e^10 -> logs 0,1,2,3,10:
    # median 2, |log - 2| = 2,1,0,1,8 -> MAD 1; cut = e^(2 + 2 * 1.4826).
    s = np.exp([0.0, 1.0, 2.0, 3.0, 10.0])
    assert auto_cut(s, z=2) == pytest.approx(np.exp(2 + 2 * 1.482602218505602))
    # Any score <= 0: on the scores. median 1, |s - 1| = 1,0,0,1,9 -> MAD 1.
    assert auto_cut([0.0, 1.0, 1.0, 2.0, 10.0], z=1) == pytest.approx(1 + 1.482602218505602)
    # |s - 1| = 1,0,0,0,9 -> MAD 0 -> the mean absolute deviation, 2, stands in.
    assert auto_cut([0.0, 1.0, 1.0, 1.0, 10.0], z=1) == pytest.approx(1 + 2.0)
    assert auto_cut([5.0, 5.0, 5.0]) == pytest.approx(5.0)  # no spread: nothing is above
    with pytest.raises(ConfigError):
        auto_cut(s, z=0)


def test_auto_rule_drops_planted_outliers_exactly_and_reports_contamination(rng):
    from robustsdd import GaussianDetector

    X = rng.normal(size=(60, 2, 4))
    # 6 planted outliers, each off in its own direction (a tight cluster of defects
    # would be a second mode, which a single Gaussian partly absorbs: not an easy case).
    directions = np.concatenate([np.eye(4), -np.eye(4)])[:6]
    X[:6] += 10 * directions[:, None, :]
    osr = OneShotRemoval(GaussianDetector(), rule="auto", scoring="out_of_fold",
                         random_state=0).fit(X)
    assert sorted(osr.removed_indices_.tolist()) == list(range(6))
    assert osr.estimated_contamination_ == pytest.approx(0.1)
    assert osr.cut_ == pytest.approx(auto_cut(osr.removal_scores_, 3.0))
    assert any("estimated contamination 10.0%" in n for n in osr.notes_)
    again = OneShotRemoval(GaussianDetector(), rule="auto", scoring="out_of_fold",
                           random_state=0).fit(X)
    np.testing.assert_array_equal(again.keep_mask_, osr.keep_mask_)


def test_auto_rule_keeps_the_guard(rng):
    from robustsdd import GaussianDetector

    X = rng.normal(size=(20, 2, 3))
    X[:14] += 6  # most images are "outliers": the cut would drop the normal minority
    osr = OneShotRemoval(GaussianDetector(), rule="auto", z=0.1, min_keep=0.5,
                         scoring="out_of_fold").fit(X)
    assert osr.keep_mask_.sum() >= 10


def test_patch_featurizer_shapes_grid_and_engines_agree():
    imgs = ImageSet([np.full((70, 60), v, np.uint8) for v in (0, 128, 255)], [0, 0, 0],
                    ["a", "b", "c"])
    views = ViewSpec(size=64, scales=(1,), rotations=(0, 180), flips=False)
    fast = PatchFeaturizer(weights=None, views=views, cache_dir=False, progress=False)
    slow = PatchFeaturizer(weights=None, views=views, cache_dir=False, progress=False,
                           engine="torch")
    assert fast.patch_grid == (8, 8)
    a, b = fast.transform(imgs), slow.transform(imgs)
    assert a.shape == (3, 2 * 64, 40 + 112)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * max(1, np.abs(b).max()))
    assert fast.config_key != PatchFeaturizer(weights=None, views=views, cache_dir=False,
                                              pool=1).config_key
    with pytest.raises(ConfigError, match="one input scale"):
        PatchFeaturizer(weights=None, views=ViewSpec(size=64), cache_dir=False)
