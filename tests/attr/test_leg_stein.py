"""LEG's ``estimator="stein"``: the mean perturbed gradient, against closed forms.

By Stein's identity (the paper's Lemma 1) the least-squares slope LEG estimates equals
``E[grad_z f(x0 + z)]``; these tests check the gradient route against exact answers on linear
and quadratic functions (where every estimator must agree), against least squares through
LEG-TV's linear program, and its contract: batch independence and clear errors.
"""

from __future__ import annotations

import pytest
import torch

from captum_ext.attr import LEG, LEGTV


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def x():
    return torch.rand(3, 3, 8, 8, generator=gen(0))


def cell_truth(grad: torch.Tensor, cell: int = 2) -> torch.Tensor:
    """LEG's per-pixel output for a known input gradient ``(N, C, H, W)`` on ``cell`` x ``cell``
    cells with shared channels: the cell's summed gradient spread over its pixels and channels."""
    n, c, h, w = grad.shape
    cells = grad.sum(1).reshape(n, h // cell, cell, w // cell, cell).sum((2, 4))
    per_pixel = cells / (cell * cell * c)
    up = per_pixel.repeat_interleave(cell, 1).repeat_interleave(cell, 2)
    return up[:, None].expand(n, c, h, w)


def test_linear_function_is_exact_with_two_draws(x):
    w = torch.randn(3, 8, 8, generator=gen(1))

    def f(t):
        return (t * w).flatten(1).sum(1)

    a = LEG(f).attribute(x, n_samples=2, grid=(4, 4), estimator="stein", generator=gen(2))
    truth = cell_truth(w.expand_as(x))
    torch.testing.assert_close(a, truth, atol=1e-6, rtol=1e-5)


def test_quadratic_is_exact_with_one_antithetic_pair_and_converges_without(x):
    a_mat = torch.randn(192, 192, generator=gen(3)) / 20
    a_mat = a_mat + a_mat.T

    def f(t):
        flat = t.flatten(1)
        return ((flat @ a_mat) * flat).sum(1)

    grad = (2 * x.flatten(1) @ a_mat).view_as(x)  # E[grad f(x + z)] = 2 A x: E[z] = 0
    truth = cell_truth(grad)
    pair = LEG(f).attribute(x, n_samples=2, grid=(4, 4), estimator="stein", generator=gen(4))
    torch.testing.assert_close(pair, truth, atol=1e-5, rtol=1e-4)
    err = {}
    for n in (50, 800):  # plain Monte Carlo: the odd term 2 A z averages out like n^-1/2
        est = LEG(f).attribute(
            x, n_samples=n, grid=(4, 4), estimator="stein", antithetic=False, generator=gen(n)
        )
        err[n] = float((est - truth).norm() / truth.norm())
    assert 2.5 < err[50] / err[800] < 6.5, err  # sqrt(16) = 4


def test_legtv_centres_its_program_on_the_same_estimate(x):
    # on a linear function least squares is exact too, so with the same L the two programs are
    # the same program and return the same map
    w = torch.zeros(3, 8, 8)
    w[:, 2:6, 2:6] = 1.0  # one block: LEG-TV's favourite truth

    def f(t):
        return (t * w).flatten(1).sum(1)

    kw = dict(grid=(4, 4), L=0.05)
    stein = LEGTV(f).attribute(x, n_samples=2, estimator="stein", generator=gen(5), **kw)
    ols = LEGTV(f).attribute(x, n_samples=40, generator=gen(6), **kw)
    torch.testing.assert_close(stein, ols, atol=1e-5, rtol=1e-4)
    assert float(stein.abs().sum()) > 0


def test_an_example_alone_equals_it_in_a_batch():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Tanh(), torch.nn.Flatten())
    net.append(torch.nn.Linear(4 * 6 * 6, 2))
    x = torch.rand(4, 3, 8, 8, generator=gen(7))
    kw = dict(n_samples=16, estimator="stein", grid=(4, 4), perturbations_per_eval=5)
    batch = LEG(net).attribute(x, target=1, generator=gen(8), **kw)
    alone = LEG(net).attribute(x[2:3], target=1, generator=gen(8), **kw)
    torch.testing.assert_close(alone[0], batch[2], atol=1e-6, rtol=1e-5)


def test_the_default_grid_does_not_follow_n_samples():
    x = torch.rand(1, 3, 32, 32, generator=gen(9))
    leg = LEG(lambda t: t.flatten(1).sum(1))
    leg.attribute(x, n_samples=64, estimator="stein", generator=gen(1))
    assert leg.last_info["grid"] == [(16, 16)]  # the least-squares default at 2,000 draws
    assert bool(torch.isnan(leg.last_info["r2"]).all())  # no regression, no R^2


def test_a_function_autograd_cannot_differentiate_is_a_value_error(x):
    def step(t):
        return (t > 0.5).float().flatten(1).sum(1)

    with pytest.raises(ValueError, match="estimator='stein'"):
        LEG(step).attribute(x, n_samples=2, estimator="stein", generator=gen(0))
    with pytest.raises(ValueError, match="estimator must be one of"):
        LEG(step).attribute(x, n_samples=2, estimator="stien")
