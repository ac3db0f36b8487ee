"""Views of an image: square crop, resize, rotations and flips, and the input scales.

DifferNet trains on random rotations and averages the score over 64 rotated
test views, with three input scales (448, 224, 112). Because the backbone is
frozen, robustsdd fixes a finite set of views, extracts each once and caches it.
Right-angle rotations and flips are exact; other angles leave black corners,
which were found harmful on ELPV (docs/design.md §3), so the default uses right angles only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .._errors import ConfigError
from ..data.geometry import centre_square

__all__ = ["ViewSpec"]


@dataclass(frozen=True)
class ViewSpec:
    """Which views of each image are fed to the backbone.

    Parameters
    ----------
    size : int
        Side of the square the image is centre-cropped and resized to (the paper: 448).
    scales : tuple of float
        Input scales relative to ``size``; features of all scales are concatenated
        (DifferNet: ``(1, 0.5, 0.25)``).
    rotations : tuple of float
        Rotation angles in degrees, counter-clockwise.
    flips : bool
        Also use the horizontally mirrored image at every rotation (doubles the views).

    Examples
    --------
    >>> ViewSpec(size=64, rotations=(0, 90), flips=True).n_views
    4
    """

    size: int = 224
    scales: tuple = (1.0, 0.5, 0.25)
    rotations: tuple = (0.0, 90.0, 180.0, 270.0)
    flips: bool = True

    def __post_init__(self):
        object.__setattr__(self, "scales", tuple(float(s) for s in self.scales))
        object.__setattr__(self, "rotations", tuple(float(r) % 360.0 for r in self.rotations))
        if int(self.size) < 16:
            raise ConfigError(f"view size must be at least 16 pixels, got {self.size}")
        if not self.scales or any(not 0 < s <= 4 for s in self.scales):
            raise ConfigError(f"scales must be in (0, 4], got {self.scales}")
        if min(self.scale_sizes) < 8:
            raise ConfigError(f"scale {min(self.scales)} of size {self.size} is below 8 pixels")
        if not self.rotations:
            raise ConfigError("at least one rotation angle is needed (0 for none)")

    @classmethod
    def rotations_every(cls, n: int, **kw: Any) -> ViewSpec:
        """``n`` rotations evenly spaced over 360° (DifferNet tests with ``n=64``)."""
        return cls(rotations=tuple(i * 360.0 / n for i in range(n)), **kw)

    @property
    def n_views(self) -> int:
        return len(self.rotations) * (2 if self.flips else 1)

    @property
    def scale_sizes(self) -> list:
        return [max(1, int(round(self.size * s))) for s in self.scales]

    @property
    def key(self) -> str:
        d = asdict(self)
        return "views|" + "|".join(f"{k}={d[k]}" for k in sorted(d))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["scales"], d["rotations"] = list(self.scales), list(self.rotations)
        return d

    def square(self, rgb: np.ndarray) -> torch.Tensor:
        """Centre-crop to a square and resize: (H, W, 3) uint8 → (3, size, size) in [0, 1]."""
        crop = np.ascontiguousarray(centre_square(rgb))
        side = crop.shape[0]
        x = torch.from_numpy(crop).permute(2, 0, 1).float().div_(255.0)[None]
        if side != self.size:
            x = F.interpolate(
                x,
                size=(self.size, self.size),
                mode="bilinear",
                align_corners=False,
                antialias=side > self.size,
            )
        return x[0].clamp_(0.0, 1.0)

    def make(self, rgb: np.ndarray) -> torch.Tensor:
        """All views of one image: (n_views, 3, size, size), rotation-major, flip-minor."""
        base = self.square(rgb)
        views = []
        for angle in self.rotations:
            rotated = _rotate(base, angle)
            views.append(rotated)
            if self.flips:
                views.append(torch.flip(rotated, dims=(2,)))
        return torch.stack(views)


def _rotate(x: torch.Tensor, angle: float) -> torch.Tensor:
    quarter = angle / 90.0
    if quarter == int(quarter):
        # Exact, lossless right-angle rotation (counter-clockwise, as torchvision).
        return torch.rot90(x, k=int(quarter) % 4, dims=(1, 2))
    from torchvision.transforms.functional import InterpolationMode, rotate

    return rotate(x, angle, interpolation=InterpolationMode.BILINEAR)


def scaled_inputs(batch: torch.Tensor, spec: ViewSpec) -> Sequence[torch.Tensor]:
    """The batch at each of ``spec``'s scales (DifferNet rescales the normalised tensor)."""
    out = []
    for side in spec.scale_sizes:
        if side == batch.shape[-1]:
            out.append(batch)
        else:
            out.append(
                F.interpolate(
                    batch,
                    size=(side, side),
                    mode="bilinear",
                    align_corners=False,
                    antialias=side < batch.shape[-1],
                )
            )
    return out
