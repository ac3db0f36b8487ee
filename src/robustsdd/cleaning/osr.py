"""One-Shot Removal (OSR) as a meta-estimator around any detector.

The paper's pipeline (Sec. 3, Fig. 2): (1) train the detector on all training
images; (2) score every training image and remove the outliers; (3) fine-tune
the *same* model on what is left. Two readings of the removal step exist in the
paper and both are here, named for what they do:

``score_threshold``
    Sec. 4.3 / Table 1: drop every image scoring above a fixed threshold (1.5
    on DifferNet's mean-z² score).
``min_size``
    Algorithm 1 / Sec. 3.3: repeatedly drop the single highest-scoring image
    and update the model, while more than ``min_size`` images remain.
``fraction``
    Drop a fixed share of the highest-scoring images.

*How* training images are scored matters as much as the rule (docs/design.md §3):
a flow that memorises its training vectors gives every one of them a low
in-sample score. ``scoring`` makes the regime explicit:

``in_sample``
    Score the images the model was trained on (the paper's literal reading).
``held_out_views``
    Train stage 1 on the even-indexed views of each image and score the
    odd-indexed ones (with the default views: unmirrored vs mirrored; with
    rotations only: every other angle). No training vector is scored, yet no
    image is left out of training. Stage 3 fine-tunes on all views.
``out_of_fold``
    Split the images into ``n_folds``; score each fold with a copy trained on
    the others, so a defective image cannot hide by being memorised.
``ensemble``
    SRR-like (Yoon et al., "Self-Supervise, Refine, Repeat", TMLR 2022): split the
    images into ``n_members`` disjoint subsets and train one copy on each; every
    copy scores the images it did not see, its scores divided by their median so
    that members vote on one scale, and an image's score is the median over those
    members — above a cut exactly when a majority of them put it above the cut.
``sparse_banks``
    After MeDS (ICML 2026): many memory banks, each of the features of a random small
    share (``bank_share``) of the images; an image's score is the median, over the
    banks that did not hold it, of its PatchCore-style distance to the bank
    (:func:`~robustsdd.cleaning.sparse_banks.sparse_bank_scores`). A defect type
    repeated in a few training images misses most banks and still scores high, where
    out-of-fold scores find its look-alikes in the other folds. Needs no detector fit;
    reads the detector's patch columns (``patch_channels``) where it has them.

Beyond the one shot, ``rounds`` > 1 repeats the removal (SRR's "repeat"): the
detector is refitted on what was kept, every image is scored again (kept images
under the same regime, removed ones by the refitted model, which never saw them)
and the rule is applied afresh, until the kept set stops changing or ``rounds``
is reached. Images the first model could not single out — moderate outliers
scored by a model that extreme ones had stretched (a Gaussian's covariance, a
flow's density) — are then scored by a model fitted without the extremes.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator, clone
from sklearn.model_selection import KFold

from .._errors import ConfigError, DataError
from .._validation import check_positive_int
from ..detectors.base import BaseDetector, check_features, lent_out_of_fold_scores
from .registry import RULES, SCORING_REGIMES
from .rules import apply_guard, resolve_count
from .sparse_banks import sparse_bank_scores

__all__ = ["OneShotRemoval"]

# What fit() sets; cleared at the start of every fit, so a refit keeps nothing stale.
_FITTED = (
    "detector_",
    "baseline_detector_",
    "keep_mask_",
    "removed_indices_",
    "removal_scores_",
    "estimated_contamination_",
    "train_scores_",
    "stage_scores_",
    "stage1_removal_scores_",
    "cut_",
    "p_normal_",
    "contamination_estimate_",
    "rounds_run_",
    "guard_fired_",
    "notes_",
)


class OneShotRemoval(BaseEstimator):
    """Train, drop the training images that do not belong, fine-tune (cleanlab-style wrapper).

    Parameters
    ----------
    detector : BaseDetector
        Any robustsdd detector; it is cloned, never modified.
    rule : {"score_threshold", "min_size", "fraction", "auto", "confident", "fdr"}
        How images are chosen for removal (see the module docstring). Two need no
        number: ``auto`` drops images scoring above median + ``z`` robust SDs of
        the removal scores (:func:`~robustsdd.cleaning.rules.auto_cut`);
        ``confident`` turns the scores into probabilities of being normal (a
        two-component mixture) and drops those below their mean, confident
        learning's per-data threshold (:func:`~robustsdd.cleaning.rules.confident_cut`).
    threshold : float
        For ``score_threshold``: drop images scoring above it (paper: 1.5).
    z : float
        For ``auto``: how many robust standard deviations above the median the
        cut lies (3, the usual outlier convention; not tuned on test data).
    fraction : float
        For ``fraction``: share of images to drop.
    min_size : int or float
        For ``min_size``: stop removing when this many images remain (a float in
        (0, 1) is a share of the training set).
    fdr : float in (0, 1)
        For ``fdr``: the false-discovery rate of the cut (the expected share of good
        images among those removed; default 0.2). The rule fits a model of the normal
        images' log scores, estimates the contamination with an interval and removes
        the images that model rejects (:mod:`robustsdd.cleaning.estimate`).
    scoring : {"in_sample", "held_out_views", "out_of_fold", "ensemble", "sparse_banks"}
        How the training images are scored for removal.
    n_folds : int
        Folds for ``out_of_fold`` scoring.
    n_members : int
        Disjoint subsets (one detector each) for ``ensemble`` scoring.
    bank_share : float in (0, 1)
        For ``sparse_banks``: share of the images in each bank (default 0.1: a pattern
        in up to 6 images is still scored as rare; see
        :func:`~robustsdd.cleaning.sparse_banks.repeat_tolerance`).
    n_banks : int
        For ``sparse_banks``: how many banks (default 20).
    rounds : int
        Removal rounds (1: One-Shot Removal; more: refine and repeat, see the
        module docstring). Not used by ``min_size``, which is iterative already.
    min_keep : int or float
        Guard: never keep fewer images than this (float: share of the set).
        When the rule would, the lowest-scoring ``min_keep`` images are kept
        and ``guard_fired_`` says so.
    keep_baseline : bool
        Keep a copy of the stage-1 model as ``baseline_detector_`` (the plain
        detector trained on everything, for before/after comparisons).
    score_training : bool
        Score every training image with the stage-1 and the fine-tuned model
        (``stage_scores_``' ``stage1`` and ``stage2``, ``train_scores_``), for reports
        (default). False skips those two scorings of the whole training set — the sweep
        reads neither — and leaves ``train_scores_`` unset; the removal is the same.
    random_state : int
        Seeds the fold split, the ensemble's subsets and the mixture.

    Attributes
    ----------
    detector_ : the fine-tuned detector
    baseline_detector_ : the stage-1 detector (if ``keep_baseline``); with
        ``held_out_views`` it has seen only half the views
    keep_mask_ : bool array, True for kept training images
    removed_indices_ : indices of removed images, highest removal score first
    train_scores_ : scores of every training image by the final detector (if
        ``score_training``)
    removal_scores_ : the scores the rule saw (for ``min_size``, each image's
        score in the round it was removed, or its last score if kept)
    stage_scores_ : dict of score arrays over all training images: ``stage1`` (the
        stage-1 model, every view), ``removal`` (what the rule saw) and ``stage2``
        (the fine-tuned model; out-of-sample for the removed images); ``removal`` only
        without ``score_training``
    cut_ : the score cut used (``score_threshold``: the threshold; ``auto``: the
        cut read off the scores; ``confident``: the lowest removed score), None for
        the count-based rules
    p_normal_ : for ``confident``, each image's probability of being normal
    contamination_estimate_ : for ``fdr``, ``{"share", "low", "high", "level"}``: the
        contamination estimated from the removal scores and its bootstrap interval
    rounds_run_ : how many removal rounds ran (≤ ``rounds``)
    estimated_contamination_ : share of training images removed, the estimate
        of how many did not belong
    guard_fired_ : bool; ``notes_`` : list of str, what happened, for the user

    Examples
    --------
    >>> import numpy as np
    >>> from robustsdd.detectors.gaussian import GaussianDetector
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(40, 2, 4)); X[:3] += 6
    >>> osr = OneShotRemoval(GaussianDetector(), rule="fraction", fraction=0.075).fit(X)
    >>> sorted(osr.removed_indices_.tolist())
    [0, 1, 2]
    """

    # The fitted attributes (see "Attributes" above), declared for the type checker.
    detector_: BaseDetector
    baseline_detector_: BaseDetector
    keep_mask_: np.ndarray
    removed_indices_: np.ndarray
    removal_scores_: np.ndarray
    estimated_contamination_: float
    train_scores_: np.ndarray
    stage_scores_: dict[str, np.ndarray]
    stage1_removal_scores_: np.ndarray
    cut_: float | None
    p_normal_: np.ndarray | None
    contamination_estimate_: dict | None
    rounds_run_: int
    guard_fired_: bool
    notes_: list[str]

    def __init__(
        self,
        detector: BaseDetector | None,
        *,
        rule: str = "score_threshold",
        threshold: float = 1.5,
        fraction: float = 0.1,
        min_size: float = 0.8,
        scoring: str = "in_sample",
        n_folds: int = 5,
        min_keep: float = 0.5,
        keep_baseline: bool = True,
        score_training: bool = True,
        random_state: int = 0,
        z: float = 3.0,
        n_members: int = 5,
        rounds: int = 1,
        fdr: float = 0.2,
        bank_share: float = 0.1,
        n_banks: int = 20,
    ):
        self.detector = detector
        self.rule = rule
        self.threshold = threshold
        self.z = z
        self.fraction = fraction
        self.min_size = min_size
        self.scoring = scoring
        self.n_folds = n_folds
        self.min_keep = min_keep
        self.keep_baseline = keep_baseline
        self.score_training = score_training
        self.random_state = random_state
        self.n_members = n_members
        self.rounds = rounds
        self.fdr = fdr
        self.bank_share = bank_share
        self.n_banks = n_banks

    # -- scoring regimes --------------------------------------------------------------
    def _fit_views(self, X):
        """For held_out_views: (views to train on, views to score)."""
        if getattr(self.detector, "feature_layout", "views") != "views":
            raise ConfigError(
                f"scoring='held_out_views' needs features with a views axis; "
                f"{type(self.detector).__name__} takes patches: use "
                "scoring='out_of_fold'"
            )
        n_views = X.shape[1]
        if n_views < 2:
            raise DataError("scoring='held_out_views' needs at least 2 views per image")
        # Views are rotation-major, flip-minor (ViewSpec.make): even = unflipped.
        return np.arange(0, n_views, 2), np.arange(1, n_views, 2)

    def _training_views(self, X):
        """What the model trains on before removal: every view, or the even ones only."""
        if self.scoring == "held_out_views":
            fit_views, _ = self._fit_views(X)
            return X[:, fit_views]
        return X

    def _removal_scores(self, model, X):
        """Scores of the images of X under the chosen regime; ``model`` was trained on X."""
        if self.scoring == "in_sample":
            return model.decision_function(X)
        if self.scoring == "held_out_views":
            _, held = self._fit_views(X)
            return model.decision_function(X[:, held])
        if self.scoring == "ensemble":
            return self._ensemble_scores(X)
        if self.scoring == "sparse_banks":
            return self._sparse_bank_scores(X)
        n_folds = min(int(self.n_folds), len(X))
        if n_folds < 2:
            raise DataError("scoring='out_of_fold' needs at least 2 images")
        # A detector that scored its own training images out of fold while fitting, with
        # these very folds (the ensemble), lends those scores instead of n_folds refits.
        lent = lent_out_of_fold_scores(model, n_folds, self.random_state, len(X))
        if lent is not None:
            return lent
        scores = np.empty(len(X))
        folds = KFold(n_folds, shuffle=True, random_state=self.random_state)
        for train_idx, test_idx in folds.split(X):
            # A fresh copy fitted on the other folds, or one the detector derives from
            # ``model`` for less without the fold's images (PatchCore: subset_fits).
            derive = getattr(model, "subset_model", None)
            if callable(derive):
                fold_model = derive(X, train_idx)
            else:  # a detector that is not a BaseDetector
                fold_model = clone(self.detector).fit(X[train_idx])
            scores[test_idx] = fold_model.decision_function(X[test_idx])
        return scores

    def _sparse_bank_scores(self, X, reference=None):
        """Sparse-bank scores of the images of X, banks drawn from ``reference`` (all)."""
        columns = getattr(self.detector, "patch_channels", None)
        features = X if columns is None else X[:, :, : int(columns)]
        return sparse_bank_scores(
            features,
            share=float(self.bank_share),
            n_banks=int(self.n_banks),
            reference=reference,
            random_state=self.random_state,
        )

    def _ensemble_scores(self, X):
        """Median over the members that did not see each image of its median-scaled score."""
        n_members = int(self.n_members)
        if len(X) < 2 * n_members:
            raise DataError(
                f"scoring='ensemble' with n_members={n_members} needs at least "
                f"{2 * n_members} images (2 per member), got {len(X)}"
            )
        rng = np.random.default_rng(self.random_state)
        subsets = np.array_split(rng.permutation(len(X)), n_members)
        votes = np.full((n_members, len(X)), np.nan)
        medians = []
        for m, subset in enumerate(subsets):
            unseen = np.setdiff1d(np.arange(len(X)), subset)
            member = clone(self.detector).fit(X[subset])
            scores = member.decision_function(X[unseen])
            median = float(np.nanmedian(scores))
            if not (np.isfinite(median) and median > 0):
                raise DataError(
                    f"ensemble member {m} gave no positive median score "
                    f"({median}); scoring='ensemble' needs positive scores"
                )
            votes[m, unseen] = scores / median
            medians.append(median)
        # Back in the detector's units, so a fixed threshold keeps its usual meaning.
        return np.nanmedian(votes, axis=0) * float(np.median(medians))

    @property
    def _padded(self) -> bool:
        # Patch features of images of different shapes are padded with NaN rows.
        return getattr(self.detector, "feature_layout", "views") == "patches"

    def _validate(self, n):
        if self.rule not in RULES:
            raise ConfigError(f"unknown rule {self.rule!r}; choose one of: {', '.join(RULES)}")
        if self.scoring not in SCORING_REGIMES:
            raise ConfigError(
                f"unknown scoring {self.scoring!r}; choose one of: {', '.join(SCORING_REGIMES)}"
            )
        min_keep = resolve_count(self.min_keep, n, "min_keep")
        if min_keep < 1:
            raise ConfigError("min_keep must keep at least one image")
        for name in ("n_members", "rounds", "n_folds", "n_banks"):
            check_positive_int(getattr(self, name), name)
        if not 0 < self.bank_share < 1:
            raise ConfigError(f"bank_share must be in (0, 1), got {self.bank_share!r}")
        if self.scoring == "ensemble" and self.n_members < 2:
            raise ConfigError("scoring='ensemble' needs n_members >= 2")
        return min_keep

    # -- the pipeline -----------------------------------------------------------------
    def fit(
        self, X: ArrayLike, y: object = None, *, stage1: OneShotRemoval | None = None
    ) -> OneShotRemoval:
        """Run the three stages on training features ``X`` (n_images, n_views, n_features).

        Parameters
        ----------
        stage1 : OneShotRemoval, optional
            An instance already fitted on the same ``X`` with the same detector,
            scoring and ``random_state`` (and ``keep_baseline=True``): its stage-1
            model and scores are reused instead of training again, so several rules
            or thresholds cost one stage-1 fit (the sweep does this). The result is
            the same as without it.
        """
        X = check_features(X, padded=self._padded)
        n = len(X)
        min_keep = self._validate(n)
        for name in _FITTED:
            self.__dict__.pop(name, None)
        self.notes_ = []
        self.guard_fired_ = False

        if stage1 is not None:
            self._check_reusable(stage1, X)
            model = copy.deepcopy(stage1.baseline_detector_)
            stage1_scores = stage1.stage_scores_.get("stage1")
            if stage1_scores is None and self.score_training:  # stage 1 skipped them
                stage1_scores = model.decision_function(X)
            initial_scores = stage1.stage1_removal_scores_
        else:
            model, stage1_scores, initial_scores = self._stage1(X)
        if self.keep_baseline:
            self.baseline_detector_ = copy.deepcopy(model)
        self.stage1_removal_scores_ = initial_scores

        self.rounds_run_ = 1
        if self.rule == "min_size":
            self.cut_ = None
            keep, removal_scores, order = self._remove_one_at_a_time(
                model, X, min_keep, initial_scores
            )
        else:
            removal_scores = initial_scores
            keep, fired = self._apply_rule(removal_scores, min_keep)
            for _ in range(1, int(self.rounds)):
                if keep.all():
                    break  # nothing removed: another round would score the same images again
                rescored = self._rescore(model, X, keep)
                new_keep, new_fired = self._apply_rule(rescored, min_keep)
                removal_scores, self.rounds_run_ = rescored, self.rounds_run_ + 1
                if np.array_equal(new_keep, keep):
                    break
                keep, fired = new_keep, new_fired
            self._note_guard(fired, n, min_keep)
            removed = np.flatnonzero(~keep)
            order = removed[np.argsort(-removal_scores[removed], kind="stable")]

        self._describe(removal_scores, keep)
        # Stage 3: fine-tune the same model on what is left (DifferNet continues from its
        # stage-1 weights; PatchCore keeps its stage-1 bank's patches of the kept images and
        # tops them up; other detectors without iterative state refit).
        if self.rule != "min_size" and self._derives(model):  # min_size moved it off X
            model = model.subset_model(X, np.flatnonzero(keep))
        else:
            model.partial_fit(X[keep])
        self.detector_ = model
        self.keep_mask_ = keep
        self.removed_indices_ = np.asarray(order, dtype=np.int64)
        self.removal_scores_ = removal_scores
        self.estimated_contamination_ = float((~keep).mean())
        self.stage_scores_ = {"removal": removal_scores}
        if self.score_training:
            assert stage1_scores is not None  # computed by stage 1, or above
            self.train_scores_ = model.decision_function(X)
            self.stage_scores_ = {
                "stage1": stage1_scores,
                "removal": removal_scores,
                "stage2": self.train_scores_,
            }
        return self

    def _apply_rule(self, scores, min_keep):
        """The rule's keep-mask for these scores, with the guard applied; sets ``cut_``
        (and ``p_normal_`` for probabilistic rules)."""
        cut = RULES[self.rule].cut(scores, self.get_params(deep=False))
        self.cut_ = cut.cut
        if cut.p_normal is not None:
            self.p_normal_ = cut.p_normal
        if cut.estimate is not None:
            est = cut.estimate
            self.contamination_estimate_ = {
                "share": est.share,
                "low": est.interval[0],
                "high": est.interval[1],
                "level": est.level,
            }
        return apply_guard(scores, cut.keep, min_keep)

    def _derives(self, model) -> bool:
        """Whether a model of some images of X may be derived from stage-1 ``model``
        (:meth:`~robustsdd.detectors.base.BaseDetector.subset_model`): the detector says it
        can, and ``model`` was trained on X itself (not on half the views)."""
        return bool(getattr(model, "derives_subsets", False)) and self.scoring != "held_out_views"

    def _rescore(self, model, X, keep):
        """Removal scores of a further round: the regime on the kept, the rest out of
        sample; ``model`` is stage 1's."""
        if self.scoring == "sparse_banks":  # banks of kept images score every image
            return self._sparse_bank_scores(X, reference=keep)
        kept, removed = np.flatnonzero(keep), np.flatnonzero(~keep)
        if self._derives(model):
            refit = model.subset_model(X, kept)
        else:
            refit = clone(self.detector).fit(self._training_views(X[kept]))
        scores = np.empty(len(X))
        scores[kept] = self._removal_scores(refit, X[kept])
        scores[removed] = refit.decision_function(X[removed])
        return scores

    def _stage1(self, X):
        model = clone(self.detector).fit(self._training_views(X))
        return model, self._stage1_scores(model, X), self._removal_scores(model, X)

    def _stage1_scores(self, model, X):
        """The stage-1 model's scores of every view of X, or None without ``score_training``."""
        return model.decision_function(X) if self.score_training else None

    def fit_stage1(self, X: ArrayLike) -> tuple[BaseDetector, np.ndarray | None, np.ndarray]:
        """Stage 1 alone: ``(model, stage1_scores, removal_scores)`` for training features X
        (``stage1_scores`` None without ``score_training``).

        What :meth:`fit` does before removing anything, for callers that store it (``fit``
        checkpoints it) and hand it back through :meth:`as_stage1` and ``fit(X, stage1=…)``.
        The settings are checked first, so a bad one fails before anything trains.
        """
        X = check_features(X, padded=self._padded)
        self._validate(len(X))
        return self._stage1(X)

    def as_stage1(
        self, model: BaseDetector, stage1_scores: ArrayLike | None, removal_scores: ArrayLike
    ) -> OneShotRemoval:
        """A stand-in fitted stage 1 (from :meth:`fit_stage1`) to pass as ``fit(X, stage1=…)``."""
        stand_in = clone(self).set_params(keep_baseline=True)
        stand_in.baseline_detector_ = model
        stand_in.stage_scores_ = {}
        if stage1_scores is not None:
            stand_in.stage_scores_["stage1"] = np.asarray(stage1_scores)
        stand_in.stage1_removal_scores_ = np.asarray(removal_scores)
        stand_in.keep_mask_ = np.ones(len(stand_in.stage1_removal_scores_), dtype=bool)
        return stand_in

    def stage1_from_plain(self, model: BaseDetector, X: ArrayLike) -> OneShotRemoval | None:
        """A stand-in stage 1 built on ``model``, a copy of the detector (same settings and
        ``random_state``) already trained on every view of every image of ``X``; None
        when this scoring trains stage 1 on part of ``X`` (``held_out_views``).

        Stage 1 of the other regimes is exactly that model, so a caller that has fitted
        the plain detector (the sweep's ``none``) saves one fit; only the removal scores
        are computed (out of fold: the folds' fits, or the scores the model lends).
        """
        if self.scoring == "held_out_views":
            return None
        X = check_features(X, padded=self._padded)
        self._validate(len(X))
        model = copy.deepcopy(model)
        return self.as_stage1(model, self._stage1_scores(model, X), self._removal_scores(model, X))

    def _check_reusable(self, other, X):
        same = (
            isinstance(other, OneShotRemoval)
            and hasattr(other, "baseline_detector_")
            and other.scoring == self.scoring
            and other.n_folds == self.n_folds
            and other.n_members == self.n_members
            and (other.bank_share, other.n_banks) == (self.bank_share, self.n_banks)
            and other.random_state == self.random_state
            and clone(other.detector).get_params() == clone(self.detector).get_params()
            and len(other.keep_mask_) == len(X)
        )
        if not same:
            raise ConfigError(
                "stage1 must be a OneShotRemoval fitted with keep_baseline=True on "
                "the same data, detector, scoring and random_state"
            )

    def _remove_one_at_a_time(self, model, X, min_keep, initial_scores):
        """Algorithm 1: while |D| > T, drop the top-scoring image and update the model."""
        n = len(X)
        target = resolve_count(self.min_size, n, "min_size")
        if target < min_keep:
            self.notes_.append(
                f"min_size {target} is below the guard min_keep {min_keep}; stopping at {min_keep}"
            )
            target = min_keep
        kept = np.arange(n)
        removal_scores = np.full(n, np.nan)
        order = []
        while len(kept) > target:
            scores = initial_scores if len(kept) == n else self._removal_scores(model, X[kept])
            removal_scores[kept] = scores
            worst = int(np.argmax(np.nan_to_num(scores, nan=np.inf)))
            order.append(int(kept[worst]))
            kept = np.delete(kept, worst)
            if len(kept) > target:  # the final update is stage 3's fine-tune
                model.partial_fit(self._training_views(X[kept]))
        if len(kept) == n:
            removal_scores = initial_scores
        keep = np.zeros(n, dtype=bool)
        keep[kept] = True
        return keep, removal_scores, order

    def _note_guard(self, fired, n, min_keep):
        self.guard_fired_ = bool(fired)
        if fired:
            msg = (
                f"the {self.rule} rule would keep fewer than min_keep={min_keep} of {n} images; "
                f"the guard kept the {min_keep} lowest-scoring ones"
            )
            self.notes_.append(msg)
            warnings.warn(msg, stacklevel=3)

    def _describe(self, scores, keep):
        n_removed = int((~keep).sum())
        finite = scores[np.isfinite(scores)]
        lo, med, hi = np.percentile(finite, [10, 50, 90]) if finite.size else (np.nan,) * 3
        self.notes_.append(
            f"{self.scoring} scores: 10th/50th/90th percentile {lo:.3g}/{med:.3g}/{hi:.3g}; "
            f"{self.rule} removed {n_removed} of {len(keep)} images"
        )
        if n_removed == 0:
            self.notes_.append(
                f"the rule removed nothing: every {self.scoring} score is at or below the cut"
                + (f" ({self.cut_:.4g})" if self.cut_ is not None else "")
            )
        rule = RULES[self.rule]
        estimate = getattr(self, "contamination_estimate_", None)
        if estimate is not None:
            self.notes_.append(
                f"estimated contamination {estimate['share']:.1%} "
                f"({estimate['level']:.0%} interval {estimate['low']:.1%} to "
                f"{estimate['high']:.1%}) from the {self.scoring} scores' model of normal "
                f"images; the fdr cut removed {n_removed / len(keep):.1%}"
            )
        elif rule.estimates_contamination:
            cut = f" = {self.cut_:.4g}" if self.cut_ is not None else ""
            self.notes_.append(
                f"{self.rule} cut: {rule.describe(self.get_params())}{cut}; "
                f"estimated contamination {n_removed / len(keep):.1%}"
            )
        if self.rounds_run_ > 1:
            self.notes_.append(f"{self.rounds_run_} removal rounds ran (at most {self.rounds})")

    def decision_function(self, X: ArrayLike) -> np.ndarray:
        """Scores of the fine-tuned detector (higher = more anomalous)."""
        return self.detector_.decision_function(X)

    @property
    def n_removed_(self) -> int:
        return int((~self.keep_mask_).sum())

    # -- fitted state -----------------------------------------------------------------
    def get_fitted_state(self) -> tuple[dict, dict]:
        """Every fitted attribute as ``(arrays, info)``: name → numpy array (the detectors'
        tensors under ``detector_.`` / ``baseline_detector_.``), and JSON-able values.

        :meth:`set_fitted_state` on an unfitted copy with the same parameters restores an
        equal instance; checkpoints store the pair as safetensors with JSON metadata.
        """
        if not hasattr(self, "keep_mask_"):
            raise RuntimeError("OneShotRemoval is not fitted yet; call fit(X) first")
        arrays = {}
        for attr in ("detector_", "baseline_detector_"):
            if hasattr(self, attr):
                arrays.update(
                    {
                        f"{attr}.{k}": v.detach().cpu().numpy().copy()
                        for k, v in getattr(self, attr)._get_state().items()
                    }
                )
        for attr in (
            "keep_mask_",
            "removed_indices_",
            "removal_scores_",
            "train_scores_",
            "stage1_removal_scores_",
            "p_normal_",
        ):
            if hasattr(self, attr):
                arrays[attr] = np.asarray(getattr(self, attr)).copy()
        arrays.update(
            {f"stage_scores_.{k}": np.asarray(v).copy() for k, v in self.stage_scores_.items()}
        )
        info = {
            "cut_": self.cut_,
            "rounds_run_": int(self.rounds_run_),
            "guard_fired_": bool(self.guard_fired_),
            "notes_": list(self.notes_),
            "estimated_contamination_": float(self.estimated_contamination_),
            "contamination_estimate_": getattr(self, "contamination_estimate_", None),
            "stages": list(self.stage_scores_),
        }
        return arrays, info

    def set_fitted_state(self, arrays: dict, info: dict) -> OneShotRemoval:
        """Restore what :meth:`get_fitted_state` returned (the parameters are this
        instance's; the detectors are clones of ``detector`` with the stored state)."""
        import torch

        from ..detectors.base import fitted_from_state

        for name in _FITTED:
            self.__dict__.pop(name, None)
        for attr in ("detector_", "baseline_detector_"):
            state = {
                k[len(attr) + 1 :]: torch.from_numpy(np.asarray(v))
                for k, v in arrays.items()
                if k.startswith(attr + ".")
            }
            if state:
                assert self.detector is not None, "the stored detectors are clones of `detector`"
                setattr(self, attr, fitted_from_state(self.detector, state))
        for attr in (
            "keep_mask_",
            "removed_indices_",
            "removal_scores_",
            "train_scores_",
            "stage1_removal_scores_",
            "p_normal_",
        ):
            if attr in arrays:
                setattr(self, attr, np.asarray(arrays[attr]))
        self.keep_mask_ = self.keep_mask_.astype(bool)
        self.removed_indices_ = self.removed_indices_.astype(np.int64)
        self.stage_scores_ = {k: np.asarray(arrays[f"stage_scores_.{k}"]) for k in info["stages"]}
        self.cut_ = info["cut_"]
        self.rounds_run_ = int(info["rounds_run_"])
        self.guard_fired_ = bool(info["guard_fired_"])
        self.notes_ = list(info["notes_"])
        self.estimated_contamination_ = float(info["estimated_contamination_"])
        if info.get("contamination_estimate_") is not None:
            self.contamination_estimate_ = dict(info["contamination_estimate_"])
        return self
