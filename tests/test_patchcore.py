"""PatchCore, kNN, their neighbour search and coreset, patch features, the automatic cut."""

import itertools

import numpy as np
import pytest
from scipy.spatial.distance import cdist
from sklearn.model_selection import KFold

from robustsdd import ConfigError, DataError, OneShotRemoval
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
    np.testing.assert_allclose(
        knn_distances(q, b, 3), np.sort(full, 1)[:, :3].mean(1), rtol=1e-5, atol=1e-5
    )
    own = cdist(b, b) + np.diag(np.full(40, np.inf))
    np.testing.assert_allclose(
        knn_distances(b, b, 2, exclude_self=True),
        np.sort(own, 1)[:, :2].mean(1),
        rtol=1e-5,
        atol=1e-5,
    )
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
    np.testing.assert_array_equal(
        greedy_coreset(x, 20, projection_dim=None, random_state=3)[0], chosen
    )


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
    np.testing.assert_allclose(
        det.patch_scores(T), np.stack([cdist(i, bank).min(1) for i in T]), rtol=1e-4, atol=1e-5
    )


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


def test_neighbour_search_is_exact_across_chunk_boundaries(rng, monkeypatch):
    import robustsdd.detectors._neighbours as neighbours

    monkeypatch.setattr(neighbours, "_BLOCK", 1)  # 256-row chunks: 600 rows make 3
    b = rng.normal(size=(600, 5))
    b[7] = b[300]  # an exact duplicate across two chunks: its distance is 0
    own = cdist(b, b) + np.diag(np.full(600, np.inf))
    np.testing.assert_allclose(
        neighbours.knn_distances(b, b, 1, exclude_self=True), own.min(1), rtol=1e-5, atol=1e-4
    )
    assert neighbours.knn_distances(b, b, 1, exclude_self=True)[[7, 300]].max() < 1e-3
    q = rng.normal(size=(700, 5))
    d, i = neighbours.knn_search(q, b, 3)
    full = cdist(q, b)
    np.testing.assert_array_equal(i, np.argsort(full, 1)[:, :3])
    np.testing.assert_allclose(d, np.sort(full, 1)[:, :3], rtol=1e-5, atol=1e-4)


def test_bank_and_selection_bounds(rng):
    X = rng.normal(size=(40, 16, 6)).astype(np.float32)  # 640 patches
    patches = X.reshape(-1, 6)
    # Below both bounds: exactly the greedy coreset of every patch, as before the bounds.
    det = PatchCore(coreset_ratio=0.05, max_bank=100, max_candidates=640, random_state=2)
    det.fit(X)
    chosen, radius = greedy_coreset(patches, 32, projection_dim=128, random_state=2)
    np.testing.assert_array_equal(det.bank_indices_, chosen)
    assert det.coverage_radius_ == pytest.approx(radius)
    # max_bank caps the bank (greedy and random coresets); "none" keeps every patch.
    assert PatchCore(coreset_ratio=0.5, max_bank=20).fit(X).bank_.shape == (20, 6)
    assert PatchCore(coreset="random", coreset_ratio=0.5, max_bank=20).fit(X).bank_.shape[0] == 20
    assert PatchCore(coreset="none", max_bank=20).fit(X).bank_.shape[0] == 640
    # max_candidates: the selection looks at a seeded subset of 100 patches only, so
    # every bank patch comes from it and the radius is the subset's (by hand: the
    # greedy coreset of those 100 rows).
    det = PatchCore(coreset_ratio=0.05, max_candidates=100, random_state=4).fit(X)
    pool = det._selection_pool(640)
    assert len(pool) == 100 and len(set(pool.tolist())) == 100
    local, radius = greedy_coreset(patches[pool], 32, projection_dim=128, random_state=4)
    np.testing.assert_array_equal(det.bank_indices_, pool[local])
    assert det.coverage_radius_ == pytest.approx(radius)
    np.testing.assert_array_equal(det.bank_, patches[pool[local]])
    again = PatchCore(coreset_ratio=0.05, max_candidates=100, random_state=4).fit(X)
    np.testing.assert_array_equal(again.bank_indices_, det.bank_indices_)
    for bad in (0, -1, 2.5, "10"):
        with pytest.raises(ConfigError, match="max_bank"):
            PatchCore(max_bank=bad).fit(X)
        with pytest.raises(ConfigError, match="max_candidates"):
            PatchCore(max_candidates=bad).fit(X)


