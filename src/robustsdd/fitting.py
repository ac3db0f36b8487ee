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
import shutil
import sys
from pathlib import Path

import numpy as np
from sklearn.base import clone
from sklearn.model_selection import KFold

from . import __version__
from ._errors import ConfigError, DataError
from ._io import atomic_write_bytes, recover_folder_swap, staging_folder, swap_in_folder
from .checkpoints import CHECKPOINT_DIR, FitCheckpoints, array_digest
from .cleaning import RULES, OneShotRemoval
from .data import ImageSet, load_unlabeled
from .detectors import BaseDetector, create_detector, differnet_cpu
from .detectors.base import DETECTOR_STATE, check_features, localizes
from .features import Featurizer, ViewSpec
from .metrics import score_summary
from .model import MODEL_CONFIG, Model

__all__ = ["fit_folder", "fit_images", "choose_decision_threshold", "out_of_fold_scores",
           "DECISION_SCORES"]

DECISION_SCORES = ("out_of_fold", "removal")
TRAIN_SCORES, REPORT = "train_scores.csv", "report.html"
_REGIME_WORDS = {"held_out_views": "held-out-view", "out_of_fold": "out-of-fold",
                 "in_sample": "in-sample", "ensemble": "ensemble"}


def fit_folder(images_dir, out_dir, *, detector="differnet", detector_params: dict | None = None,
               featurizer: Featurizer | None = None, backbone: str = "efficientnet_lite0",
               weights="offline", image_size: int = 224, scales=(1.0, 0.5, 0.25),
               rotations=(0, 90, 180, 270), flips: bool = True, cache_dir=None,
               rule: str = "score_threshold", threshold: float = 1.5, fraction: float = 0.1,
               min_size: float = 0.8, scoring: str = "held_out_views", n_folds: int = 5,
               min_keep: float = 0.5, z: float = 3.0, n_members: int = 5, rounds: int = 1,
               decision_quantile: float = 0.99,
               decision_scores: str = "out_of_fold", seed: int = 0, progress: bool = True,
               report: bool = True, resume: bool = True, log=None) -> Model:
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
    rule : "score_threshold", "fraction", "min_size", "auto", "confident" or "none"
        How training images are removed (see :class:`OneShotRemoval`); "none" trains on all.
    threshold, fraction, min_size, scoring, n_folds, min_keep, z, n_members, rounds
        The rule's settings, as :class:`OneShotRemoval`.
    decision_quantile : float in (0, 1]
        The decision threshold is this quantile of the ``decision_scores``.
    decision_scores : "out_of_fold" or "removal"
        Which training scores the threshold is taken from (see the module docstring).
    seed : int
        Seeds the detector and the folds.
    report : bool
        Write ``report.html``.
    resume : bool
        Continue an interrupted fit into the same ``out_dir`` from its last completed
        stage (checkpoints in ``out_dir/.partial/``, used only if made from the same
        images and settings). False: start afresh.
    log : callable(str), optional
        Where progress notes go (resuming from a checkpoint …); default: standard error.

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
               n_folds=n_folds, min_keep=min_keep, z=z, n_members=n_members, rounds=rounds)
    return fit_images(images, out_dir, featurizer=featurizer, detector=detector, rule=rule,
                      osr_params=osr, decision_quantile=decision_quantile,
                      decision_scores=decision_scores, seed=seed, report=report,
                      resume=resume, log=log)


