"""CASO's ``hessian="auto"``: the closed form where it is exact, double backward elsewhere.

The closed form ``H = J^T A J`` (:class:`~captum_ext.attr._utils.hvp.ClosedFormHessian`) is
exact for piecewise-linear networks and needs ``k + 1`` backward passes, after which every
product is a matmul; double backward (:class:`~captum_ext.attr._utils.hvp.AutogradHessian`) is
exact for any network but costs about two Saliency passes per vector and product (CASO's
default lambda1 rule makes ~100 of them). Which networks are piecewise linear cannot be read off
the modules (``forward`` may call any function), so it is measured: for each example both
operators are applied to one check vector (the unit gradient plus a fixed unit Gaussian vector,
the same for every example, so the choice does not depend on batch position) and the closed form
is used where the relative difference is at most ``check_tol``. That costs one gradient graph and
one double-backward product, which the ``hvp`` route reuses where the check fails. A model whose
softmax is flat over many classes would need more than ``max_rank`` directions: the closed form
is then not built (one forward pass spent) and every example takes double backward.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Union

import torch
from torch import Tensor

from captum_ext.attr._utils.hvp import (
    AutogradHessian,
    ClosedFormHessian,
    LossFn,
    RankExceeded,
    RowLogits,
)

#: Most logit directions ``hessian="auto"`` lets the closed form keep (its memory is
#: ``k * d`` numbers per base point; its cost ``k + 1`` backward passes).
AUTO_MAX_RANK = 64
#: Largest relative difference between the two operators' products on the check vector for
#: which ``hessian="auto"`` uses the closed form. Float32 double backward and the closed form
#: of a ReLU network differ by ~1e-6 (plus the ``hessian_tol`` truncation, ~1e-5 at 1e-4); a
#: smooth network's curvature term ``sum_c (d loss / d z_c) grad^2 z_c`` is typically 1e-2-1.
AUTO_CHECK_TOL = 1e-3

Operator = Union[AutogradHessian, ClosedFormHessian, "RoutedHessian"]


class RoutedHessian:
    """Examples flagged in ``closed`` use ``closed_op``, the others ``exact_op``.

    Both operators cover all ``N`` examples; each is restricted to its own examples (no model
    pass: :class:`AutogradHessian` builds its graphs when first used).
    """

    def __init__(
        self, closed_op: ClosedFormHessian, exact_op: AutogradHessian, closed: Tensor
    ) -> None:
        self.closed = closed.cpu()
        self._full = (closed_op, exact_op)
        dev = closed_op.xs.device
        self._ic = self.closed.nonzero().flatten().to(dev)
        self._ih = (~self.closed).nonzero().flatten().to(dev)
        self._closed_op = closed_op.subset(self._ic)
        self._exact_op = exact_op.subset(self._ih)

    def gradient(self) -> Tensor:
        """Loss gradients ``(N, d)``, each from its example's operator."""
        gc, gh = self._closed_op.gradient(), self._exact_op.gradient()
        out = gc.new_empty(self.closed.numel(), gc.shape[1])
        out[self._ic], out[self._ih] = gc, gh
        return out

    def __call__(self, v: Tensor) -> Tensor:
        """``(N, K, d)`` products, each example by its own operator."""
        out = torch.empty_like(v)
        out[self._ic] = self._closed_op(v[self._ic])
        out[self._ih] = self._exact_op(v[self._ih])
        return out

    def subset(self, idx: Tensor) -> Operator:
        """The operator restricted to the examples ``idx``."""
        closed_op, exact_op = self._full
        sel = self.closed[idx.cpu()]
        if bool(sel.all()):
            return closed_op.subset(idx)
        if not bool(sel.any()):
            return exact_op.subset(idx)
        return RoutedHessian(closed_op.subset(idx), exact_op.subset(idx), sel)


@dataclass(frozen=True)
class HessianChoice:
    """What :func:`choose_hessian` picked.

    Attributes:
        operator: The operator to use (closed form, double backward, or per example).
        closed_form: ``(N,)`` bool on the CPU: the examples that use the closed form.
        check_error: ``(N,)`` float64 relative difference of the two products on the check
            vector (``inf`` where the closed form was not built).
        rank: Directions the closed form kept (or would have kept when over ``max_rank``).
    """

    operator: Operator
    closed_form: Tensor
    check_error: Tensor
    rank: int


def check_vector(gradient: Tensor) -> Tensor:
    """``(N, 1, d)``: each example's unit gradient plus one fixed unit Gaussian vector."""
    n, d = gradient.shape
    fixed = torch.randn(d, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    fixed = (fixed / fixed.norm()).to(gradient)
    norm = gradient.norm(dim=1, keepdim=True)
    unit = torch.where(norm > 0, gradient / norm.clamp_min(1e-30), torch.zeros_like(gradient))
    return (unit + fixed)[:, None]


def relative_difference(approx: Tensor, exact: Tensor) -> Tensor:
    """Per example ``||approx - exact|| / ||exact||`` in float64 (0/0 = 0, x/0 = inf)."""
    num = (approx - exact).double().flatten(1).norm(dim=1)
    den = exact.double().flatten(1).norm(dim=1)
    zero = torch.where(num > 0, torch.full_like(num, math.inf), torch.zeros_like(num))
    return torch.where(den > 0, num / den.clamp_min(1e-300), zero).cpu()


def choose_hessian(
    row_logits: RowLogits,
    loss_fn: LossFn,
    xs: Tensor,
    target: Tensor,
    max_rows: int | None,
    weights: Tensor | None,
    tol: float | None,
) -> HessianChoice:
    """Pick the closed form per example where it matches double backward (module docstring).

    Args:
        row_logits: See :data:`~captum_ext.attr._utils.hvp.RowLogits`.
        loss_fn: See :data:`~captum_ext.attr._utils.hvp.LossFn`.
        xs: Base points ``(N, n, d)``.
        target: ``(N,)`` class indices.
        max_rows: Rows per model pass.
        weights: Copy weights ``(N, n)`` or ``None``.
        tol: The closed form's ``hessian_tol``.

    The limits are :data:`AUTO_MAX_RANK` and :data:`AUTO_CHECK_TOL`.
    """
    n = xs.shape[0]
    exact = AutogradHessian(row_logits, loss_fn, xs, target, max_rows, weights)
    try:
        closed = ClosedFormHessian(
            row_logits, loss_fn, xs, target, max_rows, weights, tol=tol, max_rank=AUTO_MAX_RANK
        )
    except RankExceeded as err:
        never = torch.zeros(n, dtype=torch.bool)
        unchecked = torch.full((n,), math.inf, dtype=torch.float64)
        return HessianChoice(exact, never, unchecked, err.rank)
    v = check_vector(closed.gradient())
    error = relative_difference(closed(v), exact(v))
    use = error <= AUTO_CHECK_TOL
    op: Operator
    if bool(use.all()):
        op = closed
    elif not bool(use.any()):
        op = exact
    else:  # a fresh double-backward operator: the check's graph covers every example
        fresh = exact.subset(torch.arange(n, device=xs.device))
        op = RoutedHessian(closed, fresh, use)
    return HessianChoice(op, use, error, closed.rank)
