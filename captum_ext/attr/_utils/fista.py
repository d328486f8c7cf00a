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
    p = _Problems(hvp, g, lam1, lam2, g.new_zeros(n, k, d), 64 * torch.finfo(g.dtype).eps)
    state = _Iterates(p.zeros)
    n_hvp = 0
    trace: list[dict[str, Tensor]] = []
    for it in range(1, n_iter + 1):
        v, hv = state.extrapolate(it, monotone)
        grad = 2 * lam2[..., None] * v - g
        if hvp is not None:
            grad = grad - hv
        if step == "fixed":
            t = 1.0 / (2 * lam2)
        else:
            t = torch.full((n, k), float(lr), dtype=g.dtype, device=g.device)
        new_b, new_hd, t, calls = _line_search(p, v, grad, t, backtrack, max_backtracks)
        n_hvp += calls
        new_hb = hv + new_hd
        if record:
            trace.append(
                {"F_v": p.objective(v, hv), "F_b": p.objective(new_b, new_hb), "t": t.clone()}
            )
        state.advance(new_b, new_hb, monotone, p)
        if record:
            trace[-1]["F"] = p.objective(state.b, state.hb)
        if on_iteration is not None:
            on_iteration()
    return FistaResult(b=state.b, hb=state.hb, n_hvp=n_hvp, trace=trace)


@dataclass
class _Problems:
    """The fixed data of one :func:`fista` call, broadcast to the ``(N, K, ...)`` stack."""

    hvp: HVP | None
    g: Tensor
    lam1: Tensor
    lam2: Tensor
    zeros: Tensor
    rtol: float

    def objective(self, b: Tensor, hb: Tensor) -> Tensor:
        """``F`` of every problem at ``b`` (see :func:`objective`)."""
        return objective(b, hb, self.g, self.lam1, self.lam2)


class _Iterates:
    """The FISTA / MFISTA iterates and their cached Hessian products."""

    def __init__(self, zeros: Tensor) -> None:
        self.b, self.b_prev, self.hb, self.hb_prev = zeros, zeros, zeros, zeros
        self.z, self.hz = zeros, zeros
        self.t_mom, self.t_mom_next = 1.0, 1.0

    def extrapolate(self, it: int, monotone: bool) -> tuple[Tensor, Tensor]:
        """The point ``V`` of iteration ``it`` and ``H V``, combined from cached products."""
        b, b_prev, hb, hb_prev = self.b, self.b_prev, self.hb, self.hb_prev
        if monotone:
            # MFISTA: y = b + (t_k / t_{k+1}) (z - b) + ((t_k - 1) / t_{k+1}) (b - b_prev).
            a1 = self.t_mom / self.t_mom_next if it > 1 else 0.0
            a2 = (self.t_mom - 1.0) / self.t_mom_next if it > 1 else 0.0
            v = b + a1 * (self.z - b) + a2 * (b - b_prev)
            hv = hb + a1 * (self.hz - hb) + a2 * (hb - hb_prev)
        else:
            mu = (it - 2) / (it + 1)
            v = b + mu * (b - b_prev)
            hv = hb + mu * (hb - hb_prev)
        return v, hv

    def advance(self, new_b: Tensor, new_hb: Tensor, monotone: bool, p: _Problems) -> None:
        """Take the prox point (MFISTA: where it does not increase ``F``)."""
        if monotone:
            f_new = p.objective(new_b, new_hb)
            f_old = p.objective(self.b, self.hb)
            keep_new = (f_new <= f_old)[..., None]
            self.z, self.hz = new_b, new_hb
            self.b_prev, self.hb_prev = self.b, self.hb
            self.b = torch.where(keep_new, new_b, self.b)
            self.hb = torch.where(keep_new, new_hb, self.hb)
            t_next = self.t_mom_next
            self.t_mom, self.t_mom_next = t_next, (1.0 + math.sqrt(1.0 + 4.0 * t_next**2)) / 2.0
        else:
            self.b_prev, self.hb_prev = self.b, self.hb
            self.b, self.hb = new_b, new_hb


def _line_search(
    p: _Problems, v: Tensor, grad: Tensor, t: Tensor, backtrack: float, max_backtracks: int
) -> tuple[Tensor, Tensor, Tensor, int]:
    """Backtrack the prox step from ``v`` per problem until sufficient decrease holds.

    Returns:
        ``(B', H (B' - V), t, n_hvp)``: the accepted prox points, the products of their steps,
        the accepted step sizes and the batched HVP calls spent.

    Raises:
        RuntimeError: See :func:`fista`.
    """
    n_hvp = 0
    zeros = p.zeros
    new_b, new_hd = zeros, zeros
    pending = torch.ones(t.shape, dtype=torch.bool, device=v.device)
    for _ in range(max_backtracks + 1):
        cand = soft_threshold(v - t[..., None] * grad, (t * p.lam1)[..., None])
        dvec = torch.where(pending[..., None], cand - v, zeros)
        if p.hvp is None:
            hd = zeros
        elif bool((dvec != 0).any()):
            hd = p.hvp(dvec)
            n_hvp += 1
        else:
            hd = zeros
        dd = _dot(dvec, dvec)
        dhd = _dot(dvec, hd)
        lam2 = p.lam2
        ok = pending & (2 * lam2 * dd - dhd <= dd / t + p.rtol * (2 * lam2 * dd + dhd.abs()))
        new_b = torch.where(ok[..., None], cand, new_b)
        new_hd = torch.where(ok[..., None], hd, new_hd)
        pending = pending & ~ok
        if not bool(pending.any()):
            return new_b, new_hd, t, n_hvp
        t = torch.where(pending, t * backtrack, t)
    raise RuntimeError(
        f"FISTA backtracking found no sufficient decrease after {max_backtracks} "
        "halvings: the Hessian-vector products are not finite or the objective is "
        "badly scaled; check the model and raise lambda2 (or c1)"
    )
