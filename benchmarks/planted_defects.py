"""Planted defects with exact masks on real ELPV pixels: pixel AUROC by geometry, and tiles.

Usage: python benchmarks/planted_defects.py shape [--seeds 0,1,2]
       python benchmarks/planted_defects.py tiles [--seeds 0,1,2] [--upscale 2,4]

Backdrops are good ELPV cells (mono and poly), so the texture, busbars and grain are real;
each test "defective" image is a good backdrop with one planted defect: a dark ellipse of
random size, elongation and angle at a uniformly random position (anywhere, ends
included), whose pixels are the exact mask. No backdrop is used twice within a seed.

``shape``: 1 x 3 strips of good cells (300 x 900), defects 12-40 px. PatchCore (the
recipe: EfficientNet-Lite0 stages 2+3, greedy 1 % bank) trained on 100 good strips, tested
on 50 good + 50 planted, once per geometry (keep_aspect, squash, pad, crop) and seed.

``tiles``: single good cells enlarged ``upscale`` times (bicubic; 600 x 600 or 1200 x
1200), with *small* defects planted afterwards at full resolution (6-14 px): what a line
scanner sees. PatchCore (random 1 % bank by default: greedy selection over the tiled patch
counts dominates the run; ``--coreset greedy`` for the recipe's bank) trained on 30 good
images, tested on 20 good + 20 planted, with the whole image resized (keep_aspect, short side 224) and with 224 px tiles at the
image's own resolution.

Both print a Markdown table (image AUROC, pixel AUROC and seconds, mean ± std over
seeds) and write it with the raw rows to ``benchmarks/results/planted_<part>.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from robustsdd.data import GOOD, ImageSet, load_elpv
from robustsdd.metrics import detection_metrics, pixel_auroc
from robustsdd.recipes import make_detector, make_featurizer


def good_cells() -> list:
    """Every good ELPV cell (mono, then poly) as a (300, 300) uint8 array."""
    out = []
    for cell_type in ("mono", "poly"):
        cells = load_elpv(cell_type)
        out += [cells.rgb(i)[:, :, 0] for i in np.flatnonzero(cells.labels == GOOD)]
    return out


def plant(rng, gray: np.ndarray, low: int, high: int) -> tuple[np.ndarray, np.ndarray]:
    """A copy of ``gray`` with one dark ellipse (major axis ``low``-``high`` px) and its mask."""
    h, w = gray.shape
    major = rng.uniform(low, high) / 2
    minor = major * rng.uniform(0.3, 1.0)
    angle = rng.uniform(0, np.pi)
    cy, cx = rng.uniform(major, h - major), rng.uniform(major, w - major)
    yy, xx = np.mgrid[:h, :w]
    u = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)
    v = -(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)
    mask = (u / major) ** 2 + (v / minor) ** 2 <= 1.0
    out = gray.astype(np.float64)
    out[mask] = out[mask] * 0.35  # a dark spot, as a crack or burn mark shows in EL images
    return out.clip(0, 255).astype(np.uint8), mask


def run(images_train, images_test, masks, labels, geometry, detector_params, image_size=224):
    fz = make_featurizer("patchcore", geometry=geometry, image_size=image_size, progress=False)
    det = make_detector("patchcore", params=detector_params)
    t0 = time.perf_counter()
    train = ImageSet(
        images_train, np.zeros(len(images_train), int), [f"t{i}" for i in range(len(images_train))]
    )
    test = ImageSet(images_test, labels, [f"s{i}" for i in range(len(images_test))])
    X_train = fz.transform(train)
    X_test = fz.transform(test)
    t_features = time.perf_counter() - t0
    det.fit(X_train)
    scores = det.decision_function(X_test)
    maps = fz.score_maps(det.patch_scores(X_test), [m.shape for m in masks])
    seconds = time.perf_counter() - t0
    return {
        "geometry": geometry,
        "image_auroc": detection_metrics(labels, scores)["auroc"],
        "pixel_auroc": pixel_auroc(masks, maps),
        "seconds": seconds,
        "feature_seconds": t_features,
        "patches_per_image": int(np.isfinite(X_test[0, :, 0]).sum()),
    }


def part_shape(seeds) -> list:
    cells = good_cells()
    rows = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(cells))
        strips = [np.hstack([cells[j] for j in order[3 * k : 3 * k + 3]]) for k in range(200)]
        train, test_good, test_bad = strips[:100], strips[100:150], strips[150:200]
        planted = [plant(rng, s, 12, 40) for s in test_bad]
        test = test_good + [p for p, _ in planted]
        masks = [np.zeros(s.shape, bool) for s in test_good] + [m for _, m in planted]
        labels = np.array([0] * 50 + [1] * 50)
        for geometry in ("keep_aspect", "squash", "pad", "crop"):
            row = run(train, test, masks, labels, geometry, None)
            rows.append({"seed": seed, **row})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def part_tiles(seeds, upscales, coreset="random") -> list:
    cells = good_cells()
    rows = []
    for upscale in upscales:
        for seed in seeds:
            rng = np.random.default_rng(seed)
            order = rng.permutation(len(cells))[:70]
            side = 300 * upscale
            big = [
                np.asarray(Image.fromarray(cells[j]).resize((side, side), Image.Resampling.BICUBIC))
                for j in order
            ]
            train, test_good, test_bad = big[:30], big[30:50], big[50:70]
            planted = [plant(rng, s, 6, 14) for s in test_bad]
            test = test_good + [p for p, _ in planted]
            masks = [np.zeros(s.shape, bool) for s in test_good] + [m for _, m in planted]
            labels = np.array([0] * 20 + [1] * 20)
            for geometry in ("keep_aspect", "tile"):
                row = run(train, test, masks, labels, geometry, {"coreset": coreset})
                rows.append(
                    {"seed": seed, "upscale": upscale, "side": side, "coreset": coreset, **row}
                )
                print(json.dumps(rows[-1]), flush=True)
    return rows


def table(rows, key) -> str:
    groups: dict = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in key), []).append(r)
    lines = [
        "| "
        + " | ".join(key)
        + " | image AUROC | pixel AUROC | seconds (median) | patches / image |",
        "|" + "---|" * (len(key) + 4),
    ]
    for k, rs in groups.items():
        img = np.array([r["image_auroc"] for r in rs])
        pix = np.array([r["pixel_auroc"] for r in rs])
        sec = np.median([r["seconds"] for r in rs])
        lines.append(
            "| "
            + " | ".join(str(v) for v in k)
            + f" | {img.mean():.3f} ± {img.std():.3f} | {pix.mean():.3f} ± {pix.std():.3f}"
            + f" | {sec:.0f} | {rs[0]['patches_per_image']} |"
        )
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("part", choices=["shape", "tiles"])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--upscale", default="2,4")
    ap.add_argument(
        "--coreset",
        choices=["random", "greedy"],
        default="random",
        help="tiles: the 1 %% bank (default random: greedy selection over tiled patch counts "
        "dominates the run)",
    )
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.part == "shape":
        rows, key = part_shape(seeds), ("geometry",)
    else:
        upscales = [int(u) for u in args.upscale.split(",")]
        rows, key = part_tiles(seeds, upscales, args.coreset), ("side", "coreset", "geometry")
    md = table(rows, key)
    print(md)
    suffix = f"_{args.coreset}" if args.part == "tiles" and args.coreset != "random" else ""
    out = Path("benchmarks/results") / f"planted_{args.part}{suffix}.json"
    command = "python benchmarks/planted_defects.py " + " ".join(sys.argv[1:])
    out.write_text(json.dumps({"command": command, "table": md, "rows": rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
