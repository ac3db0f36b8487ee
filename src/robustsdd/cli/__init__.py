"""The ``robustsdd`` command: parse, call the library, print. No logic of its own.

One module per verb: ``run`` (the paper's protocol on one split: baseline vs One-Shot
Removal), ``sweep`` (the protocol over contamination levels × strategies × seeds: Fig. 3,
Table 1), ``fit`` (train with cleaning on an image folder or a data source, save a model
folder with train_scores.csv and report.html), ``predict`` (score new images with a
model folder: path, score, label) and ``score`` (score a data source's images, with
AUROC where labels are known). :mod:`.args` holds the argument groups they share.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence

from .._errors import RobustSDDError
from .._version import __version__
from .fit import add_fit_parser, cmd_fit
from .predict import add_predict_parser, cmd_predict
from .run import add_run_parser, cmd_run
from .score import add_score_parser, cmd_score
from .sweep import add_sweep_parser, cmd_sweep

__all__ = ["main", "build_parser", "VERBS"]

#: verb → (adds its parser, runs it)
VERBS = {
    "run": (add_run_parser, cmd_run),
    "fit": (add_fit_parser, cmd_fit),
    "score": (add_score_parser, cmd_score),
    "predict": (add_predict_parser, cmd_predict),
    "sweep": (add_sweep_parser, cmd_sweep),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="robustsdd",
        description="Robust surface-defect detection: train anomaly detectors on training sets "
        "that hold defective images, find and drop those images, fine-tune.",
    )
    parser.add_argument("--version", action="version", version=f"robustsdd {__version__}")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for add_parser, _ in VERBS.values():
        add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.argv = argv
    try:
        with warnings.catch_warnings():
            # Our own warnings (guard, NaN steps) are repeated in the printed notes.
            warnings.filterwarnings("ignore", module=r"robustsdd\..*")
            return VERBS[args.verb][1](args)
    except RobustSDDError as exc:
        print(f"robustsdd {args.verb}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"robustsdd {args.verb}: interrupted; finished outputs are complete, nothing "
            "half-written was left",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
