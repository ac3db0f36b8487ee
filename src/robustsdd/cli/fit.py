"""``robustsdd fit``: train with cleaning on an image folder (or a data source), save a model."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from .._errors import ConfigError
from ..workflow.fit import SKIPPED, fit_images
from . import args as common

__all__ = ["add_fit_parser", "cmd_fit"]


def add_fit_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "fit",
        help="train (with cleaning) on an image folder and save a model folder",
        description="Train on every image under IMAGES_DIR (recursively; PNG, JPEG, BMP, TIFF, "
        "WebP of any size and mode; no labels needed), score the training images, "
        "drop those that do not belong by the removal rule, fine-tune, choose a "
        "decision threshold from the kept images, and write MODEL_DIR: the model "
        "(robustsdd.json, config.json, state.safetensors), train_scores.csv (every "
        "image's scores, kept/removed, rank), report.html (the review report) and "
        "skipped.csv (images that could not be read). Instead of IMAGES_DIR, "
        "--source/--root name a data set (KSDD2/MVTec: their train split; "
        "folder/elpv: every image, or a paper split with --n-train). The same as "
        "robustsdd.fit_folder() in Python.",
    )
    p.add_argument(
        "images_dir",
        nargs="?",
        metavar="IMAGES_DIR",
        help="folder of training images, searched recursively (same as "
        "--source unlabeled --root IMAGES_DIR)",
    )
    common.add_data_args(
        p,
        protocol=False,
        source_default=None,
        source_help="data source instead of IMAGES_DIR (default without "
        "IMAGES_DIR: elpv, the built-in real data set)",
    )
    p.add_argument("--n-train", type=int, help="draw a paper split of this size instead")
    p.add_argument(
        "--contamination", type=float, default=0.2, help="with --n-train: share of defective images"
    )
    common.add_feature_args(p)
    common.add_detector_args(p)
    common.add_cleaning_args(p)
    common.add_decision_args(p)
    common.add_bad_image_arg(p)
    p.add_argument(
        "--out",
        required=True,
        metavar="MODEL_DIR",
        help="model folder to write (new, empty, or an earlier model folder)",
    )
    p.add_argument(
        "--no-resume",
        action="store_true",
        help="start afresh: ignore (and delete) the checkpoints an interrupted fit "
        "into MODEL_DIR left in MODEL_DIR/.partial (by default the same "
        "command resumes from its last completed stage)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


class _Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``), handled as Ctrl-C: unwind, leaving only complete files."""


def _raise_terminated(signum, frame):
    raise _Terminated()


def cmd_fit(args: argparse.Namespace) -> int:
    previous = signal.getsignal(signal.SIGTERM)
    settable = previous is not None and threading.current_thread() is threading.main_thread()
    if settable:
        signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        return _fit(args)
    except KeyboardInterrupt as exc:
        print(
            f"robustsdd fit: {'terminated' if isinstance(exc, _Terminated) else 'interrupted'}"
            f"; {args.out} holds no half-written file; run the same command again to resume "
            "from the last completed stage",
            file=sys.stderr,
        )
        return 143 if isinstance(exc, _Terminated) else 130
    finally:
        if settable:
            signal.signal(signal.SIGTERM, previous)


def _fit(args) -> int:
    if args.images_dir:
        if args.root or args.source not in (None, "unlabeled"):
            raise ConfigError("give IMAGES_DIR or --source/--root, not both")
        args.source, args.root = "unlabeled", args.images_dir
    args.source = args.source or "elpv"
    images = common.train_images(args)
    settings = {**common.settings(args), "log": lambda msg: print(msg, flush=True)}
    model = fit_images(
        images,
        args.out,
        **settings,
        on_bad_image=args.on_bad_image,
        n_train=args.n_train,
        contamination=args.contamination,
        resume=not args.no_resume,
    )
    for line in model.info["notes"]:
        common.note(line)
    n, removed = model.info["training"]["n_images"], model.info["training"]["n_removed"]
    print(
        f"trained on {n} images, removed {removed} ({removed / n:.1%}); decision threshold "
        f"{model.threshold:.4g} ({model.decision['description']})"
    )
    print(f"wrote {args.out}: the model, train_scores.csv, report.html and {SKIPPED}")
    return 0
