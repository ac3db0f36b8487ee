"""The ``robustsdd`` command: parse, call the library, print. No logic of its own.

Verbs: ``run`` (the paper's protocol on one split: baseline vs One-Shot Removal),
``sweep`` (the protocol over contamination levels × strategies × seeds: Fig. 3, Table 1),
``fit`` (train with cleaning on an image folder or a data source, save a model folder
with train_scores.csv and report.html), ``predict`` (score new images with a model
folder: path, score, label) and ``score`` (score a data source's images, with AUROC
where labels are known).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from . import __version__
from ._errors import ConfigError, RobustSDDError
from ._io import atomic_write_bytes, atomic_write_json
from .cleaning import RULES, SCORING_REGIMES
from .cli_predict import add_engine_arg, add_predict_parser, cmd_predict
from .cli_sweep import add_sweep_parser, cmd_sweep
from .data import (ELPV_CELL_TYPES, ON_BAD_IMAGE, SOURCE_KINDS, load_ksdd2, load_mvtec,
                   load_unlabeled, open_source, screen_images, write_skip_list)
from .detectors import create_detector, detector_names, differnet_cpu, differnet_paper
from .features import Featurizer, ViewSpec
from .features.engines import ENGINES
from .features.patches import PatchFeaturizer
from .metrics import detection_metrics
from .predictions import check_output_outside

__all__ = ["main", "build_parser"]

# The settings `robustsdd run` uses when given no flags (README, BENCHMARKS.md).
RUN_DEFAULTS = dict(source="elpv", cell_type="mono", n_train=100, contamination=0.2, seed=0,
                    detector="differnet", rule="score_threshold", threshold=1.5,
                    scoring="held_out_views")


# ---------------------------------------------------------------------------------------------
# argument groups shared by the verbs
def _add_data_args(p, *, protocol: bool, source_default="elpv",
                   source_help="data source (default: elpv, the built-in real data set)"):
    g = p.add_argument_group("data")
    g.add_argument("--source", choices=SOURCE_KINDS + (("unlabeled",) if not protocol else ()),
                   default=source_default, help=source_help)
    g.add_argument("--root", help="data folder (every source except elpv)")
    g.add_argument("--cell-type", choices=ELPV_CELL_TYPES, default="mono",
                   help="ELPV cell type (default: mono)")
    g.add_argument("--category", help="MVTec AD category, e.g. 'bottle'")
    if protocol:
        g.add_argument("--n-train", type=int, default=100, help="training images (default: 100)")
        g.add_argument("--contamination", type=float, default=0.2,
                       help="share of defective training images, 0..1 (default: 0.2)")
        g.add_argument("--n-test-good", type=int, default=100)
        g.add_argument("--n-test-defective", type=int, default=100)
    g.add_argument("--seed", type=int, default=0, help="split and model seed (default: 0)")


def _add_feature_args(p):
    g = p.add_argument_group("features")
    g.add_argument("--backbone", default=None,
                   help="timm model name or 'alexnet' (default: efficientnet_lite0; "
                        "paper preset: alexnet if its weights are available)")
    g.add_argument("--weights", default=None,
                   help="'offline' (default, no network), 'imagenet' (download), a local state-dict "
                        "file, or 'random' (tests only)")
    g.add_argument("--stages", default=None, help="comma-separated feature stages (default: -1)")
    g.add_argument("--image-size", type=int, default=None,
                   help="square side images are cropped/resized to (default 224; paper 448)")
    g.add_argument("--scales", default=None,
                   help="comma-separated input scales (default: 1,0.5,0.25 as DifferNet)")
    g.add_argument("--rotations", default=None,
                   help="comma-separated view angles in degrees (default: 0,90,180,270)")
    g.add_argument("--n-rotations", type=int, default=None,
                   help="N rotations evenly spaced over 360 degrees instead (paper: 64)")
    g.add_argument("--no-flips", action="store_true", help="do not add mirrored views")
    g.add_argument("--cache-dir", default=None,
                   help="feature cache folder (default: $ROBUSTSDD_CACHE_DIR or the user cache dir)")
    g.add_argument("--no-cache", action="store_true", help="do not read or write the feature cache")
    g.add_argument("--batch-size", type=int, default=1,
                   help="images per backbone pass (default 1: features independent of batching)")
    g.add_argument("--engine", choices=ENGINES, default="auto",
                   help="what runs the backbone: 'auto' (default: ONNX Runtime when installed and "
                        "matching PyTorch, else PyTorch), 'onnxruntime' or 'torch'")


def _add_detector_args(p):
    g = p.add_argument_group("detector")
    g.add_argument("--detector", choices=detector_names_public(), default="differnet")
    g.add_argument("--preset", choices=("cpu", "paper"), default="cpu",
                   help="DifferNet configuration: 'cpu' (small, fast; default) or 'paper' "
                        "(faithful: 172 M parameters, 192 epochs, AlexNet at 448, 64 views)")
    g.add_argument("--epochs", type=int, help="DifferNet training epochs")
    g.add_argument("--finetune-epochs", type=int, help="DifferNet fine-tuning epochs (OSR stage 3)")
    g.add_argument("--score", choices=("mean_z2", "nll"),
                   help="DifferNet score: mean z² (default) or negative log-likelihood")
    g.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="any detector keyword, VALUE as JSON (repeatable), e.g. --param hidden=512")


def _add_cleaning_args(p, defaults):
    g = p.add_argument_group("cleaning (One-Shot Removal)")
    g.add_argument("--rule", choices=RULES + ("none",), default=defaults["rule"],
                   help="removal rule (default: %(default)s; 'none' trains without cleaning)")
    g.add_argument("--threshold", type=float, default=defaults["threshold"],
                   help="score_threshold: drop training images scoring above (default: %(default)s)")
    g.add_argument("--fraction", type=float, default=0.1, help="fraction: share to drop")
    g.add_argument("--min-size", type=float, default=0.8,
                   help="min_size (Algorithm 1): stop at this many images (<1: a share)")
    g.add_argument("--scoring", choices=SCORING_REGIMES, default=None,
                   help=f"how training images are scored for removal (default: "
                        f"{defaults['scoring']}; out_of_fold for patchcore, whose features "
                        "have no views to hold out)")
    g.add_argument("--z", type=float, default=3.0,
                   help="auto rule: cut at median + Z robust SDs of the log removal scores "
                        "(default: %(default)s)")
    g.add_argument("--n-folds", type=int, default=5,
                   help="folds for out_of_fold scoring (and fit's out_of_fold decision scores)")
    g.add_argument("--members", type=int, default=5,
                   help="ensemble scoring: detectors trained on this many disjoint subsets "
                        "(default: %(default)s)")
    g.add_argument("--rounds", type=int, default=1,
                   help="removal rounds: 1 is One-Shot Removal; more refit on what was kept, "
                        "rescore every image and cut again until nothing changes "
                        "(default: %(default)s)")
    g.add_argument("--min-keep", type=float, default=0.5,
                   help="guard: never keep fewer images (<1: a share; default 0.5)")


def _add_bad_image_arg(p):
    p.add_argument("--on-bad-image", choices=ON_BAD_IMAGE, default="skip",
                   help="an image that cannot be read: 'skip' it (default; listed with the "
                        "reason in skipped.csv next to the outputs) or 'fail' with its name")


def detector_names_public():
    return tuple(n for n in detector_names() if not n.startswith("_"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="robustsdd",
        description="Robust surface-defect detection: train anomaly detectors on training sets "
                    "that hold defective images, find and drop those images, fine-tune.")
    parser.add_argument("--version", action="version", version=f"robustsdd {__version__}")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    run = sub.add_parser(
        "run", help="the paper's protocol on one split: baseline vs One-Shot Removal",
        description="Draw the paper's split (N training images, k% defective; 100 + 100 test), "
                    "train the detector, remove training images by the rule, fine-tune, and "
                    "report baseline and OSR AUROC, removal counts (Table 1) and the training-"
                    "score distribution of every stage. Defaults: ELPV mono, N=100, 20%, "
                    "DifferNet (cpu preset), OSR at 1.5 on held-out-view scores.")
    _add_data_args(run, protocol=True)
    _add_feature_args(run)
    _add_detector_args(run)
    _add_cleaning_args(run, RUN_DEFAULTS)
    _add_bad_image_arg(run)
    run.add_argument("--out", default="runs/run", help="output folder (default: runs/run)")
    run.add_argument("--quiet", action="store_true", help="no progress bars")

    fit = sub.add_parser(
        "fit", help="train (with cleaning) on an image folder and save a model folder",
        description="Train on every image under IMAGES_DIR (recursively; PNG, JPEG, BMP, TIFF, "
                    "WebP of any size and mode; no labels needed), score the training images, "
                    "drop those that do not belong by the removal rule, fine-tune, choose a "
                    "decision threshold from the kept images, and write MODEL_DIR: the model "
                    "(robustsdd.json, config.json, state.safetensors), train_scores.csv (every "
                    "image's scores, kept/removed, rank) and report.html (the review report). "
                    "Instead of IMAGES_DIR, --source/--root name a data set (KSDD2/MVTec: their "
                    "train split; folder/elpv: every image, or a paper split with --n-train).")
    fit.add_argument("images_dir", nargs="?", metavar="IMAGES_DIR",
                     help="folder of training images, searched recursively (same as "
                          "--source unlabeled --root IMAGES_DIR)")
    _add_data_args(fit, protocol=False, source_default=None,
                   source_help="data source instead of IMAGES_DIR (default without IMAGES_DIR: "
                               "elpv, the built-in real data set)")
    fit.add_argument("--n-train", type=int, help="draw a paper split of this size instead")
    fit.add_argument("--contamination", type=float, default=0.2,
                     help="with --n-train: share of defective images")
    _add_feature_args(fit)
    _add_detector_args(fit)
    _add_cleaning_args(fit, RUN_DEFAULTS)
    fit.add_argument("--decision-quantile", type=float, default=0.99,
                     help="the decision threshold saved with the model (used by `predict`) is "
                          "this quantile of the --decision-scores (default: %(default)s)")
    fit.add_argument("--decision-scores", choices=("out_of_fold", "removal"),
                     default="out_of_fold",
                     help="training scores the decision threshold is taken from: "
                          "'out_of_fold' (default: --n-folds copies of the detector, each "
                          "trained on the other kept images, score the kept images they did "
                          "not see; calibrated like new images, costs --n-folds extra fits) or "
                          "'removal' (the kept images' removal-stage scores, with --rule none "
                          "the final model's own training scores; no extra training, but too "
                          "low: more new images flagged)")
    _add_bad_image_arg(fit)
    fit.add_argument("--out", required=True, metavar="MODEL_DIR",
                     help="model folder to write (new, empty, or an earlier model folder)")
    fit.add_argument("--no-resume", action="store_true",
                     help="start afresh: ignore (and delete) the checkpoints an interrupted fit "
                          "into MODEL_DIR left in MODEL_DIR/.partial (by default the same "
                          "command resumes from its last completed stage)")
    fit.add_argument("--quiet", action="store_true", help="no progress bars")

    score = sub.add_parser(
        "score", help="score images with a saved model",
        description="Score a source's images (KSDD2/MVTec: their test split; others: every "
                    "image) with a model folder written by `robustsdd fit`; writes a CSV and "
                    "prints AUROC where labels are known.")
    score.add_argument("model", help="model folder written by `robustsdd fit`")
    _add_data_args(score, protocol=False)
    score.add_argument("--cache-dir", default=None)
    score.add_argument("--no-cache", action="store_true")
    score.add_argument("--batch-size", type=int, default=1)
    add_engine_arg(score)
    _add_bad_image_arg(score)
    score.add_argument("--out", default=None, help="CSV to write (default: print to stdout)")
    score.add_argument("--quiet", action="store_true")

    add_predict_parser(sub)
    add_sweep_parser(sub, _add_data_args, _add_feature_args, _add_detector_args)
    return parser


# ---------------------------------------------------------------------------------------------
# arguments → library objects
def _floats(text, what):
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"{what}: expected comma-separated numbers, got {text!r}") from None


def _paper_backbone(args):
    """AlexNet when its ImageNet weights can be had (network or file), else the offline default."""
    from .features import FeatureExtractor

    weights = args.weights or "imagenet"
    try:
        FeatureExtractor("alexnet", weights)
        return "alexnet", weights
    except RobustSDDError as exc:
        print(f"note: paper preset: AlexNet weights unavailable ({exc}); using the offline "
              "efficientnet_lite0 backbone instead", file=sys.stderr)
        return "efficientnet_lite0", "offline"


def make_featurizer(args) -> Featurizer:
    paper = getattr(args, "preset", "cpu") == "paper" and args.detector == "differnet"
    backbone, weights = args.backbone, args.weights
    if backbone is None and paper:
        backbone, weights = _paper_backbone(args)
    backbone = backbone or "efficientnet_lite0"
    if weights is None:
        weights = "offline" if backbone == "efficientnet_lite0" else "imagenet"
    if weights == "random":
        weights = None
    view_kw = {}
    if args.image_size or paper:
        view_kw["size"] = args.image_size or 448
    if args.scales:
        view_kw["scales"] = _floats(args.scales, "--scales")
    if args.rotations and args.n_rotations:
        raise ConfigError("give --rotations or --n-rotations, not both")
    n_rotations = args.n_rotations or (64 if paper and not args.rotations else None)
    if args.rotations:
        view_kw["rotations"] = _floats(args.rotations, "--rotations")
    elif n_rotations:
        if n_rotations < 1:
            raise ConfigError(f"--n-rotations must be at least 1, got {n_rotations}")
        view_kw["rotations"] = tuple(i * 360.0 / n_rotations for i in range(n_rotations))
    if args.no_flips or (paper and not args.rotations):
        view_kw["flips"] = False
    if getattr(args, "detector", None) == "patchcore":
        # PatchCore: one view at one scale (a patch grid), stages 2+3 (PatchFeaturizer).
        view_kw.setdefault("scales", (1.0,))
        if not (args.rotations or n_rotations):
            view_kw["rotations"] = (0.0,)
            view_kw.setdefault("flips", False)
        stages = tuple(int(s) for s in args.stages.split(",")) if args.stages else (2, 3)
        return PatchFeaturizer(backbone=backbone, weights=weights, stages=stages,
                               views=ViewSpec(**view_kw),
                               cache_dir=False if args.no_cache else args.cache_dir,
                               batch_size=args.batch_size, engine=args.engine,
                               progress=not args.quiet)
    stages = tuple(int(s) for s in args.stages.split(",")) if args.stages else (-1,)
    return Featurizer(backbone=backbone, weights=weights, stages=stages, views=ViewSpec(**view_kw),
                      cache_dir=False if args.no_cache else args.cache_dir,
                      batch_size=args.batch_size, engine=args.engine, progress=not args.quiet)


def make_detector(args):
    params = {}
    for item in args.param:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--param expects KEY=VALUE, got {item!r}")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    if args.detector == "differnet":
        for key in ("epochs", "finetune_epochs", "score"):
            if getattr(args, key) is not None:
                params[key] = getattr(args, key)
        params.setdefault("random_state", args.seed)
        params.setdefault("progress", not args.quiet)
        build = differnet_paper if args.preset == "paper" else differnet_cpu
        try:
            return build(**params)
        except TypeError as exc:
            raise ConfigError(f"differnet: {exc}") from None
    try:
        return create_detector(args.detector, **params)
    except TypeError as exc:
        raise ConfigError(f"{args.detector}: {exc}") from None


def osr_params(args) -> dict:
    min_size = args.min_size if args.min_size < 1 else int(args.min_size)
    min_keep = args.min_keep if args.min_keep < 1 else int(args.min_keep)
    return dict(rule=args.rule, threshold=args.threshold, fraction=args.fraction,
                min_size=min_size, scoring=args.scoring, n_folds=args.n_folds, min_keep=min_keep,
                z=args.z, n_members=args.members, rounds=args.rounds)


def _train_images(args):
    if args.source == "unlabeled":
        if not args.root:
            raise ConfigError("--source unlabeled needs --root")
        return load_unlabeled(args.root)
    if args.source == "ksdd2" and args.root:
        return load_ksdd2(args.root, "train")
    if args.source == "mvtec":
        if not (args.root and args.category):
            raise ConfigError("--source mvtec needs --root and --category")
        return load_mvtec(args.root, args.category, "train")
    return open_source(args.source, args.root, cell_type=args.cell_type, category=args.category)[0]


def _test_images(args):
    if args.source == "ksdd2" and args.root:
        return load_ksdd2(args.root, "test")
    if args.source == "mvtec" and args.root and args.category:
        return load_mvtec(args.root, args.category, "test")
    return _train_images(args)


# ---------------------------------------------------------------------------------------------
# verbs
def _fmt(x):
    return "  n/a" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.3f}"


def _print_stage_table(train_scores, scoring):
    labels = {"stage1": "stage 1 model", "removal": f"removal ({scoring})",
              "stage2": "fine-tuned model"}
    print("training scores (10th / median / 90th percentile):")
    for stage, summary in train_scores.items():
        parts = []
        for group in ("good", "defective"):
            s = summary.get(group, {})
            if s.get("n"):
                parts.append(f"{group} {s['p10']:.3g} / {s['median']:.3g} / {s['p90']:.3g}")
        print(f"  {labels.get(stage, stage):<28} " + "   ".join(parts))


def cmd_run(args) -> int:
    from .experiments.protocol import run_protocol_cell, strip_arrays

    if args.rule == "none":
        raise ConfigError("run compares baseline and OSR; choose a removal rule")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a folder")
    if args.root:
        check_output_outside(out, [args.root], what="--out")
    pool, test_pool = open_source(args.source, args.root, cell_type=args.cell_type,
                                  category=args.category)
    pool = _screen(args, pool, out / "skipped.csv")
    if test_pool is not None:
        test_pool = _screen(args, test_pool, out / "skipped_test.csv")
    featurizer = make_featurizer(args)
    detector = make_detector(args)
    params = osr_params(args)
    t0 = time.perf_counter()
    result = run_protocol_cell(pool, test_pool, featurizer=featurizer, detector=detector,
                               osr_params=params, n_train=args.n_train,
                               contamination=args.contamination, seed=args.seed,
                               n_test_good=args.n_test_good, n_test_defective=args.n_test_defective)
    wall = time.perf_counter() - t0
    split, removal = result["split"], result["removal"]
    src = f"{args.source}" + (f" {args.cell_type}" if args.source == "elpv" else "")
    print(f"\n{src}: train {split['n_train']} = {split['train_good']} good + "
          f"{split['train_defective']} defective ({args.contamination:.0%}), test "
          f"{split['test_good']} good + {split['test_defective']} defective, seed {args.seed}")
    cut = {"score_threshold": f"threshold {args.threshold}", "fraction": f"fraction {args.fraction}",
           "min_size": f"min_size {args.min_size}",
           "auto": f"median + {args.z:g} robust SD",
           "confident": "confident-learning cut"}[args.rule]
    if args.rounds > 1 and args.rule != "min_size":
        cut += f", up to {args.rounds} rounds"
    preset = f" ({args.preset} preset)" if args.detector == "differnet" else ""
    print(f"detector {args.detector}{preset}, features {featurizer.backbone} "
          f"{featurizer.views.size}px x {featurizer.views.n_views} views; OSR: {args.rule} "
          f"({cut}) on {args.scoring} scores\n")
    print(f"{'':<10}{'AUROC':>8}{'AP':>8}")
    for name in ("baseline", "osr"):
        m = result[name]
        print(f"{name.upper() if name == 'osr' else name:<10}{_fmt(m['auroc']):>8}{_fmt(m['ap']):>8}")
    print(f"\nremoved: {removal['removed_good']} good + {removal['removed_defective']} defective = "
          f"{removal['removed_good'] + removal['removed_defective']} (kept "
          f"{removal['kept_good']} good + {removal['kept_defective']} defective); "
          f"removal precision {_fmt(removal['removal_precision'])}, "
          f"recall {_fmt(removal['removal_recall'])}")
    _print_stage_table(result["train_scores"], args.scoring)
    for note in result["notes"]:
        print(f"note: {note}")
    metrics = strip_arrays(result)
    metrics["config"] = {
        "command": "robustsdd " + " ".join(args.argv),
        "source": args.source, "cell_type": args.cell_type, "root": args.root,
        "detector": args.detector, "preset": args.preset,
        "detector_params": detector.get_params(deep=False), "osr": params,
        "features": featurizer.to_dict(), "version": __version__,
    }
    metrics["seconds"]["wall"] = round(wall, 2)
    path = atomic_write_json(out / "metrics.json", _json_safe(metrics))
    print(f"\nwrote {path} ({wall:.0f} s)")
    return 0


class _Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``), handled as Ctrl-C: unwind, leaving only complete files."""


