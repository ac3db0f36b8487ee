"""A user's own images: labelled (``good/`` + ``defect/``) or an unlabelled folder tree."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np

from .._errors import DataError
from ._imageset import DEFECTIVE, GOOD, UNKNOWN, ImageSet
from .images import list_images

__all__ = ["load_folder", "load_unlabeled", "DEFECT_FOLDER_NAMES"]

#: Accepted names of the folder of defective images (several may exist; all are read).
DEFECT_FOLDER_NAMES = ("defect", "defective", "bad")


def load_folder(root: str | os.PathLike) -> ImageSet:
    """Load a labelled folder: ``root/good/`` and ``root/defect/`` (or ``defective/``, ``bad/``).

    Class folders are searched recursively. An optional ``root/masks/`` holds masks matched
    to images by file stem: ``<stem>.png`` or ``<stem>_mask.png`` (any image extension).

    Parameters
    ----------
    root : str or os.PathLike

    Returns
    -------
    ImageSet
        Names are paths relative to ``root`` (``good/001.png``); masks are None when
        there is no ``masks/`` folder, else a path or None per image.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: folder not found")
    good_dir = root / "good"
    defect_dirs = [root / n for n in DEFECT_FOLDER_NAMES if (root / n).is_dir()]
    if not good_dir.is_dir() or not defect_dirs:
        raise DataError(
            f"{root}: a labelled folder needs good/ and one of "
            f"{', '.join(n + '/' for n in DEFECT_FOLDER_NAMES)} (found: "
            f"{sorted(p.name for p in root.iterdir() if p.is_dir()) or 'no folders'})"
        )
    items, labels = [], []
    for folder, label in [(good_dir, GOOD)] + [(d, DEFECTIVE) for d in defect_dirs]:
        found = list_images(folder)
        if not found:
            raise DataError(f"{folder}: no images found")
        items += found
        labels += [label] * len(found)
    masks = None
    if (root / "masks").is_dir():
        masks = _match_masks(items, root / "masks")
    return ImageSet(
        items=items,
        labels=np.asarray(labels),
        names=[p.relative_to(root).as_posix() for p in items],
        masks=masks,
        source=f"folder:{root}",
        meta={"root": str(root)},
    )


def load_unlabeled(root: str | os.PathLike) -> ImageSet:
    """Every image under ``root`` (recursively), all labelled UNKNOWN.

    Parameters
    ----------
    root : str or os.PathLike

    Returns
    -------
    ImageSet
    """
    root = Path(root)
    items = list_images(root)
    if not items:
        raise DataError(f"{root}: no images found")
    return ImageSet(
        items=items,
        labels=np.full(len(items), UNKNOWN),
        names=[p.relative_to(root).as_posix() for p in items],
        source=f"folder:{root}",
        meta={"root": str(root)},
    )


def _match_masks(images: list[Path], mask_dir: Path) -> list:
    by_stem: dict[str, Path] = {}
    for m in list_images(mask_dir):
        stem = m.stem[: -len("_mask")] if m.stem.endswith("_mask") else m.stem
        if stem in by_stem:
            raise DataError(
                f"{mask_dir}: two masks for image stem {stem!r}: {by_stem[stem].name}, {m.name}"
            )
        by_stem[stem] = m
    # Matching is by stem alone, so two images sharing a stem cannot tell their masks apart.
    stems = [p.stem for p in images]
    dup = sorted(s for s, n in Counter(stems).items() if n > 1 and s in by_stem)
    if dup:
        raise DataError(
            f"{mask_dir}: masks are matched by file stem, but several images share stem(s) {dup}"
        )
    return [by_stem.get(s) for s in stems]
