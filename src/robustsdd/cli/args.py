"""Argument groups the verbs share, and parsed arguments → the library's settings.

The defaults live in the library (:mod:`robustsdd.recipes`, the rule registry): a flag
left out is passed on as None and the recipe decides, so the command line and Python
give the same fit.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from .._errors import ConfigError
from .._io import StrPath
from ..cleaning.registry import RULES, SCORING_REGIMES
from ..data import (
    ELPV_CELL_TYPES,
    ON_BAD_IMAGE,
    SOURCE_KINDS,
    ImageSet,
    load_ksdd2,
    load_mvtec,
    load_unlabeled,
    open_source,
    screen_images,
)
from ..data.geometry import GEOMETRIES
from ..detectors import detector_names
from ..features.engines import ENGINES
from ..recipes import DECISION_SCORES, DEFAULT_DECISION, DEFAULT_DETECTOR, PRESETS, paper_cleaning

__all__ = [
    "add_data_args",
    "add_feature_args",
    "add_detector_args",
    "add_cleaning_args",
    "add_decision_args",
    "add_bad_image_arg",
    "add_engine_arg",
    "settings",
    "train_images",
    "test_images",
    "screen",
    "note",
]


def note(message: str, file: TextIO | None = None) -> None:
    print(f"note: {message}", file=file or sys.stdout, flush=True)


# ---------------------------------------------------------------------------------------------
# argument groups
def add_data_args(
    p: argparse.ArgumentParser,
    *,
    protocol: bool,
    single_split: bool = True,
    source_default: str | None = "elpv",
    source_help: str = "data source (default: elpv, the built-in real data set)",
) -> None:
    """--source, --root, --cell-type, --category, --seed; with ``protocol`` the split's
    sizes too. ``single_split=False`` (sweep): --contamination and --seed are accepted only
    to say which list flag replaces them (hidden, default None)."""
    g = p.add_argument_group("data")
    g.add_argument(
        "--source",
        choices=SOURCE_KINDS + (("unlabeled",) if not protocol else ()),
        default=source_default,
        help=source_help,
    )
    g.add_argument("--root", help="data folder (every source except elpv)")
    g.add_argument(
        "--cell-type",
        choices=ELPV_CELL_TYPES,
        default="mono",
        help="ELPV cell type (default: mono)",
    )
    g.add_argument("--category", help="MVTec AD category, e.g. 'bottle'")
    hidden = {"default": None, "help": argparse.SUPPRESS}
    if protocol:
        g.add_argument("--n-train", type=int, default=100, help="training images (default: 100)")
        g.add_argument(
            "--contamination",
            type=float,
            **(
                {"default": 0.2, "help": "share of defective training images, 0..1 (default: 0.2)"}
                if single_split
                else hidden
            ),
        )
        g.add_argument("--n-test-good", type=int, default=100)
        g.add_argument("--n-test-defective", type=int, default=100)
    g.add_argument(
        "--seed",
        type=int,
        **({"default": 0, "help": "split and model seed (default: 0)"} if single_split else hidden),
    )


def add_feature_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("features (default: the detector's recipe)")
    g.add_argument(
        "--backbone",
        default=None,
        help="timm model name or 'alexnet' (default: efficientnet_lite0; "
        "paper preset: alexnet if its weights are available)",
    )
    g.add_argument(
        "--weights",
        default=None,
        help="'offline' (default, no network), 'imagenet' (download), a local state-dict "
        "file, or 'random' (tests only)",
    )
    g.add_argument(
        "--stages",
        default=None,
        help="comma-separated feature stages (default: -1; patchcore: 2,3)",
    )
    g.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="input size: the short side of the whole image (default 224), or the "
        "side of the square with --geometry squash/pad/crop (paper: 448)",
    )
    g.add_argument(
        "--scales",
        default=None,
        help="comma-separated input scales (default: 1,0.5,0.25 as DifferNet; patchcore: 1)",
    )
    g.add_argument(
        "--rotations",
        default=None,
        help="comma-separated view angles in degrees (default: 0,90,180,270; patchcore: 0)",
    )
    g.add_argument(
        "--n-rotations",
        type=int,
        default=None,
        help="N rotations evenly spaced over 360 degrees instead (paper: 64)",
    )
    g.add_argument("--no-flips", action="store_true", help="do not add mirrored views")
    g.add_argument(
        "--geometry",
        choices=GEOMETRIES,
        default=None,
        help="how an image becomes the backbone input: keep_aspect (default: the whole "
        "image, aspect kept), squash, pad (letterbox), crop (the centre square; default "
        "of --preset paper) or tile (full resolution in tiles; patchcore)",
    )
    g.add_argument(
        "--max-aspect",
        type=float,
        default=None,
        help="keep_aspect: the long side is at most this many times --image-size (default 4)",
    )
    g.add_argument(
        "--cache-dir",
        default=None,
        help="feature cache folder (default: $ROBUSTSDD_CACHE_DIR or the user cache dir)",
    )
    g.add_argument("--no-cache", action="store_true", help="do not read or write the feature cache")
    g.add_argument(
        "--batch-size",
        type=int,
        default=1,
        help="images per backbone pass (default 1: features independent of batching)",
    )
    g.add_argument(
        "--engine",
        choices=ENGINES,
        default="auto",
        help="what runs the backbone: 'auto' (default: ONNX Runtime when installed and "
        "matching PyTorch, else PyTorch), 'onnxruntime' or 'torch'",
    )


def add_engine_arg(p: argparse.ArgumentParser) -> None:
    """--engine for verbs that load a model: default None = the engine it was fitted with."""
    p.add_argument(
        "--engine",
        choices=ENGINES,
        default=None,
        help="what runs the backbone (default: the engine the model was fitted "
        "with, so the scores reproduce the training scores)",
    )


def add_detector_args(p: argparse.ArgumentParser, *, default: str = DEFAULT_DETECTOR) -> None:
    """The detector flags; ``default``: the verb's detector (``run`` and ``sweep``
    reproduce the paper with DifferNet, ``fit`` uses the evidence-chosen default)."""
    g = p.add_argument_group("detector")
    g.add_argument(
        "--detector",
        choices=detector_names(),
        default=default,
        help="(default: %(default)s)",
    )
    g.add_argument(
        "--preset",
        choices=PRESETS,
        default="cpu",
        help="DifferNet configuration: 'cpu' (small, fast; default) or 'paper' "
        "(faithful: 172 M parameters, 192 epochs, AlexNet at 448, 64 views)",
    )
    g.add_argument("--epochs", type=int, help="DifferNet training epochs")
    g.add_argument("--finetune-epochs", type=int, help="DifferNet fine-tuning epochs (OSR stage 3)")
    g.add_argument(
        "--score",
        choices=("mean_z2", "nll"),
        help="DifferNet score: mean z² (default) or negative log-likelihood",
    )
    g.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any detector keyword, VALUE as JSON (repeatable), e.g. --param hidden=512",
    )


def add_cleaning_args(
    p: argparse.ArgumentParser, *, rule: bool = True, paper: bool = False
) -> None:
    """The cleaning flags; ``rule=False`` (sweep) leaves out --rule and the rules' numbers,
    which a sweep names in its strategies; ``paper``: the verb's default is the paper's
    cleaning (:func:`robustsdd.recipes.paper_cleaning`), not ``fit``'s."""
    g = p.add_argument_group("cleaning (One-Shot Removal; default: the detector's recipe)")
    if rule:
        g.add_argument(
            "--rule",
            choices=tuple(RULES) + ("none",),
            default=None,
            help="removal rule: "
            + "; ".join(f"{r.name}: {r.summary}" for r in RULES.values())
            + "; none: train on every image (default: "
            + (
                "score_threshold at 1.5, the paper's; patch detectors: auto)"
                if paper
                else "auto, a scale-free cut; none for the ensemble, where auto did not "
                "beat it on the selection benchmark)"
            ),
        )
        for r in RULES.values():
            if r.param is not None:
                g.add_argument(
                    r.param.flag,
                    type=float,
                    default=None,
                    help=r.param.help.replace("%(default)s", f"{r.param.default:g}"),
                )
    g.add_argument(
        "--scoring",
        choices=SCORING_REGIMES,
        default=None,
        help="how training images are scored for removal; sparse_banks: against many "
        "banks of a tenth of the images each, so a defect repeated in a few images still "
        "stands out (default: "
        + (
            "held_out_views; out_of_fold for patch detectors, whose features have no "
            "views to hold out)"
            if paper or not rule
            else "out_of_fold; held_out_views for differnet, whose fits are slow)"
        ),
    )
    if not rule:
        return
    g.add_argument(
        "--n-folds",
        type=int,
        default=5,
        help="folds for out_of_fold scoring (and fit's out_of_fold decision scores)",
    )
    g.add_argument(
        "--members",
        type=int,
        default=5,
        help="ensemble scoring: detectors trained on this many disjoint subsets "
        "(default: %(default)s)",
    )
    g.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="removal rounds: 1 is One-Shot Removal; more refit on what was kept, "
        "rescore every image and cut again until nothing changes "
        "(default: %(default)s)",
    )
    g.add_argument(
        "--min-keep",
        type=float,
        default=0.5,
        help="guard: never keep fewer images (<1: a share; default 0.5)",
    )


