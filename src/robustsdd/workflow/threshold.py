"""The decision threshold of a fitted model, chosen from the training data without labels.

The threshold is a quantile (default 0.99) of scores that stand in for those of new
normal images, so that about 1 % of new normal images score above it. Which scores:

``out_of_fold`` (default)
    ``n_folds`` copies of the detector are trained on the kept images, each scoring the
    kept images it did not see: scores of unseen images under models trained like the
    final one (on a little less data). Costs ``n_folds`` extra fits.
``removal``
    The removal-stage scores of the kept images (with no cleaning: the final model's
    scores of its own training images). No extra training, but a held-out *view* of a
    training image is closer to the training data than a new image is, and an in-sample
    score far closer, so this threshold flags many more new normal images. README and
    BENCHMARKS.md give the measured rates.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from sklearn.base import clone
from sklearn.model_selection import KFold

from .._errors import ConfigError, DataError
from .._hashing import array_digest
from ..cleaning.registry import SCORING_WORDS
from ..detectors.base import BaseDetector, lent_out_of_fold_scores
from .checkpoints import FitCheckpoints

__all__ = ["decide", "out_of_fold_scores", "choose_decision_threshold"]


def decide(
    decision: dict,
    *,
    detector: BaseDetector,
    X: np.ndarray,
    keep: ArrayLike,
    final: ArrayLike,
    removal: ArrayLike | None,
    scoring: str | None,
    seed: int,
    checkpoints: FitCheckpoints | None = None,
    skipped_steps: list | None = None,
    fitted: BaseDetector | None = None,
) -> tuple[dict, np.ndarray | None]:
    """(the decision dict, the out-of-fold calibration scores or None).

    ``decision``: ``scores`` ("out_of_fold" or "removal"), ``quantile``, ``n_folds``;
    ``removal`` is None when nothing was cleaned. ``fitted``: the final model, trained on
    the kept images; a detector that computed out-of-fold scores of its own training
    images while fitting (:func:`~robustsdd.detectors.base.lent_out_of_fold_scores`) lends
    them instead of ``n_folds`` more fits.
    """
    kind, quantile = decision["scores"], decision["quantile"]
    if kind == "out_of_fold":
        keep = np.asarray(keep, bool)
        n_folds = min(int(decision["n_folds"]), int(keep.sum()))
        own = lent_out_of_fold_scores(fitted, n_folds, seed, int(keep.sum()))
        if own is not None:
            calibration = np.full(len(keep), np.nan)
            calibration[keep] = own
        else:
            calibration = out_of_fold_scores(
                detector,
                X,
                keep,
                decision["n_folds"],
                seed,
                checkpoints=checkpoints,
                skipped_steps=skipped_steps,
            )
        return choose_decision_threshold(calibration, keep, quantile, kind=kind), calibration
    if removal is None:  # no cleaning: the final model's own training scores
        return choose_decision_threshold(final, keep, quantile, kind="final_in_sample"), None
    return choose_decision_threshold(removal, keep, quantile, kind="removal", regime=scoring), None


def out_of_fold_scores(
    detector: BaseDetector,
    X: np.ndarray,
    keep: ArrayLike,
    n_folds: int,
    seed: int,
    *,
    checkpoints: FitCheckpoints | None = None,
    skipped_steps: list | None = None,
) -> np.ndarray:
    """Scores of the kept images, each by a copy of ``detector`` trained on the other kept
    images (``n_folds`` folds); NaN for removed images. With ``checkpoints``, each fold's
    scores are saved when computed and read back instead of refitting. ``skipped_steps``,
    a list, receives each fold model's count of training steps skipped for a NaN/Inf loss."""
    keep = np.asarray(keep, bool)
    kept = np.flatnonzero(keep)
    n_folds = min(int(n_folds), len(kept))
    if n_folds < 2:
        raise DataError("out-of-fold decision scores need at least 2 kept images")
    scores = np.full(len(keep), np.nan)
    folds = KFold(n_folds, shuffle=True, random_state=seed)
    inputs = {"keep": array_digest(keep), "n_folds": n_folds, "seed": seed}
    for i, (train, test) in enumerate(folds.split(kept)):
        stage = f"decision_fold{i + 1}of{n_folds}"
        ckpt = (
            checkpoints.load(
                stage, inputs=inputs, describe=f"decision-threshold fit {i + 1} of {n_folds}"
            )
            if checkpoints
            else None
        )
        if ckpt is None:
            fold_model = clone(detector).fit(X[kept[train]])
            fold_scores = np.asarray(fold_model.decision_function(X[kept[test]]), np.float64)
            skipped = int(getattr(fold_model, "n_skipped_steps_", 0) or 0)
            if checkpoints:
                checkpoints.save(
                    stage,
                    arrays={"scores": fold_scores},
                    inputs=inputs,
                    info={"skipped_steps": skipped},
                )
        else:
            fold_scores, skipped = ckpt.arrays["scores"], int(ckpt.info.get("skipped_steps", 0))
        scores[kept[test]] = fold_scores
        if skipped_steps is not None:
            skipped_steps.append(skipped)
    return scores


def choose_decision_threshold(
    scores: ArrayLike, keep: ArrayLike, quantile: float, *, kind: str, regime: str | None = None
) -> dict:
    """The decision threshold: ``quantile`` of the kept images' ``scores``, and how it was
    chosen. ``kind``: "removal" (removal-stage scores under ``regime``), "out_of_fold" or
    "final_in_sample".

    >>> d = choose_decision_threshold([1.0, 2.0, 3.0, 100.0], [True, True, True, False], 0.5,
    ...                               kind="out_of_fold")
    >>> d["threshold"], d["n_scores"]
    (2.0, 3)
    """
    s = np.asarray(scores, dtype=np.float64)[np.asarray(keep, bool)]
    s = s[np.isfinite(s)]
    if not s.size:
        raise DataError("no finite training score to choose a decision threshold from")
    value = float(np.quantile(s, float(quantile)))
    q = f"{quantile:g} quantile of"
    if kind == "out_of_fold":
        what = (
            f"{q} the out-of-fold scores of the {s.size} kept training images (each "
            f"scored by a copy of the detector trained on the other kept images)"
        )
        in_sample = False
    elif kind == "final_in_sample":
        what = f"{q} the final model's (in-sample) scores of the {s.size} training images"
        in_sample = True
    elif kind == "removal":
        word = regime if regime is None else SCORING_WORDS.get(regime, regime)
        what = f"{q} the {word} removal-stage scores of the {s.size} kept training images"
        in_sample = regime == "in_sample"
    else:
        raise ConfigError(f"unknown kind of decision scores {kind!r}")
    return {
        "threshold": value,
        "method": "quantile",
        "quantile": float(quantile),
        "scores": kind,
        "n_scores": int(s.size),
        "in_sample": in_sample,
        "description": what,
    }
