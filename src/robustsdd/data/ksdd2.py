"""KolektorSDD2 (KSDD2): ``root/{train,test}/<id>.png`` with ``<id>_GT.png`` masks."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from .._errors import ConfigError, DataError
from ._imageset import DEFECTIVE, GOOD, ImageSet
from .images import list_images

__all__ = ["load_ksdd2"]

_SPLITS = ("train", "test")
_MASK_SUFFIX = "_GT"


def load_ksdd2(root: str | os.PathLike, split: str = "train") -> ImageSet:
    """Load one split of KSDD2; an image is defective iff its mask has a non-zero pixel.

    Parameters
    ----------
    root : str or os.PathLike
        The folder holding ``train/`` and ``test/``.
    split : {"train", "test"}, default "train"

    Returns
    -------
    ImageSet
        Items are image paths, masks the ``<id>_GT.png`` paths, names ``train/<id>.png``.
    """
    if split not in _SPLITS:
        raise ConfigError(f"KSDD2 split must be one of {_SPLITS}, got {split!r}")
    folder = Path(root) / split
    if not folder.is_dir():
        raise DataError(
            f"{folder}: KSDD2 split folder not found (expected {Path(root)}/train and /test)"
        )
    files = list_images(folder, recursive=False)
    masks_by_stem = {
        p.stem[: -len(_MASK_SUFFIX)]: p for p in files if p.stem.endswith(_MASK_SUFFIX)
    }
    images = [p for p in files if not p.stem.endswith(_MASK_SUFFIX)]
    if not images:
        raise DataError(f"{folder}: no KSDD2 images found")
    missing = [p.name for p in images if p.stem not in masks_by_stem]
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise DataError(
            f"{folder}: {len(missing)} image(s) have no <id>{_MASK_SUFFIX}.png mask: {shown}"
        )
    masks = [masks_by_stem[p.stem] for p in images]
    labels = [DEFECTIVE if _mask_has_defect(m) else GOOD for m in masks]
    return ImageSet(
        items=images,
        labels=np.asarray(labels),
        names=[f"{split}/{p.name}" for p in images],
        masks=masks,
        source=f"ksdd2:{split}",
        meta={"root": str(Path(root)), "split": split},
    )


def _mask_has_defect(path: Path) -> bool:
    try:
        with Image.open(path) as m:
            m.load()
            return bool(np.asarray(m).any())
    except (OSError, SyntaxError, ValueError) as e:  # UnidentifiedImageError is an OSError
        raise DataError(f"{path}: cannot read KSDD2 mask: {e}") from e
