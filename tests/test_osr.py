"""One-Shot Removal on crafted features, with a detector whose scores are known exactly."""

import numpy as np
import pytest
import torch
from sklearn.base import clone

from robustsdd import ConfigError, ModelFileError, OneShotRemoval, detector_names, load_detector
from robustsdd.detectors import BaseDetector, registered_detector
from robustsdd.detectors.gaussian import GaussianDetector

# The detectors below are registered (as "_..._for_tests") only for the tests that use them,
# through the fixtures here (conftest's register_test_detector), never at import time.


class NormDetector(BaseDetector):
    """Score = mean over views of the first feature's value; 'fitting' counts calls.

    The score does not depend on the fit, so every rule's outcome can be computed by hand.
    """

    def __init__(self, offset=0.0):
        self.offset = offset

    def fit(self, X, y=None):
        self.n_fit_calls_ = getattr(self, "n_fit_calls_", 0) + 1
        self.fit_sizes_ = getattr(self, "fit_sizes_", []) + [len(X)]
        self.is_fitted_ = True
        return self

    def decision_function(self, X):
        return np.asarray(X)[:, :, 0].mean(axis=1) + self.offset

    def _get_state(self):
        return {"n_fit_calls": torch.tensor(self.n_fit_calls_)}

    def _set_state(self, state):
        self.n_fit_calls_ = int(state["n_fit_calls"])


@pytest.fixture
def norm_registered(register_test_detector):
    return register_test_detector("_norm_for_tests", NormDetector)


def features(values, n_views=2):
    X = np.zeros((len(values), n_views, 3))
    X[:, :, 0] = np.asarray(values, float)[:, None]
    return X


SCORES = [1.0, 1.2, 2.5, 0.8, 1.6, 1.4, 3.0, 1.1, 0.9, 1.5]


@pytest.mark.usefixtures("norm_registered")
def test_score_threshold_removes_exactly_those_above():
    osr = OneShotRemoval(NormDetector(), rule="score_threshold", threshold=1.5).fit(
        features(SCORES)
    )
    assert osr.removed_indices_.tolist() == [6, 2, 4]  # highest first
    assert osr.keep_mask_.sum() == 7 and not osr.guard_fired_
    # Stage 3 fine-tuned the same model on the 7 kept images.
    assert osr.detector_.fit_sizes_ == [10, 7]
    np.testing.assert_allclose(osr.train_scores_, SCORES)


@pytest.mark.usefixtures("norm_registered")
def test_fraction_rule():
    osr = OneShotRemoval(NormDetector(), rule="fraction", fraction=0.2).fit(features(SCORES))
    assert sorted(osr.removed_indices_.tolist()) == [2, 6]


@pytest.mark.usefixtures("norm_registered")
def test_min_size_loop_removes_top_one_at_a_time_and_updates():
    osr = OneShotRemoval(NormDetector(), rule="min_size", min_size=6, min_keep=1).fit(
        features(SCORES)
    )
    assert osr.removed_indices_.tolist() == [6, 2, 4, 9]
    # Stage 1 fit on 10, updates after removals 1..3 (9, 8, 7), final fine-tune on 6.
    assert osr.detector_.fit_sizes_ == [10, 9, 8, 7, 6]
    assert osr.keep_mask_.sum() == 6


@pytest.mark.usefixtures("norm_registered")
def test_guard_fires_when_rule_would_remove_too_many():
    with pytest.warns(UserWarning, match="guard"):
        osr = OneShotRemoval(NormDetector(), threshold=0.5, min_keep=0.3).fit(features(SCORES))
    assert osr.guard_fired_ and osr.keep_mask_.sum() == 3
    assert sorted(np.flatnonzero(osr.keep_mask_).tolist()) == [0, 3, 8]
    assert any("guard" in note for note in osr.notes_)


@pytest.mark.usefixtures("norm_registered")
def test_rule_that_removes_nothing_says_so():
    osr = OneShotRemoval(NormDetector(), threshold=10.0).fit(features(SCORES))
    assert osr.n_removed_ == 0
    assert any("removed nothing" in note for note in osr.notes_)


@pytest.mark.usefixtures("norm_registered")
def test_held_out_views_trains_on_even_views_and_scores_odd_ones():
    X = features(SCORES, n_views=4)
    X[:, 1::2, 0] += 10.0  # mirrored views score 10 higher
    osr = OneShotRemoval(NormDetector(), scoring="held_out_views", threshold=11.5).fit(X)
    np.testing.assert_allclose(osr.removal_scores_, np.asarray(SCORES) + 10)
    assert sorted(osr.removed_indices_.tolist()) == [2, 4, 6]


