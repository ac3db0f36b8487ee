"""The contamination estimate, the false-discovery-rate cut and sparse-bank removal scores,
on planted data where the answer is known."""

import numpy as np
import pytest
from scipy.stats import norm

from robustsdd import ConfigError, DataError, OneShotRemoval
from robustsdd.cleaning.estimate import estimate_contamination, fdr_cut
from robustsdd.cleaning.registry import RULES, describe, parse_strategy
from robustsdd.cleaning.sparse_banks import repeat_tolerance, sparse_bank_scores
from robustsdd.detectors.patchcore import PatchCore


def _mixture(seed, n_good=80, n_bad=20, shift=1.5):
    rng = np.random.default_rng(seed)
    logs = np.r_[rng.normal(0.0, 0.2, n_good), rng.normal(shift, 0.3, n_bad)]
    return np.exp(logs), np.r_[np.zeros(n_good), np.ones(n_bad)].astype(bool)


# -- the contamination estimate -----------------------------------------------------------
@pytest.mark.parametrize("n_bad", [0, 10, 30])
def test_estimate_finds_the_planted_share_and_the_interval_holds_it(n_bad):
    hits = 0
    for seed in range(10):
        scores, _ = _mixture(seed, n_good=100 - n_bad, n_bad=n_bad)
        est = estimate_contamination(scores, n_boot=100, random_state=seed)
        assert abs(est.share - n_bad / 100) < 0.08
        assert est.interval[0] <= est.share <= est.interval[1]
        hits += est.interval[0] - 0.02 <= n_bad / 100 <= est.interval[1] + 0.02
        assert abs(est.mu0) < 0.12 and 0.12 < est.sigma0 < 0.3  # the planted null
    assert hits >= 8  # a 90 % interval


def test_p_values_are_the_null_tail_of_the_log_score():
    scores, _ = _mixture(0)
    est = estimate_contamination(scores, n_boot=0)
    i = int(np.argmax(scores))
    expected = norm.sf(np.log(scores[i]), est.mu0, est.sigma0)
    assert est.p_values[i] == pytest.approx(expected)
    assert est.interval == (est.share, est.share)  # no bootstrap: a point


def test_estimate_of_too_few_or_equal_scores_is_zero_and_bad_scores_fail():
    assert estimate_contamination([1.0, 2.0, 3.0]).share == 0.0
    assert estimate_contamination(np.ones(20)).share == 0.0
    with pytest.raises(ConfigError, match="positive"):
        estimate_contamination([1.0, -1.0] * 10)
    with pytest.raises(ConfigError, match="1-D"):
        estimate_contamination(np.ones((4, 4)))


# -- the fdr cut ----------------------------------------------------------------------------
def test_benjamini_hochberg_by_hand():
    p = [0.01, 0.04, 0.03, 0.5, 0.2]
    # Sorted 0.01, 0.03, 0.04, 0.2, 0.5 against k·0.1/5 = 0.02, 0.04, 0.06, 0.08, 0.1:
    # 0.04 <= 0.06 is the last one below its bound, so the three smallest go.
    assert fdr_cut(p, 0.1).tolist() == [False, False, False, True, True]
    # With pi0 = 0.5 the bounds double: 0.2 <= 0.16? no; still three.
    assert fdr_cut(p, 0.1, pi0=0.5).tolist() == [False, False, False, True, True]
    assert fdr_cut(p, 0.01).all()  # 0.01 > 0.002: nothing
    with pytest.raises(ConfigError):
        fdr_cut(p, 1.5)


def test_fdr_rule_recovers_a_planted_population_with_few_false_removals():
    precision, recall = [], []
    for seed in range(10):
        scores, bad = _mixture(seed)
        keep = RULES["fdr"].cut(scores, {"fdr": 0.2}).keep
        removed = ~keep
        precision.append((removed & bad).sum() / max(removed.sum(), 1))
        recall.append((removed & bad).sum() / bad.sum())
    assert np.mean(precision) >= 0.8 and np.mean(recall) >= 0.9


def test_fdr_rule_on_a_clean_set_removes_almost_nothing():
    removed = [
        (~RULES["fdr"].cut(_mixture(seed, 100, 0)[0], {"fdr": 0.2}).keep).sum()
        for seed in range(10)
    ]
    assert np.mean(removed) <= 1.0


