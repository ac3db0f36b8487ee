"""Ground-truth defect masks in their images' own pixels (for pixel-level AUROC).

Masks are never cropped or resized: anomaly maps are drawn back onto the image instead
(:func:`robustsdd.data.geometry.map_to_image`), so a defect the detector never saw (outside
a ``"crop"`` square) still counts against it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from PIL import Image

from .._errors import DataError
from ._imageset import ImageSet

__all__ = ["image_masks", "read_mask"]


def read_mask(item: str | os.PathLike | np.ndarray | None, shape: Sequence[int]) -> np.ndarray:
    """A mask as an (H, W) bool array for an image of ``shape`` (H, W[, 3]).

    ``None`` (a good image without a mask file) is all False. Any non-zero pixel is
    defect. A mask whose size differs from its image's is an error naming the file.
    """
    h, w = int(shape[0]), int(shape[1])
    if item is None:
        return np.zeros((h, w), dtype=bool)
    name = "mask array" if isinstance(item, np.ndarray) else str(item)
    if isinstance(item, np.ndarray):
        mask = np.asarray(item)
    else:
        try:
            with Image.open(item) as img:
                mask = np.asarray(img.convert("L"))
        except (OSError, ValueError) as e:
            raise DataError(f"{item}: cannot read mask: {e}") from e
    if mask.ndim == 3:
        mask = mask.max(axis=2)
    if mask.ndim != 2 or min(mask.shape) < 1:
        raise DataError(f"{name}: a mask must be a 2-D image, got shape {mask.shape}")
    if mask.shape != (h, w):
        raise DataError(
            f"{name}: the mask is {mask.shape[1]}x{mask.shape[0]} pixels, its image "
            f"{w}x{h}; a mask must cover its image pixel for pixel"
        )
    return mask > 0


def image_masks(images: ImageSet) -> list | None:
    """Each image's (H_i, W_i) bool mask, or None when the set has no mask at all."""
    if images.masks is None or all(m is None for m in images.masks):
        return None
    return [read_mask(m, images.rgb(i).shape) for i, m in enumerate(images.masks)]
