"""Perturbation factories: Captum contracts, exactness on linear models, distributions."""

from __future__ import annotations

import inspect

import pytest
import torch
from captum.metrics import infidelity, sensitivity_max

from captum_ext.attr._utils.grid import difference_matrix
from captum_ext.metrics import (
    gaussian_perturbation,
    square_removal_perturbation,
    tv_perturbation,
    uniform_perturbation,
)

SHAPE = (3, 2, 10, 12)


def linear_model(w1: torch.Tensor, w2: torch.Tensor | None = None):
    def forward(x1, x2=None):
        out = (x1 * w1).flatten(1).sum(1)
        if x2 is not None:
            out = out + (x2 * w2).flatten(1).sum(1)
        return torch.stack([out, -out], 1)

    return forward


def factories(generator=None, **kw):
    return {
        "gaussian": gaussian_perturbation(0.1, generator=generator, **kw),
        "noisy_baseline": gaussian_perturbation(
            0.2, noisy_baseline=True, generator=generator, **kw
        ),  # fmt: skip
        "square": square_removal_perturbation(generator=generator, **kw),
        "tv": tv_perturbation(0.05, generator=generator, **kw),
        "uniform": uniform_perturbation(
            0.05, generator=generator, **{"output": "infidelity", **kw}
        ),
    }


@pytest.mark.parametrize("name", list(factories()))
def test_infidelity_is_zero_for_the_gradient_of_a_linear_model(name):
    g = torch.Generator().manual_seed(0)
    w1 = torch.randn(SHAPE[1:], dtype=torch.float64)
    w2 = torch.randn(4, dtype=torch.float64)
    x1 = torch.rand(SHAPE, dtype=torch.float64, generator=g) + 0.5
    x2 = torch.rand(3, 4, dtype=torch.float64, generator=g) + 0.5
    pf = factories(g)[name]
    attr1 = w1.expand(SHAPE)
    # Tensor input
    res = infidelity(linear_model(w1), pf, x1, attr1, target=0, n_perturb_samples=6,
                     max_examples_per_batch=7)  # fmt: skip
    assert res.shape == (3,)
    assert res.abs().max().item() < 1e-20
    # the test can fail: a wrong attribution gives a clearly positive infidelity
    wrong = infidelity(linear_model(w1), pf, x1, attr1.flip(-1), target=0, n_perturb_samples=6)
    assert wrong.min().item() > 1e-6
    # tuple input: the tensor part of a tuple needs a Tensor-or-(N, ..., H, W)-shaped entry
    if name in ("square", "tv"):
        x2 = torch.rand(3, 1, 10, 10, dtype=torch.float64, generator=g) + 0.5
        w2 = torch.randn(1, 10, 10, dtype=torch.float64)
    attr2 = w2.expand(x2.shape)
    res_t = infidelity(linear_model(w1, w2), pf, (x1, x2), (attr1, attr2), target=0,
                       n_perturb_samples=4)  # fmt: skip
    assert res_t.shape == (3,) and res_t.abs().max().item() < 1e-20


@pytest.mark.parametrize("name", ["gaussian", "square", "tv", "uniform"])
def test_decorated_gradient_times_input_has_zero_infidelity(name):
    g = torch.Generator().manual_seed(1)
    w = torch.randn(SHAPE[1:], dtype=torch.float64)
    x = torch.rand(SHAPE, dtype=torch.float64, generator=g) + 0.5  # no zero entries
    pf = factories(g, multiply_by_inputs=True)[name]
    res = infidelity(linear_model(w), pf, x, w * x, target=0, n_perturb_samples=5)
    assert res.abs().max().item() < 1e-20
    # the plain gradient is wrong under the multiply-by-inputs convention
    assert infidelity(linear_model(w), pf, x, w.expand(SHAPE), target=0).min().item() > 1e-8


@pytest.mark.parametrize("name", list(factories()))
def test_sensitivity_max_with_tensor_and_tuple_inputs(name):
    g = torch.Generator().manual_seed(2)
    pf = factories(g, output="sensitivity")[name]
    params = inspect.signature(pf).parameters
    assert len(params) == 1  # so sensitivity_max calls perturb_func(inputs)
    w = torch.randn(SHAPE[1:])
    model = linear_model(w)
    x = torch.rand(SHAPE)

    def explain(inputs, target):  # gradient x input: changes with the input
        if isinstance(inputs, tuple):
            return tuple(w * t for t in inputs)
        return w * inputs

    res = sensitivity_max(explain, x, pf, target=0, n_perturb_samples=3)
    assert res.shape == (3,) and torch.isfinite(res).all() and (res > 0).all()
    res_t = sensitivity_max(explain, (x, x), pf, target=0, n_perturb_samples=3)
    assert res_t.shape == (3,) and (res_t > 0).all()
    del model


