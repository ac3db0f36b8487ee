"""The detector ensemble: standardisation by hand, pooled vectors, lent out-of-fold scores,
maps from its patch member, bad settings."""

import numpy as np
import pytest
from sklearn.model_selection import KFold

from robustsdd import ConfigError, DataError, EnsembleDetector, OneShotRemoval, load_detector
from robustsdd.detectors import GaussianDetector, KNNDetector, PatchCore
from robustsdd.detectors.base import localizes
from robustsdd.detectors.ensemble import pooled_vectors
from robustsdd.workflow.threshold import decide


def _patches(n=24, p=16, d=6, seed=0):
    return np.random.default_rng(seed).normal(size=(n, p, d)).astype(np.float32)


def test_pooled_vectors_skip_padding_rows():
    X = np.full((2, 3, 2), np.nan, np.float32)
    X[0] = [[1, 2], [3, 4], [5, 9]]
    X[1, :2] = [[2, 0], [4, 2]]  # third row is padding
    np.testing.assert_allclose(pooled_vectors(X)[:, 0], [[3, 5], [3, 1]])


def test_standardisation_is_median_and_mad_of_log_out_of_fold_scores():
    X = _patches()
    ens = EnsembleDetector(members=("knn",), member_params={"knn": {"k": 3}}, random_state=4)
    ens.fit(X)
    # By hand: 5-fold out-of-fold kNN scores of the pooled vectors, their log, median, MAD.
    A = X.astype(np.float64).mean(axis=1, keepdims=True).astype(np.float32)
    oof = np.empty(len(X))
    for tr, te in KFold(5, shuffle=True, random_state=4).split(X):
        oof[te] = KNNDetector(k=3).fit(A[tr]).decision_function(A[te])
    logs = np.log(oof)
    med = np.median(logs)
    mad = 1.4826 * np.median(np.abs(logs - med))
    assert ens.loc_[0] == pytest.approx(med, rel=1e-6)
    assert ens.scale_[0] == pytest.approx(mad, rel=1e-6)
    np.testing.assert_allclose(ens.out_of_fold_scores_, np.exp((logs - med) / mad), rtol=1e-6)
    test = _patches(n=3, seed=1)
    raw = KNNDetector(k=3).fit(A).decision_function(pooled_vectors(test))
    np.testing.assert_allclose(
        ens.decision_function(test), np.exp((np.log(raw) - med) / mad), rtol=1e-6
    )


def test_combination_is_the_geometric_mean_of_standardised_member_scores():
    X = _patches()
    ens = EnsembleDetector(
        members=("patchcore", "gaussian"), member_params={"patchcore": {"coreset_ratio": 0.5}}
    ).fit(X)
    T = _patches(n=4, seed=2)
    z = ens.member_scores(T)
    assert set(z) == {"patchcore", "gaussian"}
    np.testing.assert_allclose(
        ens.decision_function(T), np.exp((z["patchcore"] + z["gaussian"]) / 2), rtol=1e-10
    )
    # Each member is the plain detector on its own input: PatchCore on the patch rows.
    pc = PatchCore(coreset_ratio=0.5).fit(X)
    m = ens.member_names_.index("patchcore")
    np.testing.assert_allclose(
        z["patchcore"],
        (np.log(pc.decision_function(T)) - ens.loc_[m]) / ens.scale_[m],
        rtol=1e-5,
    )
    g = GaussianDetector().fit(X.mean(axis=1, keepdims=True))
    np.testing.assert_allclose(
        ens.members_[ens.member_names_.index("gaussian")].mean_, g.mean_, rtol=1e-5
    )


def test_patch_channels_limit_what_the_patch_member_reads():
    X = _patches(d=6)
    ens = EnsembleDetector(members=("patchcore",), patch_channels=2).fit(X)
    assert ens.members_[0].n_features_ == 2
    Y = X.copy()
    Y[:, :, 2:] += 100  # columns the patch member does not read
    np.testing.assert_allclose(ens.decision_function(Y[:3]), ens.decision_function(X[:3]))
    with pytest.raises(DataError, match="patch_channels=8"):
        EnsembleDetector(patch_channels=8).fit(X)


