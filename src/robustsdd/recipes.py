"""Every default that depends on the detector, in one place.

A *recipe* says, for a detector name and preset, which features it is trained on
(pooled or patch, backbone, stages, views), how its training images are cleaned by
default (rule and scoring regime) and how the decision threshold is chosen. The
command line, :func:`robustsdd.fit_folder`, ``run``, ``sweep`` and the benchmarks all
build their pieces through :func:`make_components`, so ``robustsdd fit --detector X``
and ``fit_folder(..., detector="X")`` are the same fit.

Defaults, by what the detector reads:

pooled features (DifferNet, Gaussian, kNN)
    EfficientNet-Lite0 with offline ImageNet weights, last stage globally pooled,
    224 px, scales 1, 0.5, 0.25 (DifferNet's three), four right-angle rotations × mirror
    (8 views).
patch features (PatchCore; the ensemble)
    Stages 2 + 3 with 3 × 3 local averaging, one view at one scale (a patch grid); the
    ensemble reads stages 2, 3 and the last (its pooled members pool all three).
DifferNet, ``preset="paper"``
    The paper's flow (8 blocks, 2048-wide subnets, 192 epochs), AlexNet at 448 px with
    64 rotations and no mirror when AlexNet's ImageNet weights can be had, else the
    offline backbone (with a note).

Cleaning. ``fit`` (:func:`default_cleaning`) never defaults to a fixed threshold: single
detectors get the scale-free ``auto`` cut (median + 3 robust SD of the log removal
scores) on out-of-fold scores (DifferNet: on held-out views, its fits being slow); the
ensemble, where that cut tied with no cleaning on the selection benchmark, none.
``run`` and ``sweep`` reproduce the paper (:func:`paper_cleaning`): One-Shot Removal at
1.5 on held-out-view scores (docs/design.md §1, §3); patch detectors, which have no views
to hold out and no score unit, get ``auto`` on out-of-fold scores there too.

``fit``'s detector, :data:`DEFAULT_DETECTOR`, is the one the selection benchmark chose
(``benchmarks/select_default.py``, BENCHMARKS.md §9); ``run``'s is the paper's,
:data:`PAPER_DETECTOR`.

Every recipe chooses the decision threshold as the 0.99 quantile of out-of-fold scores
of the kept training images (5 folds).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ._errors import ConfigError, RobustSDDError
from ._io import StrPath
from .cleaning.registry import RULES, SCORING_REGIMES
from .detectors import (
    BaseDetector,
    EnsembleDetector,
    create_detector,
    differnet_cpu,
    differnet_paper,
)
from .detectors.base import detector_class
from .features import Featurizer, ViewSpec
from .features.backbones import NATIVE_SIZE, OFFLINE_WEIGHTS
from .features.patches import PatchFeaturizer

__all__ = [
    "Components",
    "make_components",
    "make_featurizer",
    "make_detector",
    "default_cleaning",
    "paper_cleaning",
    "cleaning_settings",
    "DEFAULT_DETECTOR",
    "PAPER_DETECTOR",
    "PRESETS",
    "DEFAULT_DECISION",
    "DECISION_SCORES",
]

#: ``fit``'s (and ``fit_folder``'s) detector, chosen by the selection benchmark
#: (BENCHMARKS.md §9: best worst-case rank over ELPV mono, poly and strings at 0-30 %).
DEFAULT_DETECTOR = "ensemble"
#: ``run``'s: the paper's detector (DifferNet, CPU preset), with :func:`paper_cleaning`.
PAPER_DETECTOR = "differnet"
PRESETS = ("cpu", "paper")
DECISION_SCORES = ("out_of_fold", "removal")
#: How every recipe chooses the decision threshold (see robustsdd.workflow.threshold).
DEFAULT_DECISION: dict[str, Any] = {"scores": "out_of_fold", "quantile": 0.99, "n_folds": 5}
# The paper preset's views: AlexNet at 448 px, 64 rotations, no mirror.
_PAPER_SIZE, _PAPER_ROTATIONS = 448, 64


def _name(detector) -> str | None:
    return detector if isinstance(detector, str) else getattr(detector, "registry_name", None)


def _layout(detector) -> str:
    """ "views" (pooled features) or "patches": what the detector reads."""
    cls = detector_class(detector) if isinstance(detector, str) else type(detector)
    return getattr(cls, "feature_layout", "views")


def _default_stages(detector) -> tuple[int, ...]:
    """Pooled detectors: the last stage; PatchCore: stages 2 + 3; the ensemble: 2, 3 and
    the last (its patch member reads 2 + 3, its pooled members every stage pooled)."""
    if _layout(detector) != "patches":
        return (-1,)
    cls = detector_class(detector) if isinstance(detector, str) else type(detector)
    return (2, 3, -1) if issubclass(cls, EnsembleDetector) else (2, 3)


def _fit_ensemble_to(detector: BaseDetector, featurizer: Featurizer) -> None:
    """An ensemble's patch member reads every stage but the last (stages 2 + 3 by
    default); set its ``patch_channels`` from the featurizer when not given."""
    if not isinstance(detector, EnsembleDetector) or detector.patch_channels is not None:
        return
    channels = list(featurizer.extractor.channels)
    if len(channels) > 1:
        detector.set_params(patch_channels=int(sum(channels[:-1])))


def _is_paper(detector, preset: str) -> bool:
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    name = detector if isinstance(detector, str) else getattr(detector, "registry_name", None)
    return preset == "paper" and name == "differnet"


def default_cleaning(detector: str | BaseDetector = DEFAULT_DETECTOR) -> dict[str, str]:
    """The cleaning ``fit`` gives a detector when none is asked for: ``{"rule", "scoring"}``
    (``scoring`` is also what ``--rule auto`` etc. use when no scoring is given).

    Never a fixed threshold: a number such as the paper's 1.5 was set on one data set with
    one network and does not carry over. Chosen per detector on the selection benchmark
    (BENCHMARKS.md §9): the scale-free ``auto`` cut (median + 3 robust SD of the log
    removal scores) on out-of-fold scores beat no cleaning for the Gaussian, kNN and
    PatchCore; for the ensemble the two tied (same worst-case and mean rank) and no
    cleaning won the declared tie-break (mean AUROC, 0.8738 vs 0.8734), so the ensemble
    trains on every image and its report ranks them by out-of-fold score. DifferNet scores
    held-out views (its fits are slow, its views free).

    >>> default_cleaning("patchcore")
    {'rule': 'auto', 'scoring': 'out_of_fold'}
    >>> default_cleaning("ensemble")
    {'rule': 'none', 'scoring': 'out_of_fold'}
    >>> default_cleaning("differnet")
    {'rule': 'auto', 'scoring': 'held_out_views'}
    """
    name = _name(detector)
    if name == "differnet":
        return {"rule": "auto", "scoring": "held_out_views"}
    if name == "ensemble":
        return {"rule": "none", "scoring": "out_of_fold"}
    return {"rule": "auto", "scoring": "out_of_fold"}


def paper_cleaning(detector: str | BaseDetector = PAPER_DETECTOR) -> dict[str, str]:
    """The cleaning ``run`` (the paper's protocol) and ``sweep`` default to.

    The paper's One-Shot Removal, a fixed threshold (1.5 unless given) on held-out-view
    scores, for detectors that read views; patch detectors have no views to hold out and
    no score unit, so they get the ``auto`` cut on out-of-fold scores.

    >>> paper_cleaning("differnet")
    {'rule': 'score_threshold', 'scoring': 'held_out_views'}
    >>> paper_cleaning("patchcore")
    {'rule': 'auto', 'scoring': 'out_of_fold'}
    """
    if _layout(detector) == "patches":
        return {"rule": "auto", "scoring": "out_of_fold"}
    return {"rule": "score_threshold", "scoring": "held_out_views"}


def cleaning_settings(
    detector: str | BaseDetector = DEFAULT_DETECTOR,
    *,
    rule: str | None = None,
    scoring: str | None = None,
    n_folds: int = 5,
    min_keep: float = 0.5,
    n_members: int = 5,
    rounds: int = 1,
    **rule_params: float | str | None,
) -> dict | None:
    """:class:`~robustsdd.OneShotRemoval` keywords for a detector; None for ``rule="none"``.

    ``rule`` and ``scoring`` default to :func:`default_cleaning`; a rule's number
    (``threshold``, ``fraction``, ``min_size``, ``z``, ``fdr``; None = the rule's default) comes
    from ``rule_params``. Every rule's number is passed on, so the keywords describe the
    setting completely.

    >>> cleaning_settings("gaussian", rule="auto", z=2)["z"]
    2.0
    """
    defaults = default_cleaning(detector)
    rule = rule or defaults["rule"]
    if rule == "none":
        return None
    if rule not in RULES:
        raise ConfigError(f"unknown rule {rule!r}; choose one of: {', '.join(RULES)}, none")
    scoring = scoring or defaults["scoring"]
    if scoring not in SCORING_REGIMES:
        raise ConfigError(
            f"unknown scoring {scoring!r}; choose one of: {', '.join(SCORING_REGIMES)}"
        )
    params = {}
    for r in RULES.values():
        if r.param is None:
            continue
        given = rule_params.pop(r.param.name, None)
        params[r.param.name] = (
            r.param.default if given is None else r.param.value(given, r.param.flag.lstrip("-"))
        )
    if rule_params:
        raise ConfigError(f"unknown cleaning setting(s): {', '.join(sorted(rule_params))}")
    min_keep = int(min_keep) if float(min_keep) >= 1 else float(min_keep)
    return {
        "rule": rule,
        "scoring": scoring,
        **params,
        "n_folds": n_folds,
        "min_keep": min_keep,
        "n_members": n_members,
        "rounds": rounds,
    }


def _paper_backbone(weights, log) -> tuple:
    """AlexNet when its ImageNet weights can be had (network or file), else the offline default."""
    from .features import FeatureExtractor

    weights = weights or "imagenet"
    try:
        FeatureExtractor("alexnet", weights)
        return "alexnet", weights
    except RobustSDDError as exc:
        log(
            f"note: paper preset: AlexNet weights unavailable ({exc}); using the offline "
            "efficientnet_lite0 backbone instead"
        )
        return "efficientnet_lite0", "offline"


def _note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def make_featurizer(
    detector: str | BaseDetector = DEFAULT_DETECTOR,
    *,
    preset: str = "cpu",
    backbone: str | None = None,
    weights: StrPath | None = None,
    stages: Sequence[int] | None = None,
    image_size: int | None = None,
    scales: Sequence[float] | None = None,
    rotations: Sequence[float] | None = None,
    n_rotations: int | None = None,
    flips: bool | None = None,
    geometry: str | None = None,
    max_aspect: float | None = None,
    cache_dir: StrPath | Literal[False] | None = None,
    batch_size: int = 1,
    engine: str = "auto",
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> Featurizer:
    """The featurizer ``detector`` (a name or an instance) is trained on; None = the recipe's.

    ``weights``: ``"offline"`` (default for EfficientNet-Lite0/1/2), ``"imagenet"`` (default
    for other backbones; downloads), a local state-dict file, or ``"random"`` (tests).
    ``image_size`` None: the backbone's native resolution where known (Lite0 224, Lite1
    240, Lite2 260; ``keep_aspect`` rounds sides to multiples of 32, so 240 and 260 give
    a 256 px short side), else 224.
    ``n_rotations`` spaces that many rotations evenly over 360° (instead of
    ``rotations``). ``geometry`` (:class:`~robustsdd.features.ViewSpec`): None gives
    ``"keep_aspect"`` (the whole image), and ``"crop"`` (the paper's centre square) with
    ``preset="paper"``. ``log`` receives notes (default: standard error).

    >>> make_featurizer("patchcore", weights="random").views.n_views
    1
    >>> make_featurizer("gaussian", weights="random").views.n_views
    8
    >>> make_featurizer("differnet", preset="paper", weights="random", backbone="resnet18"
    ...                 ).views.geometry
    'crop'
    """
    paper = _is_paper(detector, preset)
    patches = _layout(detector) == "patches"
    if rotations is not None and n_rotations is not None:
        raise ConfigError("give rotations or n_rotations, not both")
    if backbone is None and paper:
        backbone, weights = _paper_backbone(weights, log or _note)
    backbone = backbone or "efficientnet_lite0"
    if weights is None:
        weights = "offline" if backbone in OFFLINE_WEIGHTS else "imagenet"
    view_kw: dict = {}
    if image_size is not None or paper:
        view_kw["size"] = image_size or _PAPER_SIZE
    elif backbone in NATIVE_SIZE:
        view_kw["size"] = NATIVE_SIZE[backbone]  # the resolution its weights were trained at
    if scales is not None:
        view_kw["scales"] = tuple(scales)
    elif patches:
        view_kw["scales"] = (1.0,)  # patch grids of several scales cannot be stacked
    if n_rotations is None and rotations is None and paper:
        n_rotations = _PAPER_ROTATIONS
    if rotations is not None:
        view_kw["rotations"] = tuple(rotations)
    elif n_rotations is not None:
        if int(n_rotations) < 1:
            raise ConfigError(f"n_rotations must be at least 1, got {n_rotations}")
        view_kw["rotations"] = ViewSpec.rotations_every(int(n_rotations)).rotations
    elif patches:
        view_kw["rotations"] = (0.0,)
    if geometry is not None or paper:
        view_kw["geometry"] = geometry or "crop"
    if max_aspect is not None:
        view_kw["max_aspect"] = float(max_aspect)
    if flips is not None:
        view_kw["flips"] = bool(flips)
    elif (paper or patches) and rotations is None:
        view_kw["flips"] = False
    kind = PatchFeaturizer if patches else Featurizer
    return kind(
        backbone=backbone,
        weights=None if weights == "random" else weights,
        stages=tuple(stages) if stages else _default_stages(detector),
        views=ViewSpec(**view_kw),
        cache_dir=cache_dir,
        batch_size=batch_size,
        engine=engine,
        progress=progress,
    )


def make_detector(
    detector: str | BaseDetector = DEFAULT_DETECTOR,
    *,
    preset: str = "cpu",
    seed: int = 0,
    progress: bool = True,
    params: Mapping | None = None,
) -> BaseDetector:
    """An unfitted detector by name (DifferNet: the ``preset``), ``params`` overriding its
    keywords; ``random_state`` (where it has one) is ``seed`` unless given.

    >>> make_detector("knn", params={"k": 3}).k
    3
    """
    params = dict(params or {})
    if isinstance(detector, BaseDetector):
        if params:
            raise ConfigError("give detector parameters with a detector name, not an instance")
        return detector
    try:
        if detector == "differnet":
            build = differnet_paper if _is_paper(detector, preset) else differnet_cpu
            built = build(**{"progress": progress, **params})
        else:
            _is_paper(detector, preset)  # checks the name
            built = create_detector(detector, **params)
    except TypeError as exc:
        raise ConfigError(f"{detector}: {exc}") from None
    if "random_state" in built.get_params() and "random_state" not in params:
        built.set_params(random_state=seed)
    return built


@dataclass
class Components:
    """What a workflow needs: the featurizer, the unfitted detector, the cleaning
    (OneShotRemoval keywords, None for no cleaning) and the decision-threshold method."""

    featurizer: Featurizer
    detector: BaseDetector
    cleaning: dict | None
    decision: dict


def make_components(
    detector: str | BaseDetector = DEFAULT_DETECTOR,
    *,
    preset: str = "cpu",
    detector_params: Mapping | None = None,
    featurizer: Featurizer | None = None,
    backbone: str | None = None,
    weights: StrPath | None = None,
    stages: Sequence[int] | None = None,
    image_size: int | None = None,
    scales: Sequence[float] | None = None,
    rotations: Sequence[float] | None = None,
    n_rotations: int | None = None,
    flips: bool | None = None,
    geometry: str | None = None,
    max_aspect: float | None = None,
    cache_dir: StrPath | Literal[False] | None = None,
    batch_size: int = 1,
    engine: str = "auto",
    rule: str | None = None,
    threshold: float | None = None,
    fraction: float | None = None,
    min_size: float | None = None,
    z: float | None = None,
    fdr: float | None = None,
    scoring: str | None = None,
    n_folds: int = 5,
    min_keep: float = 0.5,
    n_members: int = 5,
    rounds: int = 1,
    decision_quantile: float | None = None,
    decision_scores: str | None = None,
    seed: int = 0,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> Components:
    """Every piece of a fit from plain settings, each None meaning the recipe's default.

    The keywords are :func:`robustsdd.fit_folder`'s (and the command line's flags):
    see :func:`make_featurizer`, :func:`make_detector` and :func:`cleaning_settings`.
    ``featurizer`` (an instance) replaces the feature keywords.
    """
    built = make_detector(
        detector, preset=preset, seed=seed, progress=progress, params=detector_params
    )
    if featurizer is None:
        featurizer = make_featurizer(
            built,
            preset=preset,
            backbone=backbone,
            weights=weights,
            stages=stages,
            image_size=image_size,
            scales=scales,
            rotations=rotations,
            n_rotations=n_rotations,
            flips=flips,
            geometry=geometry,
            max_aspect=max_aspect,
            cache_dir=cache_dir,
            batch_size=batch_size,
            engine=engine,
            progress=progress,
            log=log,
        )
    _fit_ensemble_to(built, featurizer)
    cleaning = cleaning_settings(
        built,
        rule=rule,
        scoring=scoring,
        n_folds=n_folds,
        min_keep=min_keep,
        n_members=n_members,
        rounds=rounds,
        threshold=threshold,
        fraction=fraction,
        min_size=min_size,
        z=z,
        fdr=fdr,
    )
    decision = dict(DEFAULT_DECISION, n_folds=n_folds)
    if decision_quantile is not None:
        decision["quantile"] = float(decision_quantile)
    if decision_scores is not None:
        decision["scores"] = decision_scores
    if not 0 < decision["quantile"] <= 1:
        raise ConfigError(f"decision quantile must be in (0, 1], got {decision['quantile']}")
    if decision["scores"] not in DECISION_SCORES:
        raise ConfigError(
            f"unknown decision scores {decision['scores']!r}; choose one of: "
            f"{', '.join(DECISION_SCORES)}"
        )
    return Components(featurizer, built, cleaning, decision)