def test_out_of_fold_scores_come_from_models_that_did_not_see_the_image():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 2, 4))
    X[:3] += 8.0
    osr = OneShotRemoval(
        GaussianDetector(), scoring="out_of_fold", rule="fraction", fraction=0.05, n_folds=3
    ).fit(X)
    assert sorted(osr.removed_indices_.tolist()) == [0, 1, 2]
    # Deterministic for a random_state.
    again = OneShotRemoval(
        GaussianDetector(), scoring="out_of_fold", rule="fraction", fraction=0.05, n_folds=3
    ).fit(X)
    np.testing.assert_array_equal(osr.removal_scores_, again.removal_scores_)


def test_baseline_is_the_stage1_model_and_detector_is_not_modified():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(40, 2, 3))
    X[:4] += 5
    template = GaussianDetector()
    osr = OneShotRemoval(template, rule="fraction", fraction=0.1).fit(X)
    assert not hasattr(template, "mean_")
    np.testing.assert_allclose(osr.baseline_detector_.mean_, X.reshape(-1, 3).mean(0))
    np.testing.assert_allclose(osr.detector_.mean_, X[4:].reshape(-1, 3).mean(0))


@pytest.mark.usefixtures("norm_registered")
def test_unknown_rule_and_scoring():
    with pytest.raises(ConfigError, match="rule"):
        OneShotRemoval(NormDetector(), rule="nope").fit(features(SCORES))
    with pytest.raises(ConfigError, match="scoring"):
        OneShotRemoval(NormDetector(), scoring="nope").fit(features(SCORES))


def test_reusing_stage1_gives_the_same_result_with_one_stage1_fit():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(50, 2, 4))
    X[:5] += 4
    first = OneShotRemoval(GaussianDetector(), scoring="held_out_views", threshold=1.5).fit(X)
    fresh = OneShotRemoval(GaussianDetector(), scoring="held_out_views", threshold=3.0).fit(X)
    reused = OneShotRemoval(GaussianDetector(), scoring="held_out_views", threshold=3.0).fit(
        X, stage1=first
    )
    np.testing.assert_array_equal(reused.keep_mask_, fresh.keep_mask_)
    np.testing.assert_allclose(reused.train_scores_, fresh.train_scores_)
    np.testing.assert_allclose(reused.baseline_detector_.mean_, fresh.baseline_detector_.mean_)
    # The stage-1 model of `first` was not modified by the reuse.
    np.testing.assert_allclose(first.baseline_detector_.mean_, fresh.baseline_detector_.mean_)
    with pytest.raises(ConfigError, match="stage1"):
        OneShotRemoval(GaussianDetector(), scoring="in_sample").fit(X, stage1=first)


@pytest.mark.usefixtures("norm_registered")
def test_reused_stage1_is_not_refitted():
    stage1 = OneShotRemoval(NormDetector(), threshold=1.5).fit(features(SCORES))
    again = OneShotRemoval(NormDetector(), threshold=2.0).fit(features(SCORES), stage1=stage1)
    assert again.detector_.fit_sizes_ == [10, 8]  # the stage-1 fit (copied) + one fine-tune
    assert sorted(again.removed_indices_.tolist()) == [2, 6]


# -- repeated rounds, ensemble scoring, the confident rule ---------------------------------------
class StandardisedDetector(BaseDetector):
    """Score = |x - mean| / SD of the first feature over the training images.

    Unlike NormDetector, the fit matters: extreme training images inflate the SD and
    hide moderate ones, which a second round (after the extremes are gone) exposes.
    """

    def fit(self, X, y=None):
        values = np.asarray(X)[:, :, 0].mean(axis=1)
        self.mean_, self.sd_ = values.mean(), values.std()
        self.is_fitted_ = True
        return self

    def partial_fit(self, X, y=None):
        return self.fit(X)

    def decision_function(self, X):
        return np.abs(np.asarray(X)[:, :, 0].mean(axis=1) - self.mean_) / self.sd_

    def _get_state(self):
        return {}

    def _set_state(self, state):
        pass


@pytest.fixture
def standardised_registered(register_test_detector):
    return register_test_detector("_standardised_for_tests", StandardisedDetector)


