"""ELPV strings: a benchmark where the image's shape matters, from real pixels.

Usage: python benchmarks/elpv_strings.py --detector gaussian --geometry keep_aspect \\
           [--levels 0,0.1,0.2,0.3] [--seeds 0,1,2] [--strategies none,...] [--jobs 1]

A *string* is three real ELPV cells side by side, one 300 × 900 module strip. Good strings
hold three good cells; a defective string holds two good cells and one defective cell, at
a position (left, middle, right) drawn uniformly, so two thirds of the defects lie outside
the centred square that the paper's crop keeps. Strings never mix cell types (mono, poly),
and no cell is used twice: each cell type's good and defective cells are shuffled (seed 0)
and dealt out once, so no cell can appear in both a training and a test string.

Per cell type with G good and D defective cells, ``floor(G / 5)`` defective strings are
made (each takes 2 good cells) and the remaining good cells make good strings: 118 + 184 =
302 good and 117 + 184 = 301 defective strings from ELPV mono + poly.

The sweep is the paper's protocol (:func:`robustsdd.experiments.sweep.run_sweep`: 100
training strings at each contamination level, test 100 good + 100 defective, 3 seeds)
with the detector's recipe (:func:`robustsdd.recipes.make_components`) and the given
geometry. Results: ``benchmarks/results/strings_<detector>_<geometry>/``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from robustsdd.data import DEFECTIVE, GOOD, ImageSet, load_elpv
from robustsdd.experiments.sweep import run_sweep
from robustsdd.experiments.sweep_report import write_report
from robustsdd.recipes import make_components

DEFAULT_STRATEGIES = {
    "patchcore": "none",
    "knn": "none,auto_3@out_of_fold",
    "gaussian": "none,auto_3@out_of_fold",
}


def elpv_strings(seed: int = 0) -> ImageSet:
    """The strings of ELPV mono and poly (see the module docstring)."""
    rng = np.random.default_rng(seed)
    items, labels, names = [], [], []
    for cell_type in ("mono", "poly"):
        cells = load_elpv(cell_type)
        good = rng.permutation(np.flatnonzero(cells.labels == GOOD)).tolist()
        bad = rng.permutation(np.flatnonzero(cells.labels == DEFECTIVE)).tolist()
        n_defective = min(len(bad), len(good) // 5)
        for k in range(n_defective):
            row = [good.pop(), good.pop()]
            row.insert(int(rng.integers(3)), bad.pop())
            items.append(np.hstack([cells.rgb(i)[:, :, 0] for i in row]))
            labels.append(DEFECTIVE)
            names.append(
                f"strings/{cell_type}/d{k:03d}_" + "-".join(cells.names[i][5:] for i in row)
            )
        for k in range(len(good) // 3):
            row = [good.pop() for _ in range(3)]
            items.append(np.hstack([cells.rgb(i)[:, :, 0] for i in row]))
            labels.append(GOOD)
            names.append(
                f"strings/{cell_type}/g{k:03d}_" + "-".join(cells.names[i][5:] for i in row)
            )
    return ImageSet(items, np.array(labels), names, source="ELPV strings (1x3 cells)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--detector", choices=sorted(DEFAULT_STRATEGIES), default="gaussian")
    ap.add_argument("--geometry", default="keep_aspect")
    ap.add_argument("--levels", default="0,0.1,0.2,0.3")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--strategies", default=None)
    ap.add_argument("--jobs", type=int, default=1)
    args = ap.parse_args()
    pool = elpv_strings()
    parts = make_components(args.detector, geometry=args.geometry)
    out = Path("benchmarks/results") / f"strings_{args.detector}_{args.geometry}"
    result = run_sweep(
        pool,
        None,
        featurizer=parts.featurizer,
        detector=parts.detector,
        levels=args.levels,
        seeds=args.seeds,
        strategies=args.strategies or DEFAULT_STRATEGIES[args.detector],
        out_dir=out,
        jobs=args.jobs,
        scoring=None,
    )
    config = {
        **result.config,
        "command": "python benchmarks/elpv_strings.py " + " ".join(sys.argv[1:]),
    }
    write_report(result, out, config=config, stats=result.stats)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
