"""Fit a model on images nobody labelled, and write the model folder an inspector uses.

``fit_folder(images_dir, out_dir)`` is the whole workflow: features → detector →
One-Shot Removal → fine-tune → decision threshold → ``out_dir`` with the model,
``train_scores.csv`` and ``report.html``. ``robustsdd fit`` calls :func:`fit_images`.

The decision threshold is chosen from the cleaned training set, without labels: a
quantile (default 0.99) of scores that stand in for those of new normal images, so that
about 1 % of new normal images score above it. ``decision_scores`` says which:

``out_of_fold`` (default)
    ``n_folds`` copies of the detector are trained on the kept images, each scoring the
    kept images it did not see: scores of unseen images under models trained like the
    final one (on a little less data). Costs ``n_folds`` extra fits. On ELPV mono (paper
    split, 20 % defective, DifferNet CPU preset, seed 0) the 0.99 quantile labelled 1 % of
    the 100 good test images anomalous (and 34 % of the defective ones); the 5 extra fits
    took the fit from 32 s to 165 s on 2 cores (features cached).
``removal``
    The removal-stage scores of the kept images (with ``rule="none"``: the final model's
    scores of its training images). No extra training, but a held-out *view* of a
    training image is closer to the training data than a new image is, and an in-sample
    score far closer: on the same split this threshold labelled 38 % of the good test
    images anomalous (92 % of the defective); with ``rule="none"`` on the test folder of
    tests/test_model.py, every new normal image.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np
from sklearn.base import clone
from sklearn.model_selection import KFold

from . import __version__
from ._errors import ConfigError, DataError
from ._io import atomic_write_bytes
from .cleaning import RULES, OneShotRemoval
from .data import ImageSet, load_unlabeled
from .detectors import BaseDetector, create_detector, differnet_cpu
from .detectors.base import DETECTOR_STATE, localizes
from .features import Featurizer, ViewSpec
from .metrics import score_summary
from .model import MODEL_CONFIG, Model

__all__ = ["fit_folder", "fit_images", "choose_decision_threshold", "out_of_fold_scores",
           "DECISION_SCORES"]

DECISION_SCORES = ("out_of_fold", "removal")
TRAIN_SCORES, REPORT = "train_scores.csv", "report.html"
_REGIME_WORDS = {"held_out_views": "held-out-view", "out_of_fold": "out-of-fold",
                 "in_sample": "in-sample"}


def fit_folder(images_dir, out_dir, *, detector="differnet", detector_params: dict | None = None,
               featurizer: Featurizer | None = None, backbone: str = "efficientnet_lite0",
               weights="offline", image_size: int = 224, scales=(1.0, 0.5, 0.25),
               rotations=(0, 90, 180, 270), flips: bool = True, cache_dir=None,
               rule: str = "score_threshold", threshold: float = 1.5, fraction: float = 0.1,
               min_size: float = 0.8, scoring: str = "held_out_views", n_folds: int = 5,
               min_keep: float = 0.5, decision_quantile: float = 0.99,
               decision_scores: str = "out_of_fold", seed: int = 0, progress: bool = True,
               report: bool = True) -> Model:
    """Train on every image under ``images_dir``, drop those that do not belong, save a model.

    The Python twin of ``robustsdd fit IMAGES_DIR --out MODEL_DIR``; the defaults are the
    command's.

    Parameters
    ----------
    images_dir : path
        A folder of images said to be good (searched recursively; any size or mode).
    out_dir : path
        The model folder to write (created; an earlier model folder there is replaced,
        any other non-empty folder is refused). Never inside ``images_dir``.
    detector : "differnet", "gaussian" or a BaseDetector
        A name (built with ``detector_params``; DifferNet with the CPU preset) or an instance.
    featurizer : Featurizer, optional
        Overrides ``backbone``, ``weights``, ``image_size``, ``scales``, ``rotations``,
        ``flips`` and ``cache_dir``. ``weights``: "offline", "imagenet", a state-dict path
        or "random" (tests).
    rule : "score_threshold", "fraction", "min_size" or "none"
        How training images are removed (see :class:`OneShotRemoval`); "none" trains on all.
    threshold, fraction, min_size, scoring, n_folds, min_keep
        The rule's settings, as :class:`OneShotRemoval`.
    decision_quantile : float in (0, 1]
        The decision threshold is this quantile of the ``decision_scores``.
    decision_scores : "out_of_fold" or "removal"
        Which training scores the threshold is taken from (see the module docstring).
    seed : int
        Seeds the detector and the folds.
    report : bool
        Write ``report.html``.

    Returns
    -------
    Model
        The fitted model, also saved in ``out_dir``.

    Examples
    --------
    >>> model = fit_folder("images/", "model/", detector="gaussian")   # doctest: +SKIP
    >>> model.threshold, model.decision["description"]                 # doctest: +SKIP
    """
    images = load_unlabeled(images_dir)
    if featurizer is None:
        featurizer = Featurizer(
            backbone=backbone, weights=None if weights == "random" else weights,
            views=ViewSpec(size=image_size, scales=tuple(scales), rotations=tuple(rotations),
                           flips=flips),
            cache_dir=cache_dir, progress=progress)
    if isinstance(detector, BaseDetector):
        if detector_params:
            raise ConfigError("give detector_params with a detector name, not an instance")
    elif detector == "differnet":
        detector = differnet_cpu(**{"random_state": seed, "progress": progress,
                                    **(detector_params or {})})
    else:
        detector = create_detector(detector, **(detector_params or {}))
    osr = dict(threshold=threshold, fraction=fraction, min_size=min_size, scoring=scoring,
               n_folds=n_folds, min_keep=min_keep)
    return fit_images(images, out_dir, featurizer=featurizer, detector=detector, rule=rule,
                      osr_params=osr, decision_quantile=decision_quantile,
                      decision_scores=decision_scores, seed=seed, report=report)


def fit_images(images: ImageSet, out_dir, *, featurizer: Featurizer, detector, rule: str,
               osr_params: dict | None = None, decision_quantile: float = 0.99,
               decision_scores: str = "out_of_fold", seed: int = 0, report: bool = True) -> Model:
    """Fit on an :class:`ImageSet` and write the model folder (see :func:`fit_folder`)."""
    if rule != "none" and rule not in RULES:
        raise ConfigError(f"unknown rule {rule!r}; choose one of: {', '.join(RULES)}, none")
    if not 0 < float(decision_quantile) <= 1:
        raise ConfigError(f"decision quantile must be in (0, 1], got {decision_quantile}")
    if decision_scores not in DECISION_SCORES:
        raise ConfigError(f"unknown decision scores {decision_scores!r}; choose one of: "
                          f"{', '.join(DECISION_SCORES)}")
    out = Path(out_dir)
    check_model_dir(out, images)
    osr_params = {k: v for k, v in (osr_params or {}).items() if k != "rule"}
    scoring = osr_params.get("scoring", "in_sample") if rule != "none" else None
    X = featurizer.transform(images)
    notes = []
    if rule == "none":
        model = clone(detector).fit(X)
        keep = np.ones(len(X), bool)
        final = review = np.asarray(model.decision_function(X), np.float64)
        stages, removed_order = {}, []
        review_label = "training score (final model, in-sample)"
        cleaning_text, removal_threshold = "none: trained on every image", None
    else:
        osr = OneShotRemoval(detector, rule=rule, keep_baseline=False, random_state=seed,
                             **osr_params).fit(X)
        model, keep, notes = osr.detector_, osr.keep_mask_, list(osr.notes_)
        final, review = osr.train_scores_, osr.removal_scores_
        stages, removed_order = dict(osr.stage_scores_), osr.removed_indices_
        review_label = f"{_REGIME_WORDS[osr.scoring]} removal score"
        cleaning_text, removal_threshold = _describe_cleaning(rule, osr), osr.threshold
    decision, calibration = _decide(decision_scores, detector=detector, X=X, keep=keep,
                                    final=final, removal=review if rule != "none" else None,
                                    scoring=scoring, quantile=decision_quantile,
                                    n_folds=osr_params.get("n_folds", 5), seed=seed)
    histograms = _histograms(rule, removal_threshold, review, review_label, keep,
                             decision, calibration, final)
    if calibration is not None:
        stages["calibration"] = calibration
        if rule == "none":  # the galleries then sort by the scores of unseen images
            review, review_label = calibration, "out-of-fold score"
    if decision["in_sample"]:
        notes.append("the decision threshold comes from in-sample scores (the model has seen "
                     "those images), so it is likely too low for new images; prefer "
                     "decision scores 'out_of_fold'")
    info = {
        "training": {"source": images.source, "n_images": len(images),
                     "n_removed": int((~keep).sum()), "seed": seed,
                     "score_summary": score_summary(final)},
        "cleaning": {"rule": rule, **(osr_params if rule != "none" else {})},
        "notes": notes,
    }
    fitted = Model(model, featurizer, decision, info)

    _prepare(out)
    files = {"train_scores": TRAIN_SCORES}
    atomic_write_bytes(out / TRAIN_SCORES,
                       _train_scores_csv(images, keep, stages, final).encode())
    if report:
        from .review import render_report

        text = render_report(
            names=images.names, load_rgb=images.rgb, final_scores=final, review_scores=review,
            keep=keep, removed_order=removed_order, decision=decision,
            cleaning_text=cleaning_text, review_label=review_label, histograms=histograms,
            model_text=_describe_model(model, featurizer), notes=notes,
            labels=images.labels if (images.labels >= 0).any() else None,
            anomaly_maps=(lambda idx: model.anomaly_maps(X[idx])) if localizes(model) else None,
            title=f"robustsdd review: {_source_name(images)}")
        atomic_write_bytes(out / REPORT, text.encode("utf-8"))
        files["report"] = REPORT
    fitted.save(out, extra_files=files)
    return fitted


def _decide(kind: str, *, detector, X, keep, final, removal, scoring, quantile, n_folds,
            seed) -> tuple:
    """(the decision dict, the out-of-fold calibration scores or None)."""
    if kind == "out_of_fold":
        calibration = out_of_fold_scores(detector, X, keep, n_folds, seed)
        return choose_decision_threshold(calibration, keep, quantile, kind=kind), calibration
    if removal is None:  # no cleaning: the final model's own training scores
        return choose_decision_threshold(final, keep, quantile, kind="final_in_sample"), None
    return choose_decision_threshold(removal, keep, quantile, kind="removal",
                                     regime=scoring), None


def _histograms(rule, removal_threshold, review, review_label, keep, decision, calibration,
                final) -> list:
    """The report's plots: (scores, keep, x label, {line label: value})."""
    line = {f"decision threshold {decision['threshold']:.4g}": decision["threshold"]}
    plots = []
    if rule != "none":
        lines = ({f"removal threshold {removal_threshold:g}": removal_threshold}
                 if rule == "score_threshold" else {})
        if decision["scores"] == "removal":
            lines.update(line)
        plots.append((review, keep, review_label, lines))
    if calibration is not None:
        plots.append((calibration, keep, "out-of-fold score (kept images)", line))
    elif rule == "none":
        plots.append((final, keep, review_label, line))
    return plots


