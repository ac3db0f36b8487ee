"""How much of a training set is contaminated, read off its removal scores, and a cut that
removes it at a chosen false-discovery rate.

Model (stated, not tuned): the log removal scores of the normal images follow one
normal distribution ``N(mu0, sigma0)`` — the *empirical null* (Efron, "Large-scale
simultaneous testing: the choice of a null hypothesis", JASA 2004) — and defective
images score higher, so contamination adds mass mostly on the right. The null is
therefore fitted to the scores below a cut ``t = mu0 + 2 sigma0`` alone, as a normal
truncated at ``t`` (maximum likelihood), starting from the median and MAD and
iterating until ``t`` stops moving; images above ``t`` do not pull the fit.

* The share of normal images ``pi0`` is the number below ``t`` divided by the number
  the null expects there, ``n · Φ((t − mu0) / sigma0)``, capped at 1; the **estimated
  contamination** is ``1 − pi0``. Defective images that score inside the null's bulk
  are counted as normal: this is the contamination the scores can *see*, a lower
  bound of the true share when the scorer ranks imperfectly. Its interval is a
  bootstrap percentile interval (the scores resampled with replacement).

Each image gets a p-value under the null, ``P(N(mu0, sigma0) ≥ its log score)``, and
:func:`fdr_cut` removes the images the Benjamini–Hochberg step-up procedure, with the
estimated ``pi0`` (Storey, JRSS-B 2002), rejects at false-discovery rate ``fdr``: among
the removed, the expected share of normal images is at most ``fdr``. Unlike a cut at a
fixed number of robust SDs (the ``auto`` rule, which is calibrated so a clean set loses
almost nothing and so stops early when many images are defective), the cut moves down
as the estimated contamination grows.

Where the model fails: a null that is itself right-skewed in log scores would show
as contamination; a contamination above one half leaves no normal mode to find.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import minimize
from scipy.special import log_ndtr, ndtr

from .._errors import ConfigError

__all__ = ["ContaminationEstimate", "estimate_contamination", "estimate_summary", "fdr_cut"]

_MAD_TO_SD = 1.482602218505602
_MIN_SCORES = 8  # fewer: no estimate (nothing is removed)
_NULL_WIDTH = 2.0  # the null is fitted to the scores below mu0 + 2 sigma0
_MAX_ITER = 20


@dataclass(frozen=True)
class ContaminationEstimate:
    """The null model of the normal images' log scores and what it implies.

    ``share``: estimated contamination (``1 − pi0``); ``interval``: its bootstrap
    interval (``level``, e.g. 0.9); ``mu0``, ``sigma0``: the null on log scores;
    ``p_values``: each image's p-value under the null (non-finite scores: 0).
    """

    share: float
    interval: tuple[float, float]
    level: float
    mu0: float
    sigma0: float
    p_values: np.ndarray


def _truncated_normal(x: np.ndarray, t: float, mu: float, sigma: float) -> tuple[float, float]:
    """Maximum-likelihood (mu, sigma) of a normal truncated above at ``t``, fitted to ``x``."""

    def nll(theta):
        m, log_s = theta
        sd = np.exp(log_s)
        z = (x - m) / sd
        return 0.5 * float(z @ z) + x.size * (log_s + float(log_ndtr((t - m) / sd)))

    fit = minimize(nll, [mu, np.log(sigma)], method="Nelder-Mead", options={"xatol": 1e-4})
    return float(fit.x[0]), float(np.exp(fit.x[1]))


def _null(
    logs: np.ndarray, start: tuple[float, float] | None = None, width: float = _NULL_WIDTH
) -> tuple[float, float, float]:
    """(mu0, sigma0, pi0) of finite log scores (see the module docstring); the fit starts
    from the median and MAD, or from ``start`` (a bootstrap sample: the full fit)."""
    if start is None:
        mu = float(np.median(logs))
        sigma = _MAD_TO_SD * float(np.median(np.abs(logs - mu))) or float(np.std(logs)) or 1.0
    else:
        mu, sigma = start
    for _ in range(_MAX_ITER):
        t = mu + width * sigma
        below = logs[logs <= t]
        if below.size < _MIN_SCORES:
            break
        new_mu, new_sigma = _truncated_normal(below, t, mu, sigma)
        done = abs(new_mu - mu) < 1e-3 * sigma and abs(new_sigma - sigma) < 1e-3 * sigma
        mu, sigma = new_mu, new_sigma
        if done:
            break
    t = mu + width * sigma
    expected = logs.size * float(ndtr((t - mu) / sigma))
    pi0 = min(1.0, np.count_nonzero(logs <= t) / expected) if expected > 0 else 1.0
    return mu, sigma, float(pi0)


def estimate_contamination(
    scores: ArrayLike, *, n_boot: int = 100, level: float = 0.9, random_state: int = 0
) -> ContaminationEstimate:
    """The empirical null of the log removal scores and the contamination it implies
    (see the module docstring). Scores must be positive (they are logged).

    >>> rng = np.random.default_rng(0)
    >>> s = np.exp(np.r_[rng.normal(0, 0.2, 80), rng.normal(2, 0.3, 20)])
    >>> est = estimate_contamination(s)
    >>> 0.1 < est.share < 0.3, est.interval[0] <= est.share <= est.interval[1]
    (True, True)
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1:
        raise ConfigError(f"scores must be 1-D, got shape {s.shape}")
    finite = np.isfinite(s)
    if np.any(s[finite] <= 0):
        raise ConfigError("the contamination estimate needs positive scores (it logs them)")
    if not 0 < level < 1:
        raise ConfigError(f"level must be in (0, 1), got {level}")
    logs = np.log(s[finite])
    p_values = np.zeros(len(s))
    if logs.size < _MIN_SCORES or np.ptp(logs) == 0:
        p_values[finite] = 1.0
        return ContaminationEstimate(0.0, (0.0, 0.0), level, 0.0, 1.0, p_values)
    mu0, sigma0, pi0 = _null(logs)
    p_values[finite] = ndtr((mu0 - logs) / sigma0)
    rng = np.random.default_rng(random_state)
    boot = [1.0 - _null(rng.choice(logs, logs.size), (mu0, sigma0))[2] for _ in range(int(n_boot))]
    tail = (1 - level) / 2
    lo, hi = np.quantile(boot, [tail, 1 - tail]) if boot else (1 - pi0, 1 - pi0)
    return ContaminationEstimate(
        share=1.0 - pi0,
        interval=(float(lo), float(hi)),
        level=level,
        mu0=mu0,
        sigma0=sigma0,
        p_values=p_values,
    )


