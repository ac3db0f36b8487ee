"""MVTec AD layout: ``<category>/{train,test}/<type>/*.png``, masks in
``ground_truth/<type>/<stem>_mask.png``."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .._errors import ConfigError, DataError
from ._imageset import DEFECTIVE, GOOD, ImageSet
from .images import list_images

__all__ = ["load_mvtec"]

_SPLITS = ("train", "test", "all")


def load_mvtec(root: str | os.PathLike, category: str, split: str = "train") -> ImageSet:
    """Load one category of an MVTec-AD-style data set.

    Parameters
    ----------
    root : str or os.PathLike
        The folder holding one subfolder per category.
    category : str
        For example ``"bottle"``.
    split : {"train", "test", "all"}, default "train"
        ``"all"`` is the train images followed by the test images.

    Returns
    -------
    ImageSet
        Folder ``good`` is GOOD, every other defect type DEFECTIVE; names are like
        ``test/crack/000.png``; masks are ``ground_truth/<type>/<stem>_mask.png`` where
        present, else None.
    """
    if split not in _SPLITS:
        raise ConfigError(f"MVTec split must be one of {_SPLITS}, got {split!r}")
    root = Path(root)
    base = root / str(category)
    if not base.is_dir():
        found = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        raise DataError(
            f"{base}: MVTec category folder not found (categories here: {found or 'none'})"
        )
    items, labels, names, masks = [], [], [], []
    for part in ("train", "test") if split == "all" else (split,):
        part_dir = base / part
        if not part_dir.is_dir():
            raise DataError(f"{part_dir}: MVTec {part} folder not found")
        for type_dir in sorted(
            p for p in part_dir.iterdir() if p.is_dir() and not p.name.startswith(".")
        ):
            label = GOOD if type_dir.name == "good" else DEFECTIVE
            for path in list_images(type_dir):
                rel = path.relative_to(type_dir)
                mask = base / "ground_truth" / type_dir.name / rel.parent / f"{path.stem}_mask.png"
                items.append(path)
                labels.append(label)
                names.append(f"{part}/{type_dir.name}/{rel.as_posix()}")
                masks.append(mask if label == DEFECTIVE and mask.is_file() else None)
    if not items:
        raise DataError(f"{base}: no images found for split {split!r}")
    return ImageSet(
        items=items,
        labels=np.asarray(labels),
        names=names,
        masks=masks,
        source=f"mvtec:{category}",
        meta={"root": str(root), "category": str(category), "split": split},
    )