def out_of_fold_scores(detector, X, keep, n_folds: int, seed: int) -> np.ndarray:
    """Scores of the kept images, each by a copy of ``detector`` trained on the other kept
    images (``n_folds`` folds); NaN for removed images."""
    kept = np.flatnonzero(keep)
    n_folds = min(int(n_folds), len(kept))
    if n_folds < 2:
        raise DataError("out-of-fold decision scores need at least 2 kept images")
    scores = np.full(len(keep), np.nan)
    folds = KFold(n_folds, shuffle=True, random_state=seed)
    for train, test in folds.split(kept):
        fold_model = clone(detector).fit(X[kept[train]])
        scores[kept[test]] = fold_model.decision_function(X[kept[test]])
    return scores


def choose_decision_threshold(scores, keep, quantile: float, *, kind: str,
                              regime: str | None = None) -> dict:
    """The decision threshold: ``quantile`` of the kept images' ``scores``, and how it was
    chosen. ``kind``: "removal" (removal-stage scores under ``regime``), "out_of_fold" or
    "final_in_sample"."""
    s = np.asarray(scores, dtype=np.float64)[np.asarray(keep, bool)]
    s = s[np.isfinite(s)]
    if not s.size:
        raise DataError("no finite training score to choose a decision threshold from")
    value = float(np.quantile(s, float(quantile)))
    q = f"{quantile:g} quantile of"
    if kind == "out_of_fold":
        what = (f"{q} the out-of-fold scores of the {s.size} kept training images (each "
                f"scored by a copy of the detector trained on the other kept images)")
        in_sample = False
    elif kind == "final_in_sample":
        what = f"{q} the final model's (in-sample) scores of the {s.size} training images"
        in_sample = True
    elif kind == "removal":
        what = (f"{q} the {_REGIME_WORDS.get(regime, regime)} removal-stage scores of the "
                f"{s.size} kept training images")
        in_sample = regime == "in_sample"
    else:
        raise ConfigError(f"unknown kind of decision scores {kind!r}")
    return {"threshold": value, "method": "quantile", "quantile": float(quantile),
            "scores": kind, "n_scores": int(s.size), "in_sample": in_sample,
            "description": what}


