"""Patch features for PatchCore-style detectors: one vector per image location.

PatchCore (Roth et al., CVPR 2022) describes each location of an image by the
feature maps of two intermediate backbone stages, each averaged over its 3×3
neighbourhood (so a patch sees a little context), the coarser map resized to
the finer one, and the two concatenated. A :class:`PatchFeaturizer` computes
exactly that for every view of every image and caches it like the pooled
features: an image's features are ``(n_views × h × w, channels)``, view-major,
row-major within a view, on a grid of ``patch_grid = (h, w)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .._errors import ConfigError
from .backbones import FeatureExtractor
from .extract import Featurizer

__all__ = ["PatchFeatures", "PatchFeaturizer"]


class PatchFeatures(nn.Module):
    """Normalised images (N, 3, H, W) → patch features (N, h × w, C).

    ``extractor`` is a :class:`~robustsdd.features.FeatureExtractor` whose stages
    give the maps; ``pool`` is the side of the local averaging window (odd).
    """

    def __init__(self, extractor: FeatureExtractor, pool: int = 3):
        super().__init__()
        self.body = extractor.body
        self.pool = int(pool)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.body(x)
        if isinstance(maps, torch.Tensor):
            maps = [maps]
        if self.pool > 1:
            # count_include_pad=False: border patches average their real neighbours only.
            maps = [
                F.avg_pool2d(
                    m, self.pool, stride=1, padding=self.pool // 2, count_include_pad=False
                )
                for m in maps
            ]
        size = maps[0].shape[-2:]
        maps = [
            m
            if m.shape[-2:] == size
            else F.interpolate(m, size=size, mode="bilinear", align_corners=False)
            for m in maps
        ]
        patches = torch.cat(maps, dim=1)  # (N, C, h, w)
        return patches.flatten(2).transpose(1, 2)


@dataclass
class PatchFeaturizer(Featurizer):
    """Per-location features of every view of every image, cached.

    Defaults follow the PatchCore-like floor of issue 6: EfficientNet-Lite0
    stages 2 and 3 (40 + 112 channels at strides 8 and 16), 3×3 average pooling,
    one view at 224² (a 28 × 28 grid). Features of several scales cannot share a
    grid, so ``views.scales`` must be ``(1,)``.

    Examples
    --------
    >>> import numpy as np
    >>> from robustsdd.data import ImageSet
    >>> from robustsdd.features import ViewSpec
    >>> fz = PatchFeaturizer(weights=None, views=ViewSpec(size=64, scales=(1,), rotations=(0,),
    ...                      flips=False), cache_dir=False, progress=False, engine="torch")
    >>> fz.patch_grid, fz.transform(ImageSet([np.zeros((70, 70), np.uint8)], [0], ["a"])).shape
    ((8, 8), (1, 64, 152))
    """

    stages: Sequence[int] = (2, 3)
    pool: int = 3

    def __post_init__(self):
        super().__post_init__()
        if self.views.scales != (1.0,):
            raise ConfigError(f"patch features use one input scale; got scales {self.views.scales}")
        if self.pool < 1 or self.pool % 2 == 0:
            raise ConfigError(f"pool must be a positive odd number, got {self.pool}")
        self._grid = None

    def _backbone_module(self):
        return PatchFeatures(self.extractor, self.pool)

    @property
    def n_features(self) -> int:
        return self.extractor.n_features  # channels of the chosen stages

    @property
    def patch_grid(self) -> tuple:
        """(h, w) of the patch grid at ``views.size`` (that of the first stage's map)."""
        if self._grid is None:
            body = self.extractor.body  # built outside inference mode: its weights stay usable
            with torch.inference_mode():
                maps = body(torch.zeros(1, 3, self.views.size, self.views.size))
            first = maps[0] if isinstance(maps, (list, tuple)) else maps
            self._grid = (int(first.shape[-2]), int(first.shape[-1]))
        return self._grid

    @property
    def feature_shape(self) -> tuple:
        h, w = self.patch_grid
        return (self.views.n_views * h * w, self.n_features)

    @property
    def config_key(self) -> str:
        return f"{super().config_key}|patches|pool={self.pool}"

    def to_dict(self) -> dict:
        return {
            **super().to_dict(),
            "kind": "patch",
            "pool": self.pool,
            "patch_grid": list(self.patch_grid),
        }
