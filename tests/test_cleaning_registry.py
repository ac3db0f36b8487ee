"""The rule registry is the one place a rule is declared; OneShotRemoval's fitted state."""

import numpy as np
import pytest

from robustsdd import GaussianDetector, OneShotRemoval
from robustsdd.cleaning import RULES, Rule, RuleParam, describe, fit_settings, parse_strategy
from robustsdd.cleaning.osr import _FITTED
from robustsdd.cleaning.registry import Cut
from robustsdd.cli import build_parser


def _spec(rule: Rule) -> str:
    return f"{rule.prefix}_{rule.param.default:g}" if rule.prefix else rule.name


@pytest.mark.parametrize("name", list(RULES))
def test_every_rule_is_spelled_described_and_offered(name):
    rule = RULES[name]
    params = parse_strategy(_spec(rule))
    assert params["rule"] == name
    if rule.param is not None:
        assert params[rule.param.name] == rule.param.default
    text = describe(params)
    assert text and text == rule.describe({**params})
    args = build_parser().parse_args(["fit", "x", "--out", "m", "--rule", name])
    assert args.rule == name
    if rule.param is not None:  # each rule's number has its flag, default None = the rule's
        assert getattr(args, rule.param.name) is None


def test_rule_choices_of_the_cli_are_the_registry():
    parser = build_parser()
    fit = parser._subparsers._group_actions[0].choices["fit"]
    rule = next(a for a in fit._actions if a.dest == "rule")
    assert tuple(rule.choices) == tuple(RULES) + ("none",)


def test_a_new_rule_is_one_registry_entry(monkeypatch):
    """Declared once, a rule works in OneShotRemoval, in sweep specs and in descriptions."""

    def top_two(scores, settings):
        keep = np.ones(len(scores), bool)
        keep[np.argsort(-scores)[:2]] = False
        return Cut(keep)

    rules = dict(
        RULES,
        top_two=Rule("top_two", "drop the two highest", "drop the top two", None, None, top_two),
    )
    monkeypatch.setattr("robustsdd.cleaning.registry.RULES", rules)
    monkeypatch.setattr("robustsdd.cleaning.osr.RULES", rules)
    assert parse_strategy("top_two_r2@in_sample") == {
        "rule": "top_two",
        "rounds": 2,
        "scoring": "in_sample",
    }
    assert (
        describe({"rule": "top_two", "scoring": "in_sample"})
        == "drop the top two, in-sample scores"
    )
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 2, 4))
    X[[4, 9]] += 8
    osr = OneShotRemoval(GaussianDetector(), rule="top_two").fit(X)
    assert sorted(osr.removed_indices_.tolist()) == [4, 9]


def test_rule_param_values_are_checked():
    param = RuleParam("z", 3.0, "", lambda v: None if v > 0 else "must be positive")
    assert param.value("2", "here") == 2.0
    with pytest.raises(Exception, match="here: z must be positive, got '-1'"):
        param.value("-1", "here")
    with pytest.raises(Exception, match="not a number"):
        param.value("abc", "here")
    with pytest.raises(Exception, match="must be finite"):
        param.value("inf", "here")


def _data(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(40, 4, 6))
    X[:4] += 5  # far outliers
    X[4:7] += 2.5  # moderate ones, for the later rounds
    return X


def _assert_same_fitted(a, b, X):
    for name in _FITTED:
        assert hasattr(a, name) == hasattr(b, name), name
        if not hasattr(a, name):
            continue
        va, vb = getattr(a, name), getattr(b, name)
        if name in ("detector_", "baseline_detector_"):
            np.testing.assert_array_equal(va.decision_function(X), vb.decision_function(X))
        elif name == "stage_scores_":
            assert va.keys() == vb.keys()
            for k in va:
                np.testing.assert_array_equal(va[k], vb[k])
        elif isinstance(va, np.ndarray):
            assert va.dtype == vb.dtype
            np.testing.assert_array_equal(va, vb)
        else:
            assert va == vb, name


