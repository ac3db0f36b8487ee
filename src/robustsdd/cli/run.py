"""``robustsdd run``: the paper's protocol on one split, baseline vs One-Shot Removal."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from .._errors import ConfigError
from .._format import fmt_metric
from .._io import atomic_write_json, json_safe
from .._version import __version__
from ..cleaning import describe
from ..data import open_source
from ..model.predictions import check_output_outside
from ..recipes import PAPER_DETECTOR, make_components
from . import args as common

__all__ = ["add_run_parser", "cmd_run"]


def add_run_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "run",
        help="the paper's protocol on one split: baseline vs One-Shot Removal",
        description="Draw the paper's split (N training images, k% defective; 100 + 100 test), "
        "train the detector, remove training images by the rule, fine-tune, and "
        "report baseline and OSR AUROC, removal counts (Table 1) and the training-"
        "score distribution of every stage. Defaults: ELPV mono, N=100, 20%, "
        "DifferNet (cpu preset), OSR at 1.5 on held-out-view scores: the paper's "
        "setting, which `robustsdd fit` does not use by default (see its --help).",
    )
    common.add_data_args(p, protocol=True)
    common.add_feature_args(p)
    common.add_detector_args(p, default=PAPER_DETECTOR)
    common.add_cleaning_args(p, paper=True)
    p.set_defaults(paper_cleaning=True)
    common.add_bad_image_arg(p)
    p.add_argument("--out", default="runs/run", help="output folder (default: runs/run)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def _print_stage_table(train_scores, scoring):
    labels = {
        "stage1": "stage 1 model",
        "removal": f"removal ({scoring})",
        "stage2": "fine-tuned model",
    }
    print("training scores (10th / median / 90th percentile):")
    for stage, summary in train_scores.items():
        parts = []
        for group in ("good", "defective"):
            s = summary.get(group, {})
            if s.get("n"):
                parts.append(f"{group} {s['p10']:.3g} / {s['median']:.3g} / {s['p90']:.3g}")
        print(f"  {labels.get(stage, stage):<28} " + "   ".join(parts))


def cmd_run(args: argparse.Namespace) -> int:
    from ..experiments.protocol import run_protocol_cell, strip_arrays

    if args.rule == "none":
        raise ConfigError("run compares baseline and OSR; choose a removal rule")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a folder")
    if args.root:
        check_output_outside(out, [args.root], what="--out")
    parts = make_components(**common.settings(args))  # settings are checked before any work
    pool, test_pool = open_source(
        args.source, args.root, cell_type=args.cell_type, category=args.category
    )
    pool = common.screen(args, pool, out / "skipped.csv")
    if test_pool is not None:
        test_pool = common.screen(args, test_pool, out / "skipped_test.csv")
    featurizer, cleaning = parts.featurizer, parts.cleaning
    assert cleaning is not None, "rule 'none' was refused above"
    t0 = time.perf_counter()
    result = run_protocol_cell(
        pool,
        test_pool,
        featurizer=featurizer,
        detector=parts.detector,
        osr_params=cleaning,
        n_train=args.n_train,
        contamination=args.contamination,
        seed=args.seed,
        n_test_good=args.n_test_good,
        n_test_defective=args.n_test_defective,
    )
    wall = time.perf_counter() - t0
    split, removal = result["split"], result["removal"]
    src = f"{args.source}" + (f" {args.cell_type}" if args.source == "elpv" else "")
    print(
        f"\n{src}: train {split['n_train']} = {split['train_good']} good + "
        f"{split['train_defective']} defective ({args.contamination:.0%}), test "
        f"{split['test_good']} good + {split['test_defective']} defective, seed {args.seed}"
    )
    preset = f" ({args.preset} preset)" if args.detector == "differnet" else ""
    print(
        f"detector {args.detector}{preset}, features {featurizer.backbone} "
        f"{featurizer.views.size}px ({featurizer.views.geometry}) x "
        f"{featurizer.views.n_views} views; OSR: "
        f"{cleaning['rule']} ({describe(cleaning)})\n"
    )
    print(f"{'':<10}{'AUROC':>8}{'AP':>8}")
    for name in ("baseline", "osr"):
        m = result[name]
        print(
            f"{name.upper() if name == 'osr' else name:<10}"
            f"{fmt_metric(m['auroc'], '  n/a'):>8}{fmt_metric(m['ap'], '  n/a'):>8}"
        )
    print(
        f"\nremoved: {removal['removed_good']} good + {removal['removed_defective']} defective = "
        f"{removal['removed_good'] + removal['removed_defective']} (kept "
        f"{removal['kept_good']} good + {removal['kept_defective']} defective); "
        f"removal precision {fmt_metric(removal['removal_precision'], '  n/a')}, "
        f"recall {fmt_metric(removal['removal_recall'], '  n/a')}"
    )
    _print_stage_table(result["train_scores"], cleaning["scoring"])
    for line in result["notes"]:
        common.note(line)
    metrics = strip_arrays(result)
    metrics["config"] = {
        "command": "robustsdd " + " ".join(args.argv),
        "source": args.source,
        "cell_type": args.cell_type,
        "root": args.root,
        "detector": args.detector,
        "preset": args.preset,
        "detector_params": parts.detector.get_params(deep=False),
        "osr": cleaning,
        "features": featurizer.to_dict(),
        "version": __version__,
    }
    metrics["seconds"]["wall"] = round(wall, 2)
    path = atomic_write_json(out / "metrics.json", json_safe(metrics))
    print(f"\nwrote {path} ({wall:.0f} s)")
    return 0
