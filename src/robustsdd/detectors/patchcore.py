"""PatchCore: a memory bank of normal patch features, scored by nearest neighbours.

Roth et al., "Towards Total Recall in Industrial Anomaly Detection", CVPR 2022.
Training stores the patch features of the training images (from
:class:`~robustsdd.features.patches.PatchFeaturizer`: locally averaged maps of
two intermediate stages) and keeps a coreset of them; a test patch's score is
its distance to the nearest bank patch, and an image's score is its highest
patch score. The per-patch scores on the patch grid are the anomaly map.

Input ``X`` is ``(n_images, n_patches, n_channels)`` — the patch axis takes the
place of the views axis of pooled features. Images of different shapes have grids of
different sizes; their features come padded with rows of NaN, which are skipped: the
bank is a set of patches, so grids of any shape share it. Scores are plain distances in
feature units (a training image's own patches are in the bank, so no in-sample
score can set a unit): clean with the scale-free rules (``auto``, ``fraction``)
rather than a fixed threshold such as the paper's 1.5.

Patch-level denoising (``denoise="hard"`` / ``"soft"``) follows SoftPatch (Jiang
et al., "SoftPatch: Unsupervised Anomaly Detection with Noisy Data", NeurIPS
2022): defective training images are not dropped whole; instead, at each grid
position the training patches that are outliers among the patches seen at that
position are kept out of the memory bank (and, ``"soft"``, the remaining ones
are weighted by how outlying they are). See :class:`PatchCore`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import ArrayLike
from sklearn.base import clone

from .._errors import ConfigError, DataError
from .._validation import check_float_range, check_positive_int
from ..features.storage import image_blocks
from ._neighbours import greedy_coreset, grouped_knn_distances, knn_distances, knn_search
from .base import BaseDetector, check_features, register_detector

__all__ = ["PatchCore"]

CORESETS = ("greedy", "random", "none")
DENOISE = (None, "hard", "soft")
SUBSET_FITS = ("derived", "independent")


@register_detector("patchcore")
class PatchCore(BaseDetector):
    """Nearest-neighbour patch memory bank.

    Parameters
    ----------
    coreset : {"greedy", "random", "none"}
        How the bank is subsampled: greedy k-centre (PatchCore's; covers the
        patch distribution), a uniform random subset, or every patch.
    coreset_ratio : float in (0, 1]
        Share of training patches kept in the bank (PatchCore: 1–10 %; default
        1 %: greedy selection is quadratic in the bank, see BENCHMARKS.md §7).
        A share of *all* training patches, also with ``denoise``: a denoised
        bank is as large as a plain one (at most the patches left).
    max_bank : int or None
        Upper bound on the bank's size (default 2048; None: no bound). The bank is
        ``coreset_ratio`` of the training patches up to this many: 1 % of 100 images'
        784 patches each is 784, so the bound only acts from about 260 such images
        on. Why a bound: greedy selection costs (candidates × bank) and scoring
        (queries × bank), so a bank that grows with N makes both quadratic in N;
        bounded, they grow linearly. The assumption: a few thousand patches cover
        the normal variation of one product; a larger bank mostly adds near
        duplicates (read ``coverage_radius_`` to check it on your data).
    max_candidates : int or None
        Upper bound on the patches the greedy selection looks at (default 100,000;
        None: all). Above it, the selection runs on a uniform random subset of the
        candidates (seeded by ``random_state``): its cost then no longer grows with N.
        100 images of 784 patches (78,400) stay below it, so the bound does not act
        on the paper's protocol.
    projection_dim : int or None
        Random-projection dimension used by the greedy selection only (None: the
        selection works on the features themselves).
    k : int
        Nearest bank patches averaged into a patch score (PatchCore: 1).
    grid : (h, w) or None
        The patch grid (``PatchFeaturizer.patch_grid``), for :meth:`anomaly_maps`
        (several views: the first view's map is returned). None: a square grid
        is inferred at fit time when the patch count is a perfect square.
    denoise : {None, "hard", "soft"}
        Patch-level denoising of the training patches before the coreset step,
        after SoftPatch (Jiang et al., NeurIPS 2022). None (default): every
        training patch may enter the bank (plain PatchCore).

        *Outlier score.* The training patches are grouped by grid position: the
        group of position ``p`` holds the patch at ``p`` of every training image
        in every view (``n_images × n_views`` rows; the patch featurizer turns
        rotated and mirrored views back, so ``p`` is the same place on the part in
        every view). Without a grid that divides the patch count, every column of
        the patch axis is its own position (``n_images`` rows). Images whose grids
        differ in size (padded features) are matched by *relative* position: each
        image's grid (per view) is resampled (nearest, in row-major order) onto the
        most common grid size to form the groups, and every patch is scored against
        the group of its relative position, its own image's row left out. For grids
        with the same number of rows that is the same relative (row, column);
        otherwise rows line up only approximately. Each patch's outlier score is its
        mean Euclidean distance to its ``denoise_k`` nearest other patches of the
        group. SoftPatch offers LOF, kNN distance and a Gaussian (Mahalanobis)
        score; the kNN distance is taken here because it needs no density or
        covariance estimate — with ~100 patches in 152 channels (EfficientNet-
        Lite0 stages 2+3) a per-position covariance is singular and LOF's density
        ratios are noisy — and it is exact and cheap (one ``n × n`` distance
        matrix per position).

        ``"hard"``: at every position the ``floor(denoise_fraction × patches there)``
        patches with the highest scores are dropped; the coreset is then chosen
        among the rest. ``"soft"``: the same drop (none when
        ``denoise_fraction=0``), and every bank patch keeps the weight
        ``w = max(1, score / median score of its position)`` — its outlyingness
        relative to a typical patch at that position, like an LOF value, and 1
        for the typical half so that those give plain PatchCore distances. A
        test patch's score is its distance to its nearest bank patch times that
        patch's weight (SoftPatch's re-weighting): matching a suspicious bank
        patch no longer makes a test patch look normal.

        Measured on ELPV mono (paper protocol, random 10 % bank, 3 seeds;
        ``benchmarks/results/beyond_patchcore_mono_random10*``), neither variant
        with these defaults beat plain PatchCore: dropping a fixed tenth per
        position also drops the tail of normal patches (about −0.015 AUROC
        on clean training sets).
    denoise_fraction : float in [0, 1)
        Share of the patches at each position dropped by the denoising (default
        0.1, set a priori: a position is assumed to hold at most a tenth of
        defective patches; not tuned on any test set).
    denoise_k : int
        Neighbours averaged into the outlier score (default 10). A patch is not
        an outlier when ``denoise_k`` similar patches vouch for it, so a group of
        up to about ``denoise_k`` alike defective patches at one position (a
        defect type repeated in several images) is still scored as outlying;
        with ~100 rows per position and a 10 % drop, 10 matches the largest
        group the drop could remove. When a position has fewer than
        ``denoise_k + 1`` rows, ``k = rows − 1`` is used instead
        (``denoise_k_``); fewer than 2 rows (one training image, one view)
        raise :class:`DataError`.
    subset_fits : {"derived", "independent"}
        How :meth:`subset_model` makes a model of some of the training images — what
        cleaning's out-of-fold copies and fine-tuned model are: ``"derived"`` (default)
        grows its bank from this model's bank patches of those images (a short greedy
        top-up instead of a selection from scratch); ``"independent"`` fits afresh.
        Measured on ELPV (BENCHMARKS.md §4): with derived models, cleaning's mean validation
        AUROC was that of fresh fits and a cleaned fit 10–20× faster; ``auto`` removed
        slightly fewer defective images. A model read from a file without ``bank_indices``
        (saved before it was stored) fits afresh.
    random_state : int >= 0
        Seeds the coreset.

    Attributes
    ----------
    bank_ : float32 array (n_bank, n_channels)
        The memory bank.
    bank_weights_ : float32 array (n_bank,) or None
        ``denoise="soft"``: each bank patch's weight (>= 1); otherwise None.
    bank_indices_ : int64 array (n_bank,)
        Row of each bank patch in the training patches (``X.reshape(-1, C)``).
    denoise_scores_ : float64 array (n_images, n_patches) or None
        Outlier score of every training patch (denoising only).
    denoise_kept_ : bool array (n_images, n_patches) or None
        Which training patches survived the denoising (denoising only).
    coverage_radius_ : float or None
        Coverage radius of the greedy coreset over the patches the selection looked
        at (all candidates, or the random subset of ``max_candidates``; 0 when all of
        them are kept; None for a random coreset).

    What scoring needs (bank, weights, grid) is saved, and ``bank_indices_`` (for
    :meth:`subset_model`); the fit diagnostics (``denoise_scores_``, ``denoise_kept_``,
    ``coverage_radius_``) are not restored by :func:`load_detector`.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(20, 16, 6))
    >>> det = PatchCore(coreset="none", grid=(4, 4)).fit(X)
    >>> odd = X[:1].copy(); odd[0, 5] += 20           # one anomalous patch
    >>> bool(det.decision_function(odd)[0] > det.decision_function(X[:1] + 0.01)[0])
    True
    >>> int(det.anomaly_maps(odd)[0].argmax())        # row 1, column 1 of the 4x4 grid
    5
    """

    #: Axis 1 of ``X`` holds patches, not views: cleaning cannot hold views out.
    feature_layout = "patches"
    coverage_radius_: float | None  # set by fit (None: a random coreset)

    def __init__(
        self,
        coreset: str = "greedy",
        coreset_ratio: float = 0.01,
        max_bank: int | None = 2048,
        max_candidates: int | None = 100_000,
        projection_dim: int | None = 128,
        k: int = 1,
        grid: Sequence[int] | None = None,
        denoise: str | None = None,
        denoise_fraction: float = 0.1,
        denoise_k: int = 10,
        subset_fits: str = "derived",
        random_state: int = 0,
    ):
        self.coreset = coreset
        self.coreset_ratio = coreset_ratio
        self.max_bank = max_bank
        self.max_candidates = max_candidates
        self.projection_dim = projection_dim
        self.k = k
        self.grid = grid
        self.denoise = denoise
        self.denoise_fraction = denoise_fraction
        self.denoise_k = denoise_k
        self.subset_fits = subset_fits
        self.random_state = random_state

    def fit(self, X: ArrayLike, y: object = None) -> PatchCore:
        self._check_params()
        # Not copied: the selection's pool and the bank are gathered from X row by row, so a
        # memory-mapped X (features of thousands of images) or a view of one stays where it is.
        X = check_features(X, padded=True, contiguous=False)
        valid = np.isfinite(X[:, :, 0])  # False: padding rows
        self.grid_ = self._resolve_grid(X.shape[1], padded=not valid.all())
        candidates, weights = np.flatnonzero(valid.reshape(-1)), None
        self.denoise_scores_ = self.denoise_kept_ = None
        if self.denoise is not None:
            candidates, weights = self._denoise(X, valid)
        n_keep = self._bank_size(len(candidates), int(valid.sum()))
        if self.coreset == "greedy" and n_keep < len(candidates):
            looked_at = self._selection_pool(len(candidates))
            chosen, self.coverage_radius_ = greedy_coreset(
                _patch_rows(X, candidates[looked_at]),
                min(n_keep, len(looked_at)),
                projection_dim=self.projection_dim,
                random_state=self.random_state,
            )
            chosen = looked_at[chosen]
        elif self.coreset == "random" and n_keep < len(candidates):
            rng = np.random.default_rng(self.random_state)
            chosen = np.sort(rng.choice(len(candidates), n_keep, replace=False))
            self.coverage_radius_ = None
        else:
            chosen, self.coverage_radius_ = np.arange(len(candidates)), 0.0
        if self.k > len(chosen):
            raise ConfigError(f"k={self.k} is larger than the memory bank ({len(chosen)} patches)")
        self.bank_indices_ = candidates[chosen]
        self.bank_ = _patch_rows(X, self.bank_indices_)
        self.bank_weights_ = None if weights is None else weights[chosen].astype(np.float32)
        self.n_features_ = X.shape[2]
        self.is_fitted_ = True
        return self

    def _bank_size(self, n_candidates: int, n_patches: int) -> int:
        """Patches the bank keeps: a share of *all* ``n_patches`` training patches, so that a
        denoised bank is as large as a plain one (capped by the ``n_candidates`` left and
        by ``max_bank``)."""
        n_keep = n_candidates
        if self.coreset != "none":
            n_keep = min(n_keep, max(1, int(round(self.coreset_ratio * n_patches))))
            if self.max_bank is not None:
                n_keep = min(n_keep, int(self.max_bank))
        return n_keep

    @property
    def derives_subsets(self) -> bool:  # type: ignore[override]
        return self.subset_fits == "derived"

    def subset_model(self, X: ArrayLike, images: ArrayLike) -> PatchCore:
        """A model of the images ``images`` (distinct indices) of the ``X`` this model was
        fitted on, its bank grown from this model's instead of chosen afresh
        (``subset_fits="derived"``; ``"independent"``: ``fit(X[images])``).

        What the ensemble's and cleaning's out-of-fold models and cleaning's fine-tuned
        model are: each would otherwise repeat a greedy selection of thousands of steps.
        Here the subset keeps the bank patches of this model that come from its own images,
        in the order they were chosen, up to the bank size a fit on ``X[images]`` would keep
        *less* as many as the left-out images held; then the greedy selection goes on from
        them among the subset's own patches (the same seeded pool a fit would look at) until
        the bank is full: every added patch is the one farthest from the bank so far, as in
        a fresh selection. The held-back share refills the holes the left-out images' bank
        patches leave: without it, out-of-fold scores ranked ELPV's defective training images
        clearly worse than fresh fold fits (training-set AUROC 0.84 against 0.94 in one
        cell), as each held-out good image lost the bank patches that covered it. A
        left-out image's patches are never in the bank. Not a greedy selection
        from scratch, so the bank differs a little from ``fit(X[images])``'s; without a
        greedy coreset, with denoising, or when every patch fits in the bank it *is*
        ``fit(X[images])``. ``coverage_radius_`` is None when nothing was added.

        Raises :class:`DataError` when ``X`` is not the array this model was fitted on (its
        bank rows are not where the bank came from).
        """
        self._check_is_fitted()
        images = np.asarray(images, dtype=np.int64)
        fresh = clone(self)
        bank_rows = getattr(self, "bank_indices_", None)
        X = check_features(X, padded=True, contiguous=False)
        derive = self.subset_fits == "derived" and self.coreset == "greedy"
        if not derive or self.denoise is not None or bank_rows is None:
            return fresh.fit(X[images])
        n_patches = X.shape[1]
        if bank_rows.max() >= X.shape[0] * n_patches or not np.array_equal(
            _patch_rows(X, bank_rows), self.bank_
        ):
            raise DataError(
                "subset_model needs the X this model was fitted on; these features do not "
                "hold its bank patches where it found them"
            )
        valid = np.isfinite(X[images, :, 0])
        candidates = np.flatnonzero(valid.reshape(-1))  # rows of X[images]
        n_keep = fresh._bank_size(len(candidates), int(valid.sum()))
        if n_keep >= len(candidates):
            return fresh.fit(X[images])

        def in_x(rows):  # rows of X[images] -> rows of X
            return images[rows // n_patches] * n_patches + rows % n_patches

        position = np.full(len(X), -1)
        position[images] = np.arange(len(images))
        own_image, own_patch = np.divmod(bank_rows, n_patches)
        kept = position[own_image] >= 0
        seeds = (position[own_image] * n_patches + own_patch)[kept]  # in selection order
        # As many steps as the left-out images had bank patches are chosen again: those
        # patches covered their own images' neighbourhoods, and the subset's patches there
        # are left uncovered (a held-out good image then scored as if it were unusual).
        seeds = seeds[: max(0, n_keep - int((~kept).sum()))]
        radius = None
        if len(seeds) >= n_keep:
            rows = seeds[:n_keep]
        else:
            pool = candidates[fresh._selection_pool(len(candidates))]
            added, radius = greedy_coreset(
                _patch_rows(X, in_x(pool)),
                min(n_keep - len(seeds), len(pool)),
                projection_dim=self.projection_dim,
                random_state=self.random_state,
                initial=_patch_rows(X, in_x(seeds)),
            )
            rows = np.concatenate([seeds, pool[added]])
        if self.k > len(rows):
            raise ConfigError(f"k={self.k} is larger than the memory bank ({len(rows)} patches)")
        fresh.grid_ = fresh._resolve_grid(n_patches, padded=not valid.all())
        fresh.bank_indices_ = rows
        fresh.bank_ = _patch_rows(X, in_x(rows))
        fresh.bank_weights_ = fresh.denoise_scores_ = fresh.denoise_kept_ = None
        fresh.coverage_radius_ = radius
        fresh.n_features_ = X.shape[2]
        fresh.is_fitted_ = True
        return fresh

    def _selection_pool(self, n_candidates: int) -> np.ndarray:
        """Indices (into the candidates) the greedy selection looks at: all of them, or
        a seeded uniform subset of ``max_candidates`` (sorted, so the order is the
        patches' own)."""
        cap = self.max_candidates
        if cap is None or n_candidates <= cap:
            return np.arange(n_candidates)
        # A generator of its own: the selection's first centre uses random_state too.
        rng = np.random.default_rng([int(self.random_state), 1])
        return np.sort(rng.choice(n_candidates, int(cap), replace=False))

    def _positions(self, n_patches: int) -> tuple[int, int]:
        """(n_views, positions per view) of the patch axis: views share a grid position
        when the grid is known and divides the patch count; otherwise every column of
        the patch axis is its own position (one view)."""
        if self.grid_ is not None:
            hw = self.grid_[0] * self.grid_[1]
            if hw and n_patches % hw == 0:
                return n_patches // hw, hw
        return 1, n_patches

    def _denoise(self, X, valid):
        """SoftPatch-style denoising: (indices of surviving patches, their weights or None)."""
        n, n_patches, c = X.shape
        counts = valid.sum(axis=1)
        sizes, freq = np.unique(counts, return_counts=True)
        n_views, hw = self._positions(int(sizes[freq.argmax()]))  # the most common grid
        rows = n * n_views
        if rows < 2:
            raise DataError(
                f"denoise={self.denoise!r} compares the training patches at each "
                f"grid position; {n} image(s) x {n_views} view(s) give only {rows}"
            )
        if np.any(counts % n_views):
            raise DataError(f"denoise: patch counts {sorted(set(counts))} are not {n_views} views")
        own = counts // n_views  # grid cells per view of each image
        # Resampling of each image's cells onto the common grid (identity when they agree):
        # cell q of the common grid <- cell floor((q + 0.5) * own / hw) of the image's grid.
        q = np.arange(hw)
        pick = np.minimum(
            (((q + 0.5)[None, :] * own[:, None]) // hw).astype(np.int64), own[:, None] - 1
        )
        rows_of = np.arange(n_views)[None, :, None] * own[:, None, None] + pick[:, None, :]
        self.denoise_k_ = k = min(int(self.denoise_k), rows - 1)
        # X[i, rows_of[i, v, q]] -> groups[q, i*n_views + v]
        groups = X[np.arange(n)[:, None, None], rows_of]  # (n, n_views, hw, c)
        groups = groups.transpose(2, 0, 1, 3).reshape(hw, rows, c)

        # Every real patch: its image, index, row of the groups (image x view) and cell q
        # of the common grid, floor((cell + 0.5) * hw / own_i) (its own cell when aligned).
        image = np.repeat(np.arange(n), counts)
        j = np.concatenate([np.arange(m) for m in counts])
        view, cell = j // own[image], j % own[image]
        q_of = np.minimum(((cell + 0.5) * hw // own[image]).astype(np.int64), hw - 1)
        row_of = image * n_views + view
        if (own == hw).all():
            scores = grouped_knn_distances(groups, k)[q_of, row_of]  # (hw, rows) -> patches
        else:
            scores = _scores_against_groups(X[image, j], groups, q_of, row_of, k)

        # At each position the floor(denoise_fraction x patches there) highest scores are
        # dropped; ties broken by patch order (image, then view), so the drop is deterministic.
        order = np.lexsort((np.arange(len(scores)), -scores, q_of))
        per_q = np.bincount(q_of, minlength=hw)
        starts = np.concatenate([[0], np.cumsum(per_q)[:-1]])
        rank = np.empty(len(scores), np.int64)
        rank[order] = np.arange(len(scores)) - starts[q_of[order]]
        n_drop = np.floor(float(self.denoise_fraction) * per_q + 1e-9).astype(np.int64)
        keep = rank >= n_drop[q_of]

        self.denoise_scores_ = np.full((n, n_patches), np.nan)
        self.denoise_scores_[image, j] = scores
        self.denoise_kept_ = np.zeros((n, n_patches), dtype=bool)
        self.denoise_kept_[image, j] = keep
        candidates = np.flatnonzero(self.denoise_kept_.reshape(-1))
        if self.denoise != "soft":
            return candidates, None
        by_q = np.split(scores[order], starts[1:])  # each position's scores
        median = np.array([np.median(g) if len(g) else 0.0 for g in by_q])
        mean = np.array([g.mean() if len(g) else 0.0 for g in by_q])
        # A median of 0 (most patches at a position have k exact duplicates): fall back
        # to the mean; a position of identical patches gets weight 1 throughout.
        scale = np.where(median > 0, median, mean)[q_of]
        ratio = np.divide(scores, scale, out=np.ones_like(scores), where=scale > 0)
        weights = np.full((n, n_patches), 1.0)
        weights[image, j] = np.maximum(1.0, ratio)
        return candidates, weights.reshape(-1)[candidates]

    def _resolve_grid(self, n_patches: int, padded: bool = False):
        if self.grid is not None:
            return tuple(int(g) for g in self.grid)
        if padded:
            return None  # grids of several sizes: no one grid
        side = int(round(np.sqrt(n_patches)))
        return (side, side) if side * side == n_patches else None

    def patch_scores(self, X: ArrayLike) -> np.ndarray:
        """Distance of every patch to its nearest bank patch(es): (n_images, n_patches);
        NaN for padding rows."""
        self._check_is_fitted()
        X = check_features(X, n_features=self.n_features_, padded=True, contiguous=False)
        out = np.full(X.shape[:2], np.nan)
        weights = getattr(self, "bank_weights_", None)
        for block in image_blocks(X):  # a block at a time: X may be memory-mapped
            flat = np.ascontiguousarray(X[block]).reshape(-1, X.shape[2])
            valid = np.isfinite(flat[:, 0])  # False: padding rows, scored NaN
            scores = np.full(len(flat), np.nan)
            if weights is None:
                scores[valid] = knn_distances(flat[valid], self.bank_, int(self.k))
            else:
                # SoftPatch: the distance to each nearest bank patch, scaled by its weight.
                dist, index = knn_search(flat[valid], self.bank_, int(self.k))
                scores[valid] = (dist * weights[index]).mean(1)
            out[block] = scores.reshape(-1, X.shape[1])
        return out

    def decision_function(self, X: ArrayLike) -> np.ndarray:
        """Image score: the highest patch score (padding rows skipped)."""
        return np.nanmax(self.patch_scores(X), axis=1)

    def anomaly_maps(self, X: ArrayLike, size: Sequence[int] | None = None) -> np.ndarray:
        """Patch scores on the grid, (n_images, h, w); bilinearly resized to ``size``
        (h', w') if given (e.g. the image's size, for overlays)."""
        self._check_is_fitted()
        if self.grid_ is None:
            raise ConfigError("anomaly_maps needs the patch grid: PatchCore(grid=(h, w))")
        h, w = self.grid_
        scores = self.patch_scores(X)
        if scores.shape[1] % (h * w):
            raise DataError(f"{scores.shape[1]} patches per image do not fit a {h}x{w} grid")
        maps = scores[:, : h * w].reshape(-1, h, w)
        if size is not None:
            t = torch.from_numpy(maps)[:, None].float()
            resized = F.interpolate(t, size=tuple(size), mode="bilinear", align_corners=False)
            maps = resized[:, 0].double().numpy()
        return maps

    def _check_params(self):
        if self.coreset not in CORESETS:
            raise ConfigError(
                f"unknown coreset {self.coreset!r}; choose one of: {', '.join(CORESETS)}"
            )
        check_float_range(self.coreset_ratio, "coreset_ratio", low=0, high=1, low_inclusive=False)
        for name in ("max_bank", "max_candidates"):
            if getattr(self, name) is not None:
                check_positive_int(getattr(self, name), name)
        if self.projection_dim is not None:
            check_positive_int(self.projection_dim, "projection_dim")
        check_positive_int(self.k, "k")
        if self.grid is not None:
            try:
                grid = tuple(self.grid)
            except TypeError:
                grid = ()
            if len(grid) != 2:
                raise ConfigError(
                    f"grid must be None or a pair (h, w) of positive integers, got {self.grid!r}"
                )
            for axis, size in zip("hw", grid):
                check_positive_int(size, f"grid {axis}")
        if self.denoise not in DENOISE:
            raise ConfigError(
                f"unknown denoise {self.denoise!r}; choose one of: None (off), 'hard', 'soft'"
            )
        check_float_range(
            self.denoise_fraction, "denoise_fraction", low=0, high=1, high_inclusive=False
        )
        check_positive_int(self.denoise_k, "denoise_k")
        if self.subset_fits not in SUBSET_FITS:
            raise ConfigError(
                f"unknown subset_fits {self.subset_fits!r}; choose one of: {', '.join(SUBSET_FITS)}"
            )
        check_positive_int(self.random_state, "random_state", minimum=0)

    def _get_state(self):
        grid = self.grid_ if self.grid_ is not None else (0, 0)
        state = {
            "bank": torch.from_numpy(self.bank_),
            "grid": torch.tensor(grid, dtype=torch.int64),
        }
        if getattr(self, "bank_weights_", None) is not None:
            state["bank_weights"] = torch.from_numpy(self.bank_weights_)
        # Where the bank came from: a model read back from a checkpoint (a fit resumed
        # after stage 1) derives its subset models as the one that wrote it would.
        if getattr(self, "bank_indices_", None) is not None:
            state["bank_indices"] = torch.from_numpy(np.asarray(self.bank_indices_, np.int64))
        return state

    def _set_state(self, state):
        self.bank_ = state["bank"].float().numpy()
        self.n_features_ = int(self.bank_.shape[1])
        grid = tuple(int(g) for g in state["grid"].tolist())
        self.grid_ = grid if grid != (0, 0) else None
        self.bank_weights_ = None
        indices = state.get("bank_indices")
        self.bank_indices_ = None if indices is None else indices.long().numpy()
        if self.bank_indices_ is not None and self.bank_indices_.shape != (len(self.bank_),):
            raise ValueError(
                f"bank_indices has shape {tuple(self.bank_indices_.shape)}; "
                f"the bank holds {len(self.bank_)} patches"
            )
        if self.denoise == "soft":  # a soft model without its weights would score differently
            weights = state["bank_weights"].float().numpy()
            if weights.shape != (len(self.bank_),):
                raise ValueError(
                    f"bank_weights has shape {tuple(weights.shape)}; "
                    f"the bank holds {len(self.bank_)} patches"
                )
            self.bank_weights_ = weights


def _patch_rows(X: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Rows ``rows`` of ``X.reshape(-1, C)`` as a new float32 array, without reshaping
    ``X`` (which would copy it whole when it is a view)."""
    image, patch = np.divmod(np.asarray(rows, dtype=np.int64), X.shape[1])
    return np.ascontiguousarray(X[image, patch], dtype=np.float32)


def _scores_against_groups(patches, groups, q_of, row_of, k) -> np.ndarray:
    """Outlier scores of patches of grids of several sizes: each patch's mean distance to its
    ``k`` nearest rows of its common-grid position's group, its own row left out (the row
    holds its image's resampled patch there: itself or its neighbour)."""
    scores = np.empty(len(patches))
    order = np.argsort(q_of, kind="stable")
    bounds = np.searchsorted(q_of[order], np.arange(len(groups) + 1))
    with torch.inference_mode():
        for q in range(len(groups)):
            sel = order[bounds[q] : bounds[q + 1]]
            if not len(sel):
                continue
            d = torch.cdist(
                torch.from_numpy(np.ascontiguousarray(patches[sel], dtype=np.float64)),
                torch.from_numpy(np.ascontiguousarray(groups[q], dtype=np.float64)),
            )
            d[torch.arange(len(sel)), torch.from_numpy(row_of[sel])] = float("inf")
            scores[sel] = d.topk(k, dim=1, largest=False).values.mean(1).numpy()
    return scores
