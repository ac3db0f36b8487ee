"""Issue-6 sweeps: PatchCore / kNN / Gaussian with the automatic cut and out-of-fold scoring.

Usage: python benchmarks/beyond_paper.py --detector patchcore --cell-type mono \\
           [--levels 0,0.1,0.2,0.3,0.5] [--seeds 0,1,2] [--strategies ...] [--jobs 2]

Runs :func:`robustsdd.experiments.sweep.run_sweep` (the paper's protocol: 100 training
images, 100 + 100 test) and writes the usual sweep report to
benchmarks/results/beyond_<detector>_<cell type>/. PatchCore gets patch features
(EfficientNet-Lite0 stages 2+3, 3x3 average pooling, one view at 224², a 28x28 grid)
and a 1 % greedy coreset; kNN (k=5) and the Gaussian get the default pooled features
(8 views, 3 scales). Cleaning: ``auto_3`` (median + 3 robust SD of log scores, no
hand-set number) on out-of-fold scores (5 folds) or held-out views.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from robustsdd import Featurizer, GaussianDetector, ViewSpec
from robustsdd.data import open_source
from robustsdd.detectors import KNNDetector, PatchCore
from robustsdd.experiments.report import write_report
from robustsdd.experiments.sweep import run_sweep
from robustsdd.features.patches import PatchFeaturizer

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
    args = ap.parse_args()
    pool, test_pool = open_source("elpv", None, cell_type=args.cell_type)
    if args.detector == "patchcore":
        views = ViewSpec(size=224, scales=(1,), rotations=(0,), flips=False)
        featurizer = PatchFeaturizer(views=views)
        detector = PatchCore(grid=featurizer.patch_grid)
    else:
        featurizer = Featurizer()
        detector = KNNDetector() if args.detector == "knn" else GaussianDetector()
    out = Path("benchmarks/results") / f"beyond_{args.detector}_{args.cell_type}"
    result = run_sweep(pool, test_pool, featurizer=featurizer, detector=detector,
                       levels=args.levels, seeds=args.seeds,
                       strategies=args.strategies or DEFAULT_STRATEGIES[args.detector],
                       out_dir=out, jobs=args.jobs)
    import sys
    config = {**result.config, "command": "python benchmarks/beyond_paper.py " + " ".join(sys.argv[1:])}
    write_report(result, out, config=config, stats=result.stats)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
