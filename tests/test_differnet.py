"""The DifferNet detector: scores, training, determinism, fine-tuning, model files, NaN guard."""

import copy
import math
import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone

import robustsdd.detectors.differnet.detector as detector_module
from robustsdd._errors import ConfigError, DataError
from robustsdd.detectors.base import create_detector, load_detector
from robustsdd.detectors.differnet import DifferNet, differnet_cpu, differnet_paper

D = 6
TINY = dict(
    n_blocks=2, hidden=16, n_hidden_layers=2, epochs=4, batch_size=32, lr=2e-3, noise_std=0.0
)


def _data(n=60, views=3, d=D, seed=0):
    rng = np.random.default_rng(seed)
    # correlated, shifted and scaled Gaussian features, like pooled CNN features
    mix = rng.normal(size=(d, d))
    return (rng.normal(size=(n, views, d)) @ mix + 5.0).astype(np.float32)


def _weights(det):
    return {k: v.detach().clone() for k, v in det.flow_.state_dict().items()}


@pytest.fixture(scope="module")
def X():
    return _data()


@pytest.fixture(scope="module")
def fitted(X):
    return DifferNet(**TINY).fit(X)


def test_registered_and_shapes(X, fitted):
    assert isinstance(create_detector("differnet", **TINY), DifferNet)
    assert fitted.is_fitted_ and fitted.n_features_ == D
    scores = fitted.decision_function(X)
    assert scores.shape == (len(X),) and scores.dtype == np.float64
    assert np.all(np.isfinite(scores))
    assert np.array_equal(fitted.score_samples(X), -scores)
    assert fitted.transform(X).shape == X.shape
    assert fitted.decision_function(X[:, 0, :]).shape == (len(X),)  # 2-D = one view
    assert len(fitted.train_loss_) == TINY["epochs"]


def test_mean_z2_score_by_hand(X, fitted):
    z = fitted.transform(X)
    expected = np.array([np.mean([v**2 for v in z[i].ravel()]) for i in range(len(z))])
    np.testing.assert_allclose(fitted.decision_function(X), expected, rtol=1e-12)
    # transform is the flow applied to the standardised features
    x = (torch.from_numpy(X.reshape(-1, D)) - torch.from_numpy(fitted.mean_)) / torch.from_numpy(
        fitted.std_
    )
    with torch.no_grad():
        z_direct, _ = fitted.flow_(x)
    np.testing.assert_allclose(z.reshape(-1, D), z_direct.double().numpy(), rtol=1e-6, atol=1e-6)


def test_nll_score_by_hand(X, fitted):
    det = copy.deepcopy(fitted).set_params(score="nll")  # same model, other score
    z, log_det = det.transform(X, return_log_det=True)
    log_det_x = log_det - np.sum(np.log(fitted.std_.astype(np.float64)))  # standardisation
    per_view = (0.5 * np.sum(z**2, axis=2) - log_det_x) / D + 0.5 * math.log(2 * math.pi)
    np.testing.assert_allclose(det.decision_function(X), per_view.mean(axis=1), rtol=1e-12)


def test_untrained_identity_flow_is_the_standardised_gaussian(X):
    """zero_init + 0 epochs: the model is N(mean, diag(std^2)) of the training vectors."""
    det = DifferNet(n_blocks=2, hidden=8, epochs=0, zero_init=True, noise_std=0.0).fit(X)
    v = X.reshape(-1, D).astype(np.float64)
    mean, std = v.mean(axis=0), v.std(axis=0)
    u = (X - mean) / std
    np.testing.assert_allclose(det.decision_function(X), np.mean(u**2, axis=(1, 2)), rtol=1e-4)
    log_pdf = -0.5 * u**2 - np.log(std) - 0.5 * math.log(2 * math.pi)  # per dimension
    expected_nll = -log_pdf.mean(axis=2).mean(axis=1)
    nll = det.set_params(score="nll").decision_function(X)
    np.testing.assert_allclose(nll, expected_nll, rtol=1e-4)


