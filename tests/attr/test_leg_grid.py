"""Grid operators of LEG: D, the TV covariance, its exact sampler, solves and upsampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from captum_ext.attr._utils.grid import (
    apply_D,
    apply_Dt,
    cell_sizes,
    difference_matrix,
    n_edges,
    pinv_transpose_apply,
    sample_tv_perturbations,
    solve_tv_system,
    tv_covariance,
    tv_covariance_inverse_apply,
    tv_rank_one_column,
    upsample_nearest,
)

BOUNDARIES = ("padded", "none")


@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("grid", [(3, 3), (4, 6), (5, 2)])
def test_difference_matrix_structure(boundary, grid):
    p1, p2 = grid
    d = difference_matrix(grid, boundary)
    assert d.shape == (n_edges(grid, boundary), p1 * p2)
    lap = (d.T @ d).toarray()
    # D^T D is the 5-point Laplacian: Dirichlet (4 on the diagonal) or Neumann (degree)
    deg = np.zeros((p1, p2))
    deg[:, :-1] += 1
    deg[:, 1:] += 1
    deg[:-1, :] += 1
    deg[1:, :] += 1
    expected_diag = np.full(p1 * p2, 4.0) if boundary == "padded" else deg.ravel()
    np.testing.assert_array_equal(np.diag(lap), expected_diag)
    off = lap - np.diag(np.diag(lap))
    assert set(np.unique(off)) <= {0.0, -1.0}
    if boundary == "none":
        np.testing.assert_array_equal(d @ np.ones(p1 * p2), 0.0)
        assert d.shape[0] == 2 * p1 * p2 - p1 - p2
    else:
        assert np.linalg.matrix_rank(d.toarray()) == p1 * p2
        assert d.shape[0] == 2 * p1 * p2 + p1 + p2


@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_torch_operators_match_sparse_matrix(boundary):
    grid = (5, 7)
    d = difference_matrix(grid, boundary).toarray()
    g = torch.randn(3, *grid, dtype=torch.float64)
    np.testing.assert_allclose(apply_D(g, boundary).numpy(), g.flatten(1).numpy() @ d.T)
    e = torch.randn(3, d.shape[0], dtype=torch.float64)
    np.testing.assert_allclose(apply_Dt(e, grid, boundary).flatten(1).numpy(), e.numpy() @ d)


@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_sampler_covariance_matches_sigma(boundary):
    grid, sigma, n = (5, 4), 0.3, 200_000
    gen = torch.Generator().manual_seed(0)
    z = sample_tv_perturbations(
        n, grid, sigma, boundary=boundary, generator=gen, dtype=torch.float64
    )
    assert z.shape == (n, *grid)
    z = z.flatten(1).numpy()
    cov = tv_covariance(grid, sigma, boundary)
    emp = z.T @ z / n  # mean is 0 by construction
    # entries of Sigma are at most 4.05 sigma^2; Monte Carlo error ~ 4 sigma^2 * sqrt(2/n)
    assert np.abs(emp - cov).max() < 6 * 4.05 * sigma**2 * np.sqrt(2 / n)
    assert np.abs(z.mean(0)).max() < 6 * 2.1 * sigma / np.sqrt(n)
    # and the mean is clearly resolved: a wrong operator would be off by >= sigma^2
    assert np.abs(emp - cov).max() < 0.1 * sigma**2


def test_sampler_is_deterministic_and_leaves_global_rng_alone():
    state = torch.get_rng_state()
    a = sample_tv_perturbations(4, (6, 6), 0.02, generator=torch.Generator().manual_seed(3))
    b = sample_tv_perturbations(4, (6, 6), 0.02, generator=torch.Generator().manual_seed(3))
    c = sample_tv_perturbations(4, (6, 6), 0.02)
    assert torch.equal(a, b)
    assert torch.equal(torch.get_rng_state(), state)
    assert c.dtype == torch.get_default_dtype()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n": 0}, "n must"),
        ({"sigma": 0.0}, "sigma"),
        ({"sigma": float("nan")}, "sigma"),
        ({"grid": (0, 3)}, "grid"),
        ({"boundary": "wrap"}, "boundary"),
    ],
)
def test_sampler_rejects_bad_arguments(kwargs, match):
    args = {"n": 2, "grid": (4, 4), "sigma": 0.1, **kwargs}
    boundary = args.pop("boundary", "padded")
    with pytest.raises(ValueError, match=match):
        sample_tv_perturbations(args["n"], args["grid"], args["sigma"], boundary=boundary)


@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("grid", [(6, 6), (8, 8), (5, 9)])
def test_pinv_identity_against_dense_pinv(boundary, grid):
    d = difference_matrix(grid, boundary).toarray()
    p = d.shape[1]
    dplus_t = np.linalg.pinv(d).T
    sigma = 0.7
    cov = tv_covariance(grid, sigma, boundary)
    c = tv_rank_one_column(grid, boundary)
    # D^{+T} Sigma = sigma^2 (D + c 1^T), exactly sigma^2 D for the paper's D
    np.testing.assert_allclose(dplus_t @ cov, sigma**2 * (d + np.outer(c, np.ones(p))), atol=1e-12)
    y = np.random.default_rng(0).normal(size=(2, *grid))
    np.testing.assert_allclose(
        pinv_transpose_apply(y, boundary), y.reshape(2, p) @ dplus_t.T, atol=1e-12
    )
    np.testing.assert_allclose(
        tv_covariance_inverse_apply(y, sigma, boundary).reshape(2, p),
        np.linalg.solve(cov, y.reshape(2, p).T).T,
        rtol=1e-9,
        atol=1e-9,
    )
    a = (d.T @ d) + (np.full((p, p), 1 / p) if boundary == "none" else 0)
    np.testing.assert_allclose(
        solve_tv_system(y, boundary).reshape(2, p),
        np.linalg.solve(a, y.reshape(2, p).T).T,
        atol=1e-10,
    )


def test_upsample_nearest_and_cell_sizes():
    z = torch.arange(6.0).reshape(1, 2, 3)
    up = upsample_nearest(z, (5, 7))
    assert up.shape == (1, 5, 7)
    # matches torch's nearest mode for these sizes and partitions pixels into cells
    ref = torch.nn.functional.interpolate(z[None], size=(5, 7), mode="nearest")[0]
    assert torch.equal(up, ref)
    sizes = cell_sizes((5, 7), (2, 3))
    assert sizes.sum() == 35
    counts = torch.bincount(up.flatten().long(), minlength=6).reshape(2, 3)
    assert torch.equal(counts, sizes)
    # integer factors take the block-repetition path; same result as the index map
    z = torch.randn(2, 3, 4, 7)
    up = upsample_nearest(z, (8, 21))
    ref = torch.nn.functional.interpolate(z, size=(8, 21), mode="nearest")
    assert torch.equal(up, ref)
    assert torch.equal(cell_sizes((8, 21), (4, 7)), torch.full((4, 7), 6))


@pytest.mark.parametrize(
    ("shape", "n_samples", "channels", "grid"),
    [
        # shared draws: one coefficient per cell, sqrt(1000 / 4) = 15.8 -> 16, a divisor of 32
        ((3, 32, 32), 1000, "shared", (16, 16)),
        ((3, 224, 224), 1000, "shared", (16, 16)),
        ((3, 32, 32), 200, "shared", (4, 4)),  # sqrt(50) = 7.1 -> 7 -> the divisor 4 of 32
        ((3, 28, 32), 1000, "shared", (14, 16)),  # per side: 28's largest divisor <= 16 is 14
        # independent channels: C coefficients per cell, sqrt(1000 / 12) = 9.1 -> 9 -> 8
        ((3, 32, 32), 1000, "independent", (8, 8)),
        ((3, 224, 224), 1000, "independent", (8, 8)),
        ((1, 28, 28), 1000, "independent", (14, 14)),  # sqrt(250) = 15.8 -> the divisor 14
        ((3, 32, 32), 200, "independent", (4, 4)),
        ((3, 28, 32), 1000, "independent", (7, 8)),  # 28 has no divisor in [4.5, 9] but 7
    ],
)
def test_default_grid_keeps_about_four_draws_per_coefficient_on_equal_cells(
    shape, n_samples, channels, grid
):
    from captum_ext.attr import LEG

    leg = LEG(lambda x: x.flatten(1).sum(1))
    leg.attribute(
        torch.rand(1, *shape), n_samples=n_samples, channels=channels, generator=torch.Generator()
    )
    got = leg.last_info["grid"][0]
    assert got == grid
    assert shape[1] % got[0] == 0 and shape[2] % got[1] == 0
    rows = shape[0] if channels == "independent" else 1
    # the side is rounded, so a little under four draws per coefficient is allowed (3.9 at 16)
    assert n_samples >= 3.5 * rows * got[0] * got[1]
