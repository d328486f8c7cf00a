"""The partial eigensolver behind CASO's truncated closed form, against matrices of known spectrum.

Each matrix is ``Q diag(l) Q^T`` with a random orthogonal ``Q`` and a chosen spectrum, so the
pairs above the threshold are known without any eigensolver; the full ``torch.linalg.eigh`` is
the second, independent reference.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from captum_ext.attr._utils import logit_spectrum
from captum_ext.attr._utils.logit_spectrum import FIRST_K, leading_eigenpairs


def known(spectrum: list[np.ndarray], seed: int = 0) -> tuple[torch.Tensor, list[np.ndarray]]:
    """``(R, C, C)`` matrices with these spectra and their eigenvector matrices."""
    rng = np.random.default_rng(seed)
    mats, bases = [], []
    for lam in spectrum:
        q, _ = np.linalg.qr(rng.standard_normal((lam.size, lam.size)))
        mats.append((q * lam) @ q.T)
        bases.append(q)
    return torch.tensor(np.stack(mats)), bases


def plateau(c: int, top: list[float], tail: float) -> np.ndarray:
    """A classifier-like spectrum: a few large values, then ``c - len(top)`` near ``tail``."""
    rest = tail * np.linspace(0.5, 1.0, c - len(top))
    return np.concatenate([np.array(top), rest])


def check(lam: torch.Tensor, vec: torch.Tensor, a: torch.Tensor, spectra, tol: float):
    for r, spec in enumerate(spectra):
        want = np.sort(np.abs(spec))[::-1]
        n_kept = int((want > tol * want[0]).sum())
        got = lam[r].abs().numpy()
        assert got.shape[0] >= n_kept
        np.testing.assert_allclose(got[:n_kept], want[:n_kept], rtol=1e-10)
        # each kept vector is an eigenvector of its row: A v = l v
        v = vec[r, :, :n_kept]
        assert torch.allclose(a[r] @ v, v * lam[r, :n_kept], atol=1e-10 * want[0])
        assert torch.allclose(v.T @ v, torch.eye(n_kept, dtype=v.dtype), atol=1e-10)


def test_classifier_like_spectra_are_found_exactly():
    # the start block is shared by the rows: each row's result is also its result alone
    spectra = [
        plateau(300, [1.0, 0.3, 0.05, 1e-3], 1e-8),
        plateau(300, [2.0, -0.5, 1e-2], 1e-7),  # indefinite: a large negative pair is kept
        plateau(300, [1.0], 1e-9),
    ]
    a, bases = known(spectra)
    for tol in (1e-2, 1e-4, 1e-6):
        lam, vec = leading_eigenpairs(a, tol)
        check(lam, vec, a, spectra, tol)
        assert lam.shape[1] < 300 // 2  # the point: not every pair
        for r in range(3):
            alone = leading_eigenpairs(a[r : r + 1], tol)
            assert torch.allclose(alone[0][0], lam[r, : alone[0].shape[1]], rtol=1e-12)


def test_more_pairs_than_the_first_ask_double_k():
    # FIRST_K + 4 eigenvalues above the threshold, the last 4 far below the first FIRST_K:
    # FIRST_K columns converge to the first ones exactly, yet miss 4; 2 FIRST_K find them
    top = list(np.linspace(1.0, 0.5, FIRST_K)) + [2e-3, 1.5e-3, 1.2e-3, 1e-3]
    spectra = [plateau(400, top, 1e-9)]
    a, bases = known(spectra, seed=1)
    lam, vec = leading_eigenpairs(a, 1e-4)
    check(lam, vec, a, spectra, 1e-4)
    assert lam.shape[1] == 2 * FIRST_K


def test_a_dense_spectrum_falls_back_to_eigh_and_agrees_with_it():
    spectra = [np.linspace(1.0, 0.5, 150)]  # every pair is above tol: k would reach C / 2
    a, bases = known(spectra, seed=2)
    lam, vec = leading_eigenpairs(a, 1e-4)
    assert lam.shape[1] == 150
    check(lam, vec, a, spectra, 1e-4)
    full = torch.linalg.eigvalsh(a).abs().sort(1, descending=True).values
    assert torch.allclose(lam.abs(), full, rtol=1e-12)


def test_rows_needing_different_counts_are_padded_with_zero_pairs():
    many = list(np.geomspace(1, 1e-3, FIRST_K + 4))
    spectra = [plateau(200, [1.0], 1e-9), plateau(200, many, 1e-9)]
    a, bases = known(spectra, seed=3)
    lam, vec = leading_eigenpairs(a, 1e-4)
    check(lam, vec, a, spectra, 1e-4)
    assert lam.shape[1] == 2 * FIRST_K
    # the first row found FIRST_K pairs, the second 2 FIRST_K: zeros beyond its own
    assert bool((lam[0, FIRST_K:] == 0).all()) and bool((vec[0, :, FIRST_K:] == 0).all())


def test_zero_matrix_keeps_nothing_and_eigh_paths_are_exact():
    zero = torch.zeros(1, 100, 100, dtype=torch.float64)
    lam, _ = leading_eigenpairs(zero, 1e-4)
    assert bool((lam == 0).all())
    small, bases = known([np.array([3.0, -1.0, 1e-6, 0.0])])
    for tol in (0.0, 1e-4):  # tol = 0 and few classes: every pair, by eigh
        lam, vec = leading_eigenpairs(small, tol)
        assert lam.shape[1] == 4
        np.testing.assert_allclose(lam[0].numpy(), [3.0, -1.0, 1e-6, 0.0], atol=1e-12)


def test_deterministic_and_leaves_the_global_rng_alone():
    spectra = [plateau(200, [1.0, 0.1], 1e-8)]
    a, _ = known(spectra, seed=4)
    torch.manual_seed(7)
    np.random.seed(7)
    before = torch.get_rng_state(), np.random.get_state()[1].copy()
    first = leading_eigenpairs(a, 1e-4)
    after = torch.get_rng_state(), np.random.get_state()[1]
    assert torch.equal(before[0], after[0]) and np.array_equal(before[1], after[1])
    second = leading_eigenpairs(a, 1e-4)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


def test_no_convergence_falls_back_to_eigh(monkeypatch):
    monkeypatch.setattr(logit_spectrum, "RESIDUAL_TOL", 0.0)  # no Ritz pair is ever accepted
    spectra = [plateau(200, [1.0, 0.1], 1e-8)]
    a, bases = known(spectra, seed=5)
    lam, vec = leading_eigenpairs(a, 1e-4)
    assert lam.shape[1] == 200
    check(lam, vec, a, spectra, 1e-4)


@pytest.mark.parametrize("c", [65, 1000])
def test_cross_entropy_hessian_of_many_classes_matches_eigh(c):
    # the matrix CASO actually decomposes: diag(p) - p p^T for a peaked softmax
    z = torch.randn(2, c, generator=torch.Generator().manual_seed(c), dtype=torch.float64) * 6
    p = z.softmax(1)
    a = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    lam, vec = leading_eigenpairs(a, 1e-4)
    full = torch.linalg.eigvalsh(a).abs().sort(1, descending=True).values
    for r in range(2):
        n_kept = int((full[r] > 1e-4 * full[r, 0]).sum())
        assert torch.allclose(lam[r, :n_kept].abs(), full[r, :n_kept], rtol=1e-9)
        v = vec[r, :, :n_kept]
        assert torch.allclose(a[r] @ v, v * lam[r, :n_kept], atol=1e-12)
