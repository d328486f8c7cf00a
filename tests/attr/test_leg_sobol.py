"""LEG's ``sampler="sobol"``: scrambled Sobol draws through the normal inverse CDF.

Every draw is marginally ``N(0, I)``, so LEG keeps its estimand; on smooth functions the
quasi-Monte Carlo average converges faster than independent draws. Checked against the closed
form of a linear function (the moment estimator's error is then the sample covariance's alone),
and for the contract: seeded, independent of chunking and of the rest of the batch, and clear
errors.
"""

from __future__ import annotations

import pytest
import torch
from test_leg_stein import cell_truth, gen

from captum_ext.attr import LEG, LEGTV


@pytest.fixture
def x():
    return torch.rand(2, 3, 8, 8, generator=gen(0))


W = torch.randn(3, 8, 8, generator=gen(1))


def linear(t: torch.Tensor) -> torch.Tensor:
    return (t * W).flatten(1).sum(1)


def rel_err(sampler: str, x: torch.Tensor, n: int, seeds=range(4)) -> float:
    truth = cell_truth(W.expand_as(x))
    errs = []
    for s in seeds:
        a = LEG(linear).attribute(
            x, n_samples=n, grid=(4, 4), estimator="moment", antithetic=False,
            sampler=sampler, generator=gen(s),
        )  # fmt: skip
        errs.append(((a - truth).norm() / truth.norm()).item())
    return sum(errs) / len(errs)


def test_sobol_moment_estimate_converges_faster_than_monte_carlo(x):
    # moment estimator on a linear f: gamma_hat - gamma = (S - I) gamma with S the draws'
    # sample second moment, so the error is the sampler's alone. Monte Carlo: ~ sqrt(P / n)
    # (P = 16 cells), so 16x the draws divides it by 4; Sobol's falls faster
    mc = {n: rel_err("random", x, n) for n in (256, 4096)}
    qmc = {n: rel_err("sobol", x, n) for n in (256, 4096)}
    assert 2.5 < mc[256] / mc[4096] < 6.5, mc
    assert qmc[256] / qmc[4096] > 8, qmc
    assert qmc[4096] < 0.25 * mc[4096], (qmc, mc)


def test_sobol_draws_are_seeded_fresh_and_chunk_free(x):
    kw = {"n_samples": 200, "grid": (4, 4), "sampler": "sobol"}
    a = LEG(linear).attribute(x, generator=gen(5), perturbations_per_eval=7, **kw)
    b = LEG(linear).attribute(x, generator=gen(5), perturbations_per_eval=64, **kw)
    torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
    c = LEG(linear).attribute(x, generator=gen(6), **kw)
    assert not torch.equal(a, c)
    # one example alone equals the same example inside the batch (common draws)
    alone = LEG(linear).attribute(x[1:], generator=gen(5), **kw)
    torch.testing.assert_close(alone, a[1:], atol=1e-6, rtol=1e-6)


def test_sobol_antithetic_pairs_and_legtv(x):
    # with antithetic pairs a linear f is exact for least squares whatever the draws
    a = LEGTV(linear).attribute(
        x, n_samples=64, grid=(4, 4), sampler="sobol", K_L=0.0, generator=gen(2)
    )
    torch.testing.assert_close(a, cell_truth(W.expand_as(x)), atol=1e-5, rtol=1e-4)


def test_bad_sampler_arguments_name_the_argument(x):
    with pytest.raises(ValueError, match="sampler"):
        LEG(linear).attribute(x, n_samples=64, grid=(4, 4), sampler="halton")
    with pytest.raises(ValueError, match="sampler='sobol' needs covariance='isotropic'"):
        LEGTV(linear).attribute(x, n_samples=64, grid=(4, 4), sampler="sobol", covariance="tv")


def test_sobol_dimension_limit_is_checked_before_any_model_pass():
    calls = []

    def f(t):
        calls.append(1)
        return t.flatten(1).sum(1)

    big = torch.rand(1, 30, 28, 28)  # 30 channels x 784 cells > SobolEngine.MAXDIM = 21,201
    with pytest.raises(ValueError, match="sampler='sobol' supports at most 21201"):
        LEG(f).attribute(
            big, n_samples=64, grid=(28, 28), channels="independent", estimator="moment",
            sampler="sobol",
        )  # fmt: skip
    assert not calls