def _greedy_by_hand(points, start, size):
    """Farthest-point steps from the centres ``start`` (indices into ``points``), float64."""
    chosen = list(start)
    for _ in range(size):
        nearest = cdist(points, points[chosen]).min(axis=1)
        chosen.append(int(np.argmax(nearest)))
    return chosen[len(start) :]


def test_greedy_selection_goes_on_from_initial_centres(rng):
    X = rng.normal(size=(300, 5)).astype(np.float32)
    plain, radius = greedy_coreset(X, 40, projection_dim=None, random_state=3)
    # Going on from its own first 15 centres, the selection is the rest of the plain one.
    rest, rest_radius = greedy_coreset(X, 25, projection_dim=None, initial=X[plain[:15]])
    np.testing.assert_array_equal(rest, plain[15:])
    assert rest_radius == pytest.approx(radius, rel=1e-5)
    # From centres that are not among the vectors: by hand, farthest point first.
    outside = rng.normal(size=(4, 5)).astype(np.float32) * 3
    steps, _ = greedy_coreset(X, 10, projection_dim=None, initial=outside)
    points = np.concatenate([X, outside]).astype(np.float64)
    np.testing.assert_array_equal(steps, _greedy_by_hand(points, range(300, 304), 10))
    none, _ = greedy_coreset(X, 0, projection_dim=None, initial=outside)  # nothing to add
    assert none.shape == (0,)