def test_training_lowers_the_loss(X, fitted):
    assert fitted.train_loss_[-1] < fitted.train_loss_[0]
    assert fitted.n_skipped_steps_ == 0


def test_planted_outliers_score_highest():
    rng = np.random.default_rng(1)
    train = rng.normal(size=(150, 2, D)).astype(np.float32)
    test = rng.normal(size=(30, 2, D)).astype(np.float32)
    outliers = [4, 17, 25]
    test[outliers] += np.float32(6.0)
    det = DifferNet(n_blocks=2, hidden=16, epochs=8, batch_size=64, lr=2e-3).fit(train)
    scores = det.decision_function(test)
    assert set(np.argsort(scores)[-3:]) == set(outliers)
    inliers = np.delete(scores, outliers)
    assert 0.5 < np.median(inliers) < 2.0  # DifferNet's "normal data give about 1"


def test_deterministic_without_touching_global_rng(X, fitted):
    torch_state, np_state = torch.get_rng_state().clone(), np.random.get_state()[1].copy()
    again = DifferNet(**TINY).fit(X)
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], np_state)
    assert np.array_equal(again.decision_function(X), fitted.decision_function(X))
    assert again.train_loss_ == fitted.train_loss_
    other = DifferNet(**{**TINY, "random_state": 1}).fit(X)
    assert not np.array_equal(other.decision_function(X), fitted.decision_function(X))


def test_partial_fit_continues_from_current_weights(X):
    det = DifferNet(**TINY).fit(X)
    w0, mean0, std0 = _weights(det), det.mean_.copy(), det.std_.copy()
    shifted = _data(seed=5) * 3.0 + 10.0  # other statistics: must not be re-standardised
    # a vanishing learning rate: fine-tuning moves the weights, but only a hair
    det.set_params(lr=1e-9, finetune_epochs=1).partial_fit(shifted)
    w1 = _weights(det)
    assert any(not torch.equal(w0[k], w1[k]) for k in w0)
    assert all(torch.allclose(w0[k].double(), w1[k].double(), atol=1e-6) for k in w0)
    assert np.array_equal(det.mean_, mean0) and np.array_equal(det.std_, std0)
    assert det.n_partial_fits_ == 1 and len(det.train_loss_) == TINY["epochs"] + 1
    # ...whereas a fresh fit with another seed starts elsewhere
    fresh = DifferNet(**{**TINY, "random_state": 3}).fit(shifted)
    trainable = [k for k in w0 if "perm" not in k]
    assert all(not torch.allclose(w0[k], fresh.flow_.state_dict()[k], atol=1e-3) for k in trainable)
    # and real fine-tuning lowers the loss on the new data
    det.set_params(lr=2e-3, finetune_epochs=4).partial_fit(shifted)
    assert det.train_loss_[-1] < det.train_loss_[-4]


def test_partial_fit_on_unfitted_detector_is_fit(X, fitted):
    det = DifferNet(**TINY).partial_fit(X)
    assert np.array_equal(det.decision_function(X), fitted.decision_function(X))


def test_save_load_round_trip(tmp_path, X):
    det = DifferNet(**{**TINY, "score": "nll"}).fit(X)
    det.set_params(finetune_epochs=1).partial_fit(X[:30])
    folder = det.save(tmp_path / "model")
    expected = det.decision_function(X)
    for loaded in (load_detector(folder), DifferNet.load(folder)):
        assert isinstance(loaded, DifferNet)
        assert loaded.get_params()["score"] == "nll"
        assert np.array_equal(loaded.decision_function(X), expected)
        assert np.array_equal(loaded.mean_, det.mean_) and np.array_equal(loaded.std_, det.std_)
        assert loaded.train_loss_ == det.train_loss_ and loaded.n_partial_fits_ == 1
    # a loaded model fine-tunes exactly like the original
    loaded = DifferNet.load(folder)
    det.partial_fit(X)
    loaded.partial_fit(X)
    assert np.array_equal(loaded.decision_function(X), det.decision_function(X))


