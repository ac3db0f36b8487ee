import numpy as np
import pytest

from robustsdd import ConfigError
from robustsdd.cleaning.rules import apply_guard, fraction_rule, resolve_count, threshold_rule


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
