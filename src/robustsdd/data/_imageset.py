"""The container every data source returns: images, labels, names, optional masks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .images import load_rgb

__all__ = ["ImageSet", "GOOD", "DEFECTIVE", "UNKNOWN"]

GOOD, DEFECTIVE, UNKNOWN = 0, 1, -1

ImageItem = Path | np.ndarray


@dataclass
class ImageSet:
    """Images (file paths or in-memory arrays) with per-image labels.

    Parameters
    ----------
    items : list of pathlib.Path or numpy.ndarray
        One entry per image. Paths are decoded lazily by :func:`load_rgb`;
        arrays are ``uint8`` images (H, W) or (H, W, C).
    labels : numpy.ndarray of int
        ``GOOD`` (0), ``DEFECTIVE`` (1) or ``UNKNOWN`` (-1) per image.
    names : list of str
        A human-readable identifier per image (file name, or ``elpv/123``).
    masks : list of (pathlib.Path or None), optional
        Ground-truth defect masks where the source has them.
    source : str
        Where the images came from, for reports.
    """

    items: list
    labels: np.ndarray
    names: list
    masks: list | None = None
    source: str = ""
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if not (len(self.items) == len(self.labels) == len(self.names)):
            raise ValueError(
                f"ImageSet: {len(self.items)} items, {len(self.labels)} labels and "
                f"{len(self.names)} names; they must be equal"
            )
        if self.masks is not None and len(self.masks) != len(self.items):
            raise ValueError("ImageSet: masks must have one entry per image")

    def __len__(self) -> int:
        return len(self.items)

    def rgb(self, index: int) -> np.ndarray:
        """Image ``index`` as an (H, W, 3) ``uint8`` array."""
        return load_rgb(self.items[index], name=self.names[index])

    def subset(self, indices: Sequence[int]) -> ImageSet:
        """A new ImageSet holding the images at ``indices``, in that order."""
        idx = [int(i) for i in indices]
        return ImageSet(
            items=[self.items[i] for i in idx],
            labels=self.labels[idx] if idx else np.zeros(0, dtype=np.int64),
            names=[self.names[i] for i in idx],
            masks=None if self.masks is None else [self.masks[i] for i in idx],
            source=self.source,
            meta=dict(self.meta),
        )

    @property
    def n_good(self) -> int:
        return int(np.sum(self.labels == GOOD))

    @property
    def n_defective(self) -> int:
        return int(np.sum(self.labels == DEFECTIVE))
