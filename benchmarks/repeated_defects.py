"""Cleaning when the same defect type repeats across training images, on real pixels.

Usage: python benchmarks/repeated_defects.py [--seeds 10,11,12] [--levels 0.1,0.2]
                                             [--types 4]

What out-of-fold scoring assumes away: on real lines a defect *type* (one tool mark, one
contamination spot) recurs in several images, so a defective training image finds its
look-alikes in the other folds and scores as normal. This benchmark builds exactly that
from good ELPV cells (real texture, busbars and grain), with shapes ELPV does not have:

* backdrops are good cells, half of them single (300 × 300), half strips of two cells
  side by side (300 × 600), so the training set mixes sizes and aspect ratios;
* each seed draws ``--types`` defect types; a type is one dark ellipse (its size 16–36 px,
  elongation, angle and darkness fixed), planted at a random place of a backdrop. The
  defective training images are dealt to the types in turn, so at 20 % with 4 types
  each type is in 5 training images;
* 100 training images at each level, tested on 50 good + 50 defective images of the
  same types (new backdrops and places).

For each scorer of the training images — the ensemble's own out-of-fold scores, its
PatchCore member's, and sparse banks (``scoring="sparse_banks"``, a fifth of the images
per bank) — and each cut (``auto``: median + 3 robust SD of the log scores; ``fdr``:
the contamination estimate's false-discovery-rate cut at 0.2) it reports the ranking
AUROC against the training labels and the precision / recall of the cut; then the test
AUROC of the default detector (the ensemble) trained on everything (``none``), on the
good images only (``oracle``) and on what each cut kept, and the share of the oracle gap
each wins back. Results: ``benchmarks/results/cleaning/repeated_defects.json`` / ``.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from robustsdd._io import atomic_write_bytes
from robustsdd.cleaning.registry import RULES
from robustsdd.cleaning.sparse_banks import sparse_bank_scores
from robustsdd.data import GOOD, ImageSet, load_elpv
from robustsdd.detectors.ensemble import EnsembleDetector
from robustsdd.recipes import make_components

N_TRAIN, N_TEST = 100, 50
#: cut name -> (rule, settings), applied to every scorer's scores
CUTS = {"auto_3": ("auto", {"z": 3.0}), "fdr_0.2": ("fdr", {"fdr": 0.2})}


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


def backdrops(rng, cells, n):
    """n backdrops, half single cells, half two-cell strips; cells not reused."""
    order = iter(rng.permutation(len(cells)))
    out = []
    for i in range(n):
        if i % 2:
            out.append(np.concatenate([cells[next(order)], cells[next(order)]], axis=1))
        else:
            out.append(cells[next(order)])
    return out


def make_split(seed, level, n_types, cells):
    rng = np.random.default_rng(seed)
    kinds = [defect_type(rng) for _ in range(n_types)]
    n_bad = int(round(level * N_TRAIN))
    images = backdrops(rng, cells, N_TRAIN + 2 * N_TEST)
    train = [
        plant(rng, im, kinds[i % n_types]) if i < n_bad else im
        for i, im in enumerate(images[:N_TRAIN])
    ]
    test = images[N_TRAIN:]
    test = [plant(rng, im, kinds[i % n_types]) if i < N_TEST else im for i, im in enumerate(test)]
    y_train = np.r_[np.ones(n_bad), np.zeros(N_TRAIN - n_bad)].astype(int)
    y_test = np.r_[np.ones(N_TEST), np.zeros(N_TEST)].astype(int)
    return train, y_train, test, y_test


def as_set(images, labels, tag):
    return ImageSet(list(images), list(labels), [f"{tag}{i}" for i in range(len(images))])


def run(args) -> list:
    cells = good_cells()
    parts = make_components("ensemble", progress=False)
    fz, pc = parts.featurizer, parts.detector.patch_channels
    rows = []
    for level in [float(v) for v in args.levels.split(",")]:
        for seed in [int(s) for s in args.seeds.split(",")]:
            train, y, test, y_test = make_split(seed, level, args.types, cells)
            X = fz.transform(as_set(train, y, f"rd{seed}_{level}_train"))
            X_test = fz.transform(as_set(test, y_test, f"rd{seed}_{level}_test"))

            def fit_score(keep):
                det = EnsembleDetector(patch_channels=pc, random_state=seed).fit(X[keep])
                return det, float(roc_auc_score(y_test, det.decision_function(X_test)))

            t = time.perf_counter()
            plain, auroc_none = fit_score(np.ones(len(y), bool))
            fit_seconds = time.perf_counter() - t
            _, auroc_oracle = fit_score(y == 0)
            scorers = {
                "oof_ensemble": (plain.out_of_fold_scores_, fit_seconds),
                "oof_patchcore": (plain.member_oof_scores_[0], fit_seconds),
            }
            t = time.perf_counter()
            s = sparse_bank_scores(X[:, :, :pc], share=0.2, n_banks=20, random_state=seed)
            scorers["banks_0.2"] = (s, time.perf_counter() - t)
            base = {"level": level, "seed": seed, "none": auroc_none, "oracle": auroc_oracle}
            for name, (s, seconds) in scorers.items():
                for cut_name, (rule, settings) in CUTS.items():
                    keep = RULES[rule].cut(s, {**settings, "random_state": seed}).keep
                    tp = int((~keep & (y == 1)).sum())
                    _, auroc = fit_score(keep)
                    row = {
                        **base,
                        "scorer": f"{name} {cut_name}",
                        "rank_auroc": float(roc_auc_score(y, s)),
                        "precision": tp / max(int((~keep).sum()), 1),
                        "recall": tp / max(int(y.sum()), 1),
                        "removed": int((~keep).sum()),
                        "auroc": auroc,
                        "scorer_seconds": round(seconds, 2),
                    }
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    return rows


def table(rows, command) -> str:
    cells = defaultdict(list)
    for r in rows:
        cells[(r["scorer"], r["level"])].append(r)
    levels = sorted({r["level"] for r in rows})
    lines = [
        "# Repeated defect types: ranking, cut and test AUROC by removal scorer",
        "",
        f"Command: `{command}`",
        "",
        "Per level: ranking AUROC / auto-cut precision / recall, test AUROC after the cut, "
        "and the share of the oracle gap won back (means over seeds).",
        "",
        "| scorer and cut | "
        + " | ".join(f"{int(100 * lv)} %: rank / P / R | AUROC | gap won" for lv in levels)
        + " | scorer s |",
        "|---|" + "---|---|---|" * len(levels) + "---|",
    ]
    for scorer in dict.fromkeys(r["scorer"] for r in rows):
        cols = []
        for lv in levels:
            rs = cells[(scorer, lv)]
            keys = ("rank_auroc", "precision", "recall", "auroc", "none", "oracle")
            m = {k: float(np.mean([r[k] for r in rs])) for k in keys}
            gap = m["oracle"] - m["none"]
            won = (m["auroc"] - m["none"]) / gap if gap > 0 else float("nan")
            cols.append(
                f"{m['rank_auroc']:.2f} / {m['precision']:.2f} / {m['recall']:.2f} | "
                f"{m['auroc']:.3f} | {100 * won:.0f} %"
            )
        secs = np.median([r["scorer_seconds"] for r in rows if r["scorer"] == scorer])
        lines.append(f"| {scorer} | " + " | ".join(cols) + f" | {secs:.1f} |")
    for lv in levels:
        rs = cells[(rows[0]["scorer"], lv)]
        lines.append("")
        lines.append(
            f"At {int(100 * lv)} %: none {np.mean([r['none'] for r in rs]):.3f}, "
            f"oracle {np.mean([r['oracle'] for r in rs]):.3f}."
        )
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="10,11,12")
    ap.add_argument("--levels", default="0.1,0.2")
    ap.add_argument("--types", type=int, default=4)
    ap.add_argument("--out", default="benchmarks/results/cleaning/repeated_defects")
    args = ap.parse_args()
    rows = run(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = table(rows, "python " + " ".join(sys.argv))
    atomic_write_bytes(out.with_suffix(".md"), text.encode())
    atomic_write_bytes(out.with_suffix(".json"), (json.dumps(rows, indent=1) + "\n").encode())
    print(text)


if __name__ == "__main__":
    main()