MASKED = np.r_[np.linspace(-1, 1, 20), 100.0, 100.0, 5.0, 5.0]


@pytest.mark.usefixtures("standardised_registered")
def test_one_round_misses_what_extremes_hide_and_a_second_round_finds_it():
    # Round 1: mean 8.75, SD 27.6 -> the extremes score 3.3, the 5.0s only 0.14.
    one = OneShotRemoval(StandardisedDetector(), threshold=2.0).fit(features(MASKED))
    assert sorted(one.removed_indices_.tolist()) == [20, 21] and one.rounds_run_ == 1
    # Round 2, refitted on the rest: mean 0.45, SD 1.55 -> the 5.0s score 2.9.
    # Round 3: mean 0, SD 0.6 -> the largest normal scores 1.65; nothing changes, stop.
    more = OneShotRemoval(StandardisedDetector(), threshold=2.0, rounds=5).fit(features(MASKED))
    assert sorted(more.removed_indices_.tolist()) == [20, 21, 22, 23]
    assert more.rounds_run_ == 3
    assert any("3 removal rounds" in note for note in more.notes_)
    two = OneShotRemoval(StandardisedDetector(), threshold=2.0, rounds=2).fit(features(MASKED))
    assert two.rounds_run_ == 2 and two.n_removed_ == 4
    # The removed images were scored by the refitted model, which never saw them.
    np.testing.assert_allclose(more.removal_scores_[22], (5.0 - 0.0) / MASKED[:20].std())


class MemorisingDetector(BaseDetector):
    """Scores 0 for an image it was trained on, 1 + its value otherwise."""

    def fit(self, X, y=None):
        self.seen_ = {float(v) for v in np.asarray(X)[:, 0, 0]}
        self.is_fitted_ = True
        return self

    def decision_function(self, X):
        values = np.asarray(X)[:, 0, 0]
        return np.array([0.0 if v in self.seen_ else 1.0 + v for v in values])

    def _get_state(self):
        return {}

    def _set_state(self, state):
        pass


@pytest.fixture
def memorising_registered(register_test_detector):
    return register_test_detector("_memorising_for_tests", MemorisingDetector)


@pytest.mark.usefixtures("memorising_registered")
def test_ensemble_members_score_only_images_they_did_not_see():
    values = np.arange(30, dtype=float)
    osr = OneShotRemoval(
        MemorisingDetector(), scoring="ensemble", n_members=3, rule="fraction", fraction=0.1
    ).fit(features(values))
    # Every removal score is a median of member scores of unseen images: never 0.
    assert np.all(osr.removal_scores_ > 0)
    # Scores fall in the order of the values (each member divides by its own median).
    assert sorted(osr.removed_indices_.tolist()) == [27, 28, 29]


def test_ensemble_removes_planted_outliers_and_is_deterministic():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 2, 4))
    X[:4] += 8.0
    kw = dict(scoring="ensemble", n_members=3, rule="auto", random_state=3)
    osr = OneShotRemoval(GaussianDetector(), **kw).fit(X)
    assert sorted(osr.removed_indices_.tolist()) == [0, 1, 2, 3]
    again = OneShotRemoval(GaussianDetector(), **kw).fit(X)
    np.testing.assert_array_equal(osr.removal_scores_, again.removal_scores_)
    with pytest.raises(Exception, match="at least 8 images"):
        OneShotRemoval(GaussianDetector(), scoring="ensemble", n_members=4).fit(X[:7])


@pytest.mark.usefixtures("norm_registered")
def test_confident_rule_in_osr_reports_the_estimate():
    rng = np.random.default_rng(0)
    values = np.exp(np.r_[rng.normal(0, 0.1, 90), rng.normal(2, 0.1, 10)])
    osr = OneShotRemoval(NormDetector(), rule="confident").fit(features(values))
    assert sorted(osr.removed_indices_.tolist()) == list(range(90, 100))
    assert osr.estimated_contamination_ == pytest.approx(0.1)
    assert osr.cut_ == pytest.approx(values[90:].min()) and osr.p_normal_.shape == (100,)
    assert any("confident cut" in note for note in osr.notes_)


@pytest.mark.usefixtures("norm_registered")
@pytest.mark.parametrize(
    "bad",
    [dict(rounds=0), dict(rounds=1.5), dict(n_members=True), dict(scoring="ensemble", n_members=1)],
)
def test_bad_rounds_and_members(bad):
    with pytest.raises(ConfigError):
        OneShotRemoval(NormDetector(), **bad).fit(features(SCORES))


