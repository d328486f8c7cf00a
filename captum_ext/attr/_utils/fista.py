"""Proximal solvers for the CAFO/CASO objectives: soft-thresholding, power iteration, FISTA.

Every routine works on a stack of independent problems laid out as ``(N, K, d)``: ``N``
examples, ``K`` problems per example (for instance one per ``lambda1`` value) and ``d`` flattened
input entries. Problems of one example share that example's Hessian, which is only touched
through ``hvp(v) -> H v`` on an ``(N, K, d)`` stack. Nothing couples two problems: step sizes,
line searches and stopping are per problem, so a result never depends on what else is in the
batch.

The objective is written as a minimisation,

    F(B) = S(B) + lambda1 ||B||_1,   S(B) = -g^T B - 1/2 B^T H B + lambda2 ||B||_2^2,

which is minus the CASO objective of Singla et al. (ICML 2019, Def. 3). ``grad S(B) =
2 lambda2 B - g - H B``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

HVP = Callable[[Tensor], Tensor]


def soft_threshold(a: Tensor, tau: Tensor | float) -> Tensor:
    """The proximal map of ``tau ||.||_1``: ``sign(a) * max(|a| - tau, 0)``.

    Args:
        a: Any tensor.
        tau: Non-negative threshold, broadcastable to ``a``.

    Returns:
        A tensor shaped like ``a`` with exact zeros where ``|a| <= tau``.

    Examples:
        >>> soft_threshold(torch.tensor([-2.0, 0.5, 3.0]), 1.0)
        tensor([-1.,  0.,  2.])
    """
    return torch.sign(a) * torch.clamp(a.abs() - tau, min=0.0)


def _dot(a: Tensor, b: Tensor) -> Tensor:
    return (a * b).sum(-1)


def objective(b: Tensor, hb: Tensor, g: Tensor, lambda1: Tensor, lambda2: Tensor) -> Tensor:
    """``F(B)`` of every problem (the negated CASO objective), given the cached ``H B``.

    Args:
        b: Iterates ``(N, K, d)``.
        hb: ``H B`` for the same stack.
        g: Gradients ``(N, 1, d)`` or ``(N, K, d)``.
        lambda1: ``(N, K)``.
        lambda2: ``(N, 1)`` or ``(N, K)``.

    Returns:
        ``(N, K)`` values.
    """
    return -_dot(g, b) - 0.5 * _dot(b, hb) + lambda2 * _dot(b, b) + lambda1 * b.abs().sum(-1)


def power_iteration(hvp: HVP, v0: Tensor, n_iter: int) -> tuple[Tensor, int, bool]:
    """Estimate the largest eigenvalue of each example's Hessian by power iteration.

    Runs ``h = H v; rho = v^T h; v = h / ||h||`` ``n_iter`` times from the unit vectors ``v0``.
    Power iteration finds the eigenvalue of largest magnitude; where it is negative (an
    indefinite Hessian, e.g. smooth activations), a second run on ``H - rho I`` recovers the top
    of the spectrum and the estimate is ``max(0, rho' + rho)``. Ten iterations underestimate the
    top eigenvalue; CASO's margin ``c1`` absorbs this (Singla et al. 2019, Sec. 3.1).

    Args:
        hvp: ``(N, 1, d) -> (N, 1, d)`` Hessian-vector products.
        v0: ``(N, 1, d)`` start vectors (normalised here).
        n_iter: Number of iterations (>= 1).

    Returns:
        ``(top, n_hvp, indefinite)``: the estimates ``(N,)`` (0 where ``H v`` vanishes), the
        number of batched HVP calls spent, and whether a negative eigenvalue was seen.
    """
    rho, n_hvp = _power(hvp, v0, n_iter, shift=None)
    negative = rho < 0
    indefinite = bool(negative.any())
    if indefinite:
        shift = torch.where(negative, rho, torch.zeros_like(rho))
        rho2, extra = _power(hvp, v0, n_iter, shift=shift)
        n_hvp += extra
        rho = torch.where(negative, torch.clamp(rho2 + shift, min=0.0), rho)
    return rho, n_hvp, indefinite


def _power(hvp: HVP, v0: Tensor, n_iter: int, shift: Tensor | None) -> tuple[Tensor, int]:
    v = v0 / v0.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(v0.dtype).tiny)
    rho = torch.zeros(v0.shape[0], dtype=v0.dtype, device=v0.device)
    for _ in range(n_iter):
        h = hvp(v)
        if shift is not None:
            h = h - shift[:, None, None] * v
        rho = _dot(v, h)[:, 0]
        norm = h.norm(dim=-1, keepdim=True)
        zero = norm <= 0
        v = torch.where(zero, v, h / norm.clamp_min(torch.finfo(v0.dtype).tiny))
        rho = torch.where(zero[:, 0, 0], torch.zeros_like(rho), rho)
    return rho, n_iter


@dataclass
class FistaResult:
    """Output of :func:`fista`.

    Attributes:
        b: Final iterates ``(N, K, d)``.
        hb: ``H b`` (free: products are combined linearly, never recomputed).
        n_hvp: Batched HVP calls spent.
        trace: Per iteration, a dict with ``F_v`` (objective at the extrapolated point),
            ``F_b`` (objective at the accepted prox point), ``F`` (objective at the iterate
            kept), ``t`` (accepted steps); only filled when ``record=True``.
    """

    b: Tensor
    hb: Tensor
    n_hvp: int
    trace: list[dict[str, Tensor]] = field(default_factory=list)


def fista(
    hvp: HVP | None,
    g: Tensor,
    lambda1: Tensor,
    lambda2: Tensor,
    n_iter: int = 10,
    lr: float = 0.1,
    backtrack: float = 0.5,
    step: str = "backtrack",
    monotone: bool = False,
    max_backtracks: int = 30,
    record: bool = False,
    on_iteration: Callable[[], None] | None = None,
) -> FistaResult:
    """Minimise ``F`` for every problem of the stack with FISTA (Beck & Teboulle 2009).

    Starts from ``B = 0``. Iteration ``k`` extrapolates ``V = B + (k-2)/(k+1) (B - B_prev)``
    (``H V`` is combined from cached products, no HVP), then tries ``B' = S_{t lambda1}(V - t
    grad S(V))`` with ``t = lr``, halving ``t`` (factor ``backtrack``) per problem until the
    sufficient-decrease test ``2 lambda2 ||d||^2 - d^T H d <= ||d||^2 / t`` holds (``d = B' -
    V``; for this quadratic it is exactly ``S(B') <= S(V) + <grad S(V), d> + ||d||^2/(2t)``).
    One HVP per trial. ``step="fixed"`` starts every line search at ``t = 1/(2 lambda2)``
    instead: when ``H`` is positive semidefinite ``grad S`` is ``2 lambda2``-Lipschitz, so the
    test (free: it reuses the trial's product) always passes and each iteration costs exactly
    one HVP; for an indefinite ``H`` the step still halves until the test holds, so the
    guarantee is the same as for ``"backtrack"``.
    ``monotone=True`` is Beck & Teboulle's MFISTA: the iterate is the better of the previous
    iterate and the prox point, so ``F`` never increases.

    Args:
        hvp: ``(N, K, d) -> (N, K, d)`` products with each example's Hessian; ``None`` drops
            the Hessian term (CAFO).
        g: ``(N, 1, d)`` gradients (shared by the example's problems) or ``(N, K, d)``.
        lambda1: ``(N, K)`` L1 weights (>= 0).
        lambda2: ``(N, 1)`` or ``(N, K)`` L2 weights (> 0).
        n_iter: Iterations (>= 1).
        lr: First trial step of every iteration (the paper's learning rate 0.1).
        backtrack: Step decay per failed trial, in (0, 1).
        step: ``"backtrack"`` or ``"fixed"``.
        monotone: MFISTA instead of FISTA.
        max_backtracks: Failed trials per iteration before giving up.
        record: Fill :attr:`FistaResult.trace`.
        on_iteration: Called once per iteration (progress bars).

    Returns:
        A :class:`FistaResult`.

    Raises:
        RuntimeError: When ``max_backtracks`` halvings do not give sufficient decrease
            (non-finite products; for finite ones the test always passes for small ``t``).
    """
    n, k = lambda1.shape
    d = g.shape[-1]
    lam1 = lambda1.to(g.dtype)
    lam2 = lambda2.to(g.dtype).expand(n, k)
    g = g.expand(n, k, d)
    zeros = g.new_zeros(n, k, d)
    b, b_prev, hb, hb_prev = zeros, zeros, zeros, zeros
    n_hvp = 0
    trace: list[dict[str, Tensor]] = []
    rtol = 64 * torch.finfo(g.dtype).eps
    t_mom, t_mom_next = 1.0, 1.0
    z, hz = zeros, zeros
    for it in range(1, n_iter + 1):
        if monotone:
            # MFISTA: y = b + (t_k / t_{k+1}) (z - b) + ((t_k - 1) / t_{k+1}) (b - b_prev).
            a1 = t_mom / t_mom_next if it > 1 else 0.0
            a2 = (t_mom - 1.0) / t_mom_next if it > 1 else 0.0
            v = b + a1 * (z - b) + a2 * (b - b_prev)
            hv = hb + a1 * (hz - hb) + a2 * (hb - hb_prev)
        else:
            mu = (it - 2) / (it + 1)
            v = b + mu * (b - b_prev)
            hv = hb + mu * (hb - hb_prev)
        grad = 2 * lam2[..., None] * v - g
        if hvp is not None:
            grad = grad - hv
        if step == "fixed":
            t = 1.0 / (2 * lam2)
        else:
            t = torch.full((n, k), float(lr), dtype=g.dtype, device=g.device)
        new_b, new_hd = zeros, zeros
        pending = torch.ones(n, k, dtype=torch.bool, device=g.device)
        for _ in range(max_backtracks + 1):
            cand = soft_threshold(v - t[..., None] * grad, (t * lam1)[..., None])
            dvec = torch.where(pending[..., None], cand - v, zeros)
            if hvp is None:
                hd = zeros
            elif bool((dvec != 0).any()):
                hd = hvp(dvec)
                n_hvp += 1
            else:
                hd = zeros
            dd = _dot(dvec, dvec)
            dhd = _dot(dvec, hd)
            ok = pending & (2 * lam2 * dd - dhd <= dd / t + rtol * (2 * lam2 * dd + dhd.abs()))
            new_b = torch.where(ok[..., None], cand, new_b)
            new_hd = torch.where(ok[..., None], hd, new_hd)
            pending = pending & ~ok
            if not bool(pending.any()):
                break
            t = torch.where(pending, t * backtrack, t)
        else:
            raise RuntimeError(
                f"FISTA backtracking found no sufficient decrease after {max_backtracks} "
                "halvings: the Hessian-vector products are not finite or the objective is "
                "badly scaled; check the model and raise lambda2 (or c1)"
            )
        new_hb = hv + new_hd
        if record:
            trace.append(
                {
                    "F_v": objective(v, hv, g, lam1, lam2),
                    "F_b": objective(new_b, new_hb, g, lam1, lam2),
                    "t": t.clone(),
                }
            )
        if monotone:
            f_new = objective(new_b, new_hb, g, lam1, lam2)
            f_old = objective(b, hb, g, lam1, lam2)
            keep_new = (f_new <= f_old)[..., None]
            z, hz = new_b, new_hb
            b_prev, hb_prev = b, hb
            b = torch.where(keep_new, new_b, b)
            hb = torch.where(keep_new, new_hb, hb)
            t_mom, t_mom_next = t_mom_next, (1.0 + math.sqrt(1.0 + 4.0 * t_mom_next**2)) / 2.0
        else:
            b_prev, hb_prev = b, hb
            b, hb = new_b, new_hb
        if record:
            trace[-1]["F"] = objective(b, hb, g, lam1, lam2)
        if on_iteration is not None:
            on_iteration()
    return FistaResult(b=b, hb=hb, n_hvp=n_hvp, trace=trace)