def test_fdr_in_one_shot_removal_reports_the_estimate_and_round_trips():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 1, 4)).astype(np.float32)
    corners = np.array(np.meshgrid(*[[-1.0, 1.0]] * 4)).reshape(4, -1).T  # 16 signs
    X[:8, 0] += 8.0 * corners[rng.permutation(16)[:8]]  # 8 defects, each its own corner
    osr = OneShotRemoval(PatchCore(coreset="none"), rule="fdr", scoring="out_of_fold").fit(X)
    assert set(osr.removed_indices_.tolist()) >= set(range(8))
    est = osr.contamination_estimate_
    assert est["low"] <= est["share"] <= est["high"] and est["level"] == 0.9
    assert any("estimated contamination" in n and "interval" in n for n in osr.notes_)
    arrays, info = osr.get_fitted_state()
    back = OneShotRemoval(PatchCore(coreset="none"), rule="fdr", scoring="out_of_fold")
    assert back.set_fitted_state(arrays, info).contamination_estimate_ == est


def test_fdr_is_a_strategy_and_a_described_rule():
    assert parse_strategy("fdr_0.1@out_of_fold") == {
        "rule": "fdr",
        "fdr": 0.1,
        "scoring": "out_of_fold",
    }
    assert "false-discovery rate 0.2" in describe({"rule": "fdr"})
    with pytest.raises(ConfigError, match="fdr"):
        parse_strategy("fdr_1.5")


# -- sparse banks -----------------------------------------------------------------------------
def _repeated_defect(seed=0, n=80, n_defective=5):
    """n images of 16 patch rows; one defect type (the same patch pattern) in n_defective."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 16, 8)).astype(np.float32)
    pattern = rng.normal(size=8).astype(np.float32) * 4 + 10
    for i in range(n_defective):
        X[i, rng.integers(16)] = pattern + 0.1 * rng.normal(size=8)
    return X


def test_repeat_tolerance_is_where_the_median_bank_still_misses_a_pattern():
    for share in (0.05, 0.1, 0.2, 0.3):
        m = repeat_tolerance(share)
        assert (1 - share) ** m > 0.5 >= (1 - share) ** (m + 1)


def test_sparse_banks_single_out_a_repeated_defect_that_out_of_fold_misses():
    X = _repeated_defect()
    banks = sparse_bank_scores(X, share=0.1, n_banks=30)
    assert banks[:5].min() > banks[5:].max()
    # Out of fold, every defective image finds its look-alikes in the other folds.
    stage1 = PatchCore(coreset="none").fit(X)
    oof = OneShotRemoval(PatchCore(coreset="none"), scoring="out_of_fold")._removal_scores(
        stage1, X
    )
    assert oof[:5].min() < np.median(oof[5:]) * 1.2


def test_sparse_banks_score_each_image_only_by_banks_that_did_not_hold_it():
    X = _repeated_defect(n_defective=0, n=20)
    X[3] += 50.0  # far from everything: a bank holding it would score it 0
    s = sparse_bank_scores(X, share=0.2, n_banks=10)
    assert s[3] == s.max() and s[3] > 10 * np.median(s)


def test_sparse_banks_reference_and_padding_rows():
    X = _repeated_defect(n=30, n_defective=0)
    X[5:10, 12:] = np.nan  # padding rows of smaller grids are skipped
    reference = np.ones(30, dtype=bool)
    reference[:10] = False
    s = sparse_bank_scores(X, share=0.2, n_banks=8, reference=reference)
    assert np.isfinite(s).all() and (s > 0).all()
    with pytest.raises(DataError, match="reference"):
        sparse_bank_scores(X, reference=np.ones(3, dtype=bool))
    with pytest.raises(ConfigError, match="share"):
        sparse_bank_scores(X, share=1.0)
    X[7] = np.nan
    with pytest.raises(DataError, match="image 7"):
        sparse_bank_scores(X)


def test_sparse_bank_removal_in_one_shot_removal_with_rounds():
    X = _repeated_defect(n=80, n_defective=5)
    osr = OneShotRemoval(
        PatchCore(coreset="none"), rule="auto", scoring="sparse_banks", n_banks=30, rounds=2
    ).fit(X)
    assert set(osr.removed_indices_.tolist()) == set(range(5))
    assert osr.detector_.bank_.shape[0] == 75 * 16  # fine-tuned on the kept images
    with pytest.raises(ConfigError, match="bank_share"):
        OneShotRemoval(PatchCore(), scoring="sparse_banks", bank_share=0).fit(X)
