"""Fit a model on images nobody labelled, and write the model folder an inspector uses.

``fit_folder(images_dir, out_dir)`` is the whole workflow: screen the images → features →
detector → cleaning (One-Shot Removal) → fine-tune → decision threshold → ``out_dir``
with the model, ``train_scores.csv``, ``report.html`` and ``skipped.csv``. ``robustsdd
fit`` calls :func:`fit_images` with the same settings, so both give the same folder.
Every default comes from the detector's recipe (:mod:`robustsdd.recipes`); the decision
threshold is explained in :mod:`robustsdd.workflow.threshold`.
"""

from __future__ import annotations

import csv
import io
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .._errors import ConfigError
from .._format import fmt_score
from .._io import (
    StrPath,
    atomic_write_bytes,
    recover_folder_swap,
    staging_folder,
    swap_in_folder,
)
from .._version import __version__
from ..cleaning import SCORING_WORDS, OneShotRemoval, describe, fit_cleaned, seeded_clone
from ..cleaning.estimate import estimate_summary
from ..cleaning.plausibility import removal_warning
from ..data import ImageSet, load_unlabeled, paper_split, screen_images, write_skip_list
from ..data.screen import ScreenResult
from ..detectors.base import DETECTOR_STATE, BaseDetector, check_features, localizes
from ..features import Featurizer
from ..metrics import score_summary
from ..model import MODEL_CONFIG, Model
from ..recipes import DEFAULT_DETECTOR, make_components
from .checkpoints import CHECKPOINT_DIR, FitCheckpoints
from .threshold import decide

__all__ = ["fit_folder", "fit_images", "fit_model", "check_model_dir"]

TRAIN_SCORES, REPORT, SKIPPED = "train_scores.csv", "report.html", "skipped.csv"


def fit_folder(images_dir: StrPath, out_dir: StrPath, **settings: Any) -> Model:
    """Train on every image under ``images_dir``, drop those that do not belong, save a model.

    The Python twin of ``robustsdd fit IMAGES_DIR --out MODEL_DIR``: the same settings
    (keywords of :func:`fit_images`) give the same model folder.

    Parameters
    ----------
    images_dir : path
        A folder of images said to be good (searched recursively; any size or mode).
    out_dir : path
        The model folder to write (created; an earlier model folder there is replaced,
        any other non-empty folder is refused). Never inside ``images_dir``.
    **settings
        See :func:`fit_images`.

    Returns
    -------
    Model
        The fitted model, also saved in ``out_dir``.

    Examples
    --------
    >>> model = fit_folder("images/", "model/", detector="gaussian")   # doctest: +SKIP
    >>> model.threshold, model.decision["description"]                 # doctest: +SKIP
    """
    return fit_images(load_unlabeled(images_dir), out_dir, **settings)


