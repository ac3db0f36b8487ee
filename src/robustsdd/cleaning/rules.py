"""Pure removal rules: training scores in, a boolean keep-mask out.

Higher scores are more anomalous. Ties are broken by index (stable sort), so a
rule is deterministic for given scores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from sklearn.mixture import GaussianMixture

from .._errors import ConfigError

__all__ = [
    "threshold_rule",
    "fraction_rule",
    "auto_cut",
    "confident_cut",
    "ConfidentCut",
    "resolve_count",
    "apply_guard",
]

# 1 / Φ⁻¹(3/4): scales the median absolute deviation to a normal's standard deviation.
_MAD_TO_SD = 1.482602218505602


def _scores(scores: ArrayLike) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1:
        raise ValueError(f"scores must be 1-D, got shape {s.shape}")
    return s


def threshold_rule(scores: ArrayLike, threshold: float) -> np.ndarray:
    """Keep images scoring at most ``threshold`` (the paper's OSR: drop those above 1.5).

    NaN scores count as above any threshold: an image the model cannot score is
    not trusted as normal.
    """
    s = _scores(scores)
    if not np.isfinite(threshold):
        raise ConfigError(f"threshold must be a finite number, got {threshold}")
    with np.errstate(invalid="ignore"):
        return s <= threshold


def auto_cut(scores: ArrayLike, z: float = 3.0) -> float:
    """A threshold read off the scores themselves: median + z · robust SD.

    The robust SD is the median absolute deviation scaled to a normal's SD, so
    the images that belong (the bulk) set the cut and the outliers, being few,
    barely move it (Hampel's identifier; Rousseeuw & Croux, 1993). Anomaly
    scores of the detectors here are positive and right-skewed (distances,
    Mahalanobis², mean z²), so when every score is positive the rule works on
    their logarithm, where the bulk is close to symmetric, and the cut is mapped
    back. With a zero MAD (more than half the scores equal), the mean absolute
    deviation from the median stands in; if that is zero too, every score is
    equal and the cut is that score (nothing is removed). Non-finite scores are
    ignored here (and removed by the rule).

    >>> round(auto_cut([1.0, 1.1, 0.9, 1.0, 1.05, 0.95, 9.0], z=3), 4)
    1.2563
    """
    s = _scores(scores)
    if not (np.isfinite(z) and z > 0):
        raise ConfigError(f"z must be a positive number, got {z}")
    finite = s[np.isfinite(s)]
    if finite.size == 0:
        raise ConfigError("no finite score to set an automatic threshold from")
    use_log = bool(np.all(finite > 0))
    values = np.log(finite) if use_log else finite
    median = float(np.median(values))
    spread = float(np.median(np.abs(values - median))) * _MAD_TO_SD
    if spread == 0:
        spread = float(np.mean(np.abs(values - median)))
    cut = median + float(z) * spread
    return float(np.exp(cut)) if use_log else cut


@dataclass(frozen=True)
class ConfidentCut:
    """What :func:`confident_cut` decided, and why.

    ``keep``: the mask; ``p_normal``: each image's probability of belonging (NaN
    scores: 0); ``threshold``: the confident threshold, the mean of ``p_normal``;
    ``n_components``: 1 when one population explains the scores best (nothing is
    removed), else 2; ``score_cut``: the lowest removed score (None if none).
    """

    keep: np.ndarray
    p_normal: np.ndarray
    threshold: float
    n_components: int
    score_cut: float | None


# Below this many finite scores a mixture is not worth fitting: nothing is removed.
_MIN_SCORES_FOR_MIXTURE = 8


def confident_cut(scores: ArrayLike, random_state: int = 0) -> ConfidentCut:
    """Confident-learning-style cut: keep the images confidently normal, by a per-data threshold.

    Confident learning (Northcutt et al., JAIR 2021) prunes an example labelled *j*
    when its predicted probability of class *j* is below the class's *confident
    threshold*: the mean probability of *j* over the examples labelled *j* — the
    self-confidence expected of examples that truly belong. Here every training image
    is labelled normal, and a probability of being normal comes from the scores
    themselves (out-of-fold scores, so no image was scored by a model that saw it):

    1. A two-component Gaussian mixture on the log scores (plain scores if any is
       ≤ 0) competes with a single Gaussian by BIC. If one Gaussian explains the
       scores better, nothing is removed: there is no second population to remove.
    2. ``p_normal`` is the posterior of the lower-mean component, made
       non-increasing in the score (a running minimum from the lowest score up): a
       wide defect component can otherwise claim the very lowest scores too.
    3. The threshold is the mean of ``p_normal`` over all images (all are labelled
       normal); images below it are removed. No number is set by hand.

    Non-finite scores are removed (p_normal 0) and do not enter the mixture.

    >>> rng = np.random.default_rng(0)
    >>> s = np.exp(np.r_[rng.normal(0, 0.1, 90), rng.normal(2, 0.1, 10)])
    >>> cut = confident_cut(s)
    >>> cut.n_components, np.flatnonzero(~cut.keep).tolist() == list(range(90, 100))
    (2, True)
    """
    s = _scores(scores)
    finite = np.isfinite(s)
    p_normal = np.zeros(len(s))
    p_normal[finite] = 1.0
    values = s[finite]
    n_components = 1
    if values.size >= _MIN_SCORES_FOR_MIXTURE and np.ptp(values) > 0:
        x = (np.log(values) if np.all(values > 0) else values)[:, None]
        one = GaussianMixture(1, random_state=random_state).fit(x)
        two = GaussianMixture(2, n_init=3, random_state=random_state).fit(x)
        if two.bic(x) < one.bic(x):
            n_components = 2
            normal = int(np.argmin(two.means_[:, 0]))
            posterior = two.predict_proba(x)[:, normal]
            order = np.argsort(x[:, 0], kind="stable")
            posterior[order] = np.minimum.accumulate(posterior[order])
            p_normal[finite] = posterior
    threshold = float(np.mean(p_normal))
    keep = finite & (p_normal >= threshold) if n_components == 2 else finite.copy()
    removed = s[~keep & finite]
    return ConfidentCut(
        keep=keep,
        p_normal=p_normal,
        threshold=threshold,
        n_components=n_components,
        score_cut=float(removed.min()) if removed.size else None,
    )


def resolve_count(value: float | None, n: int, what: str) -> int:
    """An int is a count; a float in (0, 1) is a share of ``n`` (rounded half up)."""
    if isinstance(value, bool) or value is None:
        raise ConfigError(f"{what} must be a count or a share in (0, 1), got {value!r}")
    if isinstance(value, float) and 0 < value < 1:
        return int(math.floor(value * n + 0.5))
    if float(value) == int(value) and value >= 0:
        return int(value)
    raise ConfigError(f"{what} must be a count ≥ 0 or a share in (0, 1), got {value!r}")


def fraction_rule(scores: ArrayLike, fraction: float) -> np.ndarray:
    """Drop the ``round(fraction · n)`` highest-scoring images."""
    s = _scores(scores)
    if not 0 <= fraction < 1:
        raise ConfigError(f"fraction must be in [0, 1), got {fraction}")
    n_drop = int(math.floor(fraction * len(s) + 0.5))
    keep = np.ones(len(s), dtype=bool)
    if n_drop:
        order = np.argsort(-np.nan_to_num(s, nan=np.inf), kind="stable")
        keep[order[:n_drop]] = False
    return keep


def apply_guard(scores: ArrayLike, keep: ArrayLike, min_keep: int) -> tuple[np.ndarray, bool]:
    """Never keep fewer than ``min_keep`` images: if the rule did, keep the lowest-scoring ones.

    Returns ``(keep, fired)``; ``fired`` says whether the guard overrode the rule.
    """
    s = _scores(scores)
    keep = np.asarray(keep, dtype=bool)
    min_keep = min(int(min_keep), len(s))
    if keep.sum() >= min_keep:
        return keep.copy(), False
    order = np.argsort(np.nan_to_num(s, nan=np.inf), kind="stable")
    guarded = np.zeros(len(s), dtype=bool)
    guarded[order[:min_keep]] = True
    return guarded, True