def fdr_cut(p_values: ArrayLike, fdr: float, pi0: float = 1.0) -> np.ndarray:
    """Keep-mask of the Benjamini–Hochberg step-up procedure at ``fdr``, adaptive with the
    share of normal images ``pi0`` (Storey 2002): remove the ``k`` smallest p-values,
    ``k`` the largest with ``p_(k) ≤ k · fdr / (pi0 · n)``.

    >>> fdr_cut([0.001, 0.002, 0.3, 0.8, 0.9], fdr=0.1).tolist()
    [False, False, True, True, True]
    """
    p = np.asarray(p_values, dtype=np.float64)
    if not 0 < fdr < 1:
        raise ConfigError(f"fdr must be in (0, 1), got {fdr}")
    n = p.size
    keep = np.ones(n, dtype=bool)
    if n == 0:
        return keep
    order = np.argsort(p, kind="stable")
    bound = np.arange(1, n + 1) * fdr / (max(pi0, 1.0 / n) * n)
    below = np.flatnonzero(p[order] <= bound)
    if below.size:
        keep[order[: below[-1] + 1]] = False
    return keep


def estimate_summary(scores: ArrayLike, random_state: int = 0) -> dict | None:
    """:func:`estimate_contamination` as JSON-able ``{"share", "low", "high", "level"}``,
    or None where it cannot say anything (fewer than 8 finite scores, or a score ≤ 0)."""
    s = np.asarray(scores, dtype=np.float64)
    finite = s[np.isfinite(s)]
    if s.ndim != 1 or finite.size < _MIN_SCORES or np.any(finite <= 0):
        return None
    est = estimate_contamination(s, random_state=random_state)
    return {
        "share": est.share,
        "low": est.interval[0],
        "high": est.interval[1],
        "level": est.level,
    }
