"""Ground-truth defect masks, brought to the geometry of a view (for pixel-level AUROC)."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from .._errors import DataError
from ._imageset import ImageSet
from .geometry import centre_square

__all__ = ["view_mask", "view_masks"]


def view_mask(item: str | os.PathLike | np.ndarray | None, size: int) -> np.ndarray:
    """A mask as a (size, size) bool array, cropped and resized like the image's view.

    The view of an image is its centre square resized to ``size``
    (:meth:`~robustsdd.features.ViewSpec.square`); the mask gets the same centre
    square, resized with nearest-neighbour so it stays binary. ``None`` (a good
    image without a mask file) is all False. Any non-zero pixel is defect.
    """
    if item is None:
        return np.zeros((size, size), dtype=bool)
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
        raise DataError(
            f"{item if not isinstance(item, np.ndarray) else 'mask array'}: a mask "
            f"must be a 2-D image, got shape {mask.shape}"
        )
    square = np.ascontiguousarray(centre_square(mask) > 0)
    if square.shape[0] != size:
        square = np.asarray(Image.fromarray(square).resize((size, size), Image.Resampling.NEAREST))
    return square.astype(bool)


def view_masks(images: ImageSet, size: int) -> np.ndarray | None:
    """(n, size, size) bool masks of an image set, or None when it has no mask at all."""
    if images.masks is None or all(m is None for m in images.masks):
        return None
    return np.stack([view_mask(m, size) for m in images.masks])