def fit_images(images: ImageSet, out_dir, *, featurizer: Featurizer, detector, rule: str,
               osr_params: dict | None = None, decision_quantile: float = 0.99,
               decision_scores: str = "out_of_fold", seed: int = 0, report: bool = True,
               resume: bool = True, log=None) -> Model:
    """Fit on an :class:`ImageSet` and write the model folder (see :func:`fit_folder`).

    Interrupted (Ctrl-C, kill, a crash), it leaves ``out_dir`` as it was (absent, empty or
    the earlier complete model) plus checkpoints in ``out_dir/.partial/``: one file per
    completed stage (stage 1 with its removal scores, stage 3, each out-of-fold decision
    fit). Run again with the same images and settings, it resumes after the last of them
    (``resume=False``: from scratch) and gives the same model and scores as an
    uninterrupted fit. The model folder is built beside ``out_dir`` and swapped in whole;
    the checkpoints go with the folder it replaces.
    """
    if rule != "none" and rule not in RULES:
        raise ConfigError(f"unknown rule {rule!r}; choose one of: {', '.join(RULES)}, none")
    if not 0 < float(decision_quantile) <= 1:
        raise ConfigError(f"decision quantile must be in (0, 1], got {decision_quantile}")
    if decision_scores not in DECISION_SCORES:
        raise ConfigError(f"unknown decision scores {decision_scores!r}; choose one of: "
                          f"{', '.join(DECISION_SCORES)}")
    out = Path(out_dir)
    log = log or _to_stderr
    repaired = recover_folder_swap(_swap_target(out))
    if repaired:
        log(f"note: {repaired}")
    check_model_dir(out, images)
    osr_params = {k: v for k, v in (osr_params or {}).items() if k != "rule"}
    scoring = osr_params.get("scoring", "in_sample") if rule != "none" else None
    X = check_features(featurizer.transform(images))
    checkpoints = FitCheckpoints(out / CHECKPOINT_DIR, resume=resume, log=log)
    checkpoints.bind(X, images.names, detector, seed=seed)
    notes, fold_skipped = [], []
    if rule == "none":
        model, final = _fit_plain(checkpoints, detector, X)
        keep = np.ones(len(X), bool)
        review = final
        stages, removed_order = {}, []
        review_label = "training score (final model, in-sample)"
        cleaning_text, removal_threshold = "none: trained on every image", None
    else:
        osr = _fit_osr(checkpoints, detector, X, rule, osr_params, seed)
        model, keep, notes = osr.detector_, osr.keep_mask_, list(osr.notes_)
        final, review = osr.train_scores_, osr.removal_scores_
        stages, removed_order = dict(osr.stage_scores_), osr.removed_indices_
        review_label = f"{_REGIME_WORDS[osr.scoring]} removal score"
        cleaning_text, removal_threshold = _describe_cleaning(rule, osr), osr.cut_
    decision, calibration = _decide(decision_scores, detector=detector, X=X, keep=keep,
                                    final=final, removal=review if rule != "none" else None,
                                    scoring=scoring, quantile=decision_quantile,
                                    n_folds=osr_params.get("n_folds", 5), seed=seed,
                                    checkpoints=checkpoints, skipped_steps=fold_skipped)
    histograms = _histograms(rule, removal_threshold, review, review_label, keep,
                             decision, calibration, final)
    if calibration is not None:
        stages["calibration"] = calibration
        if rule == "none":  # the galleries then sort by the scores of unseen images
            review, review_label = calibration, "out-of-fold score"
    skipped = _skipped_steps_note(model, fold_skipped)
    if skipped:
        notes.append(skipped)
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

    # The whole folder is built beside `out` and swapped in: `out` is at every moment the
    # earlier model (with the checkpoints), absent for an instant, or the new model.
    target = _swap_target(out)
    staging = staging_folder(target)
    try:
        _write_model_folder(staging, fitted, images, X, keep, stages, final, report, dict(
            final_scores=final, review_scores=review, keep=keep, removed_order=removed_order,
            decision=decision, cleaning_text=cleaning_text, review_label=review_label,
            histograms=histograms, model_text=_describe_model(model, featurizer),
            notes=notes))
        swap_in_folder(staging, target)  # the checkpoints go with the folder replaced
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    fitted.path = out
    return fitted


