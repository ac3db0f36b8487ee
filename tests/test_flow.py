"""DifferNet's flow: the FrEIA assembly computes DifferNet's formulas exactly."""

import copy
import math
import pickle

import numpy as np
import pytest
import torch

from robustsdd.detectors.differnet.flow import (
    build_flow,
    count_flow_parameters,
    make_subnet_constructor,
    soft_clamp_activation,
)


def _randomise(flow, scale=0.3, seed=1):
    """Give every trainable weight a non-trivial value, so the flow is far from identity."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in flow.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * scale)
    return flow


def _tiny_flow(d=6, n_blocks=3, hidden=8, n_hidden_layers=2):
    flow = build_flow(d, n_blocks=n_blocks, hidden=hidden, n_hidden_layers=n_hidden_layers, seed=0)
    return _randomise(flow.double()).eval()


def test_soft_clamp_value():
    u = torch.tensor([-100.0, -3.0, 0.0, 1.5, 3.0, 1e9], dtype=torch.float64)
    alpha = 3.0
    expected = [0.636 * math.atan(v / alpha) for v in u.tolist()]
    expected = torch.tensor(expected, dtype=torch.float64)
    assert torch.allclose(soft_clamp_activation(u, alpha=alpha), expected)
    # times alpha (as FrEIA does), the scale exponent stays within +-alpha
    s = alpha * soft_clamp_activation(torch.tensor([-1e12, 1e12], dtype=torch.float64), alpha=alpha)
    assert torch.all(s.abs() <= alpha) and torch.all(s.abs() > 0.99 * alpha)


def test_subnet_shape_and_zero_init():
    net = make_subnet_constructor(16, 3)(5, 8)
    linears = [m for m in net if isinstance(m, torch.nn.Linear)]
    shapes = [(m.in_features, m.out_features) for m in linears]
    assert shapes == [(5, 16), (16, 16), (16, 16), (16, 8)]
    assert sum(isinstance(m, torch.nn.ReLU) for m in net) == 3
    zero = make_subnet_constructor(16, 1, zero_init=True)(5, 8)
    assert torch.count_nonzero(zero[-1].weight) == 0 and torch.count_nonzero(zero[-1].bias) == 0


def test_zero_init_flow_is_a_permutation():
    flow = build_flow(6, n_blocks=3, hidden=8, n_hidden_layers=1, zero_init=True, seed=0)
    x = torch.randn(4, 6)
    z, log_det = flow(x)
    assert torch.allclose(log_det, torch.zeros(4))
    assert torch.allclose(torch.sort(z, dim=1).values, torch.sort(x, dim=1).values)


def test_invertibility_float64():
    flow = _tiny_flow()
    x = torch.randn(32, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        z, log_det = flow(x)
        x_back, log_det_rev = flow(z, rev=True)
    assert not torch.allclose(z, x, atol=1e-2)  # not the identity
    assert torch.allclose(x_back, x, atol=1e-5, rtol=0)
    assert torch.allclose(log_det_rev, -log_det, atol=1e-8)


def test_log_det_matches_numerical_jacobian():
    flow = _tiny_flow(d=5)
    x = torch.randn(6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        _, log_det = flow(x)
    for i in range(len(x)):
        jac = torch.autograd.functional.jacobian(lambda v: flow(v[None])[0][0], x[i])
        expected = torch.linalg.slogdet(jac).logabsdet
        assert float(log_det[i]) == pytest.approx(float(expected), abs=1e-8)
    assert log_det.abs().max() > 0.1  # a real volume change was tested


def test_glow_block_matches_differnet_formula():
    """One coupling block, written out as DifferNet's glow_coupling_layer does it."""
    d, alpha = 7, 3.0  # odd D: DifferNet splits D // 2 = 3 + 4
    flow = _tiny_flow(d=d, n_blocks=1)
    block = flow[1]
    assert type(block).__name__ == "GLOWCouplingBlock"
    x = torch.randn(10, d, dtype=torch.float64, generator=torch.Generator().manual_seed(3))

    def c(s):  # DifferNet's log_e
        return alpha * 0.636 * torch.atan(s / alpha)

    l1, l2 = d // 2, d - d // 2
    x1, x2 = x[:, :l1], x[:, l1:]
    r2 = block.subnet2(x2)  # sees the second half, transforms the first
    s2, t2 = r2[:, :l1], r2[:, l1:]
    y1 = torch.exp(c(s2)) * x1 + t2
    r1 = block.subnet1(y1)  # sees the new first half, transforms the second
    s1, t1 = r1[:, :l2], r1[:, l2:]
    y2 = torch.exp(c(s1)) * x2 + t1
    expected_y = torch.cat([y1, y2], dim=1)
    expected_log_det = c(s1).sum(dim=1) + c(s2).sum(dim=1)

    (y,), log_det = block((x,))
    assert torch.allclose(y, expected_y, atol=1e-12)
    assert torch.allclose(log_det, expected_log_det, atol=1e-12)
    # and the permutation in front is DifferNet's numpy permutation with seed k
    perm = np.random.RandomState(0).permutation(d)
    (x_perm,), _ = flow[0]((x,))
    assert torch.equal(x_perm, x[:, torch.from_numpy(perm)])


