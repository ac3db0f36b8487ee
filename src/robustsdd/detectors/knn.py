"""k-nearest-neighbour distance on pooled features (a strong, simple baseline).

An image's score is the distance of each of its views to the ``k`` nearest
training vectors, averaged over the ``k`` neighbours and over views (Eskin et
al., 2002; on deep features, Bergman et al., 2020). It has no training beyond
storing the vectors, so it cannot be "fine-tuned": ``partial_fit`` refits.
Distances are divided by the median nearest-neighbour distance within the
training set, so scores of typical images are about 1, like the other detectors'.
"""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import ArrayLike

from .._errors import ConfigError
from .._validation import check_positive_int
from ._neighbours import knn_distances
from .base import BaseDetector, check_features, register_detector

__all__ = ["KNNDetector"]


@register_detector("knn")
class KNNDetector(BaseDetector):
    """Mean distance to the ``k`` nearest training vectors.

    Parameters
    ----------
    k : int
        Neighbours averaged (default 5).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(30, 2, 8))
    >>> det = KNNDetector(k=3).fit(X)
    >>> s = det.decision_function(np.concatenate([X[:2] + 0.01, X[:2] + 10]))
    >>> bool(s[2:].min() > s[:2].max())
    True
    """

    def __init__(self, k: int = 5):
        self.k = k

    def fit(self, X: ArrayLike, y: object = None) -> KNNDetector:
        check_positive_int(self.k, "k")
        X = check_features(X)
        bank = X.reshape(-1, X.shape[2])
        if len(bank) <= self.k:
            raise ConfigError(
                f"k={self.k} needs more than {self.k} training vectors; got {len(bank)}"
            )
        self.bank_ = bank.copy()
        self.n_features_ = X.shape[2]
        # Scale: the typical distance of a training vector to its k nearest others.
        self.scale_ = float(np.median(knn_distances(bank, bank, self.k, exclude_self=True))) or 1.0
        self.is_fitted_ = True
        return self

    def decision_function(self, X: ArrayLike) -> np.ndarray:
        self._check_is_fitted()
        X = check_features(X, n_features=self.n_features_)
        n, v, d = X.shape
        dist = knn_distances(X.reshape(-1, d), self.bank_, self.k).reshape(n, v)
        return dist.mean(axis=1) / self.scale_

    def _get_state(self):
        return {
            "bank": torch.from_numpy(self.bank_),
            "scale": torch.tensor([self.scale_], dtype=torch.float64),
        }

    def _set_state(self, state):
        self.bank_ = state["bank"].float().numpy()
        self.scale_ = float(state["scale"][0])
        self.n_features_ = int(self.bank_.shape[1])