def _raise_terminated(signum, frame):
    raise _Terminated()


def cmd_fit(args) -> int:
    import signal
    import threading

    previous = signal.getsignal(signal.SIGTERM)
    settable = previous is not None and threading.current_thread() is threading.main_thread()
    if settable:
        signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        return _fit(args)
    except KeyboardInterrupt as exc:
        print(f"robustsdd fit: {'terminated' if isinstance(exc, _Terminated) else 'interrupted'}"
              f"; {args.out} holds no half-written file; run the same command again to resume "
              "from the last completed stage", file=sys.stderr)
        return 143 if isinstance(exc, _Terminated) else 130
    finally:
        if settable:
            signal.signal(signal.SIGTERM, previous)


def _fit(args) -> int:
    from .data import paper_split
    from .fitting import check_model_dir, fit_images

    if args.images_dir:
        if args.root or args.source not in (None, "unlabeled"):
            raise ConfigError("give IMAGES_DIR or --source/--root, not both")
        args.source, args.root = "unlabeled", args.images_dir
    args.source = args.source or "elpv"
    images = _train_images(args)
    out = Path(args.out)
    check_model_dir(out, images)  # before the features are computed, not after
    # The skip list is written after the model: fit_images wants a new or model folder.
    screen = screen_images(images, args.on_bad_image, progress=not args.quiet)
    for line in screen.notes():
        print(f"note: {line}")
    images = screen.images
    if args.n_train:
        images, _ = paper_split(images, n_train=args.n_train, contamination=args.contamination,
                                n_test_good=0, n_test_defective=0, random_state=args.seed)
    model = fit_images(images, out, featurizer=make_featurizer(args),
                       detector=make_detector(args), rule=args.rule,
                       osr_params=osr_params(args),
                       decision_quantile=args.decision_quantile,
                       decision_scores=args.decision_scores, seed=args.seed,
                       resume=not args.no_resume, log=lambda msg: print(msg, flush=True))
    write_skip_list(screen, out / "skipped.csv")
    for note in model.info["notes"]:
        print(f"note: {note}")
    n, removed = len(images), model.info["training"]["n_removed"]
    print(f"trained on {n} images, removed {removed} ({removed / n:.1%}); decision threshold "
          f"{model.threshold:.4g} ({model.decision['description']})")
    print(f"wrote {out}: the model, train_scores.csv, report.html and skipped.csv")
    return 0


