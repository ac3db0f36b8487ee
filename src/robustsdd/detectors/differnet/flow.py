"""DifferNet's normalizing flow, built from FrEIA: tensors in, tensors out.

DifferNet (Rudolph et al., WACV 2021; ``marco-rudolph/differnet``) maps a pooled
feature vector ``x`` of ``D`` numbers to ``z`` with ``n_blocks`` blocks of

1. a fixed random permutation of the ``D`` dimensions, seeded with the block
   index ``k`` (numpy's ``RandomState(k).permutation(D)``), and
2. a GLOW affine coupling: split ``x`` into ``x1`` (first ``D // 2``) and
   ``x2``; ``[s2, t2] = subnet2(x2)``, ``y1 = exp(c(s2)) * x1 + t2``; then
   ``[s1, t1] = subnet1(y1)``, ``y2 = exp(c(s1)) * x2 + t1``, with the soft
   clamp ``c(s) = alpha * 0.636 * atan(s / alpha)``, which keeps every scale
   factor within ``exp(+-alpha)``. ``log|det J| = sum c(s1) + sum c(s2)``.

FrEIA's :class:`~FrEIA.modules.GLOWCouplingBlock` computes exactly this when
given ``clamp=alpha`` and ``clamp_activation=u -> 0.636 * atan(u / alpha)``
(it multiplies the activation by ``clamp`` itself). Its default ``"ATAN"``
activation omits the ``/ alpha`` and is *not* DifferNet's.

Differences from the original code, all deliberate:

* the split is forced to ``D // 2`` as in DifferNet (FrEIA's default
  ``round(0.5 * D)`` rounds half to even: ``D = 7`` would split 4 + 3);
* DifferNet's coupling layer clipped its output to ``+-1e6``; FrEIA does not,
  and neither do we (the detector guards against non-finite losses instead);
* DifferNet's ``F_fully_connected`` subnet carried an unused ``BatchNorm1d``;
  ours has none (it never took part in the computation);
* building the flow leaves numpy's global random state untouched (FrEIA's
  :class:`~FrEIA.modules.PermuteRandom` calls ``np.random.seed(k)``, which we
  save and restore around it).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from ..._validation import check_float_range, check_positive_int

__all__ = [
    "soft_clamp_activation",
    "make_subnet_constructor",
    "build_flow",
    "count_flow_parameters",
    "SubnetConstructor",
]

# DifferNet's constant: 0.636 ~ 2 / pi, so 0.636 * atan(.) maps R onto about (-1, 1).
_ATAN_SCALE = 0.636


def soft_clamp_activation(u: torch.Tensor, alpha: float = 3.0) -> torch.Tensor:
    """DifferNet's soft-clamp activation ``0.636 * atan(u / alpha)``.

    FrEIA's coupling blocks compute ``s = clamp * f_clamp(raw_s)``; with
    ``clamp=alpha`` and ``f_clamp = functools.partial(soft_clamp_activation,
    alpha=alpha)`` that is DifferNet's ``alpha * 0.636 * atan(raw_s / alpha)``.
    A module-level function (bound with :func:`functools.partial`) rather than a
    lambda, so that a flow can be pickled or deep-copied.

    Examples
    --------
    >>> round(float(soft_clamp_activation(torch.tensor(3.0), alpha=3.0)), 4)  # 0.636 * atan(1)
    0.4995
    """
    return _ATAN_SCALE * torch.atan(u / alpha)


class SubnetConstructor:
    """Callable ``(c_in, c_out) -> nn.Sequential`` of a fully connected ReLU net.

    ``c_in -> hidden -> ... -> hidden -> c_out`` with ``n_hidden_layers`` hidden
    layers, no dropout (DifferNet's dropout was 0). A class rather than a closure
    so the flow stays picklable.

    With ``zero_init=True`` the last layer's weight and bias start at zero, so
    every coupling starts as the identity and the whole flow as a permutation:
    a common, stabilising choice for deep flows. DifferNet itself used PyTorch's
    default initialisation, which is the default here too.
    """

    def __init__(self, hidden: int, n_hidden_layers: int, zero_init: bool = False):
        # ConfigError is a ValueError.
        self.hidden = check_positive_int(hidden, "hidden")
        self.n_hidden_layers = check_positive_int(n_hidden_layers, "n_hidden_layers")
        self.zero_init = bool(zero_init)

    def __call__(self, c_in: int, c_out: int) -> nn.Sequential:
        layers = [nn.Linear(c_in, self.hidden), nn.ReLU()]
        for _ in range(self.n_hidden_layers - 1):
            layers += [nn.Linear(self.hidden, self.hidden), nn.ReLU()]
        last = nn.Linear(self.hidden, c_out)
        if self.zero_init:
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        layers.append(last)
        return nn.Sequential(*layers)

    def __repr__(self) -> str:
        return (
            f"SubnetConstructor(hidden={self.hidden}, n_hidden_layers={self.n_hidden_layers}, "
            f"zero_init={self.zero_init})"
        )


def make_subnet_constructor(
    hidden: int, n_hidden_layers: int, zero_init: bool = False
) -> Callable[[int, int], nn.Sequential]:
    """Return FrEIA's ``subnet_constructor(c_in, c_out)`` for a ReLU MLP.

    ``Linear(c_in, hidden), ReLU, [Linear(hidden, hidden), ReLU] * (n_hidden_layers - 1),
    Linear(hidden, c_out)``. DifferNet's setting is ``hidden=2048,
    n_hidden_layers=3`` (``in -> 2048 -> 2048 -> 2048 -> out``).
    See :class:`SubnetConstructor` for ``zero_init``.
    """
    return SubnetConstructor(hidden, n_hidden_layers, zero_init)


def build_flow(
    n_features: int,
    n_blocks: int = 8,
    hidden: int = 2048,
    n_hidden_layers: int = 3,
    clamp: float = 3.0,
    *,
    zero_init: bool = False,
    seed: int | None = None,
) -> nn.Module:
    """Build DifferNet's flow as a :class:`FrEIA.framework.SequenceINN`.

    ``n_blocks`` x (``PermuteRandom(seed=k)``, ``GLOWCouplingBlock`` with
    DifferNet's soft clamp). Call it as ``z, log_det = flow(x)`` with ``x`` of
    shape ``(batch, n_features)``; ``flow(z, rev=True)`` inverts.

    The defaults are DifferNet's (8 blocks, 2048-wide subnets with 3 hidden
    layers, clamp 3): for 768 features that is 172,077,056 trainable
    parameters (see :func:`count_flow_parameters`), 0.69 GB in float32.

    The permutations' index tensors are ``nn.Parameter(requires_grad=False)``
    (FrEIA's choice, so that they follow ``.to(device)`` and land in the state
    dict): optimise only the parameters that require gradients.

    Parameters
    ----------
    n_features : int
        Dimension ``D`` of a feature vector, at least 2.
    n_blocks, hidden, n_hidden_layers, clamp
        Flow depth, subnet width and depth, soft-clamp ``alpha``.
    zero_init : bool
        Zero the last layer of every subnet, so the flow starts as a pure
        permutation. Off by default (DifferNet uses PyTorch's default init).
    seed : int, optional
        If given, initialise the weights from ``torch.manual_seed(seed)`` inside
        :func:`torch.random.fork_rng`, leaving the global generator untouched.
        If ``None``, draw from torch's global CPU generator like any ``nn.Module``.
    """
    # FrEIA is imported here so that merely importing robustsdd stays cheap.
    from FrEIA.framework import SequenceINN
    from FrEIA.modules import GLOWCouplingBlock, PermuteRandom

    n_features = int(n_features)
    if n_features < 2:
        raise ValueError(f"a coupling flow needs at least 2 features; got {n_features}")
    n_blocks = check_positive_int(n_blocks, "n_blocks")  # ConfigError, a ValueError
    clamp = check_float_range(clamp, "clamp", low=0, low_inclusive=False)
    subnet = make_subnet_constructor(hidden, n_hidden_layers, zero_init)
    activation = functools.partial(soft_clamp_activation, alpha=float(clamp))

    def build() -> SequenceINN:
        flow = SequenceINN(n_features)
        np_state = np.random.get_state()  # noqa: NPY002 (PermuteRandom reseeds the global RNG)
        try:
            for k in range(int(n_blocks)):
                flow.append(PermuteRandom, seed=k)
                flow.append(
                    GLOWCouplingBlock,
                    subnet_constructor=subnet,
                    clamp=float(clamp),
                    clamp_activation=activation,
                    split_len=n_features // 2,  # DifferNet's split, see module docstring
                )
        finally:
            np.random.set_state(np_state)  # noqa: NPY002 (restored as it was)
        return flow

    if seed is None:
        return build()
    with torch.random.fork_rng(devices=[]):
        # Seed only the CPU generator: torch.manual_seed would also (lazily) reseed CUDA.
        torch.default_generator.manual_seed(int(seed))
        return build()


def count_flow_parameters(
    n_features: int, n_blocks: int = 8, hidden: int = 2048, n_hidden_layers: int = 3
) -> int:
    """Number of trainable parameters of :func:`build_flow`, computed without building it.

    Each block holds two subnets, ``D//2 -> 2*(D - D//2)`` and ``D - D//2 -> 2*(D//2)``.

    >>> count_flow_parameters(768)  # DifferNet on AlexNet features
    172077056
    >>> count_flow_parameters(960, n_blocks=4, hidden=256, n_hidden_layers=2)
    3485184
    """
    d1 = int(n_features) // 2
    d2 = int(n_features) - d1

    def mlp(c_in: int, c_out: int) -> int:
        h = int(hidden)
        return (c_in * h + h) + (int(n_hidden_layers) - 1) * (h * h + h) + (h * c_out + c_out)

    return int(n_blocks) * (mlp(d1, 2 * d2) + mlp(d2, 2 * d1))
