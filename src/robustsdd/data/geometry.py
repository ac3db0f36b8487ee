"""Image geometry: how an image of any shape becomes the backbone's input, and back.

An image and its mask must be cut the same way, or a pixel-level score compares a map
with the wrong pixels. Both the views (:class:`robustsdd.features.ViewSpec`) and the maps
drawn back onto images (:func:`map_to_image`) use :func:`placement`, so a map in image
coordinates lines up with the image's own mask pixel for pixel; masks are never cropped.

Geometries (``ViewSpec.geometry``):

``"keep_aspect"`` (default)
    The whole image, resized so its short side is ``size`` and both sides are multiples
    of :data:`STRIDE` (:func:`side_unit`; fully convolutional backbones take any H × W,
    and multiples of the largest stride keep patch grids exact). The long side is capped
    at ``max_aspect × size``: a more elongated image is shrunk further, its short side
    below ``size``.
``"squash"``
    The whole image resized to ``size × size`` (aspect ratio not kept).
``"pad"``
    The whole image resized so its long side is ``size``, centred on a ``size × size``
    canvas of its own mean colour (letterbox).
``"crop"``
    The centred square of side min(H, W), resized to ``size × size``: the paper's setting
    (KSDD2, Sec. 4.1). Pixels outside the square are never seen.
``"tile"``
    The whole image at (about) its own resolution (short side at least ``size``, sides
    rounded to multiples of :data:`STRIDE`), cut by the patch featurizer into overlapping
    ``size × size`` tiles whose patch features are stitched into one grid. Patch features
    only; for large images whose defects are small (see BENCHMARKS.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

__all__ = [
    "GEOMETRIES",
    "STRIDE",
    "Placement",
    "map_to_image",
    "placement",
    "side_unit",
    "tile_starts",
]

GEOMETRIES = ("keep_aspect", "squash", "pad", "crop", "tile")

#: Input sides of the whole-image geometries are multiples of this: the largest total
#: stride of the supported backbones (EfficientNet, ResNet, ConvNeXt stages end at /32).
STRIDE = 32


@dataclass(frozen=True)
class Placement:
    """Where an (h, w) image sits in the backbone input of one geometry.

    Attributes
    ----------
    input_shape : (H, W)
        Size of the backbone input (before rotations; the input scale 1).
    source : (top, left, height, width)
        The part of the image that the input shows (all of it except with ``"crop"``).
    target : (top, left, height, width)
        Where that part lies in the input (all of it except with ``"pad"``).
    """

    input_shape: tuple[int, int]
    source: tuple[int, int, int, int]
    target: tuple[int, int, int, int]

    @property
    def shrink(self) -> float:
        """How many image pixels one input pixel stands for (along the shorter side)."""
        return min(self.source[2] / self.target[2], self.source[3] / self.target[3])


def _multiple(x: float, unit: int) -> int:
    return max(unit, int(round(x / unit)) * unit)


def side_unit(size: int) -> int:
    """What whole-image input sides are multiples of: :data:`STRIDE`, or for a ``size``
    that is not a multiple of it the largest power of two dividing ``size`` (so the
    short side is exactly ``size``).

    >>> side_unit(224), side_unit(448), side_unit(20)
    (32, 32, 4)
    """
    return min(STRIDE, int(size) & -int(size))


def placement(
    h: int, w: int, geometry: str = "keep_aspect", size: int = 224, max_aspect: float = 4.0
) -> Placement:
    """The :class:`Placement` of an ``h × w`` image.

    >>> placement(300, 900, "keep_aspect", 224).input_shape
    (224, 672)
    >>> placement(100, 1000, "keep_aspect", 64, max_aspect=4).input_shape  # capped: 1:10
    (32, 256)
    >>> placement(300, 900, "crop", 224).source
    (0, 300, 300, 300)
    >>> placement(300, 900, "pad", 224).target
    (74, 0, 75, 224)
    """
    h, w, size = int(h), int(w), int(size)
    whole = (0, 0, h, w)
    if geometry == "crop":
        side = min(h, w)
        source = ((h - side) // 2, (w - side) // 2, side, side)
        return Placement((size, size), source, (0, 0, size, size))
    if geometry == "squash":
        return Placement((size, size), whole, (0, 0, size, size))
    if geometry == "pad":
        scale = size / max(h, w)
        th, tw = max(1, round(h * scale)), max(1, round(w * scale))
        return Placement((size, size), whole, ((size - th) // 2, (size - tw) // 2, th, tw))
    if geometry == "keep_aspect":
        scale = min(size / min(h, w), max_aspect * size / max(h, w))
    elif geometry == "tile":
        scale = max(1.0, size / min(h, w))  # never shrunk; enlarged to at least one tile
    else:
        raise ValueError(f"unknown geometry {geometry!r}; choose one of: {', '.join(GEOMETRIES)}")
    unit = side_unit(size)
    H, W = _multiple(h * scale, unit), _multiple(w * scale, unit)
    return Placement((H, W), whole, (0, 0, H, W))


def tile_starts(length: int, tile: int, overlap: int, align: int = 1) -> list[int]:
    """Start offsets of tiles of side ``tile`` covering ``length``, evenly spread with about
    ``overlap`` or more shared pixels between neighbours, each a multiple of ``align`` (so
    tile patch grids fall on the image's grid); the last tile ends at ``length`` (a
    multiple of ``align`` too).

    >>> tile_starts(448, 224, 56, 32), tile_starts(224, 224, 56), tile_starts(500, 224, 56)
    ([0, 128, 224], [0], [0, 138, 276])
    """
    if length <= tile:
        return [0]
    step = tile - overlap
    n = int(np.ceil((length - tile) / step)) + 1
    return [int(round(i * (length - tile) / (n - 1) / align)) * align for i in range(n)]


def map_to_image(amap: np.ndarray, where: Placement, shape: tuple[int, int]) -> np.ndarray:
    """A map over the backbone input (any resolution) drawn back onto the ``shape`` image.

    The map's part that shows image content is resized (bilinear) onto the image region
    the input shows; image pixels the input never showed (outside the ``"crop"`` square)
    get the map's minimum: the detector has no evidence there.

    >>> m = np.zeros((4, 4)); m[1, 1] = 1
    >>> out = map_to_image(m, placement(8, 16, "crop", 4), (8, 16))
    >>> out.shape, float(out[:, :4].max()), out.argmax() // 16 < 4
    ((8, 16), 0.0, np.True_)
    """
    amap = np.asarray(amap, dtype=np.float64)
    # Via the input's own resolution, so the content box is cut exactly.
    full = _resize(amap, where.input_shape)
    top, left, th, tw = where.target
    st, sl, sh, sw = where.source
    resized = _resize(full[top : top + th, left : left + tw], (sh, sw))
    if (sh, sw) == tuple(shape):
        return resized
    out = np.full(tuple(shape), float(np.nanmin(amap)) if amap.size else 0.0)
    out[st : st + sh, sl : sl + sw] = resized
    return out


def _resize(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a 2-D float map to ``shape`` (h, w)."""
    if a.shape == tuple(shape):
        return a
    img = Image.fromarray(np.ascontiguousarray(a, dtype=np.float32))
    return np.asarray(img.resize((shape[1], shape[0]), Image.Resampling.BILINEAR), np.float64)