def test_build_flow_structure_and_frozen_permutations():
    flow = build_flow(6, n_blocks=3, hidden=8, n_hidden_layers=2, clamp=2.5, seed=0)
    assert len(flow) == 6
    names = [type(m).__name__ for m in flow]
    assert names == ["PermuteRandom", "GLOWCouplingBlock"] * 3
    frozen = [p for p in flow.parameters() if not p.requires_grad]
    assert len(frozen) == 6  # perm and perm_inv of each PermuteRandom
    for block in flow[1::2]:
        assert block.clamp == 2.5
        u = torch.tensor([1.0, -4.0])
        assert torch.allclose(block.f_clamp(u), 0.636 * torch.atan(u / 2.5))


def test_build_flow_leaves_global_rngs_alone_and_is_seeded():
    np_before, torch_before = np.random.get_state()[1].copy(), torch.get_rng_state().clone()
    a = build_flow(6, n_blocks=2, hidden=8, n_hidden_layers=1, seed=7)
    b = build_flow(6, n_blocks=2, hidden=8, n_hidden_layers=1, seed=7)
    assert np.array_equal(np.random.get_state()[1], np_before)
    assert torch.equal(torch.get_rng_state(), torch_before)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


def test_flow_pickles_and_deepcopies():
    flow = _tiny_flow()
    x = torch.randn(3, 6, dtype=torch.float64)
    for clone in (pickle.loads(pickle.dumps(flow)), copy.deepcopy(flow)):
        assert torch.equal(clone(x)[0], flow(x)[0])


def test_paper_parameter_count():
    """DifferNet's flow on 768 AlexNet features has ~172 M parameters."""
    assert count_flow_parameters(768) == 172_077_056
    with torch.device("meta"):  # count the real modules without allocating 0.7 GB
        flow = build_flow(768)
    n = sum(p.numel() for p in flow.parameters() if p.requires_grad)
    assert n == 172_077_056
    # small configurations agree with the analytic count too
    small = build_flow(9, n_blocks=2, hidden=5, n_hidden_layers=3, seed=0)
    assert sum(p.numel() for p in small.parameters() if p.requires_grad) == count_flow_parameters(
        9, n_blocks=2, hidden=5, n_hidden_layers=3
    )


def test_build_flow_rejects_bad_arguments():
    with pytest.raises(ValueError):
        build_flow(1)
    with pytest.raises(ValueError):
        build_flow(4, n_blocks=0)
    with pytest.raises(ValueError):
        build_flow(4, clamp=0)