def add_decision_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--decision-quantile",
        type=float,
        default=DEFAULT_DECISION["quantile"],
        help="the decision threshold saved with the model (used by `predict`) is "
        "this quantile of the --decision-scores (default: %(default)s)",
    )
    p.add_argument(
        "--decision-scores",
        choices=DECISION_SCORES,
        default=DEFAULT_DECISION["scores"],
        help="training scores the decision threshold is taken from: "
        "'out_of_fold' (default: --n-folds copies of the detector, each "
        "trained on the other kept images, score the kept images they did "
        "not see; calibrated like new images, costs --n-folds extra fits) or "
        "'removal' (the kept images' removal-stage scores, with --rule none "
        "the final model's own training scores; no extra training, but too "
        "low: more new images flagged)",
    )


def add_bad_image_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--on-bad-image",
        choices=ON_BAD_IMAGE,
        default="skip",
        help="an image that cannot be read: 'skip' it (default; listed with the "
        "reason in skipped.csv next to the outputs) or 'fail' with its name",
    )


# ---------------------------------------------------------------------------------------------
# parsed arguments → library settings
def _floats(text, what):
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"{what}: expected comma-separated numbers, got {text!r}") from None


def _ints(text, what):
    values = _floats(text, what)
    if values is None:
        return None
    if any(v != int(v) for v in values):
        raise ConfigError(f"{what}: expected comma-separated integers, got {text!r}")
    return tuple(int(v) for v in values)


