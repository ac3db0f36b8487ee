"""ELPV: 2,624 real electroluminescence images of solar cells, shipped by PyPI ``elpv-dataset``.

Each 300x300 grayscale cell carries an expert defect probability (0, 1/3, 2/3 or 1)
and a type (mono- or polycrystalline). With certain labels only, mono has 588 good /
313 defective cells and poly 920 / 402.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .._errors import ConfigError, DataError
from ._imageset import DEFECTIVE, GOOD, ImageSet

__all__ = ["load_elpv", "ELPV_CELL_TYPES"]

ELPV_CELL_TYPES = ("mono", "poly", "both")


def load_elpv(cell_type: str = "mono", include_uncertain: bool = False) -> ImageSet:
    """Load the ELPV solar-cell images as an ImageSet of in-memory arrays.

    Parameters
    ----------
    cell_type : {"mono", "poly", "both"}, default "mono"
    include_uncertain : bool, default False
        Probability 0 is good and 1 defective. The uncertain cells (1/3, 2/3) are left
        out unless this is True; then probability >= 0.5 counts as defective.

    Returns
    -------
    ImageSet
        Items are read-only (300, 300) ``uint8`` arrays; names are ``elpv/<index>``,
        the index into the full data set (file ``cell<index+1>.png``).

    Examples
    --------
    >>> ds = load_elpv("mono")  # doctest: +SKIP
    >>> ds.n_good, ds.n_defective  # doctest: +SKIP
    (588, 313)
    """
    if cell_type not in ELPV_CELL_TYPES:
        raise ConfigError(f"ELPV cell_type must be one of {ELPV_CELL_TYPES}, got {cell_type!r}")
    images, probs, types = _load_package()
    selected = np.ones(len(probs), bool) if cell_type == "both" else types == cell_type
    certain = np.isclose(probs, 0.0) | np.isclose(probs, 1.0)
    if not include_uncertain:
        selected &= certain
    idx = np.flatnonzero(selected)
    labels = np.where(probs[idx] >= 0.5, DEFECTIVE, GOOD)
    return ImageSet(
        items=[images[i] for i in idx],
        labels=labels,
        names=[f"elpv/{i:04d}" for i in idx],
        source=f"elpv:{cell_type}",
        meta={
            "cell_type": cell_type,
            "include_uncertain": bool(include_uncertain),
            "probabilities": probs[idx].copy(),
        },
    )


@lru_cache(maxsize=1)
def _load_package() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode the package's images once per process (about 5 s, 236 MB)."""
    try:
        from elpv_dataset.utils import load_dataset
    except ImportError as e:
        raise DataError("ELPV needs the package 'elpv-dataset' (pip install elpv-dataset)") from e
    images, probs, types = load_dataset()
    images = np.asarray(images, dtype=np.uint8)
    probs = np.asarray(probs, dtype=np.float64)
    types = np.asarray(types).astype(str)
    # The cache is shared by every caller: read-only stops one caller corrupting another's images.
    for a in (images, probs, types):
        a.setflags(write=False)
    return images, probs, types
