"""Baseline vs One-Shot Removal on the paper's protocol: levels × seeds, one detector.

Usage (the BENCHMARKS.md tables):
    python benchmarks/protocol_table.py --detector differnet --levels 0,0.2,0.5 --seeds 0,1,2
    python benchmarks/protocol_table.py --detector gaussian  --levels 0,0.2,0.5 --seeds 0,1,2

The detector and its features are the detector's recipe (:mod:`robustsdd.recipes`; DifferNet:
the CPU preset), ``--param`` overriding detector keywords. Features come from the shared cache,
so only the first run pays for the backbone. Prints a markdown table (per level: mean ± std
over seeds) and writes every cell to --out as JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch

from robustsdd.data import open_source
from robustsdd.experiments.protocol import run_protocol_cell, strip_arrays
from robustsdd.recipes import make_detector, make_featurizer


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", default="elpv")
    ap.add_argument("--cell-type", default="mono")
    ap.add_argument("--root")
    ap.add_argument("--detector", default="differnet")
    ap.add_argument("--levels", default="0,0.2,0.5")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--rule", default="score_threshold")
    ap.add_argument("--threshold", type=float, default=1.5)
    ap.add_argument("--fraction", type=float, default=0.1)
    ap.add_argument("--scoring", default="held_out_views")
    ap.add_argument("--param", action="append", default=[], help="detector KEY=JSON")
    ap.add_argument("--out", default="benchmarks/results/protocol.json")
    args = ap.parse_args()

    params = {k: json.loads(v) for k, _, v in (p.partition("=") for p in args.param)}
    detector = make_detector(args.detector, progress=False, params=params)
    pool, test_pool = open_source(args.source, args.root, cell_type=args.cell_type)
    featurizer = make_featurizer(detector, progress=True)
    osr = dict(
        rule=args.rule, threshold=args.threshold, fraction=args.fraction, scoring=args.scoring
    )
    cells = []
    for level in [float(v) for v in args.levels.split(",")]:
        for seed in [int(v) for v in args.seeds.split(",")]:
            t = time.perf_counter()
            r = strip_arrays(
                run_protocol_cell(
                    pool,
                    test_pool,
                    featurizer=featurizer,
                    detector=detector,
                    osr_params=osr,
                    contamination=level,
                    seed=seed,
                )
            )
            r["level"], r["seed"] = level, seed
            cells.append(r)
            print(
                f"level {level:.0%} seed {seed}: baseline {r['baseline']['auroc']:.3f} "
                f"OSR {r['osr']['auroc']:.3f} removed {r['removal']['removed_good']} good + "
                f"{r['removal']['removed_defective']} defective "
                f"({time.perf_counter() - t:.0f} s)",
                flush=True,
            )

    print(
        f"\n{args.detector} {params or ''} on {args.source} {args.cell_type}; OSR {args.rule} "
        f"{args.threshold if args.rule == 'score_threshold' else args.fraction} on "
        f"{args.scoring} scores; mean ± std over seeds {args.seeds}\n"
    )
    print(
        "| defective | baseline AUROC | OSR AUROC | removed good | removed defective | "
        "guard fired | fit s |"
    )
    print("|---|---|---|---|---|---|---|")
    for level in sorted({c["level"] for c in cells}):
        cs = [c for c in cells if c["level"] == level]
        b = np.array([c["baseline"]["auroc"] for c in cs])
        o = np.array([c["osr"]["auroc"] for c in cs])
        rg = np.mean([c["removal"]["removed_good"] for c in cs])
        rd = np.mean([c["removal"]["removed_defective"] for c in cs])
        guard = sum(c["removal"]["guard_fired"] for c in cs)
        fit = np.median([c["seconds"]["fit"] for c in cs])
        print(
            f"| {level:.0%} | {b.mean():.3f} ± {b.std():.3f} | {o.mean():.3f} ± {o.std():.3f} | "
            f"{rg:.1f} | {rd:.1f} | {guard}/{len(cs)} | {fit:.0f} |"
        )
    machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    with open(args.out, "w") as f:
        json.dump({"args": vars(args), "machine": machine, "cells": cells}, f, indent=1)
    print(f"\nmachine: {machine}; cells written to {args.out}")


if __name__ == "__main__":
    main()
