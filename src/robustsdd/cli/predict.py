"""``robustsdd predict``: score new images or folders with a model folder.

Thin: parse, call :meth:`robustsdd.Model.predict`, write the results, print a summary.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .._errors import ConfigError
from ..model.predictions import check_output_outside
from .args import add_engine_arg

__all__ = ["add_predict_parser", "cmd_predict"]


def add_predict_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "predict",
        help="score new images or folders with a model folder",
        description="Score image files and folders (searched recursively) with a model folder "
        "written by `robustsdd fit`, in batches with a progress bar. Writes one row "
        "per image: path, score, label ('anomalous' if the score is above the "
        "decision threshold saved with the model, else 'normal').",
    )
    p.add_argument("model", metavar="MODEL_DIR", help="model folder written by `robustsdd fit`")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
    p.add_argument(
        "--out",
        metavar="FILE",
        help="results file, .csv or .json (default: CSV on standard output)",
    )
    p.add_argument(
        "--threshold",
        type=float,
        help="decision threshold to use instead of the model's (robustsdd.json: "
        "decision.threshold)",
    )
    p.add_argument(
        "--heatmaps",
        metavar="DIR",
        help="also write a heat-map PNG per image into DIR (only for detectors that "
        "localise anomalies; the default detectors give one score per image)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=64,
        help="images decoded and scored at a time (default: %(default)s)",
    )
    p.add_argument(
        "--cache-dir",
        default=None,
        help="feature cache folder (default: $ROBUSTSDD_CACHE_DIR or the user cache dir)",
    )
    p.add_argument("--no-cache", action="store_true", help="do not read or write the feature cache")
    add_engine_arg(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def cmd_predict(args: argparse.Namespace) -> int:
    from ..model import Model

    if args.out:
        if Path(args.out).suffix.lower() not in (".csv", ".json"):
            raise ConfigError(f"--out {args.out}: results go to a .csv or a .json file")
        check_output_outside(Path(args.out).parent, args.paths, what="--out")
    model = Model.load(
        args.model, cache_dir=False if args.no_cache else args.cache_dir, engine=args.engine
    )
    result = model.predict(
        args.paths,
        threshold=args.threshold,
        batch_size=args.batch_size,
        progress=not args.quiet,
        heatmap_dir=args.heatmaps,
    )
    if args.out:
        result.write(args.out)
    else:
        sys.stdout.write(result.csv_text())
    where = f"; wrote {args.out}" if args.out else ""
    maps = f" and {len(result)} heat-maps in {args.heatmaps}" if args.heatmaps else ""
    print(
        f"{len(result)} images: {result.n_anomalous} anomalous (score > "
        f"{result.threshold:.4g}, {result.threshold_source}){where}{maps}",
        file=sys.stderr,
    )
    return 0
