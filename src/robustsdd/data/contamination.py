"""The paper's protocol (Sec. 4.2): contaminated training sets and a fixed held-out test set.

How a split is drawn, for seed ``random_state``:

1. The good and the defective images of the pool are each put in one random order.
2. The test set is drawn first: the first ``n_test_good`` good and ``n_test_defective``
   defective images of those orders (or, with ``test_pool``, of the same orders drawn
   from ``test_pool``). The draws do not depend on ``contamination``, so **for one seed
   the test set is the same at every contamination level**, and levels are compared on
   the same images.
3. Training takes the next ``n_train - k`` good and ``k`` defective images, with
   ``k = round(n_train * contamination)`` (halves round up). Because it takes prefixes of
   fixed orders, the training sets of one seed are nested across levels, which lowers the
   noise of a contamination sweep.
4. The training order is shuffled.

Images labelled UNKNOWN are never drawn.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
from numpy.typing import ArrayLike

from .._errors import ConfigError, DataError
from ._imageset import DEFECTIVE, GOOD, ImageSet

__all__ = ["paper_split", "removal_counts", "n_defective_for"]


def n_defective_for(n_train: int, contamination: float) -> int:
    """Number of defective training images: ``n_train * contamination`` rounded, halves up."""
    # round(.., 9) first, so float noise (100 * 0.29 = 28.999...) cannot move the result.
    return int(math.floor(round(n_train * contamination, 9) + 0.5))


def paper_split(
    pool: ImageSet,
    *,
    n_train: int = 100,
    contamination: float = 0.2,
    n_test_good: int = 100,
    n_test_defective: int = 100,
    test_pool: ImageSet | None = None,
    random_state: int | np.random.Generator | None = 0,
) -> tuple[ImageSet, ImageSet]:
    """Draw a contaminated training set and a disjoint test set, as in the paper.

    Parameters
    ----------
    pool : ImageSet
        Labelled images to draw from.
    n_train : int, default 100
        Size of the training set.
    contamination : float, default 0.2
        Fraction of defective training images, in [0, 1].
    n_test_good, n_test_defective : int, default 100
        Size of the test set per class.
    test_pool : ImageSet, optional
        Draw the test set from here (e.g. KSDD2's test folder) instead of from ``pool``.
    random_state : int, numpy.random.Generator or None, default 0
        Seed; the same seed gives the same split.

    Returns
    -------
    train, test : ImageSet
        ``meta`` records the split's parameters.

    Examples
    --------
    >>> import numpy as np
    >>> pool = ImageSet(items=[np.zeros((4, 4), np.uint8)] * 40, labels=[0] * 30 + [1] * 10,
    ...                 names=[f"im{i}" for i in range(40)])
    >>> train, test = paper_split(pool, n_train=10, contamination=0.3,
    ...                           n_test_good=5, n_test_defective=5)
    >>> len(train), train.n_defective, len(test)
    (10, 3, 10)
    """
    for key, value, low in [
        ("n_train", n_train, 1),
        ("n_test_good", n_test_good, 0),
        ("n_test_defective", n_test_defective, 0),
    ]:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
            raise ConfigError(f"{key} must be an integer >= {low}, got {value!r}")
    if (
        isinstance(contamination, bool)
        or not isinstance(contamination, numbers.Real)
        or not 0.0 <= float(contamination) <= 1.0
    ):
        raise ConfigError(f"contamination must be a number in [0, 1], got {contamination!r}")
    n_def = n_defective_for(int(n_train), float(contamination))
    n_good = int(n_train) - n_def
    rng = np.random.default_rng(random_state)

    # Fixed random orders of each class; everything below takes slices of them.
    good = rng.permutation(np.flatnonzero(pool.labels == GOOD))
    bad = rng.permutation(np.flatnonzero(pool.labels == DEFECTIVE))
    if test_pool is None:
        _check_size(
            pool,
            "pool",
            len(good),
            n_test_good + n_good,
            len(bad),
            n_test_defective + n_def,
            f"{n_test_good}+{n_test_defective} test and {n_good}+{n_def} training",
        )
        test_src, test_good, test_bad = pool, good[:n_test_good], bad[:n_test_defective]
        good, bad = good[n_test_good:], bad[n_test_defective:]
    else:
        t_good = rng.permutation(np.flatnonzero(test_pool.labels == GOOD))
        t_bad = rng.permutation(np.flatnonzero(test_pool.labels == DEFECTIVE))
        _check_size(
            test_pool,
            "test pool",
            len(t_good),
            n_test_good,
            len(t_bad),
            n_test_defective,
            f"{n_test_good}+{n_test_defective} test",
        )
        _check_size(pool, "pool", len(good), n_good, len(bad), n_def, f"{n_good}+{n_def} training")
        test_src, test_good, test_bad = test_pool, t_good[:n_test_good], t_bad[:n_test_defective]

    train_idx = rng.permutation(np.concatenate([good[:n_good], bad[:n_def]]))
    test_idx = np.sort(np.concatenate([test_good, test_bad]))
    meta = {
        "n_train": int(n_train),
        "contamination": float(contamination),
        "n_train_defective": n_def,
        "random_state": _seed_repr(random_state),
    }
    train = pool.subset(train_idx)
    train.meta.update(meta, split="train")
    test = test_src.subset(test_idx)
    test.meta.update(meta, split="test")
    return train, test


def removal_counts(labels: ArrayLike, keep_mask: ArrayLike) -> dict[str, int]:
    """Table 1's columns: good and defective training images removed and kept.

    Parameters
    ----------
    labels : array-like of int
        GOOD / DEFECTIVE per training image (UNKNOWN images are not counted).
    keep_mask : array-like of bool
        True where the image was kept.

    Returns
    -------
    dict
        ``removed_good``, ``removed_defective``, ``kept_good``, ``kept_defective``.

    Examples
    --------
    >>> removal_counts([0, 0, 1, 1], [True, False, False, True])
    {'removed_good': 1, 'removed_defective': 1, 'kept_good': 1, 'kept_defective': 1}
    """
    labels = np.asarray(labels)
    keep = np.asarray(keep_mask)
    if keep.dtype != bool:
        raise ConfigError(f"keep_mask must be boolean, got dtype {keep.dtype}")
    if labels.shape != keep.shape or labels.ndim != 1:
        raise ConfigError(
            f"labels {labels.shape} and keep_mask {keep.shape} must be 1-D and of equal length"
        )
    good, bad = labels == GOOD, labels == DEFECTIVE
    return {
        "removed_good": int(np.sum(good & ~keep)),
        "removed_defective": int(np.sum(bad & ~keep)),
        "kept_good": int(np.sum(good & keep)),
        "kept_defective": int(np.sum(bad & keep)),
    }


def _check_size(
    ds: ImageSet,
    what: str,
    have_good: int,
    need_good: int,
    have_bad: int,
    need_bad: int,
    detail: str,
) -> None:
    if have_good >= need_good and have_bad >= need_bad:
        return
    raise DataError(
        f"{ds.source or what}: {what} too small for this split ({detail}): needs "
        f"{need_good} good and {need_bad} defective images, has {have_good} good and "
        f"{have_bad} defective (UNKNOWN labels are not used)"
    )


def _seed_repr(random_state):
    # Kept JSON-friendly for run records: an int seed as int, a Generator as its repr.
    if random_state is None or isinstance(random_state, numbers.Integral):
        return None if random_state is None else int(random_state)
    return repr(random_state)