def test_a_defect_patch_scores_high_and_shows_on_the_map():
    X = _patches(n=30, p=16)
    T = _patches(n=2, p=16, seed=5)
    T[1, 9] += 6.0  # one far-off patch
    ens = EnsembleDetector(member_params={"knn": {"k": 3}}).fit(X)
    s = ens.decision_function(T)
    assert s[1] > s[0]
    assert localizes(ens)
    patch = ens.patch_scores(T)
    assert patch.shape == (2, 16) and int(np.argmax(patch[1])) == 9
    maps = ens.anomaly_maps(T)
    assert maps.shape == (2, 4, 4) and np.unravel_index(np.argmax(maps[1]), (4, 4)) == (2, 1)


def test_without_a_patch_member_there_are_no_maps(tmp_path):
    ens = EnsembleDetector(members=("gaussian", "knn"), member_params={"knn": {"k": 3}})
    assert not localizes(ens)
    ens.fit(_patches())
    assert not localizes(ens)
    with pytest.raises(ConfigError, match="add 'patchcore'"):
        ens.patch_scores(_patches(n=2))
    ens.save(tmp_path / "m")
    assert not localizes(load_detector(tmp_path / "m"))


def test_saved_ensemble_gives_the_same_scores_and_maps(tmp_path):
    X = _patches()
    ens = EnsembleDetector(member_params={"knn": {"k": 3}}).fit(X)
    ens.save(tmp_path / "m")
    again = load_detector(tmp_path / "m")
    T = _patches(n=3, seed=3)
    np.testing.assert_array_equal(again.decision_function(T), ens.decision_function(T))
    np.testing.assert_array_equal(again.patch_scores(T), ens.patch_scores(T))
    # The out-of-fold scores travel with the model (a fit reads its stages back from
    # checkpoints and must still lend them to the decision threshold).
    np.testing.assert_array_equal(again.out_of_fold_scores(5, 0), ens.out_of_fold_scores_)
    assert again.out_of_fold_scores(4, 0) is None


def test_cleaning_and_the_threshold_borrow_its_out_of_fold_scores(monkeypatch):
    X = _patches(n=30)
    X[:3] += 3.0  # three contaminated training images
    ens = EnsembleDetector(member_params={"knn": {"k": 3}}, random_state=0)
    osr = OneShotRemoval(ens, rule="auto", scoring="out_of_fold", n_folds=5, random_state=0)
    osr.fit(X)
    np.testing.assert_array_equal(
        osr.stage1_removal_scores_, osr.baseline_detector_.out_of_fold_scores_
    )
    assert set(np.flatnonzero(~osr.keep_mask_)) == {0, 1, 2}
    # The decision threshold takes the final model's out-of-fold scores of the kept images
    # without fitting anything.
    monkeypatch.setattr(
        EnsembleDetector, "fit", lambda *a, **k: pytest.fail("refitted the ensemble")
    )
    decision = {"scores": "out_of_fold", "quantile": 0.9, "n_folds": 5}
    decided, calibration = decide(
        decision,
        detector=ens,
        X=X,
        keep=osr.keep_mask_,
        final=osr.train_scores_,
        removal=osr.removal_scores_,
        scoring="out_of_fold",
        seed=0,
        fitted=osr.detector_,
    )
    assert np.isnan(calibration[:3]).all()
    np.testing.assert_array_equal(calibration[3:], osr.detector_.out_of_fold_scores_)
    assert decided["threshold"] == pytest.approx(np.quantile(calibration[3:], 0.9))


def test_other_folds_are_not_borrowed():
    X = _patches(n=30)
    ens = EnsembleDetector(member_params={"knn": {"k": 3}}, random_state=1)
    osr = OneShotRemoval(ens, rule="auto", scoring="out_of_fold", random_state=0).fit(X)
    assert osr.baseline_detector_.out_of_fold_scores(5, 0) is None
    assert not np.array_equal(
        osr.stage1_removal_scores_, osr.baseline_detector_.out_of_fold_scores_
    )


@pytest.mark.parametrize(
    "params, message",
    [
        ({"members": ()}, "non-empty"),
        ({"members": "knn"}, "non-empty"),
        ({"members": ("knn", "svm")}, "unknown ensemble member 'svm'"),
        ({"members": ("knn", "knn")}, "repeat"),
        ({"members": ("knn",), "member_params": {"gaussian": {}}}, "not in members"),
        ({"n_folds": 1}, "n_folds"),
        ({"patch_channels": 0}, "patch_channels"),
        ({"fold_fits": "shared"}, "unknown fold_fits 'shared'"),
    ],
)
def test_bad_settings_fail_clearly(params, message):
    with pytest.raises(ConfigError, match=message):
        EnsembleDetector(**params).fit(_patches())