@pytest.mark.parametrize("rule", ["confident", "auto", "min_size"])
def test_fitted_state_round_trip_restores_every_attribute(rule):
    X = _data()
    settings = (
        {"rule": rule, "scoring": "out_of_fold", "rounds": 3}
        if rule != "min_size"
        else {"rule": rule, "min_size": 35, "scoring": "in_sample"}
    )
    osr = OneShotRemoval(GaussianDetector(), **settings).fit(X)
    assert hasattr(osr, "p_normal_") == (rule == "confident")
    if rule == "auto":
        assert osr.rounds_run_ == 2  # the state restored must not say 1 (a past bug)
    arrays, info = osr.get_fitted_state()
    restored = OneShotRemoval(GaussianDetector(), **settings).set_fitted_state(arrays, info)
    _assert_same_fitted(osr, restored, X)
    # The pair survives a JSON + safetensors trip (what checkpoints store).
    import json

    import torch
    from safetensors.torch import load, save

    blob = load(save({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}))
    again = OneShotRemoval(GaussianDetector(), **settings).set_fitted_state(
        {k: v.numpy() for k, v in blob.items()}, json.loads(json.dumps(info))
    )
    _assert_same_fitted(osr, again, X)


def test_unfitted_state_is_refused():
    with pytest.raises(RuntimeError, match="not fitted"):
        OneShotRemoval(GaussianDetector()).get_fitted_state()


def test_refit_leaves_nothing_stale():
    X = _data()
    osr = OneShotRemoval(GaussianDetector(), rule="confident", scoring="in_sample").fit(X)
    assert hasattr(osr, "p_normal_")
    osr.set_params(rule="auto", min_keep=39).fit(X)
    assert not hasattr(osr, "p_normal_") and osr.guard_fired_ and osr.cut_ is not None
    osr.set_params(rule="min_size", min_size=38, min_keep=0.5).fit(X)
    assert osr.guard_fired_ is False and osr.cut_ is None


def test_fit_settings_share_stage1_and_match_separate_fits():
    X = _data(1)
    labels = np.r_[np.ones(7, int), np.zeros(33, int)]
    settings = {
        "none": None,
        "oracle": {"rule": "oracle"},
        "a": {"rule": "score_threshold", "threshold": 3.0, "scoring": "out_of_fold"},
        "b": {"rule": "score_threshold", "threshold": 6.0, "scoring": "out_of_fold"},
    }
    fits = dict(fit_settings(GaussianDetector(), X, settings, seed=3, labels=labels))
    assert fits["oracle"].keep.tolist() == (labels == 0).tolist()
    assert fits["none"].keep.all() and fits["none"].osr is None
    # b reused a's stage 1 and equals b fitted alone.
    alone = OneShotRemoval(GaussianDetector(), random_state=3, **settings["b"]).fit(X)
    np.testing.assert_array_equal(fits["b"].keep, alone.keep_mask_)
    np.testing.assert_array_equal(fits["b"].decision_function(X), alone.decision_function(X))
    assert fits["b"].osr.baseline_detector_ is not fits["a"].osr.baseline_detector_
    # a's stage 1 is the plain model fitted for "none", and a equals a fitted alone.
    alone = OneShotRemoval(GaussianDetector(), random_state=3, **settings["a"]).fit(X)
    np.testing.assert_array_equal(fits["a"].keep, alone.keep_mask_)
    np.testing.assert_array_equal(
        fits["a"].osr.stage1_removal_scores_, alone.stage1_removal_scores_
    )
    np.testing.assert_array_equal(fits["a"].decision_function(X), alone.decision_function(X))


@pytest.mark.parametrize("scoring", ["out_of_fold", "held_out_views"])
def test_a_plain_fit_is_the_stage1_of_regimes_that_train_on_every_view(scoring, monkeypatch):
    X = _data(1)
    sizes = []
    real = GaussianDetector.fit

    def counting(self, A, y=None):
        sizes.append(A.shape[:2])
        return real(self, A, y)

    monkeypatch.setattr(GaussianDetector, "fit", counting)
    settings = {"none": None, "a": {"rule": "auto", "scoring": scoring}}
    fits = dict(fit_settings(GaussianDetector(), X, settings, seed=3))
    n_kept = int(fits["a"].keep.sum())
    if scoring == "out_of_fold":  # "none", the 5 folds' fits, the fine-tune: no stage-1 fit
        assert sizes == [(40, 4)] + [(32, 4)] * 5 + [(n_kept, 4)]
    else:  # stage 1 trains on the even views only: a fit of its own
        assert sizes == [(40, 4), (40, 2), (n_kept, 4)]
