"""The leading eigenpairs of the logit Hessians that CASO's truncated closed form keeps.

:class:`captum_ext.attr._utils.hvp.ClosedFormHessian` with ``tol`` keeps, per base point, the
eigen-directions of ``A = d^2 loss / d logits^2`` whose ``|eigenvalue|`` exceeds ``tol`` times
the largest: a handful for a trained classifier's cross-entropy (its spectrum is a few large
values and a plateau of tiny ones). A full ``eigh`` of a 1,000 x 1,000 ``A`` costs about 1.4
Saliency calls of a ResNet-18 at 224 x 224 on a CPU; ARPACK's Lanczos
(``scipy.sparse.linalg.eigsh``) finds the few that are kept in a fifth to a half of that, to
rounding (measured in ``benchmarks/bench_caso_classes.py``).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.sparse.linalg import ArpackNoConvergence, eigsh
from torch import Tensor

#: Up to this many classes (or on a GPU) a full ``eigh`` is used: it is then as fast.
DENSE_CLASSES = 64

#: Eigenpairs asked of the partial solver first; doubled while the smallest one found is still
#: above the threshold.
FIRST_K = 8


def leading_eigenpairs(a: Tensor, tol: float) -> tuple[Tensor, Tensor]:
    """Every eigenpair of each symmetric ``a[r]`` with ``|l| > tol * max |l|``, and maybe more.

    Args:
        a: ``(R, C, C)`` symmetric matrices.
        tol: The relative threshold, in ``[0, 1)``.

    Returns:
        ``(l, v)``: ``(R, m)`` eigenvalues sorted by ``|l|``, largest first, and ``(R, C, m)``
        unit eigenvectors (columns). A row found with fewer than ``m`` pairs is padded with
        zero eigenvalues and zero vectors, which a threshold ``tol * max |l| >= 0`` never keeps.

    With ``tol == 0``, at most ``DENSE_CLASSES`` classes, or ``a`` not on the CPU this is
    ``torch.linalg.eigh`` (all ``C`` pairs). Otherwise each row asks ``eigsh`` for the ``k =
    FIRST_K, 2 FIRST_K, ...`` eigenvalues of largest magnitude until the smallest of them is at
    most the threshold: the pairs above it are then all among the ``k`` found. A row that needs
    ``k >= C / 2``, or where ARPACK does not converge, gets ``eigh``. The Lanczos start vector
    comes from a fixed local seed: results are deterministic and the global RNG is untouched.
    """
    rows, n_cls, _ = a.shape
    if tol == 0 or n_cls <= DENSE_CLASSES or a.device.type != "cpu":
        return _sorted(*torch.linalg.eigh(a))
    start = np.random.default_rng(0).standard_normal(n_cls)
    found = [_partial(m, tol, start) for m in a.double().numpy()]
    width = max(lam.shape[0] for lam, _ in found)
    lam_out = a.new_zeros(rows, width)
    vec_out = a.new_zeros(rows, n_cls, width)
    for r, (lam, vec) in enumerate(found):
        lam_out[r, : lam.shape[0]] = torch.from_numpy(lam).to(a.dtype)
        vec_out[r, :, : lam.shape[0]] = torch.from_numpy(vec).to(a.dtype)
    return lam_out, vec_out


def _partial(m: np.ndarray, tol: float, start: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One row's pairs (sorted by ``|l|``, largest first), by ``eigsh`` or ``eigh``."""
    n_cls = m.shape[0]
    if not np.any(m):
        return np.zeros(1), np.zeros((n_cls, 1))
    k = FIRST_K
    while 2 * k < n_cls:
        try:
            lam, vec = eigsh(m, k=k, which="LM", v0=start)
        except ArpackNoConvergence:
            break
        order = np.argsort(-np.abs(lam), kind="stable")
        lam, vec = lam[order], vec[:, order]
        if abs(lam[-1]) <= tol * abs(lam[0]):
            return lam, vec
        k *= 2
    lam, vec = np.linalg.eigh(m)
    order = np.argsort(-np.abs(lam), kind="stable")
    return lam[order], vec[:, order]


def _sorted(lam: Tensor, vec: Tensor) -> tuple[Tensor, Tensor]:
    """Eigenpairs ``(R, C)``, ``(R, C, C)`` reordered by ``|l|``, largest first."""
    order = lam.abs().argsort(1, descending=True)
    return lam.gather(1, order), vec.gather(2, order[:, None, :].expand_as(vec))
