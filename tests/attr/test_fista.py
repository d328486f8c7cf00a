"""Soft-thresholding, power iteration, FISTA and the lambda1 rule against independent references."""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest
import torch

from captum_ext.attr._utils.fista import fista, objective, power_iteration, soft_threshold
from captum_ext.attr._utils.sparsity import (
    refine_lambda1,
    refine_lambda1_max_solves,
    select_lambda1,
    select_lambda1_max_solves,
    sparsity_ratio,
)


def dense_op(h: torch.Tensor):
    """HVP of a dense per-example Hessian stack ``h`` (N, d, d) on (N, K, d) vectors."""
    return lambda v: torch.einsum("nij,nkj->nki", h, v)


def random_psd(n: int, d: int, rank: int, scale: float, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(n, d, rank, generator=gen, dtype=torch.float64)
    return scale * w @ w.transpose(1, 2) / d


def test_soft_threshold_is_the_l1_prox():
    a = torch.linspace(-3, 3, 61, dtype=torch.float64)
    tau = 0.7
    out = soft_threshold(a, tau)
    # brute-force argmin_z 1/2 (z - a)^2 + tau |z| on a fine grid
    z = torch.linspace(-4, 4, 80001, dtype=torch.float64)
    cost = 0.5 * (z[None] - a[:, None]) ** 2 + tau * z.abs()[None]
    assert torch.allclose(out, z[cost.argmin(1)], atol=2e-4)
    assert bool((out[a.abs() <= tau] == 0).all())  # exact zeros
    assert torch.equal(soft_threshold(a, 0.0), a)
    # per-problem thresholds broadcast
    two = soft_threshold(torch.ones(2, 3), torch.tensor([[0.5], [2.0]]))
    assert torch.equal(two, torch.tensor([[0.5] * 3, [0.0] * 3]))


def test_power_iteration_finds_top_eigenvalue_and_handles_indefinite():
    diag = torch.tensor([[3.0, 1.0, 0.5, 0.0], [-5.0, 2.0, 1.0, 0.0]], dtype=torch.float64)
    h = torch.diag_embed(diag)
    v0 = torch.ones(2, 1, 4, dtype=torch.float64)
    top, n_hvp, indefinite = power_iteration(dense_op(h), v0, 200)
    assert indefinite
    assert top.tolist() == pytest.approx([3.0, 2.0], rel=1e-6)
    assert n_hvp == 400  # second run for the indefinite example
    zero, _, _ = power_iteration(dense_op(torch.zeros(1, 4, 4, dtype=torch.float64)), v0[:1], 5)
    assert zero.tolist() == [0.0]


@pytest.mark.parametrize("step", ["fixed", "backtrack"])
def test_fista_lambda1_zero_reaches_closed_form(step):
    n, d = 3, 12
    h = random_psd(n, d, 4, 30.0, seed=0)
    g = torch.randn(n, 1, d, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    top = torch.linalg.eigvalsh(h)[:, -1]
    lam2 = (top / 2 + 10.0)[:, None]
    res = fista(dense_op(h), g, torch.zeros(n, 1, dtype=torch.float64), lam2, 300, step=step)
    eye = torch.eye(d, dtype=torch.float64)
    exact = torch.linalg.solve(2 * lam2[:, :, None] * eye - h, g.transpose(1, 2)).transpose(1, 2)
    assert torch.allclose(res.b, exact, rtol=1e-8, atol=1e-12)
    assert torch.allclose(res.hb, torch.einsum("nij,nkj->nki", h, res.b), atol=1e-10)


def cvxpy_solution(h: np.ndarray, g: np.ndarray, lam1: float, lam2: float) -> np.ndarray:
    d = g.shape[0]
    x = cp.Variable(d)
    m = lam2 * np.eye(d) - 0.5 * h
    m = 0.5 * (m + m.T)
    prob = cp.Problem(cp.Minimize(-g @ x + cp.quad_form(x, m) + lam1 * cp.norm1(x)))
    prob.solve(solver="CLARABEL")
    return x.value


def test_fista_matches_cvxpy_for_positive_lambda1_and_is_sparse():
    n, d = 2, 10
    h = random_psd(n, d, 3, 40.0, seed=2)
    g = torch.randn(n, 1, d, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    lam1 = torch.tensor([[0.0, 0.3, 0.8]] * n, dtype=torch.float64)
    lam2 = (torch.linalg.eigvalsh(h)[:, -1] / 2 + 1.0)[:, None]
    res = fista(dense_op(h), g, lam1, lam2, 400)
    for i in range(n):
        for k in range(3):
            ref = cvxpy_solution(h[i].numpy(), g[i, 0].numpy(), float(lam1[i, k]), float(lam2[i]))
            assert np.allclose(res.b[i, k].numpy(), ref, atol=1e-5)
    # soft-thresholding gives exact zeros: larger lambda1, sparser solution
    eta = sparsity_ratio(res.b)
    assert bool((eta[:, 2] >= eta[:, 1]).all()) and bool((eta[:, 2] > 0).all())


def test_sufficient_decrease_and_monotone_variant():
    n, d = 4, 16
    h = random_psd(n, d, 6, 60.0, seed=4)
    g = torch.randn(n, 1, d, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    lam1 = torch.tensor([[0.0, 0.1, 0.5]] * n, dtype=torch.float64)
    lam2 = (torch.linalg.eigvalsh(h)[:, -1] / 2 + 10.0)[:, None]
    for step in ("backtrack", "fixed"):
        res = fista(dense_op(h), g, lam1, lam2, 15, step=step, record=True)
        for rec in res.trace:  # F(prox point) <= F(extrapolated point), every iteration
            assert bool((rec["F_b"] <= rec["F_v"] + 1e-12).all())
    mono = fista(dense_op(h), g, lam1, lam2, 15, monotone=True, record=True)
    f = torch.stack([rec["F"] for rec in mono.trace])
    assert bool((f[1:] <= f[:-1] + 1e-12).all())
    f_final = objective(mono.b, mono.hb, g, lam1, lam2.expand(n, 3))
    plain = fista(dense_op(h), g, lam1, lam2, 200)
    f_opt = objective(plain.b, plain.hb, g, lam1, lam2.expand(n, 3))
    assert bool((f_final >= f_opt - 1e-10).all())


def test_paper_schedule_first_trial_fails_and_fixed_costs_one_product():
    n, d = 2, 8
    h = random_psd(n, d, 3, 10.0, seed=6)
    g = torch.randn(n, 1, d, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    lam1 = torch.zeros(n, 1, dtype=torch.float64)
    lam2 = (torch.linalg.eigvalsh(h)[:, -1] / 2 + 10.0)[:, None]
    paper = fista(dense_op(h), g, lam1, lam2, 10, step="backtrack", record=True)
    assert all(bool((rec["t"] < 0.1).all()) for rec in paper.trace)  # 2 lambda2 >= 20 > 1/0.1
    fixed = fista(dense_op(h), g, lam1, lam2, 10, step="fixed")
    assert fixed.n_hvp == 10 < paper.n_hvp


def test_problems_are_independent_of_batch_composition():
    n, d = 3, 10
    h = random_psd(n, d, 4, 80.0, seed=8)
    g = torch.randn(n, 1, d, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    lam1 = torch.tensor([[0.0, 0.05, 0.2, 1.0]] * n, dtype=torch.float64)
    lam2 = (torch.linalg.eigvalsh(h)[:, -1] / 2 + 10.0)[:, None]
    together = fista(dense_op(h), g, lam1, lam2, 10, step="backtrack").b
    for i in range(n):
        for k in range(4):
            alone = fista(
                dense_op(h[i : i + 1]), g[i : i + 1], lam1[i : i + 1, k : k + 1],
                lam2[i : i + 1], 10, step="backtrack",
            ).b  # fmt: skip
            assert torch.allclose(together[i, k], alone[0, 0], rtol=1e-12, atol=1e-14)


def test_non_finite_products_raise_instead_of_looping():
    g = torch.ones(1, 1, 2, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="not finite"):
        fista(lambda v: v * float("nan"), g, torch.zeros(1, 1), torch.tensor([[1.0]]), 3)


# ------------------------------------------------------------------------ lambda1 rule
def soft_solver(g: torch.Tensor):
    """CAFO-like closed-form solver for the rule: delta = S_lambda(g)."""

    def solve(lam: torch.Tensor, idx: torch.Tensor):
        delta = soft_threshold(g[idx][:, None], lam[..., None])
        return delta, (g[idx][:, None] * delta).sum(-1)

    return solve


def test_rule_picks_highest_loss_in_window_from_grid():
    g = torch.arange(1, 101, dtype=torch.float64)[None] / 100  # |g| uniform on (0, 1]
    grid = [0.1, 0.5, 0.8, 0.9, 0.95]  # eta = 0.1, 0.5, 0.8, 0.9, 0.95
    choice = select_lambda1(soft_solver(g), grid, 1, (0.75, 1.0))
    assert choice.lambda1.item() == 0.8  # highest loss among the three in the window
    assert choice.eta.item() == pytest.approx(0.8) and bool(choice.in_window.item())
    assert choice.n_rounds == 1


def test_rule_extends_upward_then_halves_then_bisects():
    g = torch.arange(1, 101, dtype=torch.float64)[None] / 100
    # grid all below the window: x10 up to 1.0 (all zero), halving 0.5 (eta 0.5) overshoots,
    # bisection between 0.5 and 1.0 lands in [0.75, 1)
    choice = select_lambda1(soft_solver(g), [1e-3, 1e-2], 1, (0.75, 1.0))
    assert bool(choice.in_window.item())
    assert 0.75 <= choice.eta.item() < 1.0
    # sequential reference: the same search one value at a time
    lam, seen = 1e-2, []
    while True:
        lam *= 10
        seen.append(lam)
        if float(sparsity_ratio(soft_threshold(g, lam))) >= 1.0:
            break
    lo, hi = seen[-1] / 2, seen[-1]
    assert float(sparsity_ratio(soft_threshold(g, lo))) < 0.75
    while True:
        mid = (lo * hi) ** 0.5
        eta = float(sparsity_ratio(soft_threshold(g, mid)))
        if 0.75 <= eta < 1.0:
            break
        lo, hi = (mid, hi) if eta < 0.75 else (lo, mid)
    assert choice.lambda1.item() == pytest.approx(mid, rel=1e-12)


def test_rule_falls_back_when_window_is_empty():
    g = torch.tensor([[1.0, 1.0, 1.0, 1.0]], dtype=torch.float64)  # eta jumps from 0 to 1
    choice = select_lambda1(soft_solver(g), [0.0, 0.5, 2.0], 1, (0.75, 1.0), max_halvings=6)
    assert not bool(choice.in_window.item())
    assert choice.eta.item() == 0.0 and bool((choice.delta != 0).all())


@pytest.mark.parametrize("max_halvings", [0, 1, 3, 20])
def test_rules_never_solve_more_than_their_stated_bound(max_halvings):
    # CASO's progress bar is sized by these bounds before the search starts
    gen = torch.Generator().manual_seed(0)
    g = torch.cat(
        [
            torch.arange(1, 101, dtype=torch.float64)[None] / 100,  # bisects into the window
            torch.ones(1, 100, dtype=torch.float64),  # eta jumps from 0 to 1: never resolved
            torch.rand(3, 100, generator=gen, dtype=torch.float64) ** 8 * 1e3,  # far off-grid
            torch.zeros(1, 100, dtype=torch.float64),  # all-zero solutions everywhere
        ]
    )
    for grid in ([1e-6], [1e-3, 1e-2], [0.0, 0.5, 2.0], [1e4, 1e5]):
        paper = select_lambda1(soft_solver(g), grid, 6, (0.75, 1.0), max_halvings=max_halvings)
        assert paper.n_rounds <= select_lambda1_max_solves(max_halvings)
    seeds = torch.tensor([[1e-3, 0.5, 2.0]] * 6, dtype=torch.float64)
    refined = refine_lambda1(soft_solver(g), seeds, (0.75, 1.0), 0.05, max_rounds=max_halvings)
    assert refined.n_rounds <= refine_lambda1_max_solves(max_halvings)


# ------------------------------------------------------------------- refined rule (secant)
def counting(solve):
    """``solve`` that also records how many (example, value) problems it was given."""
    calls = []

    def wrapped(lam: torch.Tensor, idx: torch.Tensor):
        calls.append(int(lam.numel()))
        return solve(lam, idx)

    return wrapped, calls


@pytest.mark.parametrize("seed", [1e-3, 0.05, 0.5, 0.7, 0.9, 0.999])
def test_refined_rule_reaches_the_band_from_any_seed(seed):
    # |g| uniform on (0, 1]: eta(lambda) = floor(1000 lambda) / 1000, the band is [0.75, 0.8)
    g = torch.arange(1, 1001, dtype=torch.float64)[None] / 1000
    solve, calls = counting(soft_solver(g))
    choice = refine_lambda1(solve, torch.tensor([[seed]]), (0.75, 1.0), 0.05, max_rounds=20)
    assert bool(choice.in_window.item()) and 0.75 <= choice.eta.item() < 0.8
    # its own solution, and one value per round
    assert torch.equal(choice.delta, soft_threshold(g, choice.lambda1.item()))
    assert calls == [1] * choice.n_rounds
    # eta is linear here: a seed below moves up at most 2x per round (1e-3 -> 0.75 needs 10),
    # one above is interpolated through (0, 0), and a bracket's regula falsi lands at once
    assert choice.n_rounds <= {1e-3: 12, 0.05: 7}.get(seed, 3)


def test_refined_rule_returns_the_highest_loss_in_band_solution_met():
    g = torch.arange(1, 1001, dtype=torch.float64)[None] / 1000
    seeds = torch.tensor([[0.755, 0.76, 0.79, 0.9]], dtype=torch.float64)
    choice = refine_lambda1(soft_solver(g), seeds, (0.75, 1.0), 0.05)
    assert choice.n_rounds == 1  # three in band at once
    assert choice.lambda1.item() == 0.755  # Q falls with lambda: the smallest one


def test_refined_rule_is_per_example_and_stops_when_the_band_is_empty():
    g = torch.cat(
        [
            torch.arange(1, 1001, dtype=torch.float64)[None] / 1000,
            torch.ones(1, 1000, dtype=torch.float64),  # eta jumps from 0 to 1: no band
            (torch.arange(1, 1001, dtype=torch.float64)[None] / 1000) ** 4,  # curved eta
        ]
    )
    seeds = torch.tensor([[0.3], [0.5], [0.01]], dtype=torch.float64)
    together = refine_lambda1(soft_solver(g), seeds, (0.75, 1.0), 0.05, max_rounds=40)
    assert together.in_window.tolist() == [True, False, True]
    assert together.eta[1].item() == 0.0  # the closest non-zero solution below the window
    assert together.n_rounds < 41  # the empty band ends by the bracket's collapse
    for i in range(3):
        alone = refine_lambda1(
            soft_solver(g[i : i + 1]), seeds[i : i + 1], (0.75, 1.0), 0.05, max_rounds=40
        )
        assert alone.lambda1.item() == together.lambda1[i].item()
        assert torch.equal(alone.delta[0], together.delta[i])
