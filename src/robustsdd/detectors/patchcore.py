"""PatchCore: a memory bank of normal patch features, scored by nearest neighbours.

Roth et al., "Towards Total Recall in Industrial Anomaly Detection", CVPR 2022.
Training stores the patch features of the training images (from
:class:`~robustsdd.features.patches.PatchFeaturizer`: locally averaged maps of
two intermediate stages) and keeps a coreset of them; a test patch's score is
its distance to the nearest bank patch, and an image's score is its highest
patch score. The per-patch scores on the patch grid are the anomaly map.

Input ``X`` is ``(n_images, n_patches, n_channels)`` — the patch axis takes the
place of the views axis of pooled features. Scores are plain distances in
feature units (a training image's own patches are in the bank, so no in-sample
score can set a unit): clean with the scale-free rules (``auto``, ``fraction``)
rather than a fixed threshold such as the paper's 1.5.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .._errors import ConfigError, DataError
from ._neighbours import greedy_coreset, knn_distances
from .base import BaseDetector, check_features, register_detector

__all__ = ["PatchCore"]

CORESETS = ("greedy", "random", "none")


@register_detector("patchcore")
class PatchCore(BaseDetector):
    """Nearest-neighbour patch memory bank.

    Parameters
    ----------
    coreset : {"greedy", "random", "none"}
        How the bank is subsampled: greedy k-centre (PatchCore's; covers the
        patch distribution), a uniform random subset, or every patch.
    coreset_ratio : float in (0, 1]
        Share of training patches kept in the bank (PatchCore: 1–10 %; default
        1 %: greedy selection of 10 % of 78,400 patches took minutes on 2 cores).
    projection_dim : int
        Random-projection dimension used by the greedy selection only.
    k : int
        Nearest bank patches averaged into a patch score (PatchCore: 1).
    grid : (h, w) or None
        The patch grid (``PatchFeaturizer.patch_grid``), for :meth:`anomaly_maps`
        (several views: the first view's map is returned). None: a square grid
        is inferred at fit time when the patch count is a perfect square.
    random_state : int
        Seeds the coreset.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(20, 16, 6))
    >>> det = PatchCore(coreset="none", grid=(4, 4)).fit(X)
    >>> odd = X[:1].copy(); odd[0, 5] += 20           # one anomalous patch
    >>> bool(det.decision_function(odd)[0] > det.decision_function(X[:1] + 0.01)[0])
    True
    >>> int(det.anomaly_maps(odd)[0].argmax())        # row 1, column 1 of the 4x4 grid
    5
    """

    #: Axis 1 of ``X`` holds patches, not views: cleaning cannot hold views out.
    feature_layout = "patches"

    def __init__(self, coreset="greedy", coreset_ratio=0.01, projection_dim=128, k=1, grid=None,
                 random_state=0):
        self.coreset = coreset
        self.coreset_ratio = coreset_ratio
        self.projection_dim = projection_dim
        self.k = k
        self.grid = grid
        self.random_state = random_state

    def fit(self, X, y=None):
        self._check_params()
        X = check_features(X)
        patches = X.reshape(-1, X.shape[2])
        n_keep = len(patches) if self.coreset == "none" else max(1, int(round(self.coreset_ratio * len(patches))))
        if self.coreset == "greedy" and n_keep < len(patches):
            chosen, self.coverage_radius_ = greedy_coreset(
                patches, n_keep, projection_dim=self.projection_dim, random_state=self.random_state)
        elif self.coreset == "random" and n_keep < len(patches):
            rng = np.random.default_rng(self.random_state)
            chosen, self.coverage_radius_ = np.sort(rng.choice(len(patches), n_keep, replace=False)), None
        else:
            chosen, self.coverage_radius_ = np.arange(len(patches)), 0.0
        if self.k > len(chosen):
            raise ConfigError(f"k={self.k} is larger than the memory bank ({len(chosen)} patches)")
        self.bank_ = patches[chosen].copy()
        self.n_features_ = X.shape[2]
        self.grid_ = self._resolve_grid(X.shape[1])
        self.is_fitted_ = True
        return self

    def _resolve_grid(self, n_patches: int):
        if self.grid is not None:
            return tuple(int(g) for g in self.grid)
        side = int(round(np.sqrt(n_patches)))
        return (side, side) if side * side == n_patches else None

    def patch_scores(self, X) -> np.ndarray:
        """Distance of every patch to its nearest bank patch(es): (n_images, n_patches)."""
        self._check_is_fitted()
        X = check_features(X, n_features=self.n_features_)
        n, p, d = X.shape
        return knn_distances(X.reshape(-1, d), self.bank_, int(self.k)).reshape(n, p)

    def decision_function(self, X) -> np.ndarray:
        """Image score: the highest patch score."""
        return self.patch_scores(X).max(axis=1)

    def anomaly_maps(self, X, size=None) -> np.ndarray:
        """Patch scores on the grid, (n_images, h, w); bilinearly resized to ``size``
        (h', w') if given (e.g. the image's size, for overlays)."""
        self._check_is_fitted()
        if self.grid_ is None:
            raise ConfigError("anomaly_maps needs the patch grid: PatchCore(grid=(h, w))")
        h, w = self.grid_
        scores = self.patch_scores(X)
        if scores.shape[1] % (h * w):
            raise DataError(f"{scores.shape[1]} patches per image do not fit a {h}x{w} grid")
        maps = scores[:, : h * w].reshape(-1, h, w)
        if size is not None:
            t = torch.from_numpy(maps)[:, None].float()
            maps = F.interpolate(t, size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
            maps = maps.double().numpy()
        return maps

    def _check_params(self):
        if self.coreset not in CORESETS:
            raise ConfigError(f"unknown coreset {self.coreset!r}; choose one of: {', '.join(CORESETS)}")
        if not 0 < float(self.coreset_ratio) <= 1:
            raise ConfigError(f"coreset_ratio must be in (0, 1], got {self.coreset_ratio}")
        if not (isinstance(self.k, (int, np.integer)) and self.k >= 1):
            raise ConfigError(f"k must be a positive integer, got {self.k!r}")

    def _get_state(self):
        grid = self.grid_ if self.grid_ is not None else (0, 0)
        return {"bank": torch.from_numpy(self.bank_), "grid": torch.tensor(grid, dtype=torch.int64)}

    def _set_state(self, state):
        self.bank_ = state["bank"].float().numpy()
        self.n_features_ = int(self.bank_.shape[1])
        grid = tuple(int(g) for g in state["grid"].tolist())
        self.grid_ = grid if grid != (0, 0) else None
