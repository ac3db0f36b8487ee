"""Issue-6 sweeps: PatchCore / kNN / Gaussian with the automatic cut and out-of-fold scoring.

Usage: python benchmarks/beyond_paper.py --detector patchcore --cell-type mono \\
           [--levels 0,0.1,0.2,0.3,0.5] [--seeds 0,1,2] [--strategies ...] [--jobs 2]
           [--coreset {greedy,random,none}] [--coreset-ratio R]
           [--denoise {none,hard,soft}] [--denoise-fraction F] [--denoise-k K]

Runs :func:`robustsdd.experiments.sweep.run_sweep` (the paper's protocol: 100 training
images, 100 + 100 test) and writes the usual sweep report to
benchmarks/results/beyond_<detector>_<cell type>/. PatchCore gets patch features
(EfficientNet-Lite0 stages 2+3, 3x3 average pooling, one view at 224², a 28x28 grid)
and a 1 % greedy coreset; kNN (k=5) and the Gaussian get the default pooled features
(8 views, 3 scales) — each detector's recipe (:func:`robustsdd.recipes.make_components`),
with the options below as overrides. Cleaning: ``auto_3`` (median + 3 robust SD of log
scores, no hand-set number) on out-of-fold scores (5 folds) or held-out views.

The PatchCore options (coreset, bank share, SoftPatch-style patch denoising) default to
the detector's defaults; when any is given, the output folder gets a suffix naming the
bank and the denoising, e.g. ``beyond_patchcore_mono_random10_hard10`` (random 10 % bank,
hard denoising of 10 % of the patches per position), so earlier results stay as they are.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from robustsdd.data import open_source
from robustsdd.experiments.sweep import run_sweep
from robustsdd.experiments.sweep_report import write_report
from robustsdd.recipes import make_components, make_detector, make_featurizer

DEFAULT_STRATEGIES = {
    "patchcore": "none,auto_3@out_of_fold",
    "knn": "none,auto_3@out_of_fold,auto_3@held_out_views",
    "gaussian": "none,auto_3@out_of_fold,auto_3@held_out_views",
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--detector", choices=sorted(DEFAULT_STRATEGIES), default="patchcore")
    ap.add_argument("--cell-type", default="mono")
    ap.add_argument("--levels", default="0,0.1,0.2,0.3,0.5")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--strategies", default=None)
    ap.add_argument("--jobs", type=int, default=2)
    pc = ap.add_argument_group("PatchCore only")
    pc.add_argument(
        "--size",
        type=int,
        default=None,
        help="view size in pixels (default: the recipe's, 224; ELPV cells are 300x300)",
    )
    pc.add_argument(
        "--coreset",
        choices=["greedy", "random", "none"],
        default=None,
        help="memory-bank subsampling (default: PatchCore's, greedy)",
    )
    pc.add_argument(
        "--coreset-ratio",
        type=float,
        default=None,
        help="share of training patches in the bank (default: PatchCore's, 0.01)",
    )
    pc.add_argument(
        "--denoise",
        choices=["none", "hard", "soft"],
        default=None,
        help="SoftPatch-style patch denoising (default none)",
    )
    pc.add_argument(
        "--denoise-fraction",
        type=float,
        default=None,
        help="share of patches dropped per position (default: PatchCore's, 0.1)",
    )
    pc.add_argument(
        "--denoise-k",
        type=int,
        default=None,
        help="neighbours in the patch outlier score (default: PatchCore's, 10)",
    )
    args = ap.parse_args()
    options = {
        "coreset": args.coreset,
        "coreset_ratio": args.coreset_ratio,
        "denoise": args.denoise,
        "denoise_fraction": args.denoise_fraction,
        "denoise_k": args.denoise_k,
    }
    options = {k: v for k, v in options.items() if v is not None}
    if (options or args.size is not None) and args.detector != "patchcore":
        ap.error(
            "--size, --coreset, --coreset-ratio and --denoise* apply to --detector patchcore only"
        )
    if options.get("denoise") == "none":
        options["denoise"] = None
    pool, test_pool = open_source("elpv", None, cell_type=args.cell_type)
    parts = make_components(args.detector, image_size=args.size, detector_params=options)
    featurizer, detector = parts.featurizer, parts.detector
    out = Path("benchmarks/results") / f"beyond_{args.detector}_{args.cell_type}"
    if options:
        out = out.with_name(out.name + _suffix(detector))
    if args.size not in (None, make_featurizer("patchcore", cache_dir=False).views.size):
        out = out.with_name(out.name + f"_size{args.size}")
    result = run_sweep(
        pool,
        test_pool,
        featurizer=featurizer,
        detector=detector,
        levels=args.levels,
        seeds=args.seeds,
        strategies=args.strategies or DEFAULT_STRATEGIES[args.detector],
        out_dir=out,
        jobs=args.jobs,
    )
    import sys

    config = {
        **result.config,
        "command": "python benchmarks/beyond_paper.py " + " ".join(sys.argv[1:]),
    }
    write_report(result, out, config=config, stats=result.stats)
    print(f"wrote {out}")


def _pct(x) -> str:
    return f"{100 * float(x):g}".replace(".", "p")


def _suffix(detector) -> str:
    """Names the bank and the denoising: ``_random10``, ``_greedy1_soft10``, ``_fullbank_hard5_k5``."""
    p = detector.get_params()
    bank = "fullbank" if p["coreset"] == "none" else f"{p['coreset']}{_pct(p['coreset_ratio'])}"
    suffix = f"_{bank}"
    if p["denoise"] is not None:
        suffix += f"_{p['denoise']}{_pct(p['denoise_fraction'])}"
        if p["denoise_k"] != make_detector("patchcore").denoise_k:
            suffix += f"_k{p['denoise_k']}"
    return suffix


if __name__ == "__main__":
    main()