def test_subset_model_keeps_its_images_bank_patches_and_tops_up_greedily(rng):
    n, p, c = 12, 10, 4
    X = rng.normal(size=(n, p, c)).astype(np.float32)
    X[[0, 1]] *= 6  # two spread-out images: the full model's first centres are theirs
    full = PatchCore(coreset_ratio=0.3, projection_dim=None, random_state=1).fit(X)
    images = np.arange(2, n)
    sub = full.subset_model(X, images)
    ref = PatchCore(coreset_ratio=0.3, projection_dim=None, random_state=1).fit(X[images])
    assert len(sub.bank_) == len(ref.bank_) == 30  # the size a fit on the subset keeps
    rows = X[images].reshape(-1, c)
    np.testing.assert_array_equal(sub.bank_, rows[sub.bank_indices_])
    # Its seeds: the full bank's patches of these images, in their order of selection, less
    # as many as images 0 and 1 held (those steps are chosen again).
    own = full.bank_indices_[full.bank_indices_ // p >= 2] - 2 * p
    dropped = int((full.bank_indices_ // p < 2).sum())
    seeds = own[: len(sub.bank_) - dropped]
    np.testing.assert_array_equal(sub.bank_indices_[: len(seeds)], seeds)
    # The top-up: farthest-point steps from the seeds, by hand.
    added = _greedy_by_hand(rows.astype(np.float64), list(seeds), len(sub.bank_) - len(seeds))
    np.testing.assert_array_equal(sub.bank_indices_[len(seeds) :], added)
    assert dropped > 0 and len(seeds) < len(sub.bank_)  # the case above did refill and top up
    # Without a greedy coreset, it is a fresh fit on the subset.
    rand = PatchCore(coreset="random", coreset_ratio=0.1).fit(X)
    np.testing.assert_array_equal(
        rand.subset_model(X, images).bank_,
        PatchCore(coreset="random", coreset_ratio=0.1).fit(X[images]).bank_,
    )
    # Every image: the full model's own bank again.
    np.testing.assert_array_equal(full.subset_model(X, np.arange(n)).bank_, full.bank_)


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
    np.testing.assert_array_equal(
        load_detector(tmp_path / "knn").decision_function(T), det.decision_function(T)
    )


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
    osr = OneShotRemoval(
        GaussianDetector(), rule="auto", scoring="out_of_fold", random_state=0
    ).fit(X)
    assert sorted(osr.removed_indices_.tolist()) == list(range(6))
    assert osr.estimated_contamination_ == pytest.approx(0.1)
    assert osr.cut_ == pytest.approx(auto_cut(osr.removal_scores_, 3.0))
    assert any("estimated contamination 10.0%" in n for n in osr.notes_)
    again = OneShotRemoval(
        GaussianDetector(), rule="auto", scoring="out_of_fold", random_state=0
    ).fit(X)
    np.testing.assert_array_equal(again.keep_mask_, osr.keep_mask_)


def test_auto_rule_keeps_the_guard(rng):
    from robustsdd import GaussianDetector

    X = rng.normal(size=(20, 2, 3))
    X[:14] += 6  # most images are "outliers": the cut would drop the normal minority
    osr = OneShotRemoval(
        GaussianDetector(), rule="auto", z=0.1, min_keep=0.5, scoring="out_of_fold"
    ).fit(X)
    assert osr.keep_mask_.sum() >= 10


def test_patch_featurizer_shapes_grid_and_engines_agree():
    imgs = ImageSet(
        [np.full((70, 60), v, np.uint8) for v in (0, 128, 255)], [0, 0, 0], ["a", "b", "c"]
    )
    views = ViewSpec(size=64, scales=(1,), rotations=(0, 180), flips=False)
    fast = PatchFeaturizer(weights=None, views=views, cache_dir=False, progress=False)
    slow = PatchFeaturizer(
        weights=None, views=views, cache_dir=False, progress=False, engine="torch"
    )
    assert fast.patch_grid == (8, 8)
    a, b = fast.transform(imgs), slow.transform(imgs)
    assert a.shape == (3, 2 * 64, 40 + 112)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * max(1, np.abs(b).max()))
    assert (
        fast.config_key
        != PatchFeaturizer(weights=None, views=views, cache_dir=False, pool=1).config_key
    )
    with pytest.raises(ConfigError, match="one input scale"):
        PatchFeaturizer(weights=None, views=ViewSpec(size=64), cache_dir=False)


# -- SoftPatch-style patch-level denoising -------------------------------------------------
def _planted_patches(rng, n=40, grid=(4, 4), views=1, c=8, per_position=1):
    """Aligned normal patches (a mean per position, small noise) and, at every grid
    position, ``per_position`` planted outlying patches in a few training images."""
    hw = grid[0] * grid[1]
    means = rng.normal(size=(hw, c)) * 3
    X = means[None, None] + 0.3 * rng.normal(size=(n, views, hw, c))
    planted = np.zeros((n, views, hw), dtype=bool)
    for p in range(hw):
        for j in range(per_position):
            image, view = (p + 5 * j) % 5 + 5 * j, j % views  # 5 images per round
            offset = np.zeros(c)
            offset[p % c] = 8 if p % 2 else -8  # each plant off in its own direction
            X[image, view, p] += offset
            planted[image, view, p] = True
    return X.reshape(n, views * hw, c), planted.reshape(n, views * hw)


def test_denoise_hard_drops_exactly_the_planted_patches(rng):
    X, planted = _planted_patches(rng)
    assert planted.any(1).sum() == 5 and planted.sum() == 16  # 5 images, one plant per position
    det = PatchCore(
        coreset="none", grid=(4, 4), denoise="hard", denoise_fraction=1 / 40, denoise_k=5
    ).fit(X)
    np.testing.assert_array_equal(det.denoise_kept_, ~planted)
    np.testing.assert_array_equal(det.bank_indices_, np.flatnonzero(~planted.reshape(-1)))
    np.testing.assert_array_equal(
        det.bank_, X.reshape(-1, 8)[~planted.reshape(-1)].astype(np.float32)
    )
    assert det.bank_weights_ is None
    # The planted patches are the highest-scoring of their position by far.
    scores = det.denoise_scores_
    assert scores[planted].min() > 3 * scores[~planted].max()
    # Several views: a position's group holds every image's patch at it in every view.
    X2, planted2 = _planted_patches(np.random.default_rng(1), views=2, per_position=2)
    det2 = PatchCore(
        coreset="none", grid=(4, 4), denoise="hard", denoise_fraction=2 / 80, denoise_k=5
    ).fit(X2)
    np.testing.assert_array_equal(det2.denoise_kept_, ~planted2)


def test_denoise_hard_raises_the_score_of_a_planted_anomaly(rng):
    X, planted = _planted_patches(rng)
    image, p = np.argwhere(planted)[3]
    test = X[[image + 10]].copy()  # a clean image ...
    test[0, p] = X[image, p]  # ... carrying the planted anomaly at the same position
    plain = PatchCore(coreset="none", grid=(4, 4)).fit(X)
    hard = PatchCore(
        coreset="none", grid=(4, 4), denoise="hard", denoise_fraction=1 / 40, denoise_k=5
    ).fit(X)
    assert plain.patch_scores(test)[0, p] == pytest.approx(0, abs=1e-3)  # it is in the bank
    assert hard.patch_scores(test)[0, p] > 5
    assert hard.decision_function(test)[0] > 3 * plain.decision_function(test)[0]
    # On clean test images the two agree closely (only 1 of 40 patches per position is gone).
    clean = X[~planted.any(1)][:5] + 0.05
    np.testing.assert_allclose(
        hard.decision_function(clean), plain.decision_function(clean), rtol=0.5
    )


def test_denoise_is_deterministic_for_a_seed_and_the_bank_size_is_kept(rng):
    X, _ = _planted_patches(rng)
    make = lambda seed: PatchCore(
        coreset="random",
        coreset_ratio=0.25,
        grid=(4, 4),  # noqa: E731
        denoise="soft",
        random_state=seed,
    ).fit(X)
    a, b, c = make(3), make(3), make(4)
    np.testing.assert_array_equal(a.bank_, b.bank_)
    np.testing.assert_array_equal(a.bank_weights_, b.bank_weights_)
    np.testing.assert_array_equal(a.denoise_kept_, b.denoise_kept_)
    assert not np.array_equal(a.bank_indices_, c.bank_indices_)
    plain = PatchCore(coreset="random", coreset_ratio=0.25, grid=(4, 4), random_state=3).fit(X)
    assert a.bank_.shape == plain.bank_.shape == (160, 8)  # 25 % of all 640 patches
    assert a.denoise_kept_[np.unravel_index(a.bank_indices_, X.shape[:2])].all()
    # denoise=None is plain PatchCore, bank for bank.
    again = PatchCore(
        coreset="random", coreset_ratio=0.25, grid=(4, 4), random_state=3, denoise=None
    ).fit(X)
    np.testing.assert_array_equal(again.bank_, plain.bank_)
    assert again.denoise_kept_ is None and again.bank_weights_ is None


def test_denoise_soft_weights_are_in_range_monotone_and_scale_scores(rng):
    X, planted = _planted_patches(rng)
    soft = PatchCore(
        coreset="none", grid=(4, 4), denoise="soft", denoise_fraction=0, denoise_k=5
    ).fit(X)
    assert soft.denoise_kept_.all() and len(soft.bank_) == X.shape[0] * X.shape[1]
    w = soft.bank_weights_.reshape(X.shape[:2])
    assert np.isfinite(w).all() and w.min() == pytest.approx(1.0)
    assert (w >= 1).all() and (w[planted] > 5).all() and np.median(w[~planted]) < 1.2
    scores = soft.denoise_scores_
    for p in range(X.shape[1]):  # within a position, weight is non-decreasing in score
        order = np.argsort(scores[:, p])
        assert (np.diff(w[order, p]) >= -1e-6).all()
        assert w[order[: len(order) // 2], p] == pytest.approx(1.0)  # the typical half: 1
    # Scores: distance to the nearest bank patch times its weight (brute force).
    T = X[:6] + 0.1 * rng.normal(size=X[:6].shape)
    bank = X.reshape(-1, 8)
    d = np.stack([cdist(img, bank) for img in T])
    nearest = d.argmin(2)
    expected = np.take_along_axis(d, nearest[..., None], 2)[..., 0] * w.reshape(-1)[nearest]
    # (float32 search: |q|^2 - 2 q.b + |b|^2 loses ~1e-4 of a distance, times the weight)
    np.testing.assert_allclose(soft.patch_scores(T), expected, rtol=1e-3, atol=1e-3)
    # A test anomaly *near* a planted bank patch: plain PatchCore calls it normal, soft does not.
    image, p = np.argwhere(planted)[0]
    test = X[[image + 10]].copy()
    test[0, p] = X[image, p] + 0.3 * rng.normal(size=8)
    plain = PatchCore(coreset="none", grid=(4, 4)).fit(X)
    assert soft.patch_scores(test)[0, p] > 3 * plain.patch_scores(test)[0, p]
    # "soft" with a fraction drops like "hard", then weighs the rest.
    both = PatchCore(
        coreset="none", grid=(4, 4), denoise="soft", denoise_fraction=1 / 40, denoise_k=5
    ).fit(X)
    np.testing.assert_array_equal(both.denoise_kept_, ~planted)
    assert both.bank_weights_.shape == (len(both.bank_),) and both.bank_weights_.min() >= 1


@pytest.mark.parametrize("mode", ["hard", "soft"])
def test_denoise_save_load_and_clone(tmp_path, rng, mode):
    from sklearn.base import clone

    X, _ = _planted_patches(rng)
    det = PatchCore(
        coreset="random",
        coreset_ratio=0.5,
        grid=(4, 4),
        denoise=mode,
        denoise_fraction=0.05,
        denoise_k=4,
        random_state=2,
    ).fit(X)
    params = clone(det).get_params()
    assert (params["denoise"], params["denoise_fraction"], params["denoise_k"]) == (mode, 0.05, 4)
    det.save(tmp_path / mode)
    again = load_detector(tmp_path / mode)
    assert again.denoise == mode and again.denoise_k == 4
    T = X[:5] + 0.2
    np.testing.assert_array_equal(again.decision_function(T), det.decision_function(T))
    np.testing.assert_array_equal(again.patch_scores(T), det.patch_scores(T))
    if mode == "soft":
        np.testing.assert_array_equal(again.bank_weights_, det.bank_weights_)
    else:
        assert again.bank_weights_ is None


def test_denoise_bad_parameters_and_small_data(rng):
    from robustsdd._errors import DataError

    X, _ = _planted_patches(rng, n=12)
    for bad, match in [
        (dict(denoise="lof"), "unknown denoise 'lof'"),
        (dict(denoise="hard", denoise_fraction=1.0), r"denoise_fraction must be in \[0, 1\)"),
        (dict(denoise="hard", denoise_fraction=-0.1), "denoise_fraction"),
        (dict(denoise="soft", denoise_fraction="a"), "denoise_fraction"),
        (dict(denoise="hard", denoise_k=0), "denoise_k must be a positive integer"),
        (dict(denoise="hard", denoise_k=2.5), "denoise_k"),
    ]:
        with pytest.raises(ConfigError, match=match):
            PatchCore(coreset="none", grid=(4, 4), **bad).fit(X)
    # Fewer rows per position than denoise_k + 1: k falls back to rows - 1.
    det = PatchCore(coreset="none", grid=(4, 4), denoise="hard", denoise_k=10).fit(X[:6])
    assert det.denoise_k_ == 5 and det.denoise_kept_.all()  # floor(0.1 * 6) = 0 dropped
    with pytest.raises(DataError, match="only 1"):
        PatchCore(coreset="none", grid=(4, 4), denoise="hard").fit(X[:1])


def test_subset_model_independent_fits_afresh_and_a_foreign_x_is_refused(rng):
    X = rng.normal(size=(12, 10, 4)).astype(np.float32)
    X[[0, 1]] *= 6
    params = {"coreset_ratio": 0.3, "projection_dim": None, "random_state": 1}
    images = np.arange(2, 12)
    fresh = PatchCore(**params).fit(X[images])
    independent = PatchCore(**params, subset_fits="independent").fit(X)
    assert not independent.derives_subsets and PatchCore().derives_subsets
    np.testing.assert_array_equal(independent.subset_model(X, images).bank_, fresh.bank_)
    derived = PatchCore(**params).fit(X)
    assert not np.array_equal(derived.subset_model(X, images).bank_, fresh.bank_)
    # Features other than those it was fitted on: its bank rows are not there.
    with pytest.raises(DataError, match="the X this model was fitted on"):
        derived.subset_model(X + 1, images)
    with pytest.raises(DataError, match="the X this model was fitted on"):
        derived.subset_model(X[:3], [0, 1])
    with pytest.raises(ConfigError, match="unknown subset_fits 'fresh'"):
        PatchCore(subset_fits="fresh").fit(X)


def test_a_saved_patchcore_derives_the_same_subset_model(rng, tmp_path):
    X = rng.normal(size=(12, 10, 4)).astype(np.float32)
    X[[0, 1]] *= 6
    model = PatchCore(coreset_ratio=0.1, projection_dim=None, random_state=1).fit(X)
    loaded = load_detector(model.save(tmp_path / "m"))
    np.testing.assert_array_equal(loaded.bank_indices_, model.bank_indices_)
    images = np.arange(2, 12)
    np.testing.assert_array_equal(
        loaded.subset_model(X, images).bank_, model.subset_model(X, images).bank_
    )


@pytest.mark.parametrize("subset_fits", ["derived", "independent"])
def test_cleaning_scores_folds_and_fine_tunes_with_the_detectors_subset_models(rng, subset_fits):
    n, p, c = 30, 10, 4
    X = rng.normal(size=(n, p, c)).astype(np.float32)
    X[0, :, 0] += 20  # three images far from everything and from one another, whose
    X[1, :, 1] += 20  # patches the stage-1 bank favours
    X[2, :, 0] -= 20
    params = {"coreset_ratio": 0.05, "projection_dim": None, "subset_fits": subset_fits}
    osr = OneShotRemoval(
        PatchCore(**params), rule="fraction", fraction=0.1, scoring="out_of_fold"
    ).fit(X)
    stage1 = osr.baseline_detector_
    np.testing.assert_array_equal(stage1.bank_, PatchCore(**params).fit(X).bank_)
    expected = np.empty(n)
    for train, test in KFold(5, shuffle=True, random_state=0).split(X):
        fold = (
            stage1.subset_model(X, train)
            if subset_fits == "derived"
            else PatchCore(**params).fit(X[train])
        )
        expected[test] = fold.decision_function(X[test])
    np.testing.assert_allclose(osr.removal_scores_, expected)
    kept = np.flatnonzero(osr.keep_mask_)
    assert sorted(osr.removed_indices_.tolist()) == [0, 1, 2]
    fine_tuned = (
        stage1.subset_model(X, kept)
        if subset_fits == "derived"
        else PatchCore(**params).fit(X[kept])
    )
    np.testing.assert_array_equal(osr.detector_.bank_, fine_tuned.bank_)
    # No patch of a removed image is left in the fine-tuned bank.
    removed_patches = X[osr.removed_indices_].reshape(-1, c)
    assert cdist(osr.detector_.bank_, removed_patches).min() > 0
