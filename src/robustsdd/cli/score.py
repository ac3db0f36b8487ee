"""``robustsdd score``: score a data source's images with a model folder, AUROC where known."""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

import numpy as np

from .._io import atomic_write_bytes
from ..metrics import detection_metrics
from ..model.predictions import check_output_outside
from . import args as common

__all__ = ["add_score_parser", "cmd_score"]


def add_score_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "score",
        help="score images with a saved model",
        description="Score a source's images (KSDD2/MVTec: their test split; others: every "
        "image) with a model folder written by `robustsdd fit`; writes a CSV and "
        "prints AUROC where labels are known.",
    )
    p.add_argument("model", help="model folder written by `robustsdd fit`")
    common.add_data_args(p, protocol=False)
    p.add_argument(
        "--cache-dir",
        default=None,
        help="feature cache folder (default: $ROBUSTSDD_CACHE_DIR or the user cache dir)",
    )
    p.add_argument("--no-cache", action="store_true", help="do not read or write the feature cache")
    p.add_argument(
        "--batch-size", type=int, default=1, help="images per backbone pass (default: %(default)s)"
    )
    common.add_engine_arg(p)
    common.add_bad_image_arg(p)
    p.add_argument("--out", default=None, help="CSV to write (default: print to stdout)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def cmd_score(args: argparse.Namespace) -> int:
    from ..model import Model

    if args.out and args.root:
        check_output_outside(Path(args.out).parent, [args.root], what="--out")
    model = Model.load(
        args.model,
        cache_dir=False if args.no_cache else args.cache_dir,
        batch_size=args.batch_size,
        engine=args.engine,
        progress=not args.quiet,
    )
    images = common.test_images(args)
    skip_list = Path(args.out).with_suffix(".skipped.csv") if args.out else None
    images = common.screen(args, images, skip_list, notes_to=sys.stderr)
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