def _write_model_folder(folder: Path, fitted: Model, images: ImageSet, X, keep, stages, final,
                        report: bool, report_args: dict) -> None:
    model = fitted.detector
    files = {"train_scores": TRAIN_SCORES}
    atomic_write_bytes(folder / TRAIN_SCORES,
                       _train_scores_csv(images, keep, stages, final).encode())
    if report:
        from .review import render_report

        text = render_report(
            names=images.names, load_rgb=images.rgb, **report_args,
            labels=images.labels if (images.labels >= 0).any() else None,
            anomaly_maps=(lambda idx: model.anomaly_maps(X[idx])) if localizes(model) else None,
            title=f"robustsdd review: {_source_name(images)}")
        atomic_write_bytes(folder / REPORT, text.encode("utf-8"))
        files["report"] = REPORT
    fitted.save(folder, extra_files=files)  # robustsdd.json last


def _swap_target(out: Path) -> Path:
    """The folder that is replaced: ``out``, or where it links to."""
    return out.resolve() if out.is_symlink() else out


def _to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- the stages, each resumable from its checkpoint -------------------------------------------
def _fit_plain(checkpoints: FitCheckpoints, detector, X) -> tuple:
    """rule "none": (the model trained on every image, its scores of them)."""
    what = dict(detector=detector, inputs={})
    ckpt = checkpoints.load("model", describe="training on every image (no cleaning)", **what)
    if ckpt is None:
        model = clone(detector).fit(X)
        checkpoints.save("model", detector=model, arrays={
            "scores": np.asarray(model.decision_function(X), np.float64)}, inputs={})
        ckpt = checkpoints.reload("model", **what)
    return ckpt.detector, ckpt.arrays["scores"]


def _fit_osr(checkpoints: FitCheckpoints, detector, X, rule: str, osr_params: dict,
             seed: int) -> OneShotRemoval:
    """One-Shot Removal in two checkpointed steps: stage 1 (train, removal scores), then
    removal + fine-tune (OneShotRemoval.fit reusing stage 1). Resumes from the later of the
    two found; both paths, fresh and resumed, continue from what was read back."""
    osr = OneShotRemoval(detector, rule=rule, keep_baseline=False, random_state=seed,
                         **osr_params)
    s1_inputs = {"scoring": osr.scoring, "n_folds": osr.n_folds, "n_members": osr.n_members,
                 "seed": seed}
    s3_inputs = {"stage1": checkpoints.key("stage1", **s1_inputs),
                 "osr": {k: v for k, v in osr.get_params(deep=False).items()
                         if k != "detector"}}
    s3 = checkpoints.load("stage3", detector=detector, inputs=s3_inputs,
                          describe=f"stage 3 (removal by {rule}, fine-tuned)")
    if s3 is None:
        s1 = checkpoints.load("stage1", detector=detector, inputs=s1_inputs,
                              describe=f"stage 1 (trained on {len(X)} images, removal scores)")
        if s1 is None:
            model, stage1_scores, removal_scores = osr.fit_stage1(X)  # checks settings first
            checkpoints.save("stage1", detector=model, inputs=s1_inputs, arrays={
                "stage1": np.asarray(stage1_scores, np.float64),
                "removal": np.asarray(removal_scores, np.float64)})
            s1 = checkpoints.reload("stage1", detector=detector, inputs=s1_inputs)
        osr.fit(X, stage1=osr.as_stage1(s1.detector, s1.arrays["stage1"], s1.arrays["removal"]))
        checkpoints.save("stage3", detector=osr.detector_, inputs=s3_inputs, arrays={
            "keep": np.asarray(osr.keep_mask_, bool),
            "removed": np.asarray(osr.removed_indices_, np.int64),
            **{f"stage.{k}": np.asarray(v, np.float64) for k, v in osr.stage_scores_.items()},
        }, info={"notes": list(osr.notes_), "guard_fired": bool(osr.guard_fired_),
                 "cut": osr.cut_, "stages": list(osr.stage_scores_)})
        s3 = checkpoints.reload("stage3", detector=detector, inputs=s3_inputs)
    stages = {k: s3.arrays[f"stage.{k}"] for k in s3.info["stages"]}
    keep = s3.arrays["keep"].astype(bool)
    fitted = dict(detector_=s3.detector, keep_mask_=keep, removed_indices_=s3.arrays["removed"],
                  removal_scores_=stages["removal"], train_scores_=stages["stage2"],
                  stage_scores_=stages, notes_=list(s3.info["notes"]),
                  guard_fired_=bool(s3.info["guard_fired"]), cut_=s3.info["cut"],
                  estimated_contamination_=float((~keep).mean()))
    for name, value in fitted.items():
        setattr(osr, name, value)
    return osr