def fit_images(
    images: ImageSet,
    out_dir: StrPath,
    *,
    detector: str | BaseDetector = DEFAULT_DETECTOR,
    preset: str = "cpu",
    detector_params: dict | None = None,
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
    on_bad_image: str = "skip",
    n_train: int | None = None,
    contamination: float = 0.2,
    seed: int = 0,
    progress: bool = True,
    report: bool = True,
    resume: bool = True,
    log: Callable[[str], None] | None = None,
) -> Model:
    """Screen ``images``, fit with cleaning, and write the model folder ``out_dir``.

    Every setting left at None takes the detector's recipe default
    (:mod:`robustsdd.recipes`).

    Parameters
    ----------
    images : ImageSet
        The training images (labels, if known, only annotate the report).
    out_dir : path
        The model folder (see :func:`fit_folder`).
    detector : str or BaseDetector
        A registered name (``robustsdd.detector_names()``), built with ``preset`` and
        ``detector_params``, or an unfitted instance.
    preset : "cpu" or "paper"
        DifferNet's configuration (the paper preset also picks the paper's features).
    featurizer : Featurizer, optional
        Replaces ``backbone``, ``weights``, ``stages``, ``image_size``, ``scales``,
        ``rotations``, ``n_rotations``, ``flips``, ``geometry``, ``max_aspect``,
        ``cache_dir``, ``batch_size`` and ``engine`` (see
        :func:`robustsdd.recipes.make_featurizer`).
    rule : str or None
        A cleaning rule (:data:`robustsdd.cleaning.RULES`) or ``"none"`` (train on all).
    threshold, fraction, min_size, z, fdr
        The rule's number (None: the rule's default).
    scoring, n_folds, min_keep, n_members, rounds
        As :class:`~robustsdd.OneShotRemoval`.
    decision_quantile, decision_scores
        The decision threshold is the ``decision_quantile`` (default 0.99) of the
        ``decision_scores`` (``"out_of_fold"``, default, or ``"removal"``).
    on_bad_image : "skip" or "fail"
        An image that cannot be decoded is left out (listed in ``skipped.csv``) or stops
        the fit, naming it.
    n_train, contamination
        Fit on a paper split of ``n_train`` images with that share of defective ones
        (labelled sources only) instead of on every image.
    seed : int
        Seeds the detector, the folds, the rules and the split.
    progress, report
        Show progress bars; write ``report.html``.
    resume : bool
        Continue an interrupted fit into the same ``out_dir`` from its last completed
        stage (checkpoints in ``out_dir/.partial/``, used only if made from the same
        images and settings). False: start afresh.
    log : callable(str), optional
        Where progress notes go (resuming from a checkpoint …); default: standard error.
    """
    log = log or _to_stderr
    parts = make_components(
        detector,
        preset=preset,
        detector_params=detector_params,
        featurizer=featurizer,
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
        rule=rule,
        threshold=threshold,
        fraction=fraction,
        min_size=min_size,
        z=z,
        fdr=fdr,
        scoring=scoring,
        n_folds=n_folds,
        min_keep=min_keep,
        n_members=n_members,
        rounds=rounds,
        decision_quantile=decision_quantile,
        decision_scores=decision_scores,
        seed=seed,
        progress=progress,
        log=log,
    )
    check_model_dir(Path(out_dir), images)  # before any image is decoded
    screen = screen_images(images, on_bad_image, progress=progress)
    for line in screen.notes():
        log(f"note: {line}")
    images = screen.images
    if n_train:
        images, _ = paper_split(
            images,
            n_train=n_train,
            contamination=contamination,
            n_test_good=0,
            n_test_defective=0,
            random_state=seed,
        )
    return fit_model(
        images,
        out_dir,
        featurizer=parts.featurizer,
        detector=parts.detector,
        cleaning=parts.cleaning,
        decision=parts.decision,
        seed=seed,
        screen=screen,
        report=report,
        resume=resume,
        log=log,
    )


