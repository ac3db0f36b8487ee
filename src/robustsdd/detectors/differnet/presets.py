"""Named DifferNet configurations, as code (timm style): ``differnet_paper(epochs=10)``."""

from __future__ import annotations

from typing import Any

from .detector import DifferNet

__all__ = ["differnet_paper", "differnet_cpu", "PAPER_DEFAULTS", "CPU_DEFAULTS"]

#: DifferNet as published (Rudolph et al., WACV 2021; marco-rudolph/differnet).
PAPER_DEFAULTS = dict(
    n_blocks=8,
    hidden=2048,
    n_hidden_layers=3,
    clamp=3.0,
    lr=2e-4,
    betas=(0.8, 0.8),
    eps=1e-4,
    weight_decay=1e-5,
    epochs=192,  # 24 meta-epochs x 8 sub-epochs
    batch_size=96,  # 24 images x 4 random views
    standardize=False,
    noise_std=0.0,  # the paper's flow sees the features as they are
    score="mean_z2",
)

#: The library's defaults: a small flow meant for a CPU (fit times in BENCHMARKS.md §3).
#: Chosen on ELPV mono, seed 0, from training-set measures (how well held-out-view scores
#: separate the planted defective training images, and where good images score); see
#: BENCHMARKS.md "Choosing the CPU preset".
CPU_DEFAULTS = dict(
    n_blocks=4,
    hidden=256,
    n_hidden_layers=2,
    clamp=3.0,
    lr=1e-3,
    betas=(0.8, 0.8),
    eps=1e-4,
    weight_decay=1e-5,
    epochs=40,
    batch_size=64,
    standardize=True,
    noise_std=0.3,  # without it the flow memorises 100 images (docs/design.md §2)
    score_with_noise=True,
    score="mean_z2",
)


def differnet_paper(**overrides: Any) -> DifferNet:
    """DifferNet exactly as in the paper; keywords override any setting.

    8 GLOW blocks with ``in -> 2048 -> 2048 -> 2048 -> out`` subnets, clamp 3,
    Adam (2e-4, betas 0.8/0.8, eps 1e-4, weight decay 1e-5), 192 epochs of
    96-vector batches, raw (unstandardised) features, mean-z² score.

    Cost: 172,077,056 trainable parameters for 768 features (AlexNet, 3 scales),
    181,517,312 for 960 (0.7 GB of float32 weights, about 2.8 GB with Adam's
    state and gradients); one epoch over 100 images x 8 views is about 9 steps of
    a 172 M-parameter network, so 192 epochs want a GPU.

    >>> differnet_paper(epochs=1).hidden
    2048
    """
    return DifferNet(**{**PAPER_DEFAULTS, **overrides})


def differnet_cpu(**overrides: Any) -> DifferNet:
    """The CPU default: 4 blocks, ``in -> 256 -> 256 -> out`` subnets, 40 epochs.

    Cost: 3,485,184 trainable parameters for 960 features (2,893,824 for 768);
    see BENCHMARKS.md for measured fit times. Features are standardised with the
    first fit's statistics; training and scoring add Gaussian noise (σ = 0.3 in
    standardised units), which keeps the flow from memorising a 100-image
    training set and keeps normal images' mean z² near 1, where the paper's
    threshold 1.5 means something.

    >>> differnet_cpu().n_blocks
    4
    """
    return DifferNet(**{**CPU_DEFAULTS, **overrides})