def _skipped_steps_note(model, fold_skipped: list) -> str | None:
    """The note saying training steps were dropped for a NaN/Inf loss (DifferNet's guard)."""
    final = int(getattr(model, "n_skipped_steps_", 0) or 0)
    folds = int(sum(fold_skipped))
    if not final + folds:
        return None
    return (f"training skipped {final + folds} step(s) with a non-finite (NaN/Inf) loss or "
            f"gradient, halving the learning rate each time ({final} in the final model, "
            f"{folds} in the decision-threshold fits); if the scores look wrong, lower the "
            "learning rate (--param lr=...)")


def _decide(kind: str, *, detector, X, keep, final, removal, scoring, quantile, n_folds,
            seed, checkpoints: FitCheckpoints | None = None,
            skipped_steps: list | None = None) -> tuple:
    """(the decision dict, the out-of-fold calibration scores or None)."""
    if kind == "out_of_fold":
        calibration = out_of_fold_scores(detector, X, keep, n_folds, seed,
                                         checkpoints=checkpoints, skipped_steps=skipped_steps)
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
        lines = ({f"removal threshold {removal_threshold:.4g}": removal_threshold}
                 if removal_threshold is not None else {})  # score_threshold, auto
        if decision["scores"] == "removal":
            lines.update(line)
        plots.append((review, keep, review_label, lines))
    if calibration is not None:
        plots.append((calibration, keep, "out-of-fold score (kept images)", line))
    elif rule == "none":
        plots.append((final, keep, review_label, line))
    return plots


def out_of_fold_scores(detector, X, keep, n_folds: int, seed: int, *,
                       checkpoints: FitCheckpoints | None = None,
                       skipped_steps: list | None = None) -> np.ndarray:
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
        ckpt = checkpoints.load(stage, inputs=inputs, describe=f"decision-threshold fit "
                                f"{i + 1} of {n_folds}") if checkpoints else None
        if ckpt is None:
            fold_model = clone(detector).fit(X[kept[train]])
            fold_scores = np.asarray(fold_model.decision_function(X[kept[test]]), np.float64)
            skipped = int(getattr(fold_model, "n_skipped_steps_", 0) or 0)
            if checkpoints:
                checkpoints.save(stage, arrays={"scores": fold_scores}, inputs=inputs,
                                 info={"skipped_steps": skipped})
        else:
            fold_scores, skipped = ckpt.arrays["scores"], int(ckpt.info.get("skipped_steps", 0))
        scores[kept[test]] = fold_scores
        if skipped_steps is not None:
            skipped_steps.append(skipped)
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
    # A folder holding only the checkpoints of an interrupted fit is as good as empty.
    if out.is_dir() and any(p.name != CHECKPOINT_DIR for p in out.iterdir()) and not (
            (out / MODEL_CONFIG).is_file() or (out / DETECTOR_STATE).is_file()):
        raise ConfigError(f"--out {out} is a non-empty folder that is not a robustsdd model; "
                          "choose a new or empty folder")
    root = (images.meta or {}).get("root") if images is not None else None
    if root:
        target, root = out.resolve(), Path(root).resolve()
        if target == root or root in target.parents:
            raise ConfigError(f"--out {out} is inside the training images folder {root}; "
                              "choose a folder outside it")


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
                        f"{osr.min_size:g} remained (Algorithm 1)",
            "auto": f"removed images whose {regime} score is above median + {osr.z:g} robust "
                    f"SD ({osr.cut_:.4g})" if osr.cut_ is not None else "",
            "confident": f"removed images less likely normal than the mean probability (a "
                         f"two-component mixture on the {regime} scores; confident learning)"}[rule]
    if getattr(osr, "rounds_run_", 1) > 1:
        what += f", in {osr.rounds_run_} rounds"
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