@pytest.mark.usefixtures("norm_registered")
@pytest.mark.parametrize(
    "kw",
    [
        dict(rule="confident"),
        dict(rule="score_threshold", threshold=5.0, rounds=3),
        dict(rule="fraction", fraction=0.7, scoring="ensemble", n_members=3),
    ],
)
def test_new_strategies_keep_the_guard(kw):
    # 70 of 100 images far out: every rule wants to drop more than min_keep allows.
    rng = np.random.default_rng(0)
    values = np.exp(np.r_[rng.normal(3, 0.1, 70), rng.normal(0, 0.1, 30)])
    with pytest.warns(UserWarning, match="min_keep"):
        osr = OneShotRemoval(NormDetector(), min_keep=0.8, **kw).fit(features(values))
    assert osr.guard_fired_ and osr.keep_mask_.sum() == 80
    # The guard keeps the images with the lowest removal scores.
    scores = osr.removal_scores_
    assert scores[osr.keep_mask_].max() <= scores[~osr.keep_mask_].min()


def test_stage1_handed_back_gives_the_same_result():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 2, 4))
    X[:3] += 6.0
    osr = OneShotRemoval(GaussianDetector(), rule="auto", scoring="out_of_fold", n_folds=4)
    model, stage1_scores, removal_scores = osr.fit_stage1(X)
    resumed = clone(osr).fit(X, stage1=osr.as_stage1(model, stage1_scores, removal_scores))
    direct = clone(osr).fit(X)
    np.testing.assert_array_equal(resumed.keep_mask_, direct.keep_mask_)
    np.testing.assert_allclose(resumed.train_scores_, direct.train_scores_)
    assert sorted(direct.removed_indices_.tolist()) == [0, 1, 2]
    with pytest.raises(ConfigError):  # settings are checked before anything trains
        OneShotRemoval(GaussianDetector(), rule="bogus").fit_stage1(X)


# -- the test detectors are registered only while a test asks for them -------------------------
TEST_NAMES = {"_norm_for_tests", "_standardised_for_tests", "_memorising_for_tests"}


def test_test_detectors_are_not_registered_by_the_import():
    # Registered by fixtures, per test: nothing is left over from the import or earlier tests.
    assert not TEST_NAMES & set(detector_names())


def test_the_fixture_registers_for_this_test(norm_registered):
    assert norm_registered is NormDetector
    assert "_norm_for_tests" in detector_names()
    assert not (TEST_NAMES - {"_norm_for_tests"}) & set(detector_names())


def test_a_saved_test_detector_loads_only_while_registered(tmp_path):
    with registered_detector("_norm_for_tests", NormDetector):
        NormDetector(offset=2.0).fit(features(SCORES)).save(tmp_path / "m")
        again = load_detector(tmp_path / "m")
    assert type(again) is NormDetector and again.offset == 2.0 and again.n_fit_calls_ == 1
    np.testing.assert_allclose(again.decision_function(features(SCORES)), np.add(SCORES, 2.0))
    assert "_norm_for_tests" not in detector_names()
    with pytest.raises(ModelFileError, match="unknown detector '_norm_for_tests'"):
        load_detector(tmp_path / "m")


def test_without_score_training_the_removal_and_model_are_the_same():
    X = np.random.default_rng(0).normal(size=(40, 4, 6))
    X[:4] += 3
    settings = {"rule": "fraction", "fraction": 0.1, "scoring": "out_of_fold"}
    full = OneShotRemoval(GaussianDetector(), **settings).fit(X)
    lean = OneShotRemoval(GaussianDetector(), score_training=False, **settings).fit(X)
    np.testing.assert_array_equal(lean.keep_mask_, full.keep_mask_)
    np.testing.assert_array_equal(lean.removal_scores_, full.removal_scores_)
    np.testing.assert_array_equal(lean.decision_function(X), full.decision_function(X))
    assert not hasattr(lean, "train_scores_") and list(lean.stage_scores_) == ["removal"]
    assert list(full.stage_scores_) == ["stage1", "removal", "stage2"]
    # A lean stage 1 handed to a full fit: the stage-1 scores are computed then.
    again = OneShotRemoval(GaussianDetector(), **settings).fit(X, stage1=lean)
    np.testing.assert_array_equal(again.stage_scores_["stage1"], full.stage_scores_["stage1"])
    np.testing.assert_array_equal(again.train_scores_, full.train_scores_)