def fit_model(
    images: ImageSet,
    out_dir: StrPath,
    *,
    featurizer: Featurizer,
    detector: BaseDetector,
    cleaning: dict | None,
    decision: dict,
    seed: int = 0,
    screen: ScreenResult | None = None,
    report: bool = True,
    resume: bool = True,
    log: Callable[[str], None] | None = None,
) -> Model:
    """Fit built pieces on ``images`` and write the model folder (see :func:`fit_images`).

    ``cleaning``: :class:`~robustsdd.OneShotRemoval` keywords, or None (no cleaning);
    ``decision``: ``scores``, ``quantile``, ``n_folds``; ``screen``: what screening found
    (written as ``skipped.csv``).

    Interrupted (Ctrl-C, kill, a crash), it leaves ``out_dir`` as it was (absent, empty or
    the earlier complete model) plus checkpoints in ``out_dir/.partial/``: one file per
    completed stage (stage 1 with its removal scores, stage 3, each out-of-fold decision
    fit). Run again with the same images and settings, it resumes after the last of them
    (``resume=False``: from scratch) and gives the same model and scores as an
    uninterrupted fit. The model folder is built beside ``out_dir`` and swapped in whole;
    the checkpoints go with the folder it replaces.
    """
    out = Path(out_dir)
    log = log or _to_stderr
    repaired = recover_folder_swap(_swap_target(out))
    if repaired:
        log(f"note: {repaired}")
    check_model_dir(out, images)
    n_notes = len(featurizer.notes)
    X = check_features(featurizer.transform(images), padded=featurizer.pads)
    feature_notes = featurizer.notes[n_notes:]
    for line in feature_notes:
        log(f"note: {line}")
    checkpoints = FitCheckpoints(out / CHECKPOINT_DIR, resume=resume, log=log)
    checkpoints.bind(X, images.names, detector, seed=seed)
    notes: list[str] = list(feature_notes)
    fold_skipped: list[int] = []
    removed_order: list[int] | np.ndarray
    osr: OneShotRemoval | None = None
    if cleaning is None:
        model, final = _fit_plain(checkpoints, detector, X, seed)
        keep = np.ones(len(X), bool)
        review, removal = final, None
        stages, removed_order = {}, []
        review_label = "training score (final model, in-sample)"
        cleaning_text, removal_threshold = "none: trained on every image", None
        guard_fired = False
    else:
        osr = _fit_osr(checkpoints, detector, X, cleaning, seed)
        model, keep = osr.detector_, osr.keep_mask_
        notes += list(osr.notes_)
        final, review = osr.train_scores_, osr.removal_scores_
        removal = review
        stages, removed_order = dict(osr.stage_scores_), osr.removed_indices_
        review_label = f"{SCORING_WORDS[osr.scoring]} removal score"
        cleaning_text, removal_threshold = _describe_cleaning(osr), osr.cut_
        guard_fired = bool(osr.guard_fired_)
    decided, calibration = decide(
        decision,
        detector=detector,
        X=X,
        keep=keep,
        final=final,
        removal=removal,
        scoring=(cleaning or {}).get("scoring"),
        seed=seed,
        checkpoints=checkpoints,
        skipped_steps=fold_skipped,
        fitted=model,
    )
    histograms = _histograms(
        cleaning is not None,
        removal_threshold,
        review,
        review_label,
        keep,
        decided,
        calibration,
        final,
    )
    if calibration is not None:
        stages["calibration"] = calibration
        if cleaning is None:  # the galleries then sort by the scores of unseen images
            review, review_label = calibration, "out-of-fold score"
    estimate, estimate_words = _contamination_estimate(osr, calibration, seed)
    warning = removal_warning(len(X), int((~keep).sum()), guard_fired)
    if warning:
        log(f"warning: {warning}")
    skipped = _skipped_steps_note(model, fold_skipped)
    if skipped:
        notes.append(skipped)
    if decided["in_sample"]:
        notes.append(
            "the decision threshold comes from in-sample scores (the model has seen "
            "those images), so it is likely too low for new images; prefer "
            "decision scores 'out_of_fold'"
        )
    info = {
        "training": {
            "source": images.source,
            "n_images": len(images),
            "n_removed": int((~keep).sum()),
            "removal_warning": warning,
            "contamination_estimate": estimate,
            "seed": seed,
            "score_summary": score_summary(final),
        },
        "cleaning": dict(cleaning) if cleaning is not None else {"rule": "none"},
        "notes": notes,
    }
    fitted = Model(model, featurizer, decided, info)

    # The whole folder is built beside `out` and swapped in: `out` is at every moment the
    # earlier model (with the checkpoints), absent for an instant, or the new model.
    target = _swap_target(out)
    staging = staging_folder(target)
    try:
        _write_model_folder(
            staging,
            fitted,
            images,
            X,
            keep,
            stages,
            final,
            report,
            screen,
            dict(
                final_scores=final,
                review_scores=review,
                keep=keep,
                removed_order=removed_order,
                decision=decided,
                cleaning_text=cleaning_text,
                review_label=review_label,
                histograms=histograms,
                model_text=_describe_model(model, featurizer),
                notes=notes,
                warning=warning,
                estimate=None if estimate is None else {**estimate, "scores": estimate_words},
            ),
        )
        swap_in_folder(staging, target)  # the checkpoints go with the folder replaced
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    fitted.path = out
    return fitted


# -- the stages, each resumable from its checkpoint -------------------------------------------
def _fit_plain(checkpoints: FitCheckpoints, detector, X, seed: int) -> tuple:
    """No cleaning: (the model trained on every image, its scores of them)."""
    what = dict(detector=detector, inputs={})
    ckpt = checkpoints.load("model", describe="training on every image (no cleaning)", **what)
    if ckpt is None:
        model = fit_cleaned(detector, X, None, seed=seed).model
        checkpoints.save(
            "model",
            detector=model,
            arrays={"scores": np.asarray(model.decision_function(X), np.float64)},
            inputs={},
        )
        ckpt = checkpoints.reload("model", **what)
    return ckpt.detector, ckpt.arrays["scores"]