def test_wrong_n_features_raises(X, fitted):
    with pytest.raises(DataError):
        fitted.decision_function(X[:, :, :4])
    with pytest.raises(DataError):
        clone(fitted).fit(X).partial_fit(X[:, :, :5])
    with pytest.raises(DataError):
        DifferNet().fit(X[:, :, :1])  # one feature cannot be split by a coupling


def test_bad_parameters_raise(X):
    bads = (dict(score="max"), dict(n_blocks=0), dict(lr=0), dict(betas=(0.9,)), dict(hidden=2.5))
    for bad in bads:
        with pytest.raises(ConfigError):
            DifferNet(**{**TINY, **bad}).fit(X)
    with pytest.raises(RuntimeError):
        DifferNet().decision_function(X)


def test_nan_guard_skips_injected_bad_step(X, monkeypatch):
    """One batch with a NaN loss: that step is skipped, counted, warned about once."""
    real_build = detector_module.build_flow
    calls = {"n": 0}

    def poisoned_build(*args, **kwargs):
        flow = real_build(*args, **kwargs)
        forward = flow.forward

        def forward_with_nan(x, *a, **kw):
            z, log_det = forward(x, *a, **kw)
            calls["n"] += 1
            if calls["n"] == 2 and torch.is_grad_enabled():
                z = z * float("nan")
            return z, log_det

        flow.forward = forward_with_nan
        return flow

    monkeypatch.setattr(detector_module, "build_flow", poisoned_build)
    with pytest.warns(RuntimeWarning, match=r"skipped 1 training step.*now 0\.001") as record:
        det = DifferNet(**TINY).fit(X)  # lr 2e-3, halved once
    assert len([w for w in record if "skipped" in str(w.message)]) == 1
    assert det.n_skipped_steps_ == 1
    assert all(torch.isfinite(p).all() for p in det.flow_.parameters())
    assert np.all(np.isfinite(det.train_loss_))


def test_nan_guard_with_absurd_learning_rate(X):
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        det = DifferNet(**{**TINY, "lr": 1e30}).fit(X)
    skipped = [w for w in record if "skipped" in str(w.message)]
    assert len(skipped) == 1 and issubclass(skipped[0].category, RuntimeWarning)
    assert det.n_skipped_steps_ > 0
    assert not any(torch.isnan(p).any() for p in det.flow_.parameters())


def test_presets():
    paper = differnet_paper(epochs=3)
    assert (paper.n_blocks, paper.hidden, paper.n_hidden_layers, paper.epochs) == (8, 2048, 3, 3)
    assert (paper.batch_size, paper.standardize, paper.score) == (96, False, "mean_z2")
    assert tuple(paper.betas) == (0.8, 0.8) and paper.lr == 2e-4 and paper.weight_decay == 1e-5
    assert differnet_cpu().get_params() == DifferNet().get_params()
    assert differnet_cpu(hidden=32).hidden == 32


def test_noise_regularised_scores_depend_only_on_the_image(X):
    det = DifferNet(n_blocks=2, hidden=16, epochs=3, noise_std=0.3, random_state=0).fit(X)
    full = det.decision_function(X)
    # Scoring an image alone or among others gives the same number: the scoring noise is a
    # fixed vector per view position, not a draw per batch row.
    # (to float rounding: a different batch shape may take a different matmul kernel)
    np.testing.assert_allclose(det.decision_function(X[5:6]), full[5:6], rtol=1e-6)
    np.testing.assert_allclose(det.decision_function(X[::-1]), full[::-1], rtol=1e-6)
    again = DifferNet(n_blocks=2, hidden=16, epochs=3, noise_std=0.3, random_state=0).fit(X)
    np.testing.assert_array_equal(again.decision_function(X), full)
    # Without test-time noise, the clean vectors of the noisy-trained flow score lower.
    clean = clone(det).set_params(score_with_noise=False)
    clean.__dict__.update({k: v for k, v in det.__dict__.items() if k.endswith("_")})
    assert clean.decision_function(X).mean() < full.mean()


def test_negative_noise_is_rejected(X):
    with pytest.raises(ConfigError, match="noise_std"):
        DifferNet(noise_std=-0.1, epochs=1).fit(X)
