"""One cell of the paper's protocol: split → features → baseline vs OSR → metrics.

Sec. 4.2: train on ``n_train`` images of which a share ``contamination`` is
defective, test on 100 good + 100 defective held-out images, image-level
AUROC. The baseline is the detector trained on every view of the whole
contaminated set; OSR fine-tunes its stage-1 model on what the rule kept. Both
are fitted by :func:`robustsdd.cleaning.fit_settings`, as ``fit`` and the sweep
fit theirs.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ..cleaning import fit_settings
from ..data import paper_split
from ..metrics import detection_metrics, removal_metrics, score_summary

if TYPE_CHECKING:
    from ..data import ImageSet
    from ..detectors.base import BaseDetector
    from ..features import Featurizer

__all__ = ["run_protocol_cell", "strip_arrays"]


def run_protocol_cell(
    pool: ImageSet,
    test_pool: ImageSet | None,
    *,
    featurizer: Featurizer,
    detector: BaseDetector,
    osr_params: dict,
    n_train: int = 100,
    contamination: float = 0.2,
    seed: int = 0,
    n_test_good: int = 100,
    n_test_defective: int = 100,
) -> dict:
    """Run baseline and One-Shot Removal on one seeded split; return a JSON-ready dict.

    Parameters
    ----------
    pool, test_pool : ImageSet, ImageSet or None
        From :func:`robustsdd.data.open_source`.
    featurizer : Featurizer
        Extracts (and caches) the features of the split's images.
    detector : BaseDetector
        The detector template (cloned; its ``random_state`` is set to ``seed`` if it has one).
    osr_params : dict
        Keywords of :class:`OneShotRemoval` (rule, threshold, scoring, …).
    """
    t0 = time.perf_counter()
    train, test = paper_split(
        pool,
        n_train=n_train,
        contamination=contamination,
        n_test_good=n_test_good,
        n_test_defective=n_test_defective,
        test_pool=test_pool,
        random_state=seed,
    )
    X_train = featurizer.transform(train)
    X_test = featurizer.transform(test)
    t_features = time.perf_counter() - t0

    fits = dict(
        fit_settings(
            detector, X_train, {"baseline": None, "osr": osr_params}, seed=seed, labels=train.labels
        )
    )
    baseline, osr = fits["baseline"], fits["osr"].osr
    assert osr is not None, "osr_params is a One-Shot Removal setting"
    baseline_test = baseline.decision_function(X_test)
    osr_test = osr.decision_function(X_test)
    removed = [train.names[i] for i in osr.removed_indices_]
    return {
        "split": {
            "seed": seed,
            "n_train": len(train),
            "contamination": contamination,
            "train_good": train.n_good,
            "train_defective": train.n_defective,
            "test_good": test.n_good,
            "test_defective": test.n_defective,
        },
        "baseline": detection_metrics(test.labels, baseline_test),
        "osr": detection_metrics(test.labels, osr_test),
        "removal": {
            **removal_metrics(train.labels, osr.keep_mask_),
            "guard_fired": bool(osr.guard_fired_),
            "removed": removed,
        },
        "train_scores": {
            stage: score_summary(scores, train.labels)
            for stage, scores in osr.stage_scores_.items()
        },
        "test_scores": {
            "baseline": score_summary(baseline_test, test.labels),
            "osr": score_summary(osr_test, test.labels),
        },
        "notes": list(osr.notes_),
        "seconds": {
            "features": round(t_features, 2),
            "fit": round(fits["osr"].seconds, 2),
            "fit_baseline": round(baseline.seconds, 2),
            "total": round(time.perf_counter() - t0, 2),
        },
        "_arrays": {
            "train_labels": train.labels,
            "removal_scores": osr.removal_scores_,
            "keep_mask": osr.keep_mask_,
        },
    }


def strip_arrays(result: dict) -> dict:
    """The result without its numpy arrays (for JSON)."""
    return {k: v for k, v in result.items() if k != "_arrays"}
