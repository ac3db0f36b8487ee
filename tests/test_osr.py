"""One-Shot Removal on crafted features, with a detector whose scores are known exactly."""

import numpy as np
import pytest

from robustsdd import ConfigError, OneShotRemoval
from robustsdd.detectors.base import BaseDetector, register_detector
from robustsdd.detectors.gaussian import GaussianDetector


@register_detector("_norm_for_tests")
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
        return {}

    def _set_state(self, state):
        pass


def features(values, n_views=2):
    X = np.zeros((len(values), n_views, 3))
    X[:, :, 0] = np.asarray(values, float)[:, None]
    return X


SCORES = [1.0, 1.2, 2.5, 0.8, 1.6, 1.4, 3.0, 1.1, 0.9, 1.5]


def test_score_threshold_removes_exactly_those_above():
    osr = OneShotRemoval(NormDetector(), rule="score_threshold", threshold=1.5).fit(features(SCORES))
    assert osr.removed_indices_.tolist() == [6, 2, 4]  # highest first
    assert osr.keep_mask_.sum() == 7 and not osr.guard_fired_
    # Stage 3 fine-tuned the same model on the 7 kept images.
    assert osr.detector_.fit_sizes_ == [10, 7]
    np.testing.assert_allclose(osr.train_scores_, SCORES)


def test_fraction_rule():
    osr = OneShotRemoval(NormDetector(), rule="fraction", fraction=0.2).fit(features(SCORES))
    assert sorted(osr.removed_indices_.tolist()) == [2, 6]


def test_min_size_loop_removes_top_one_at_a_time_and_updates():
    osr = OneShotRemoval(NormDetector(), rule="min_size", min_size=6, min_keep=1).fit(features(SCORES))
    assert osr.removed_indices_.tolist() == [6, 2, 4, 9]
    # Stage 1 fit on 10, updates after removals 1..3 (9, 8, 7), final fine-tune on 6.
    assert osr.detector_.fit_sizes_ == [10, 9, 8, 7, 6]
    assert osr.keep_mask_.sum() == 6


def test_guard_fires_when_rule_would_remove_too_many():
    with pytest.warns(UserWarning, match="guard"):
        osr = OneShotRemoval(NormDetector(), threshold=0.5, min_keep=0.3).fit(features(SCORES))
    assert osr.guard_fired_ and osr.keep_mask_.sum() == 3
    assert sorted(np.flatnonzero(osr.keep_mask_).tolist()) == [0, 3, 8]
    assert any("guard" in note for note in osr.notes_)


def test_rule_that_removes_nothing_says_so():
    osr = OneShotRemoval(NormDetector(), threshold=10.0).fit(features(SCORES))
    assert osr.n_removed_ == 0
    assert any("removed nothing" in note for note in osr.notes_)


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
    osr = OneShotRemoval(GaussianDetector(), scoring="out_of_fold", rule="fraction",
                         fraction=0.05, n_folds=3).fit(X)
    assert sorted(osr.removed_indices_.tolist()) == [0, 1, 2]
    # Deterministic for a random_state.
    again = OneShotRemoval(GaussianDetector(), scoring="out_of_fold", rule="fraction",
                           fraction=0.05, n_folds=3).fit(X)
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
    reused = OneShotRemoval(GaussianDetector(), scoring="held_out_views",
                            threshold=3.0).fit(X, stage1=first)
    np.testing.assert_array_equal(reused.keep_mask_, fresh.keep_mask_)
    np.testing.assert_allclose(reused.train_scores_, fresh.train_scores_)
    np.testing.assert_allclose(reused.baseline_detector_.mean_, fresh.baseline_detector_.mean_)
    # The stage-1 model of `first` was not modified by the reuse.
    np.testing.assert_allclose(first.baseline_detector_.mean_, fresh.baseline_detector_.mean_)
    with pytest.raises(ConfigError, match="stage1"):
        OneShotRemoval(GaussianDetector(), scoring="in_sample").fit(X, stage1=first)


def test_reused_stage1_is_not_refitted():
    stage1 = OneShotRemoval(NormDetector(), threshold=1.5).fit(features(SCORES))
    again = OneShotRemoval(NormDetector(), threshold=2.0).fit(features(SCORES), stage1=stage1)
    assert again.detector_.fit_sizes_ == [10, 8]  # the stage-1 fit (copied) + one fine-tune
    assert sorted(again.removed_indices_.tolist()) == [2, 6]