def _fit_osr(checkpoints: FitCheckpoints, detector, X, cleaning: dict, seed: int) -> OneShotRemoval:
    """One-Shot Removal in two checkpointed steps: stage 1 (train, removal scores), then
    removal + fine-tune (the shared :func:`~robustsdd.cleaning.fit_cleaned`, reusing stage
    1). Resumes from the later of the two found; both paths, fresh and resumed, continue
    from the state read back, so they give the same model."""
    cleaning = {**cleaning, "keep_baseline": False}  # fit never compares with stage 1
    osr = OneShotRemoval(seeded_clone(detector, seed), random_state=seed, **cleaning)
    s1_inputs = {
        "scoring": osr.scoring,
        "n_folds": osr.n_folds,
        "n_members": osr.n_members,
        "seed": seed,
    }
    if osr.scoring == "sparse_banks":  # only then do they change the removal scores
        s1_inputs.update(bank_share=osr.bank_share, n_banks=osr.n_banks)
    s3_inputs = {
        "stage1": checkpoints.key("stage1", **s1_inputs),
        "osr": {k: v for k, v in osr.get_params(deep=False).items() if k != "detector"},
    }
    s3 = checkpoints.load(
        "stage3", inputs=s3_inputs, describe=f"stage 3 (removal by {osr.rule}, fine-tuned)"
    )
    if s3 is None:
        s1 = checkpoints.load(
            "stage1",
            detector=detector,
            inputs=s1_inputs,
            describe=f"stage 1 (trained on {len(X)} images, removal scores)",
        )
        if s1 is None:
            model, stage1_scores, removal_scores = osr.fit_stage1(X)  # checks settings first
            checkpoints.save(
                "stage1",
                detector=model,
                inputs=s1_inputs,
                arrays={
                    "stage1": np.asarray(stage1_scores, np.float64),
                    "removal": np.asarray(removal_scores, np.float64),
                },
            )
            s1 = checkpoints.reload("stage1", detector=detector, inputs=s1_inputs)
        assert s1.detector is not None, "stage 1 is read back with its detector"
        stage1 = osr.as_stage1(s1.detector, s1.arrays["stage1"], s1.arrays["removal"])
        fitted = fit_cleaned(detector, X, cleaning, seed=seed, stage1=stage1).osr
        assert fitted is not None, "cleaning is a One-Shot Removal setting"
        arrays, info = fitted.get_fitted_state()
        checkpoints.save("stage3", arrays=arrays, info=info, inputs=s3_inputs)
        s3 = checkpoints.reload("stage3", inputs=s3_inputs)
    return osr.set_fitted_state(s3.arrays, s3.info)


def _contamination_estimate(
    osr: OneShotRemoval | None, calibration, seed: int
) -> tuple[dict | None, str]:
    """The contamination estimated from out-of-sample scores of every training image, and
    which scores: the fdr rule's own; else the first removal scores of a regime that
    scores unseen images; without cleaning, the out-of-fold calibration scores. None
    where no such scores exist (in-sample scoring only)."""
    if osr is not None:
        own = getattr(osr, "contamination_estimate_", None)
        if own is not None:
            return own, f"{SCORING_WORDS[osr.scoring]} removal"
        if osr.scoring == "in_sample":
            return None, ""
        return (
            estimate_summary(osr.stage1_removal_scores_, seed),
            f"{SCORING_WORDS[osr.scoring]} removal",
        )
    if calibration is None:
        return None, ""
    return estimate_summary(calibration, seed), "out-of-fold"


def _skipped_steps_note(model, fold_skipped: list) -> str | None:
    """The note saying training steps were dropped for a NaN/Inf loss (DifferNet's guard)."""
    final = int(getattr(model, "n_skipped_steps_", 0) or 0)
    folds = int(sum(fold_skipped))
    if not final + folds:
        return None
    return (
        f"training skipped {final + folds} step(s) with a non-finite (NaN/Inf) loss or "
        f"gradient, halving the learning rate each time ({final} in the final model, "
        f"{folds} in the decision-threshold fits); if the scores look wrong, lower the "
        "learning rate (--param lr=...)"
    )


def _histograms(
    cleaned: bool, removal_threshold, review, review_label, keep, decision, calibration, final
) -> list:
    """The report's plots: (scores, keep, x label, {line label: value})."""
    line = {f"decision threshold {decision['threshold']:.4g}": decision["threshold"]}
    plots = []
    if cleaned:
        lines = (
            {f"removal threshold {removal_threshold:.4g}": removal_threshold}
            if removal_threshold is not None
            else {}
        )  # score_threshold, auto
        if decision["scores"] == "removal":
            lines.update(line)
        plots.append((review, keep, review_label, lines))
    if calibration is not None:
        plots.append((calibration, keep, "out-of-fold score (kept images)", line))
    elif not cleaned:
        plots.append((final, keep, review_label, line))
    return plots


