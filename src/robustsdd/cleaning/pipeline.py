"""One path from a detector and training features to a cleaned model.

``fit``, the protocol cell of ``run`` and every group of a sweep train the same way:
a seeded copy of the detector, then either no cleaning, the oracle (benchmarks only)
or One-Shot Removal with some rule. :func:`fit_cleaned` is that step for one setting;
:func:`fit_settings` runs several on the same training set and lets the One-Shot
Removal settings that score training images the same way share one stage-1 model
(the result is the same as fitting each alone).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from sklearn.base import clone

from .._errors import ConfigError
from ..data import GOOD
from .osr import OneShotRemoval

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

    from ..detectors.base import BaseDetector

__all__ = ["CleanedFit", "fit_cleaned", "fit_settings", "seeded_clone"]


def seeded_clone(detector: BaseDetector, seed: int) -> BaseDetector:
    """An unfitted copy of ``detector`` whose ``random_state`` (if it has one) is ``seed``.

    A split and its model share one seed, so every fit is reproducible from the seed alone.
    """
    template = clone(detector)
    if "random_state" in template.get_params():
        template.set_params(random_state=seed)
    return template


@dataclass
class CleanedFit:
    """What one setting gave: the ``model`` that scores new images, the ``keep`` mask over
    the training images, whether the min-keep guard fired, the fitted ``osr`` (None
    without One-Shot Removal) and the wall time of the fit."""

    model: BaseDetector
    keep: np.ndarray
    guard_fired: bool
    osr: OneShotRemoval | None
    seconds: float

    def decision_function(self, X: ArrayLike) -> np.ndarray:
        return self.model.decision_function(X)


def fit_cleaned(
    detector: BaseDetector,
    X: np.ndarray,
    cleaning: Mapping | None,
    *,
    seed: int,
    labels: ArrayLike | None = None,
    stage1: OneShotRemoval | None = None,
) -> CleanedFit:
    """Train a seeded copy of ``detector`` on ``X`` with one cleaning setting.

    Parameters
    ----------
    detector : BaseDetector
        The template (cloned; its ``random_state`` set to ``seed``).
    X : array (n_images, n_views, n_features)
    cleaning : mapping or None
        None: no cleaning. ``{"rule": "oracle"}``: train on the images ``labels`` call
        good (a benchmark's bound). Otherwise :class:`OneShotRemoval` keywords
        (``rule``, ``threshold``, ``scoring`` …), e.g. from
        :func:`~robustsdd.cleaning.parse_strategy`.
    seed : int
        Seeds the detector, the folds and the rules.
    labels : array, optional
        Training labels; only the oracle reads them.
    stage1 : OneShotRemoval, optional
        A fitted stage 1 to reuse (see :meth:`OneShotRemoval.fit`).
    """
    template = seeded_clone(detector, seed)
    t0 = time.perf_counter()
    if cleaning is None:
        model = clone(template).fit(X)
        return CleanedFit(model, np.ones(len(X), bool), False, None, time.perf_counter() - t0)
    if cleaning.get("rule") == "oracle":
        if labels is None:
            raise ConfigError("the oracle needs the training labels")
        keep = np.asarray(labels) == GOOD
        model = clone(template).fit(X[keep])
        return CleanedFit(model, keep, False, None, time.perf_counter() - t0)
    osr = OneShotRemoval(template, random_state=seed, **cleaning).fit(X, stage1=stage1)
    return CleanedFit(
        osr.detector_, osr.keep_mask_, bool(osr.guard_fired_), osr, time.perf_counter() - t0
    )


def fit_settings(
    detector: BaseDetector,
    X: np.ndarray,
    settings: Mapping[str, Mapping | None],
    *,
    seed: int,
    labels: ArrayLike | None = None,
) -> Iterator[tuple[str, CleanedFit]]:
    """:func:`fit_cleaned` for each named setting, in order, yielding ``(name, fit)``.

    One-Shot Removal settings with the same scoring regime, folds and ensemble size share
    the first one's stage-1 model, so thresholds 1.0, 1.5 and 2.0 cost one stage-1 fit;
    a plain setting (None) fitted before them is their stage-1 model where the regime
    trains stage 1 on every view (all but ``held_out_views``). The results are those of
    fitting each setting alone.
    """
    stage1: dict[tuple | None, OneShotRemoval | None] = {}
    plain: BaseDetector | None = None  # the detector trained on every image, once fitted
    for name, cleaning in settings.items():
        shared = None
        if cleaning is not None and cleaning.get("rule") != "oracle":
            osr = OneShotRemoval(seeded_clone(detector, seed), random_state=seed, **cleaning)
            shared = (osr.scoring, osr.n_folds, osr.n_members, osr.bank_share, osr.n_banks)
            if shared not in stage1 and plain is not None:
                # Stage 1 of every regime but held-out views *is* the plain model.
                stage1[shared] = osr.stage1_from_plain(plain, X)
        fit = fit_cleaned(
            detector, X, cleaning, seed=seed, labels=labels, stage1=stage1.get(shared)
        )
        if cleaning is None:
            plain = fit.model
        if shared is not None and stage1.get(shared) is None:
            stage1[shared] = fit.osr
        yield name, fit
