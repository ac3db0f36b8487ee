"""Views of an image: its geometry (whole image or square crop), rotations and flips, scales.

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
from ..data.geometry import GEOMETRIES, Placement, placement

__all__ = ["ViewSpec"]


@dataclass(frozen=True)
class ViewSpec:
    """Which views of each image are fed to the backbone.

    Parameters
    ----------
    size : int
        The input size: the short side of the whole image for ``"keep_aspect"`` (both
        sides are multiples of :func:`~robustsdd.data.geometry.side_unit`: 32 for sizes
        that are multiples of 32), the side of the square for ``"squash"``, ``"pad"`` and
        ``"crop"`` (the paper: 448), the tile side for ``"tile"``.
    scales : tuple of float
        Input scales relative to ``size``; features of all scales are concatenated
        (DifferNet: ``(1, 0.5, 0.25)``).
    rotations : tuple of float
        Rotation angles in degrees, counter-clockwise.
    flips : bool
        Also use the horizontally mirrored image at every rotation (doubles the views).
    geometry : {"keep_aspect", "squash", "pad", "crop", "tile"}
        How an image of any shape becomes the input (:mod:`robustsdd.data.geometry`).
        Default ``"keep_aspect"``: every pixel seen, aspect ratio kept. ``"crop"`` is
        the paper's centre square. Right-angle rotations of a rectangle swap its sides;
        pooled features do not care, and patch features are turned back to the image's
        orientation, so every view of an image shares one patch grid.
    max_aspect : float
        ``"keep_aspect"``: the long side is at most ``max_aspect × size``; a more
        elongated image is shrunk further (short side below ``size``; the featurizer
        counts these in a note).

    Examples
    --------
    >>> ViewSpec(size=64, rotations=(0, 90), flips=True).n_views
    4
    """

    size: int = 224
    scales: tuple = (1.0, 0.5, 0.25)
    rotations: tuple = (0.0, 90.0, 180.0, 270.0)
    flips: bool = True
    geometry: str = "keep_aspect"
    max_aspect: float = 4.0

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
        if self.geometry not in GEOMETRIES:
            raise ConfigError(
                f"unknown geometry {self.geometry!r}; choose one of: {', '.join(GEOMETRIES)}"
            )
        try:
            object.__setattr__(self, "max_aspect", float(self.max_aspect))
        except (TypeError, ValueError):
            raise ConfigError(f"max_aspect must be a number, got {self.max_aspect!r}") from None
        if not self.max_aspect >= 1:
            raise ConfigError(f"max_aspect must be at least 1, got {self.max_aspect}")

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

    @property
    def tile_overlap(self) -> int:
        """``"tile"``: pixels shared by neighbouring tiles (a quarter tile, so every
        patch is stitched from a tile where it has context on all sides)."""
        return self.size // 4

    def placement(self, h: int, w: int) -> Placement:
        """Where an ``h × w`` image sits in the backbone input
        (:func:`~robustsdd.data.geometry.placement`).

        >>> ViewSpec(size=64).placement(64, 256).input_shape
        (64, 256)
        >>> ViewSpec(size=64, geometry="crop").placement(64, 256).source
        (0, 96, 64, 64)
        """
        return placement(h, w, self.geometry, self.size, self.max_aspect)

    def prepare(self, rgb: np.ndarray) -> torch.Tensor:
        """(H, W, 3) uint8 → the input at scale 1, (3, h_in, w_in) float in [0, 1]."""
        where = self.placement(*rgb.shape[:2])
        top, left, sh, sw = where.source
        part = np.ascontiguousarray(rgb[top : top + sh, left : left + sw])
        x = torch.from_numpy(part).permute(2, 0, 1).float().div_(255.0)[None]
        t, lft, th, tw = where.target
        if (sh, sw) != (th, tw):
            x = F.interpolate(
                x,
                size=(th, tw),
                mode="bilinear",
                align_corners=False,
                antialias=sh > th or sw > tw,
            )
        x = x[0].clamp_(0.0, 1.0)
        if (th, tw) != where.input_shape:  # "pad": letterbox on the image's mean colour
            canvas = x.mean(dim=(1, 2), keepdim=True).expand(3, *where.input_shape).clone()
            canvas[:, t : t + th, lft : lft + tw] = x
            x = canvas
        return x

    def make(self, rgb: np.ndarray) -> list[torch.Tensor]:
        """All views of one image, rotation-major, flip-minor: ``n_views`` tensors (3, h, w)
        (a right-angle rotation of a rectangle has its sides swapped)."""
        base = self.prepare(rgb)
        views = []
        for angle in self.rotations:
            rotated = _rotate(base, angle)
            views.append(rotated)
            if self.flips:
                views.append(torch.flip(rotated, dims=(2,)))
        return views

    def view_transforms(self) -> list[tuple[int, bool]]:
        """(quarter turns, mirrored) of each view (non-right angles: 0 quarter turns)."""
        out = []
        for angle in self.rotations:
            quarter = angle / 90.0
            k = int(quarter) % 4 if quarter == int(quarter) else 0
            out.append((k, False))
            if self.flips:
                out.append((k, True))
        return out


def _rotate(x: torch.Tensor, angle: float) -> torch.Tensor:
    quarter = angle / 90.0
    if quarter == int(quarter):
        # Exact, lossless right-angle rotation (counter-clockwise, as torchvision).
        return torch.rot90(x, k=int(quarter) % 4, dims=(1, 2))
    from torchvision.transforms.functional import InterpolationMode, rotate

    return rotate(x, angle, interpolation=InterpolationMode.BILINEAR)


def scaled_inputs(batch: torch.Tensor, spec: ViewSpec) -> Sequence[torch.Tensor]:
    """The batch at each of ``spec``'s scales (DifferNet rescales the normalised tensor);
    both sides are scaled, so a rectangle keeps its shape."""
    out = []
    h, w = batch.shape[-2:]
    for scale in spec.scales:
        shape = (max(1, int(round(h * scale))), max(1, int(round(w * scale))))
        if shape == (h, w):
            out.append(batch)
        else:
            out.append(
                F.interpolate(
                    batch,
                    size=shape,
                    mode="bilinear",
                    align_corners=False,
                    antialias=shape[0] < h,
                )
            )
    return out
