"""Removal scores from many sparse random memory banks: rare patterns stand out even
when they repeat in a few training images.

Out-of-fold scoring trains on ~80 % of the other images, so a defect type that occurs
in several training images finds a look-alike in almost every fold and scores low: the
scorer assumes every defect is unique. Sparse banks (after MeDS, ICML 2026, "a low-pass
filter over memory banks") state a weaker assumption: *a normal pattern occurs in most
training images; a defect pattern in a small share of them.*

Each of ``n_banks`` banks holds the patch rows of a random ``share`` of the reference
images (a random subset of at most ``max_bank_rows`` of their rows, to bound the cost).
Every image is scored by each bank that does not hold it, exactly as PatchCore scores
it: each of its rows' distance to the nearest bank row, and the image's score is its
highest row distance. Per bank, those scores are divided by their median over the
images the bank scored (banks differ in how well they cover the normal variation), and
an image's removal score is the **median over the banks that did not hold it**. A
pattern shared by ``m`` training images is in a given bank with probability about
``1 − (1 − share)^m``; the median still sees it as missing while that is below one
half, i.e. for ``m < ln 2 / −ln(1 − share)`` — up to 6 images at ``share = 0.1`` —
while a normal pattern, present in most images, is in every bank. The price is
coverage: a bank of a tenth of the images covers normal variation less well, which
raises every image's score alike and is removed by the per-bank median.

With ``reference`` (a mask), banks draw only from those images — the kept ones, in a
later cleaning round — and the others are scored by every bank. Rows of NaN are
padding (images of different shapes) and are skipped. Features are ``(n_images,
n_rows, n_channels)``: the patch rows of a patch detector, or the views of a pooled
one (where a row is a whole view and the same assumption holds per image).
"""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import ArrayLike

from .._errors import ConfigError, DataError

__all__ = ["sparse_bank_scores", "repeat_tolerance"]

_CHUNK = 8192  # query rows per distance matrix


def repeat_tolerance(share: float) -> int:
    """The largest number of training images a pattern may occur in and still be missing
    from most banks of this ``share`` (the median over banks sees it as rare).

    >>> repeat_tolerance(0.1), repeat_tolerance(0.2)
    (6, 3)
    """
    return int(np.ceil(np.log(0.5) / np.log1p(-share)) - 1)


def _nearest_max(queries: torch.Tensor, valid: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """Per image, the largest nearest-bank-row distance over its valid rows.

    ``queries`` (m, r, d); ``valid`` (m, r) bool; ``bank`` (b, d). Returns (m,) float64.
    """
    m, r, d = queries.shape
    flat = queries.reshape(-1, d)
    b_sq = (bank * bank).sum(1)
    nearest = torch.empty(flat.shape[0])
    for start in range(0, flat.shape[0], _CHUNK):
        chunk = flat[start : start + _CHUNK]
        d2 = (chunk * chunk).sum(1, keepdim=True) - 2 * chunk @ bank.T + b_sq
        nearest[start : start + chunk.shape[0]] = d2.min(1).values.clamp_min(0)
    nearest = nearest.reshape(m, r).masked_fill(~valid, -1.0)
    return nearest.max(1).values.clamp_min(0).sqrt().double()


def sparse_bank_scores(
    X: ArrayLike,
    *,
    share: float = 0.1,
    n_banks: int = 30,
    max_bank_rows: int = 4096,
    reference: ArrayLike | None = None,
    random_state: int = 0,
) -> np.ndarray:
    """Each image's median, over the random banks that did not hold it, of its
    PatchCore-style score against that bank (see the module docstring).

    Parameters
    ----------
    X : array (n_images, n_rows, n_channels)
        Patch rows (NaN rows: padding) or views.
    share : float in (0, 1)
        Share of the reference images in each bank (at least 1 image, and at least 1
        image left out).
    n_banks : int
        How many banks; each image is left out of about ``(1 − share) · n_banks``.
    max_bank_rows : int
        A bank keeps a random subset of at most this many of its images' rows.
    reference : bool array (n_images,) or None
        Images banks may draw from (None: all).
    random_state : int
        Seeds the banks.

    Returns
    -------
    float64 array (n_images,): positive scores, in the units of a nearest-row distance
    (the per-bank medians are multiplied back by their median).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(60, 8, 4)).astype(np.float32)
    >>> X[:4, 0] += 12   # one defect type, repeated in four images
    >>> s = sparse_bank_scores(X, share=0.1, n_banks=40)
    >>> bool(s[:4].min() > s[4:].max())
    True
    """
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 3:
        raise DataError(f"features must be (n_images, n_rows, n_channels), got shape {X.shape}")
    n = len(X)
    if not 0 < share < 1:
        raise ConfigError(f"share must be in (0, 1), got {share!r}")
    if int(n_banks) < 1 or int(max_bank_rows) < 1:
        raise ConfigError("n_banks and max_bank_rows must be at least 1")
    ref = np.ones(n, dtype=bool) if reference is None else np.asarray(reference, dtype=bool)
    if ref.shape != (n,):
        raise DataError(f"reference must be a mask of {n} images, got shape {ref.shape}")
    ref_idx = np.flatnonzero(ref)
    if len(ref_idx) < 2:
        raise DataError(f"sparse banks need at least 2 reference images, got {len(ref_idx)}")
    per_bank = int(np.clip(round(share * len(ref_idx)), 1, len(ref_idx) - 1))
    valid_np = np.isfinite(X).all(axis=2)
    if not valid_np.any(axis=1).all():
        bad = int(np.flatnonzero(~valid_np.any(axis=1))[0])
        raise DataError(f"image {bad} has no finite feature row")
    feats = torch.from_numpy(np.nan_to_num(X, nan=0.0))
    valid = torch.from_numpy(valid_np)
    rng = np.random.default_rng(random_state)
    votes = np.full((int(n_banks), n), np.nan)
    with torch.inference_mode():
        for b in range(int(n_banks)):
            members = rng.choice(ref_idx, per_bank, replace=False)
            rows = feats[members][valid[members]]
            if len(rows) > max_bank_rows:
                rows = rows[torch.from_numpy(rng.choice(len(rows), max_bank_rows, replace=False))]
            scored = np.setdiff1d(np.arange(n), members)
            idx = torch.from_numpy(scored)
            votes[b, scored] = _nearest_max(feats[idx], valid[idx], rows).numpy()
    medians = np.nanmedian(votes, axis=1)
    medians = np.where(medians > 0, medians, 1.0)
    unit = float(np.median(medians))
    scaled = votes / medians[:, None]
    never = np.isnan(scaled).all(axis=0)
    if never.any():
        raise DataError(
            f"{int(never.sum())} images were in every bank; raise n_banks (now {n_banks}) "
            f"or lower share (now {share})"
        )
    return np.nanmedian(scaled, axis=0) * unit
