"""The sparse LEG-TV LP against the dense paper formulation, limits and solver agreement."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from captum_ext.attr._utils.grid import (
    difference_matrix,
    sample_tv_perturbations,
    tv_covariance_inverse_apply,
)
from captum_ext.attr._utils.tv_lp import (
    LegTVProblem,
    constraint_violation,
    dense_paper_lp,
    theoretical_L,
)

SIGMA = 0.02


def blob_ybar(p: int, n: int = 1500, seed: int = 0, covariance: str = "tv") -> np.ndarray:
    """ybar of a linear model whose weights are two blocks, from n TV (or isotropic) draws."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.zeros(p, p, dtype=torch.float64)
    w[p // 5 : p // 2, p // 5 : p // 2] = 1.0
    w[p // 2 : 4 * p // 5, p // 2 : p - 1] = -0.7
    if covariance == "tv":
        z = sample_tv_perturbations(n, (p, p), SIGMA, generator=gen, dtype=torch.float64)
    else:
        z = SIGMA * torch.randn(n, p, p, generator=gen, dtype=torch.float64)
    y = (z * w).sum((1, 2)) + 0.01 * torch.randn(n, generator=gen, dtype=torch.float64)
    return (y[:, None, None] * z).mean(0).numpy()


def dense_violation_iso(g, ybar, L, boundary):
    d = difference_matrix(ybar.shape, boundary).toarray()
    r = np.linalg.pinv(d).T @ (ybar.ravel() - SIGMA**2 * g.ravel())
    return max(0.0, np.abs(r).max() - L)


@pytest.mark.parametrize("p", [8, 14])
@pytest.mark.parametrize("boundary", ["padded", "none"])
def test_fast_lp_matches_dense_paper_formulation(p, boundary):
    ybar = blob_ybar(p)
    prob = LegTVProblem(ybar, SIGMA, boundary=boundary, solver="highs-ds")
    L = 0.1 * prob.L_max
    fast = prob.solve(L)
    dense = dense_paper_lp(ybar, SIGMA, L, boundary=boundary)
    assert fast.objective > 0
    assert fast.objective == pytest.approx(dense.objective, rel=1e-4)
    # both feasible for the original (dense, unscaled) constraint
    tol = 1e-7 * prob.L_max
    assert constraint_violation(fast.g, ybar, SIGMA, L, boundary) <= tol
    assert constraint_violation(dense.g, ybar, SIGMA, L, boundary) <= tol
    if boundary == "none":  # the mean rule of Section 4.1: mean(g) = mean(empirical LEG)
        leg = tv_covariance_inverse_apply(ybar, SIGMA, boundary)
        assert fast.g.mean() == pytest.approx(leg.mean(), rel=1e-6)


@pytest.mark.parametrize("boundary", ["padded", "none"])
def test_isotropic_fast_lp_matches_dense(boundary):
    ybar = blob_ybar(8, covariance="iso")
    prob = LegTVProblem(ybar, SIGMA, covariance="isotropic", boundary=boundary)
    L = 0.1 * prob.L_max
    fast = prob.solve(L)
    dense = dense_paper_lp(ybar, SIGMA, L, boundary=boundary, covariance="isotropic")
    assert fast.objective == pytest.approx(dense.objective, rel=1e-4)
    assert dense_violation_iso(fast.g, ybar, L, boundary) <= 1e-7 * prob.L_max


def test_solvers_agree_on_objective_and_path_reuses_model():
    ybar = blob_ybar(14, seed=1)
    ks = (0.3, 0.1, 0.05)
    objs = {}
    for solver in ("highs-ds", "highs-ipm", "clarabel"):
        prob = LegTVProblem(ybar, SIGMA, solver=solver)
        results = prob.path([k * prob.L_max for k in ks])
        objs[solver] = [r.objective for r in results]
        for r in results:
            assert constraint_violation(r.g, ybar, SIGMA, r.L) <= 1e-6 * prob.L_max
    for solver in ("highs-ipm", "clarabel"):
        np.testing.assert_allclose(objs[solver], objs["highs-ds"], rtol=1e-4)
    # a smaller L is a smaller feasible set: the optimal TV grows
    assert objs["highs-ds"][0] < objs["highs-ds"][1] < objs["highs-ds"][2]
    single = LegTVProblem(ybar, SIGMA).solve(0.05 * LegTVProblem(ybar, SIGMA).L_max)
    assert single.objective == pytest.approx(objs["highs-ds"][2], rel=1e-6)


@pytest.mark.parametrize("boundary", ["padded", "none"])
def test_L_zero_is_empirical_leg(boundary):
    # Lemma 3: with L = 0 LEG-TV is empirical LEG up to a shift; the mean rule removes it
    ybar = blob_ybar(8, seed=2)
    g = LegTVProblem(ybar, SIGMA, boundary=boundary).solve(0.0).g
    leg = tv_covariance_inverse_apply(ybar, SIGMA, boundary)
    np.testing.assert_allclose(g, leg, atol=1e-6 * np.abs(leg).max())


def test_L_max_gives_zero_and_is_tight():
    ybar = blob_ybar(8, seed=3)
    prob = LegTVProblem(ybar, SIGMA)
    assert np.all(prob.solve(prob.L_max).g == 0)
    # just below L_max, g = 0 is infeasible, so the solution is nonzero
    assert np.abs(prob.solve(0.99 * prob.L_max).g).max() > 0
    # unpadded: zero TV, the mean of empirical LEG
    prob = LegTVProblem(ybar, SIGMA, boundary="none")
    g = prob.solve(prob.L_max).g
    leg = tv_covariance_inverse_apply(ybar, SIGMA, "none")
    np.testing.assert_allclose(g, np.full_like(g, leg.mean()), rtol=1e-9)


def test_zero_ybar_gives_zero_without_solver():
    res = LegTVProblem(np.zeros((6, 6)), SIGMA).solve(0.0)
    assert res.status == "trivial" and np.all(res.g == 0)


def test_theoretical_L_against_dense_pinv():
    for boundary in ("padded", "none"):
        d = difference_matrix((5, 6), boundary).toarray()
        norm = np.abs(np.linalg.pinv(d).T).sum(axis=1).max()
        expected = np.sqrt(2 * norm * np.log(30 / 0.05) / 100)
        assert theoretical_L((5, 6), 100, boundary) == pytest.approx(expected, rel=1e-9)


def test_bad_arguments():
    ybar = blob_ybar(6)
    with pytest.raises(ValueError, match="solver"):
        LegTVProblem(ybar, SIGMA, solver="gurobi")
    with pytest.raises(ValueError, match="covariance"):
        LegTVProblem(ybar, SIGMA, covariance="diag")
    with pytest.raises(ValueError, match="L must"):
        LegTVProblem(ybar, SIGMA).solve(-1.0)
    with pytest.raises(ValueError, match="eps"):
        theoretical_L((6, 6), 100, eps=2.0)