def _detector_params(args) -> dict:
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
    return params


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """The keywords of :func:`robustsdd.recipes.make_components` (and of
    :func:`robustsdd.fit_images`) that the parsed arguments stand for."""
    out = dict(
        detector=args.detector,
        preset=args.preset,
        detector_params=_detector_params(args),
        backbone=args.backbone,
        weights=args.weights,
        stages=_ints(args.stages, "--stages"),
        image_size=args.image_size,
        scales=_floats(args.scales, "--scales"),
        rotations=_floats(args.rotations, "--rotations"),
        n_rotations=args.n_rotations,
        flips=False if args.no_flips else None,
        geometry=args.geometry,
        max_aspect=args.max_aspect,
        cache_dir=False if args.no_cache else args.cache_dir,
        batch_size=args.batch_size,
        engine=args.engine,
        scoring=args.scoring,
        seed=args.seed,
        progress=not args.quiet,
        log=lambda message: print(message, file=sys.stderr, flush=True),
    )
    rule = getattr(args, "rule", None)
    if getattr(args, "paper_cleaning", False):  # run: the paper's cleaning by default
        paper = paper_cleaning(args.detector)
        out["scoring"] = args.scoring or paper["scoring"]
        rule = rule or paper["rule"]
    if hasattr(args, "rule"):
        out.update(
            rule=rule,
            n_folds=args.n_folds,
            min_keep=args.min_keep,
            n_members=args.members,
            rounds=args.rounds,
            **{
                r.param.name: getattr(args, r.param.name)
                for r in RULES.values()
                if r.param is not None
            },
        )
    if hasattr(args, "decision_quantile"):
        out.update(decision_quantile=args.decision_quantile, decision_scores=args.decision_scores)
    return out


def train_images(args: argparse.Namespace) -> ImageSet:
    """The training images a data source names (KSDD2/MVTec: their train split)."""
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


def test_images(args: argparse.Namespace) -> ImageSet:
    """The images ``score`` scores (KSDD2/MVTec: their test split; others: every image)."""
    if args.source == "ksdd2" and args.root:
        return load_ksdd2(args.root, "test")
    if args.source == "mvtec" and args.root and args.category:
        return load_mvtec(args.root, args.category, "test")
    return train_images(args)


def screen(
    args: argparse.Namespace,
    images: ImageSet,
    skip_list: StrPath | None,
    notes_to: TextIO | None = None,
) -> ImageSet:
    """Decode every image once: skip (listed in ``skip_list``) or fail on unreadable ones."""
    result = screen_images(images, args.on_bad_image, skip_list=skip_list, progress=not args.quiet)
    for line in result.notes():
        note(line, notes_to)
    return result.images
