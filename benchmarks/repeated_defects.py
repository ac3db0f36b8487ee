"""Cleaning when the same defect type repeats across training images, on real pixels.

Usage: python benchmarks/repeated_defects.py run [--seeds 10,11,12] [--levels 0.1,0.2]
                                                 [--strategies ...] [--jobs 2]
       python benchmarks/repeated_defects.py gap

What out-of-fold scoring assumes away: on real lines a defect *type* (one tool mark, one
contamination spot) recurs in several images, so a defective training image finds its
look-alikes in the other folds and scores as normal. This benchmark builds exactly that
from good ELPV cells (real texture, busbars and grain), with shapes ELPV does not have:

* backdrops are good cells, half of them single (300 × 300), half strips of two cells
  side by side (300 × 600), so every set mixes sizes and aspect ratios; no cell is used twice;
* ``--types`` defect types (4; drawn once, seed 0): a type is one dark ellipse — its size
  (16–36 px), elongation, angle and darkness fixed — planted at a random place;
* a pool of 300 good and 120 defective backdrops (30 per type) to draw training sets from,
  and a test pool of 100 good and 100 defective (25 per type) on other backdrops.

The sweep is the paper's protocol on these pools (:func:`robustsdd.experiments.sweep.run_sweep`:
100 training images at each level, test 100 + 100, seeds 10–12) with the default detector
(the ensemble) and its recipe's features; at 20 % each type is in about 5 training images.
Strategies: ``none``, ``oracle`` and cleanings on out-of-fold or sparse-bank scores, with one
or three rounds. ``gap`` tabulates AUROC, the share of the oracle gap won back and the removal
precision / recall (``select_default.py gap``'s table). Results:
``benchmarks/results/cleaning/repeated_defects/`` (a sweep report) and ``gap.md``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from robustsdd._io import atomic_write_bytes
from robustsdd.data import DEFECTIVE, GOOD, ImageSet, load_elpv
from robustsdd.recipes import make_components
from select_default import gap_table, sweep_with_report

OUT = Path("benchmarks/results/cleaning/repeated_defects")
STRATEGIES = (
    "none,oracle,auto_3@out_of_fold,fdr_0.2@out_of_fold,fdr_0.2_r3@out_of_fold,"
    "auto_3@sparse_banks,fdr_0.2@sparse_banks,fdr_0.2_r3@sparse_banks"
)
N_GOOD, N_PER_TYPE, N_TEST_GOOD, N_TEST_PER_TYPE = 300, 30, 100, 25


def good_cells() -> list:
    out = []
    for cell_type in ("mono", "poly"):
        cells = load_elpv(cell_type)
        out += [cells.rgb(i)[:, :, 0] for i in np.flatnonzero(cells.labels == GOOD)]
    return out


def defect_type(rng) -> dict:
    major = rng.uniform(16, 36) / 2
    return {
        "major": major,
        "minor": major * rng.uniform(0.25, 0.8),
        "angle": rng.uniform(0, np.pi),
        "dark": rng.uniform(0.2, 0.5),
    }


def plant(rng, gray: np.ndarray, kind: dict) -> np.ndarray:
    h, w = gray.shape
    m = kind["major"]
    cy, cx = rng.uniform(m, h - m), rng.uniform(m, w - m)
    yy, xx = np.mgrid[:h, :w]
    a = kind["angle"]
    u = (xx - cx) * np.cos(a) + (yy - cy) * np.sin(a)
    v = -(xx - cx) * np.sin(a) + (yy - cy) * np.cos(a)
    mask = (u / m) ** 2 + (v / kind["minor"]) ** 2 <= 1.0
    out = gray.astype(np.float64)
    out[mask] *= kind["dark"]
    return out.clip(0, 255).astype(np.uint8)


def pools(n_types: int) -> tuple[ImageSet, ImageSet]:
    """(training pool, test pool), drawn once with seed 0."""
    rng = np.random.default_rng(0)
    cells = good_cells()
    order = iter(rng.permutation(len(cells)))
    kinds = [defect_type(rng) for _ in range(n_types)]

    def backdrop(i):
        if i % 2:
            return np.concatenate([cells[next(order)], cells[next(order)]], axis=1)
        return cells[next(order)]

    def make(n_good, per_type, tag):
        items, labels = [], []
        for i in range(n_good):
            items.append(backdrop(i))
            labels.append(GOOD)
        for i in range(per_type * n_types):
            items.append(plant(rng, backdrop(i), kinds[i % n_types]))
            labels.append(DEFECTIVE)
        names = [f"{tag}{i:04d}" for i in range(len(items))]
        return ImageSet(items, labels, names, source=f"repeated_defects_{tag}")

    return make(N_GOOD, N_PER_TYPE, "pool"), make(N_TEST_GOOD, N_TEST_PER_TYPE, "test")


def run(args) -> None:
    pool, test_pool = pools(args.types)
    sweep_with_report(
        pool,
        test_pool,
        make_components("ensemble", progress=False),
        OUT,
        levels=args.levels,
        seeds=args.seeds,
        strategies=args.strategies,
        jobs=args.jobs,
        scoring="out_of_fold",
        progress=not args.quiet,
    )


def gap(args) -> None:
    lines = [
        "# Repeated defect types: oracle gap won back by each cleaning",
        "",
        f"Command: `python {' '.join(sys.argv)}` (after `run`)",
        "",
        "Each cell: mean test AUROC / share of the oracle gap won back / removal precision / "
        "recall (means over the seeds).",
        "",
        *gap_table(OUT / "cells"),
    ]
    text = "\n".join(lines) + "\n"
    atomic_write_bytes(OUT / "gap.md", text.encode())
    print(text)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["run", "gap"])
    ap.add_argument("--seeds", default="10,11,12")
    ap.add_argument("--levels", default="0.1,0.2")
    ap.add_argument("--types", type=int, default=4)
    ap.add_argument("--strategies", default=STRATEGIES)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    (run if args.what == "run" else gap)(args)


if __name__ == "__main__":
    main()
