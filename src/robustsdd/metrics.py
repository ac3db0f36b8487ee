"""Evaluation: image-level AUROC/AP, removal quality, Table-1 counts, score summaries."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike
from sklearn.metrics import average_precision_score, roc_auc_score

from .data import DEFECTIVE, GOOD, removal_counts

__all__ = ["detection_metrics", "pixel_auroc", "removal_metrics", "score_summary"]


def detection_metrics(labels: ArrayLike, scores: ArrayLike) -> dict[str, float]:
    """Image-level AUROC and average precision (defective = positive class)."""
    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=np.float64)
    known = labels != -1
    y, s = labels[known] == DEFECTIVE, scores[known]
    if y.all() or not y.any():
        return {"auroc": float("nan"), "ap": float("nan")}
    # Non-finite scores (a diverged model) rank as most anomalous rather than crash sklearn.
    s = np.nan_to_num(s, nan=np.finfo(np.float64).max, posinf=np.finfo(np.float64).max)
    return {"auroc": float(roc_auc_score(y, s)), "ap": float(average_precision_score(y, s))}


def pixel_auroc(masks: Sequence[ArrayLike], maps: Sequence[ArrayLike]) -> float:
    """Pixel-level AUROC: every pixel of every image is one sample (defect pixels positive).

    ``masks`` (bool) and ``maps`` (anomaly scores): one array per image, each mask the
    shape of its map (images may differ in size), or two arrays (n_images, H, W). NaN
    when the pixels are all of one class (no defect anywhere).
    """
    if len(masks) != len(maps):
        raise ValueError(f"{len(masks)} masks but {len(maps)} anomaly maps")
    ys, ss = [], []
    for i, (mask, amap) in enumerate(zip(masks, maps)):
        mask, amap = np.asarray(mask, dtype=bool), np.asarray(amap, dtype=np.float64)
        if mask.shape != amap.shape:
            raise ValueError(
                f"image {i}: mask {mask.shape} and anomaly map {amap.shape} differ in shape"
            )
        ys.append(mask.ravel())
        ss.append(amap.ravel())
    y = np.concatenate(ys) if ys else np.zeros(0, bool)
    if y.all() or not y.any():
        return float("nan")
    big = np.finfo(np.float64).max
    s = np.nan_to_num(np.concatenate(ss), nan=big, posinf=big)
    return float(roc_auc_score(y, s))


def removal_metrics(labels: ArrayLike, keep_mask: ArrayLike) -> dict[str, float]:
    """Table 1's columns plus precision/recall of removal (defective = should be removed)."""
    counts = removal_counts(np.asarray(labels), np.asarray(keep_mask, dtype=bool))
    n_removed = counts["removed_good"] + counts["removed_defective"]
    n_defective = counts["removed_defective"] + counts["kept_defective"]
    return {
        **counts,
        "removal_precision": counts["removed_defective"] / n_removed if n_removed else float("nan"),
        "removal_recall": counts["removed_defective"] / n_defective
        if n_defective
        else float("nan"),
    }


def score_summary(scores: ArrayLike, labels: ArrayLike | None = None) -> dict:
    """Percentiles (10/50/90) and min/max of scores, overall and per label where known."""

    def summary(s):
        s = np.asarray(s, dtype=np.float64)
        s = s[np.isfinite(s)]
        if s.size == 0:
            return {"n": 0}
        p10, p50, p90 = np.percentile(s, [10, 50, 90])
        return {
            "n": int(s.size),
            "min": float(s.min()),
            "p10": float(p10),
            "median": float(p50),
            "p90": float(p90),
            "max": float(s.max()),
        }

    out = {"all": summary(scores)}
    if labels is not None:
        labels = np.asarray(labels)
        scores = np.asarray(scores)
        out["good"] = summary(scores[labels == GOOD])
        out["defective"] = summary(scores[labels == DEFECTIVE])
    return out