def cmd_score(args) -> int:
    from .model import Model

    if args.out and args.root:
        check_output_outside(Path(args.out).parent, [args.root], what="--out")
    model = Model.load(args.model, cache_dir=False if args.no_cache else args.cache_dir,
                       batch_size=args.batch_size, engine=args.engine, progress=not args.quiet)
    images = _test_images(args)
    images = _screen(args, images, Path(args.out).with_suffix(".skipped.csv") if args.out else None,
                     notes_to=sys.stderr)
    scores = model.score(images)
    rows = io.StringIO()
    writer = csv.writer(rows)
    writer.writerow(["name", "label", "score"])
    for name, label, s in zip(images.names, images.labels, scores):
        writer.writerow([name, int(label), f"{s:.8g}"])
    if args.out:
        atomic_write_bytes(args.out, rows.getvalue().encode())
        print(f"wrote {args.out} ({len(images)} images)")
    else:
        sys.stdout.write(rows.getvalue())
    m = detection_metrics(images.labels, scores)
    if not np.isnan(m["auroc"]):
        print(f"AUROC {m['auroc']:.3f}  AP {m['ap']:.3f}", file=sys.stderr)
    return 0


def _screen(args, images, skip_list, notes_to=None):
    """Decode every image once: skip (listed in ``skip_list``) or fail on unreadable ones."""
    result = screen_images(images, args.on_bad_image, skip_list=skip_list,
                           progress=not args.quiet)
    for line in result.notes():
        print(f"note: {line}", file=notes_to or sys.stdout)
    return result.images


def _json_safe(obj):
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        return None if not np.isfinite(obj) else float(obj)
    if isinstance(obj, np.ndarray):
        return _json_safe(obj.tolist())
    return obj


def main(argv=None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.argv = argv
    if getattr(args, "scoring", "absent") is None:  # resolved here: it depends on the detector
        args.scoring = ("out_of_fold" if getattr(args, "detector", None) == "patchcore"
                        else RUN_DEFAULTS["scoring"])
    handlers = {"run": cmd_run, "fit": cmd_fit, "score": cmd_score, "predict": cmd_predict,
                "sweep": lambda a: cmd_sweep(a, make_featurizer, make_detector)}
    try:
        with warnings.catch_warnings():
            # Our own warnings (guard, NaN steps) are repeated in the printed notes.
            warnings.filterwarnings("ignore", module=r"robustsdd\..*")
            return handlers[args.verb](args)
    except RobustSDDError as exc:
        print(f"robustsdd {args.verb}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"robustsdd {args.verb}: interrupted; finished outputs are complete, nothing "
              "half-written was left", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
