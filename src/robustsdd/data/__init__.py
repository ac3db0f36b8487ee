"""Data sources (ELPV, KSDD2, MVTec AD, plain folders), image decoding and the paper's splits."""

from __future__ import annotations

import os
from pathlib import Path

from .._errors import ConfigError
from ._imageset import DEFECTIVE, GOOD, UNKNOWN, ImageSet
from .contamination import n_defective_for, paper_split, removal_counts
from .elpv import ELPV_CELL_TYPES, load_elpv
from .folder import load_folder, load_unlabeled
from .images import IMAGE_EXTENSIONS, MAX_PIXELS, list_images, load_rgb
from .ksdd2 import load_ksdd2
from .mvtec import load_mvtec
from .screen import ON_BAD_IMAGE, ScreenResult, screen_images, write_skip_list

__all__ = [
    "ImageSet",
    "GOOD",
    "DEFECTIVE",
    "UNKNOWN",
    "IMAGE_EXTENSIONS",
    "MAX_PIXELS",
    "load_rgb",
    "list_images",
    "load_elpv",
    "ELPV_CELL_TYPES",
    "load_ksdd2",
    "load_folder",
    "load_unlabeled",
    "load_mvtec",
    "paper_split",
    "removal_counts",
    "n_defective_for",
    "screen_images",
    "write_skip_list",
    "ScreenResult",
    "ON_BAD_IMAGE",
    "open_source",
    "SOURCE_KINDS",
]

SOURCE_KINDS = ("elpv", "ksdd2", "folder", "mvtec")


def open_source(
    kind: str,
    root: str | os.PathLike | None = None,
    *,
    cell_type: str = "mono",
    category: str | None = None,
) -> tuple[ImageSet, ImageSet | None]:
    """Open a data source by name, as the CLI and the experiments do.

    Parameters
    ----------
    kind : {"elpv", "ksdd2", "folder", "mvtec"}
    root : str or os.PathLike, optional
        The data folder; required for every kind except ``"elpv"``.
    cell_type : {"mono", "poly", "both"}, default "mono"
        ELPV only.
    category : str, optional
        MVTec only (required there).

    Returns
    -------
    pool, test_pool : ImageSet, ImageSet or None
        ``test_pool`` is KSDD2's test split, else None (the test set is then drawn from
        ``pool``, see :func:`paper_split`). For MVTec the pool is all of the category's images.
    """
    if kind not in SOURCE_KINDS:
        raise ConfigError(f"unknown data source {kind!r}; choose one of {SOURCE_KINDS}")
    if kind == "elpv":
        return load_elpv(cell_type), None
    if root is None:
        raise ConfigError(f"data source {kind!r} needs a root folder")
    if not Path(root).is_dir():
        raise ConfigError(f"data source {kind!r}: root folder {root} does not exist")
    if kind == "ksdd2":
        return load_ksdd2(root, "train"), load_ksdd2(root, "test")
    if kind == "folder":
        return load_folder(root), None
    if not category:
        raise ConfigError("data source 'mvtec' needs a category (e.g. 'bottle')")
    return load_mvtec(root, category, "all"), None