def _write_model_folder(
    folder: Path,
    fitted: Model,
    images: ImageSet,
    X,
    keep,
    stages,
    final,
    report: bool,
    screen: ScreenResult | None,
    report_args: dict,
) -> None:
    model = fitted.detector
    files = {"train_scores": TRAIN_SCORES}
    atomic_write_bytes(
        folder / TRAIN_SCORES,
        _train_scores_csv(images, keep, stages, final, report_args.get("warning")).encode(),
    )
    if screen is not None:
        write_skip_list(screen, folder / SKIPPED)
        files["skipped"] = SKIPPED
    if report:
        from ..review import render_report

        text = render_report(
            names=images.names,
            load_rgb=images.rgb,
            **report_args,
            labels=images.labels if (images.labels >= 0).any() else None,
            anomaly_maps=(
                (lambda idx: fitted.maps_of(X[idx], [images.rgb(i).shape for i in idx]))
                if localizes(model)
                else None
            ),
            title=f"robustsdd review: {_source_name(images)}",
        )
        atomic_write_bytes(folder / REPORT, text.encode("utf-8"))
        files["report"] = REPORT
    fitted.save(folder, extra_files=files)  # robustsdd.json last


def _swap_target(out: Path) -> Path:
    """The folder that is replaced: ``out``, or where it links to."""
    return out.resolve() if out.is_symlink() else out


def _to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def check_model_dir(out: Path, images: ImageSet | None = None) -> None:
    """Refuse to write a model over a file, a foreign folder, or into the training images."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a folder")
    # A folder holding only the checkpoints of an interrupted fit is as good as empty.
    if (
        out.is_dir()
        and any(p.name != CHECKPOINT_DIR for p in out.iterdir())
        and not ((out / MODEL_CONFIG).is_file() or (out / DETECTOR_STATE).is_file())
    ):
        raise ConfigError(
            f"--out {out} is a non-empty folder that is not a robustsdd model; "
            "choose a new or empty folder"
        )
    root = (images.meta or {}).get("root") if images is not None else None
    if root:
        target, root = out.resolve(), Path(root).resolve()
        if target == root or root in target.parents:
            raise ConfigError(
                f"--out {out} is inside the training images folder {root}; "
                "choose a folder outside it"
            )


def _train_scores_csv(
    images: ImageSet, keep, stages: dict, final, warning: str | None = None
) -> str:
    """One row per training image; a ``warning`` column, on every row, when the removal
    is implausible (see :mod:`robustsdd.cleaning.plausibility`)."""
    rows = io.StringIO()
    writer = csv.writer(rows)
    stage_names = [s for s in stages if s != "stage2"]  # stage 2 is the "score" column
    writer.writerow(
        ["name", "label", "kept", "rank", *stage_names, "score", *(["warning"] if warning else [])]
    )
    order = np.argsort(-np.nan_to_num(final, nan=np.inf), kind="stable")
    rank = np.empty(len(final), int)
    rank[order] = np.arange(1, len(final) + 1)
    for i, name in enumerate(images.names):
        writer.writerow(
            [
                name,
                int(images.labels[i]),
                int(keep[i]),
                int(rank[i]),
                *(fmt_score(stages[s][i]) for s in stage_names),
                fmt_score(final[i]),
                *([warning] if warning else []),
            ]
        )
    return rows.getvalue()


def _describe_cleaning(osr: OneShotRemoval) -> str:
    """What the cleaning did, in one sentence for the report."""
    what = describe(osr.get_params(deep=False))
    if osr.cut_ is not None and osr.rule != "score_threshold":
        what += f" (cut at {osr.cut_:.4g})"
    if osr.rounds_run_ > 1:
        what += f"; {osr.rounds_run_} rounds ran"
    guard = " (the min-keep guard fired)" if osr.guard_fired_ else ""
    return f"One-Shot Removal, rule {osr.rule}: {what}, then fine-tuned on the rest{guard}"


def _describe_model(model, featurizer: Featurizer) -> str:
    views = featurizer.views
    weights = (
        featurizer.weights
        if isinstance(featurizer.weights, str) or featurizer.weights is None
        else "file"
    )
    return (
        f"{model.registry_name} detector on {featurizer.backbone} features "
        f"(weights {weights or 'random'}), {views.size} px ({views.geometry}), "
        f"{views.n_views} views x "
        f"{len(views.scales)} scales; robustsdd {__version__}"
    )


def _source_name(images: ImageSet) -> str:
    root = (images.meta or {}).get("root")
    return Path(root).name if root else (images.source or "training images")
