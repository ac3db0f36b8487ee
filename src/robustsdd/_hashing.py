"""Content digests: what the feature cache, checkpoints and sweep cells are keyed by."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["image_digest", "array_digest", "json_digest"]


def image_digest(rgb: np.ndarray) -> str:
    """SHA-256 (hex) of a decoded image's shape, dtype and pixels.

    >>> image_digest(np.zeros((2, 2, 3), np.uint8)) == image_digest(np.zeros((2, 2, 3), np.uint8))
    True
    """
    h = hashlib.sha256()
    h.update(repr((rgb.shape, str(rgb.dtype))).encode())
    h.update(np.ascontiguousarray(rgb).data)
    return h.hexdigest()


def array_digest(*arrays: ArrayLike) -> str:
    """SHA-256 (hex) of arrays' dtypes, shapes and bytes."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(repr((str(a.dtype), a.shape)).encode())
        h.update(a.reshape(-1).view(np.uint8).data)  # the bytes in place: no copy of a big array
    return h.hexdigest()


def json_digest(obj: Any) -> str:
    """SHA-256 (hex) of ``obj`` as canonical JSON (sorted keys; other types by ``str``)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()
