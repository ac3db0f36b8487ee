import numpy as np
import pytest

from robustsdd import ConfigError
from robustsdd.cleaning.rules import (
    apply_guard,
    confident_cut,
    fraction_rule,
    resolve_count,
    threshold_rule,
)


def test_threshold_keeps_scores_at_or_below_the_cut():
    keep = threshold_rule([0.9, 1.5, 1.51, 3.0, np.nan], 1.5)
    assert keep.tolist() == [True, True, False, False, False]


def test_threshold_rejects_non_finite_cut():
    with pytest.raises(ConfigError):
        threshold_rule([1.0], float("nan"))


def test_fraction_drops_the_top_share_with_stable_ties():
    scores = [5.0, 1.0, 5.0, 2.0, 0.5, 3.0, 1.0, 1.0, 1.0, 1.0]
    keep = fraction_rule(scores, 0.2)  # 2 of 10
    assert np.flatnonzero(~keep).tolist() == [0, 2]
    keep = fraction_rule(scores, 0.25)  # 2.5 rounds half up to 3
    assert np.flatnonzero(~keep).tolist() == [0, 2, 5]
    assert fraction_rule(scores, 0.0).all()
    with pytest.raises(ConfigError):
        fraction_rule(scores, 1.0)


def test_guard_keeps_the_lowest_scoring_when_rule_keeps_too_few():
    scores = np.array([4.0, 3.0, 2.0, 1.0, 5.0])
    keep, fired = apply_guard(scores, np.zeros(5, bool), min_keep=2)
    assert fired and np.flatnonzero(keep).tolist() == [2, 3]
    keep, fired = apply_guard(scores, np.array([1, 1, 0, 1, 0], bool), min_keep=2)
    assert not fired and np.flatnonzero(keep).tolist() == [0, 1, 3]


def test_resolve_count():
    assert resolve_count(0.5, 101, "x") == 51
    assert resolve_count(30, 100, "x") == 30
    for bad in (-1, 1.5, None, True):
        with pytest.raises(ConfigError):
            resolve_count(bad, 100, "x")


# -- the confident-learning cut ----------------------------------------------------------------
def test_confident_cut_drops_exactly_a_planted_second_population():
    rng = np.random.default_rng(0)
    scores = np.exp(np.r_[rng.normal(0, 0.1, 90), rng.normal(2, 0.1, 10)])
    cut = confident_cut(scores)
    assert cut.n_components == 2
    assert np.flatnonzero(~cut.keep).tolist() == list(range(90, 100))
    # The threshold is the mean probability of being normal: ~0.9 with 10 % planted.
    assert cut.threshold == pytest.approx(cut.p_normal.mean()) and 0.85 < cut.threshold < 0.95
    assert cut.score_cut == pytest.approx(scores[90:].min())


def test_confident_cut_removes_nothing_from_one_population():
    rng = np.random.default_rng(1)
    for _ in range(5):
        cut = confident_cut(np.exp(rng.normal(0, 0.3, 100)))
        assert cut.n_components == 1 and cut.keep.all() and cut.score_cut is None


def test_confident_probabilities_fall_with_the_score_and_nan_is_removed():
    rng = np.random.default_rng(2)
    # A wide defect population on both sides in log space would claim the lowest scores
    # too; the running minimum keeps p_normal non-increasing in the score.
    scores = np.exp(np.r_[rng.normal(0, 0.05, 80), rng.normal(0.5, 1.5, 20)])
    scores[3] = np.nan
    cut = confident_cut(scores)
    order = np.argsort(np.nan_to_num(scores, nan=np.inf))[:-1]
    assert np.all(np.diff(cut.p_normal[order]) <= 1e-12)
    assert not cut.keep[3] and cut.p_normal[3] == 0
    assert np.array_equal(cut.keep, confident_cut(scores).keep)  # deterministic


def test_confident_cut_on_too_few_or_equal_scores_keeps_everything():
    assert confident_cut([1.0, 2.0, 50.0]).keep.all()
    assert confident_cut(np.ones(20)).keep.all()
