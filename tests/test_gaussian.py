import numpy as np
import pytest
from sklearn.covariance import LedoitWolf, ShrunkCovariance

from robustsdd import ConfigError, DataError
from robustsdd.detectors.gaussian import GaussianDetector, shrunk_covariance


def test_score_is_mean_squared_mahalanobis_per_feature_by_hand():
    det = GaussianDetector(shrinkage=0.0).fit(
        np.array([[[1.0, 0.0]], [[-1.0, 0.0]], [[0.0, 2.0]], [[0.0, -2.0]]])
    )
    # Mean 0; empirical covariance diag(0.5, 2) (maximum likelihood, divided by n).
    np.testing.assert_allclose(det.mean_, [0, 0], atol=1e-12)
    x = np.array([[[1.0, 2.0], [0.0, 0.0]]])  # two views
    d2_view0 = 1.0 / 0.5 + 4.0 / 2.0
    np.testing.assert_allclose(det.decision_function(x), [(d2_view0 + 0.0) / 2 / 2])


@pytest.mark.parametrize("shape", [(50, 8), (30, 60), (400, 96), (5, 1)])
def test_shrunk_covariance_is_scikit_learns(shape):
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=shape) * rng.uniform(0.5, 3, size=shape[1]) + 2
    vectors = vectors.astype(np.float32).astype(np.float64)  # as the detector reads them
    mean, lw, smallest = shrunk_covariance(vectors, "ledoit_wolf")
    ref = LedoitWolf(store_precision=False).fit(vectors)
    np.testing.assert_allclose(mean, ref.location_, rtol=1e-12)
    np.testing.assert_allclose(lw, ref.covariance_, rtol=1e-10, atol=1e-12)
    assert 0 <= smallest <= np.linalg.eigvalsh(lw).min() * (1 + 1e-9)  # a lower bound
    _, fixed, _ = shrunk_covariance(vectors, 0.3)
    ref = ShrunkCovariance(store_precision=False, shrinkage=0.3).fit(vectors)
    np.testing.assert_allclose(fixed, ref.covariance_, rtol=1e-10, atol=1e-12)
    # The detector's precision is the inverse of that covariance, exactly symmetric.
    precision = GaussianDetector().fit(vectors[:, None, :]).precision_
    np.testing.assert_allclose(precision @ lw, np.eye(shape[1]), atol=1e-9)
    np.testing.assert_array_equal(precision, precision.T)


def test_ledoit_wolf_handles_more_features_than_samples():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(10, 2, 50))
    det = GaussianDetector().fit(X)
    test = np.concatenate([rng.normal(size=(5, 2, 50)), rng.normal(size=(5, 2, 50)) + 3])
    s = det.decision_function(test)
    assert np.all(np.isfinite(s)) and s[5:].min() > s[:5].max()


def test_bad_inputs():
    with pytest.raises(ConfigError):
        GaussianDetector(shrinkage="nope").fit(np.zeros((5, 1, 3)))
    det = GaussianDetector().fit(np.random.default_rng(0).normal(size=(8, 1, 3)))
    with pytest.raises(DataError, match="3"):
        det.decision_function(np.zeros((2, 1, 4)))
    with pytest.raises(DataError, match="NaN"):
        GaussianDetector().fit(np.full((5, 1, 3), np.nan))
    with pytest.raises(RuntimeError, match="not fitted"):
        GaussianDetector().decision_function(np.zeros((2, 1, 3)))


def test_save_load_round_trip_gives_identical_scores(tmp_path):
    from robustsdd import load_detector

    rng = np.random.default_rng(2)
    X = rng.normal(size=(30, 2, 5))
    det = GaussianDetector(shrinkage=0.1).fit(X)
    det.save(tmp_path / "model")
    loaded = load_detector(tmp_path / "model")
    assert isinstance(loaded, GaussianDetector) and loaded.shrinkage == 0.1
    np.testing.assert_array_equal(loaded.decision_function(X), det.decision_function(X))
