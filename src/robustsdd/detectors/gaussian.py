"""A Gaussian (Mahalanobis) detector on pooled features, with a shrunk covariance.

Fits one multivariate normal to all (image, view) feature vectors; an image's
score is its squared Mahalanobis distance averaged over views and divided by the
number of features (so, like DifferNet's mean z², normal data score about 1).
Ledoit–Wolf shrinkage keeps the covariance invertible when the features
outnumber the vectors, as they do for 100 training images (Ledoit & Wolf, 2004).
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import torch
from numpy.typing import ArrayLike
from sklearn.covariance import LedoitWolf, ShrunkCovariance

from .._errors import ConfigError
from .._validation import check_float_range
from .base import BaseDetector, check_features, register_detector

__all__ = ["GaussianDetector"]


@register_detector("gaussian")
class GaussianDetector(BaseDetector):
    """Mahalanobis distance to a Gaussian fitted on training features.

    Parameters
    ----------
    shrinkage : "ledoit_wolf" or float in [0, 1]
        Covariance shrinkage towards a scaled identity: Ledoit–Wolf's estimate
        (default) or a fixed coefficient.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(50, 4, 8))
    >>> det = GaussianDetector().fit(X)
    >>> scores = det.decision_function(np.concatenate([X[:2], X[:2] + 10]))
    >>> bool(scores[2:].min() > scores[:2].max())
    True
    """

    def __init__(self, shrinkage: str | float = "ledoit_wolf"):
        self.shrinkage = shrinkage

    def fit(self, X: ArrayLike, y: object = None) -> GaussianDetector:
        # store_precision=False: sklearn would also invert the covariance, by an
        # eigendecomposition, which the Cholesky inverse below makes redundant.
        if isinstance(self.shrinkage, str) and self.shrinkage == "ledoit_wolf":
            estimator = LedoitWolf(store_precision=False, assume_centered=False)
        else:
            try:
                shrinkage = check_float_range(self.shrinkage, "shrinkage", low=0, high=1)
            except ConfigError:
                raise ConfigError(
                    f"shrinkage must be 'ledoit_wolf' or a number in [0, 1], got {self.shrinkage!r}"
                ) from None
            estimator = ShrunkCovariance(store_precision=False, shrinkage=shrinkage)
        X = check_features(X)
        vectors = X.reshape(-1, X.shape[2]).astype(np.float64)
        estimator.fit(vectors)
        self.mean_ = estimator.location_
        self.precision_ = _inverse_of_positive_definite(estimator.covariance_)
        self.n_features_ = X.shape[2]
        self.is_fitted_ = True
        return self

    def decision_function(self, X: ArrayLike) -> np.ndarray:
        self._check_is_fitted()
        X = check_features(X, n_features=self.n_features_)
        centred = X.astype(np.float64) - self.mean_
        # A BLAS matrix product then a row-wise dot: a three-operand einsum here
        # is not routed to BLAS and was 100x slower (15 s of a 19 s sweep group).
        d2 = ((centred @ self.precision_) * centred).sum(axis=2)
        return d2.mean(axis=1) / self.n_features_

    def _get_state(self):
        return {
            "mean": torch.from_numpy(self.mean_),
            "precision": torch.from_numpy(self.precision_),
        }

    def _set_state(self, state):
        self.mean_ = state["mean"].double().numpy()
        self.precision_ = state["precision"].double().numpy()
        if self.precision_.shape != (self.mean_.size, self.mean_.size):
            raise ValueError("precision and mean disagree in size")
        self.n_features_ = self.mean_.size


def _inverse_of_positive_definite(matrix: np.ndarray) -> np.ndarray:
    """Inverse through a Cholesky factor (5x faster than sklearn's eigh-based
    pinvh at 960 features); a shrunk covariance is positive definite, and the
    pseudo-inverse remains the fallback for one that is numerically not."""
    try:
        factor = scipy.linalg.cho_factor(matrix, lower=True, check_finite=False)
        inverse = scipy.linalg.cho_solve(factor, np.eye(len(matrix)), check_finite=False)
    except np.linalg.LinAlgError:
        return scipy.linalg.pinvh(matrix)
    return (inverse + inverse.T) / 2  # exactly symmetric, as pinvh's is
