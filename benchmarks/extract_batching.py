"""Feature-extraction throughput: one image per backbone pass vs batches of several images.

Usage: python benchmarks/extract_batching.py [--images 24] [--repeats 3]
ELPV mono images, the default pipeline's features (:func:`robustsdd.recipes.make_featurizer`:
224 px, 3 scales, 8 views, offline EfficientNet-Lite0, channels-last), no cache. Prints the median images/s per batch size over the repeats
(alternating, after one warm-up pass each) and whether the features are bit-identical.
"""

import argparse
import statistics
import time

import numpy as np
import torch

from robustsdd.data import load_elpv
from robustsdd.recipes import make_featurizer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-sizes", default="1,4")
    args = ap.parse_args()
    images = load_elpv("mono").subset(range(args.images))
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    featurizers = {b: make_featurizer(cache_dir=False, batch_size=b, progress=False) for b in sizes}
    for fz in featurizers.values():
        fz.transform(images.subset(range(2)))  # warm-up
    rates = {b: [] for b in sizes}
    features = {}
    for _ in range(args.repeats):
        for b, fz in featurizers.items():
            t = time.perf_counter()
            features[b] = fz.transform(images)
            rates[b].append(len(images) / (time.perf_counter() - t))
    for b in sizes:
        print(
            f"batch {b} image(s) per pass: median {statistics.median(rates[b]):.2f} images/s "
            f"(runs: {', '.join(f'{r:.2f}' for r in rates[b])})"
        )
    first = features[sizes[0]]
    for b in sizes[1:]:
        print(
            f"batch {b} features identical to batch {sizes[0]}: "
            f"{np.array_equal(first, features[b])} (max |diff| {np.abs(first - features[b]).max():.2e})"
        )
    print(f"torch threads: {torch.get_num_threads()}")


if __name__ == "__main__":
    main()
