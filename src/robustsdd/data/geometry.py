"""Image geometry shared by the views an image is seen in and its defect mask.

An image and its mask must be cut the same way, or a pixel-level score compares a map
with the wrong pixels; both the views (:class:`robustsdd.features.ViewSpec`) and the
masks (:mod:`robustsdd.data.masks`) call these functions.
"""

from __future__ import annotations

import numpy as np

__all__ = ["centre_square"]


def centre_square(array: np.ndarray) -> np.ndarray:
    """The centred square of side min(H, W) of an (H, W, ...) array (a view of it).

    >>> centre_square(np.arange(12).reshape(3, 4))
    array([[ 0,  1,  2],
           [ 4,  5,  6],
           [ 8,  9, 10]])
    """
    h, w = array.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return array[top : top + side, left : left + side]