def check_model_dir(out: Path, images: ImageSet | None = None) -> None:
    """Refuse to write a model over a file, a foreign folder, or into the training images."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (
            (out / MODEL_CONFIG).is_file() or (out / DETECTOR_STATE).is_file()):
        raise ConfigError(f"--out {out} is a non-empty folder that is not a robustsdd model; "
                          "choose a new or empty folder")
    root = (images.meta or {}).get("root") if images is not None else None
    if root:
        target, root = out.resolve(), Path(root).resolve()
        if target == root or root in target.parents:
            raise ConfigError(f"--out {out} is inside the training images folder {root}; "
                              "choose a folder outside it")


def _prepare(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    # robustsdd.json goes last: until it is rewritten, the folder does not load as a model,
    # so an interrupted refit cannot leave a mix of old and new files that loads.
    for stale in (MODEL_CONFIG, "state.pt"):
        try:
            os.unlink(out / stale)
        except FileNotFoundError:
            pass


def _train_scores_csv(images: ImageSet, keep, stages: dict, final) -> str:
    rows = io.StringIO()
    writer = csv.writer(rows)
    stage_names = [s for s in stages if s != "stage2"]  # stage 2 is the "score" column
    writer.writerow(["name", "label", "kept", "rank", *stage_names, "score"])
    order = np.argsort(-np.nan_to_num(final, nan=np.inf), kind="stable")
    rank = np.empty(len(final), int)
    rank[order] = np.arange(1, len(final) + 1)
    for i, name in enumerate(images.names):
        writer.writerow([name, int(images.labels[i]), int(keep[i]), int(rank[i]),
                         *(_fmt(stages[s][i]) for s in stage_names), _fmt(final[i])])
    return rows.getvalue()


def _fmt(x) -> str:
    return "" if np.isnan(x) else f"{x:.8g}"  # NaN: not scored at that stage (e.g. removed)


def _describe_cleaning(rule: str, osr: OneShotRemoval) -> str:
    regime = _REGIME_WORDS[osr.scoring]
    what = {"score_threshold": f"removed images whose {regime} score is above {osr.threshold:g}",
            "fraction": f"removed the {osr.fraction:g} share of images with the highest "
                        f"{regime} scores",
            "min_size": f"removed the top {regime}-scoring image and updated the model until "
                        f"{osr.min_size:g} remained (Algorithm 1)"}[rule]
    guard = " (the min-keep guard fired)" if osr.guard_fired_ else ""
    return f"One-Shot Removal, rule {rule}: {what}, then fine-tuned on the rest{guard}"


def _describe_model(model, featurizer: Featurizer) -> str:
    views = featurizer.views
    weights = featurizer.weights if isinstance(featurizer.weights, str) or \
        featurizer.weights is None else "file"
    return (f"{model.registry_name} detector on {featurizer.backbone} features "
            f"(weights {weights or 'random'}), {views.size} px, {views.n_views} views x "
            f"{len(views.scales)} scales; robustsdd {__version__}")


def _source_name(images: ImageSet) -> str:
    root = (images.meta or {}).get("root")
    return Path(root).name if root else (images.source or "training images")