def test_uniform_radius_none_takes_the_metric_radius():
    g = torch.Generator().manual_seed(3)
    pf = uniform_perturbation(generator=g)
    assert list(inspect.signature(pf).parameters) == ["inputs", "perturb_radius"]
    x = torch.zeros(2000, 3)
    out = pf(x, 0.3)
    assert out.abs().max() <= 0.3 and out.abs().max() > 0.29
    assert abs(out.mean().item()) < 0.01
    # gradient explanation of a linear model is constant: sensitivity exactly 0
    w = torch.randn(3)

    def explain(inp, target):
        if isinstance(inp, tuple):
            return tuple(w.expand_as(t) for t in inp)
        return w.expand_as(inp)

    res = sensitivity_max(explain, torch.rand(4, 3), pf, perturb_radius=0.1, target=0)
    assert res.abs().max() == 0
    with pytest.raises(ValueError, match="radius"):
        uniform_perturbation(output="infidelity")


def test_gaussian_distribution_and_noisy_baseline():
    g = torch.Generator().manual_seed(4)
    x = torch.rand(200, 1, 10, 10)
    i, xp = gaussian_perturbation(0.3, generator=g)(x)
    torch.testing.assert_close(xp, x - i)
    assert abs(i.std().item() - 0.3) < 0.01 and abs(i.mean().item()) < 0.01
    i2, xp2 = gaussian_perturbation(0.2, noisy_baseline=True, generator=g)(x)
    assert i2.min() >= 0 and i2.max() <= 1
    assert abs((i2 == 0).float().mean().item() - 0.5) < 0.02  # half of N(0, s^2) is clipped
    assert (xp2 <= x).all() and (xp2 >= x - 1).all()


def test_square_removal_removes_exactly_one_square():
    g = torch.Generator().manual_seed(5)
    x = torch.rand(400, 2, 6, 7) + 1.0
    i, xp = square_removal_perturbation(sizes=(1, 2, 3), baseline=0.0, generator=g)(x)
    removed = xp == 0
    assert torch.equal(removed[:, 0], removed[:, 1])  # all channels of a pixel
    torch.testing.assert_close(i, x - xp)
    sides = set()
    corners = set()
    for r in removed[:, 0]:
        rows = r.any(1).nonzero().flatten()
        cols = r.any(0).nonzero().flatten()
        side = len(rows)
        assert side == len(cols) and int(r.sum()) == side * side
        assert rows.max() - rows.min() + 1 == side  # contiguous square
        sides.add(side)
        corners.add((int(rows.max()) == 5, int(cols.max()) == 6))
    assert sides == {1, 2, 3}
    assert corners == {(False, False), (True, False), (False, True), (True, True)}
    # baselines given by the metric replace the constant
    base = torch.full_like(x, 7.0)
    _, xb = square_removal_perturbation(sizes=(2,), generator=g)(x, base)
    assert int((xb == 7.0).sum()) == 400 * 2 * 4
    _, xb1 = square_removal_perturbation(sizes=(2,), generator=g)(x, (base,))
    assert int((xb1 == 7.0).sum()) == 400 * 2 * 4
    with pytest.raises(ValueError, match="sizes"):
        square_removal_perturbation(sizes=(8,))(x)


def test_tv_perturbation_covariance_on_a_grid():
    g = torch.Generator().manual_seed(6)
    sigma = 0.1
    x = torch.zeros(4000, 1, 8, 8, dtype=torch.float64)
    z, xp = tv_perturbation(sigma, grid=(4, 4), generator=g)(x)
    torch.testing.assert_close(xp, -z)
    # nearest upsampling: constant on 2 x 2 blocks
    torch.testing.assert_close(z[..., ::2, ::2], z[..., 1::2, 1::2])
    cells = z[:, 0, ::2, ::2].reshape(4000, 16)
    emp = cells.T @ cells / 4000
    d = torch.from_numpy(difference_matrix((4, 4), "padded").toarray())
    cov = sigma**2 * (d.T @ d + torch.ones(16, 16) / 16)
    assert (emp - cov).abs().max() < 0.1 * cov.abs().max()
    with pytest.raises(ValueError, match="grid"):
        tv_perturbation(grid=(9, 9))(x)


def test_generators_make_draws_reproducible_and_leave_global_rng_alone():
    x = torch.rand(3, 2, 10, 12)
    state = torch.get_rng_state()
    for name in factories():
        a = factories(torch.Generator().manual_seed(7))[name]
        b = factories(torch.Generator().manual_seed(7))[name]
        ia, _ = a(x)
        ib, _ = b(x)
        torch.testing.assert_close(ia, ib)
        ia2, _ = a(x)
        assert not torch.equal(ia, ia2)  # the generator advances between calls
    assert torch.equal(torch.get_rng_state(), state)


def test_bad_arguments():
    with pytest.raises(ValueError, match="std"):
        gaussian_perturbation(-1.0)
    with pytest.raises(ValueError, match="sigma"):
        tv_perturbation(0.0)
    with pytest.raises(ValueError, match="output"):
        gaussian_perturbation(0.1, output="both")
    with pytest.raises(TypeError, match="generator"):
        gaussian_perturbation(0.1, generator=0)
    with pytest.raises(TypeError, match="inputs"):
        gaussian_perturbation(0.1)([torch.zeros(1)])
