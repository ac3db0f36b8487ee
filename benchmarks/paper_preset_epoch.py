"""Time one training epoch of the paper preset (172 M-parameter flow) on this machine.

Usage: python benchmarks/paper_preset_epoch.py
100 images × 8 views of 960 standard-normal features (the shape of the protocol's training
set); reports seconds per epoch and the implied time of the paper's 192 epochs.
"""

import time

import numpy as np
import torch

from robustsdd.recipes import make_detector


def main():
    # Random features, not the recipe's: only the flow is timed (960 = EfficientNet-Lite0 x 3).
    X = np.random.default_rng(0).normal(size=(100, 8, 960)).astype(np.float32)
    det = make_detector("differnet", preset="paper", progress=False, params={"epochs": 1})
    t = time.perf_counter()
    det.fit(X)
    epoch = time.perf_counter() - t
    print(
        f"paper preset: {epoch:.0f} s for one epoch of 800 vectors on {torch.get_num_threads()} "
        f"threads; 192 epochs ≈ {192 * epoch / 3600:.1f} h (+ the same again to fine-tune)"
    )


if __name__ == "__main__":
    main()