def test_too_few_images_fail_clearly():
    with pytest.raises(DataError, match="at least 10 training images; got 6"):
        EnsembleDetector().fit(_patches(n=6))


def test_fit_folder_fits_the_ensemble_twice_and_borrows_the_rest(planted_folder, tmp_path):
    """Stage 1 and the fine-tune; the removal scores and the decision threshold's
    out-of-fold scores come from those fits, even though fit reads its stages back from
    checkpoints (the out-of-fold scores are part of the saved state)."""
    from robustsdd import fit_folder
    from robustsdd.features import ViewSpec
    from robustsdd.features.patches import PatchFeaturizer

    root, _ = planted_folder
    calls = []
    real_fit = EnsembleDetector.fit

    def counting_fit(self, X, y=None):
        calls.append(len(X))
        return real_fit(self, X, y)

    featurizer = PatchFeaturizer(
        weights=None,
        stages=(2, 3, -1),
        views=ViewSpec(size=64, scales=(1,), rotations=(0,), flips=False, geometry="squash"),
        cache_dir=False,
        progress=False,
        engine="torch",
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(EnsembleDetector, "fit", counting_fit)
        model = fit_folder(
            root,
            tmp_path / "m",
            detector="ensemble",
            featurizer=featurizer,
            rule="auto",
            scoring="out_of_fold",
            report=False,
            progress=False,
            log=lambda _: None,
        )
    n_kept = int(model.info["training"]["n_images"] - model.info["training"]["n_removed"])
    assert calls == [40, n_kept]
    assert model.decision["scores"] == "out_of_fold"


@pytest.mark.parametrize("scoring", ["in_sample", "out_of_fold", "ensemble"])
@pytest.mark.parametrize(
    "rule, params", [("fraction", {"fraction": 0.1}), ("min_size", {"min_size": 27})]
)
def test_every_cleaning_strategy_drops_the_planted_images(scoring, rule, params):
    X = _patches(n=30)
    X[:3] += 3.0  # three contaminated training images
    ens = EnsembleDetector(member_params={"knn": {"k": 2}})
    osr = OneShotRemoval(ens, rule=rule, scoring=scoring, n_members=2, **params).fit(X)
    assert set(np.flatnonzero(~osr.keep_mask_)) == {0, 1, 2}


def test_held_out_views_is_refused_clearly():
    ens = EnsembleDetector(member_params={"knn": {"k": 2}})
    with pytest.raises(ConfigError, match="use scoring='out_of_fold'"):
        OneShotRemoval(ens, rule="auto", scoring="held_out_views").fit(_patches(n=30))


def test_fold_models_derived_from_the_final_patchcore():
    # PatchCore's fold models come from the final one (subset_model); "independent" refits.
    X = _patches(n=20, seed=3)
    params = dict(members=("patchcore",), member_params={"patchcore": {"coreset_ratio": 0.1}})
    derived = EnsembleDetector(**params, random_state=2).fit(X)
    independent = EnsembleDetector(**params, fold_fits="independent", random_state=2).fit(X)
    final = derived.members_[0]
    oof = np.empty(len(X))
    for tr, te in KFold(5, shuffle=True, random_state=2).split(X):
        fold = final.subset_model(X, tr)
        # Its bank: patches of the fold's own images (rows of X[tr]), never of held-out ones.
        np.testing.assert_array_equal(fold.bank_, X[tr].reshape(-1, 6)[fold.bank_indices_])
        oof[te] = fold.decision_function(X[te])
    np.testing.assert_allclose(derived.member_oof_scores_[0], oof, rtol=1e-6)
    by_hand = np.empty(len(X))
    for tr, te in KFold(5, shuffle=True, random_state=2).split(X):
        by_hand[te] = (
            PatchCore(coreset_ratio=0.1, random_state=2).fit(X[tr]).decision_function(X[te])
        )
    np.testing.assert_allclose(independent.member_oof_scores_[0], by_hand, rtol=1e-6)
    # The final models agree; only the fold models differ.
    np.testing.assert_array_equal(final.bank_, independent.members_[0].bank_)
