"""Extraction speed of the offline EfficientNet-Lite backbones, each as its recipe feeds it.

Usage: python benchmarks/lite_backbones.py [--images 24] [--repeats 3] [--cell-type mono]
           [--strings]

For Lite0, Lite1 and Lite2 (offline ImageNet weights, each at its native resolution:
224, 240 and 260 px, which ``keep_aspect`` rounds to 224, 256 and 256 px short sides)
it times three feature kinds of the recipes (:func:`robustsdd.recipes.make_featurizer`):

* pooled — the Gaussian's and kNN's: last stage pooled, 8 views × 3 scales;
* patch — PatchCore's: stages 2 + 3, one view;
* ensemble — the ensemble's: stages 2, 3 and the last, one view.

Images are ELPV cells (300 × 300), or with ``--strings`` the 300 × 900 strips of
``benchmarks/elpv_strings.py``. No cache; one warm-up pass per featurizer; the
featurizers take turns in each repeat. Prints, and writes to
``benchmarks/results/lite_backbones_<data>.json``, the median images/s per backbone
and feature kind, and the ratio to Lite0.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from elpv_strings import elpv_strings  # noqa: E402
from robustsdd._io import atomic_write_bytes  # noqa: E402
from robustsdd.data import load_elpv  # noqa: E402
from robustsdd.recipes import make_featurizer  # noqa: E402

BACKBONES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
KINDS = {"pooled": "gaussian", "patch": "patchcore", "ensemble": "ensemble"}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cell-type", default="mono")
    ap.add_argument("--strings", action="store_true")
    args = ap.parse_args()
    pool = elpv_strings() if args.strings else load_elpv(args.cell_type)
    images = pool.subset(range(args.images))
    data = "strings" if args.strings else args.cell_type
    featurizers = {
        (b, kind): make_featurizer(detector, backbone=b, cache_dir=False, progress=False)
        for b in BACKBONES
        for kind, detector in KINDS.items()
    }
    for fz in featurizers.values():
        fz.transform(images.subset(range(2)))  # warm-up: export, engine check
    rates: dict = {key: [] for key in featurizers}
    for _ in range(args.repeats):
        for key, fz in featurizers.items():
            t = time.perf_counter()
            fz.transform(images)
            rates[key].append(len(images) / (time.perf_counter() - t))
    result = {
        "data": data,
        "images": args.images,
        "repeats": args.repeats,
        "torch_threads": torch.get_num_threads(),
        "command": "python benchmarks/lite_backbones.py " + " ".join(sys.argv[1:]),
        "rates": {},
    }
    for kind in KINDS:
        base = statistics.median(rates[(BACKBONES[0], kind)])
        for b in BACKBONES:
            fz = featurizers[(b, kind)]
            median = statistics.median(rates[(b, kind)])
            result["rates"][f"{b} {kind}"] = {
                "median_images_per_s": median,
                "runs": rates[(b, kind)],
                "relative_to_lite0": median / base,
                "size": fz.views.size,
                "n_features": fz.extractor.n_features,
                "engine": getattr(fz, "engine_name", None),
            }
            print(
                f"{b:20s} {kind:8s} {fz.views.size} px  median {median:6.2f} images/s "
                f"({median / base:.2f}x Lite0; runs {', '.join(f'{r:.2f}' for r in rates[(b, kind)])})"
            )
    out = Path("benchmarks/results") / f"lite_backbones_{data}.json"
    atomic_write_bytes(out, (json.dumps(result, indent=1) + "\n").encode())
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
