"""Input gradients and input-Hessian-vector products of a per-example loss.

Two operators with one interface, used by CASO (Singla et al., ICML 2019):

- :class:`AutogradHessian`: exact ``H v`` for any twice-differentiable model by double backward
  through a gradient graph that is built once (``create_graph=True``) and retained, so each
  product costs one backward pass of the gradient graph and no forward pass. It was chosen
  over ``torch.func`` forward-over-reverse (``jvp`` of ``grad``), ``vmap`` of it and
  ``autograd.grad(..., is_grads_batched=True)``, which were slower on the embedded
  ``small_cnn`` on a CPU.
- :class:`ClosedFormHessian`: ``H = J^T A J`` with ``J`` the logit Jacobian (``C`` backward passes
  once) and ``A`` the Hessian of the loss in the logits (``diag(p) - p p^T`` for
  cross-entropy). Exact for piecewise-linear networks (ReLU, max-pool, eval-mode batch norm;
  Prop. 1 of the paper); for other networks this is the Gauss-Newton approximation of ``H``.
  After the ``C`` passes every product is a matmul, without any model pass.

Both average over ``n`` base points per example (the Gaussian copies of SmoothCASO, Def. 4) and
act on a stack ``v`` of shape ``(N, K, d)``: the ``K`` vectors of example ``i`` are multiplied by
example ``i``'s (averaged) Hessian. ``d`` is the number of input entries per example (all input
tensors flattened and concatenated).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

#: ``row_logits(x_rows, example_index) -> logits``: ``x_rows`` is ``(R, d)`` flattened inputs,
#: ``example_index`` the ``(R,)`` example each row belongs to (for additional forward args).
RowLogits = Callable[[Tensor, Tensor], Tensor]
#: ``loss_fn(logits, target) -> (R,)`` per-row losses.
LossFn = Callable[[Tensor, Tensor], Tensor]


def check_logits(logits: Tensor, rows: int) -> None:
    """Raise ValueError unless ``logits`` is a finite ``(rows, C)`` tensor."""
    if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[0] != rows:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(
            f"forward_func must return logits of shape (batch, num_classes) = ({rows}, C), "
            f"got {shape}"
        )
    if not bool(torch.isfinite(logits).all()):
        raise ValueError("forward_func returned non-finite logits (NaN or inf)")


def _check_loss(loss: Tensor, rows: int) -> None:
    if not isinstance(loss, Tensor) or loss.shape != (rows,):
        shape = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
        raise ValueError(
            f"loss_fn(logits, target) must return per-example losses of shape ({rows},) "
            f"(e.g. reduction='none'), got {shape}"
        )
    if not bool(torch.isfinite(loss).all()):
        raise ValueError("loss_fn returned non-finite values (NaN or inf)")


def _chunks(total: int, size: int | None) -> list[tuple[int, int]]:
    step = total if size is None or size >= total else size
    return [(s, min(s + step, total)) for s in range(0, total, max(step, 1))]


class _Base:
    """Shared layout: base points ``xs`` ``(N, n, d)``, targets ``(N,)``, copy weights ``(N, n)``.

    ``weights`` (default all ones) multiply each base point's loss: SmoothCASO passes the
    relative loss scales of the copies when the loss itself is rescaled (see
    :mod:`captum_ext.attr._utils.context_aware`), so the average keeps Def. 4's weighting.
    """

    def __init__(
        self,
        row_logits: RowLogits,
        loss_fn: LossFn,
        xs: Tensor,
        target: Tensor,
        max_rows: int | None,
        weights: Tensor | None = None,
    ) -> None:
        self.row_logits = row_logits
        self.loss_fn = loss_fn
        self.xs = xs.detach()
        self.target = target
        self.max_rows = max_rows
        self.n_examples, self.n_copies, self.dim = xs.shape
        self.weights = weights

    def _rows(self, kc: int) -> tuple[Tensor, Tensor]:
        """Flattened rows ``(N*kc*n, d)`` (example-major, then vector, then copy), examples."""
        n, c, d = self.n_examples, self.n_copies, self.dim
        x = self.xs[:, None].expand(n, kc, c, d).reshape(-1, d)
        ex = torch.arange(n, device=x.device).repeat_interleave(kc * c)
        return x, ex

    def _row_weights(self, kc: int) -> Tensor | None:
        if self.weights is None:
            return None
        n, c = self.n_examples, self.n_copies
        return self.weights[:, None].expand(n, kc, c).reshape(-1)

    def _loss(self, x: Tensor, ex: Tensor, w: Tensor | None = None) -> Tensor:
        logits = self.row_logits(x, ex)
        check_logits(logits, x.shape[0])
        loss = self.loss_fn(logits, self.target[ex])
        _check_loss(loss, x.shape[0])
        return loss if w is None else loss * w.to(loss.dtype)


class AutogradHessian(_Base):
    """Exact input-Hessian-vector products by double backward (see the module docstring).

    Args:
        row_logits: See :data:`RowLogits`.
        loss_fn: See :data:`LossFn`.
        xs: Base points ``(N, n, d)`` (``n = 1`` without smoothing).
        target: ``(N,)`` class indices.
        max_rows: Rows per model pass (``internal_batch_size``). When a product needs more
            rows, it is computed chunk by chunk with the gradient graph rebuilt per chunk
            (bounded memory, more compute); otherwise one graph per stack width is retained.
    """

    def __init__(
        self,
        row_logits: RowLogits,
        loss_fn: LossFn,
        xs: Tensor,
        target: Tensor,
        max_rows: int | None = None,
        weights: Tensor | None = None,
    ) -> None:
        super().__init__(row_logits, loss_fn, xs, target, max_rows, weights)
        self._graphs: dict[int, tuple[Tensor, Tensor]] = {}

    def subset(self, idx: Tensor) -> AutogradHessian:
        """The operator restricted to the examples ``idx`` (its own graphs)."""
        parent = self.row_logits

        def row_logits(rows: Tensor, ex: Tensor) -> Tensor:
            return parent(rows, idx[ex])

        return AutogradHessian(
            row_logits, self.loss_fn, self.xs[idx], self.target[idx], self.max_rows,
            None if self.weights is None else self.weights[idx],
        )  # fmt: skip

    def _fits(self, kc: int) -> bool:
        return self.max_rows is None or self.n_examples * kc * self.n_copies <= self.max_rows

    def _graph(self, kc: int) -> tuple[Tensor, Tensor]:
        if kc not in self._graphs:
            if len(self._graphs) > 1:  # keep the width-1 graph and the latest one
                for key in [k for k in self._graphs if k != 1]:
                    del self._graphs[key]
            x, ex = self._rows(kc)
            x = x.clone().requires_grad_(True)
            loss = self._loss(x, ex, self._row_weights(kc))
            (g,) = torch.autograd.grad(loss.sum(), x, create_graph=True)
            self._graphs[kc] = (x, g)
        return self._graphs[kc]

    def gradient(self, hessian_next: bool = True) -> Tensor:
        """Loss gradients averaged over each example's base points: ``(N, d)``.

        Args:
            hessian_next: Build (and retain) the graph for later products in the same pass;
                ``False`` computes a plain gradient (first-order methods).
        """
        n, c, d = self.n_examples, self.n_copies, self.dim
        if hessian_next and self._fits(1):
            g = self._graph(1)[1].detach()
        else:
            x_all, ex_all = self._rows(1)
            w_all = self._row_weights(1)
            parts = []
            for s, e in _chunks(x_all.shape[0], self.max_rows):
                x = x_all[s:e].clone().requires_grad_(True)
                w = None if w_all is None else w_all[s:e]
                (gc,) = torch.autograd.grad(self._loss(x, ex_all[s:e], w).sum(), x)
                parts.append(gc)
            g = torch.cat(parts)
        return g.reshape(n, c, d).mean(1)

    def __call__(self, v: Tensor) -> Tensor:
        """``(N, K, d)`` products of each example's averaged Hessian with its ``K`` vectors."""
        n, kc, d = v.shape
        c = self.n_copies
        vv = v[:, :, None].expand(n, kc, c, d).reshape(-1, d)
        if self._fits(kc):
            x, g = self._graph(kc)
            hv = self._double_backward(g, x, vv)
        else:
            x_all, ex_all = self._rows(kc)
            w_all = self._row_weights(kc)
            parts = []
            for s, e in _chunks(x_all.shape[0], self.max_rows):
                x = x_all[s:e].clone().requires_grad_(True)
                w = None if w_all is None else w_all[s:e]
                loss = self._loss(x, ex_all[s:e], w)
                (g,) = torch.autograd.grad(loss.sum(), x, create_graph=True)
                parts.append(self._double_backward(g, x, vv[s:e]))
            hv = torch.cat(parts)
        return hv.reshape(n, kc, c, d).mean(2)

    @staticmethod
    def _double_backward(g: Tensor, x: Tensor, v: Tensor) -> Tensor:
        if not g.requires_grad:  # the gradient does not depend on x: H = 0
            return torch.zeros_like(v)
        (hv,) = torch.autograd.grad(g, x, v, retain_graph=True, allow_unused=True)
        return torch.zeros_like(v) if hv is None else hv.detach()


class ClosedFormHessian(_Base):
    """``H = J^T A J`` from the logit Jacobian (Singla et al. 2019, Prop. 1 and App. C).

    ``J`` (``C`` vector-Jacobian products per base point) and ``A = d^2 loss / d logits^2`` (by
    autograd in the ``C`` logits, so any ``loss_fn`` works) are computed once; the gradient is
    ``J^T d loss / d logits`` (exact for every network). Products are then three batched
    matmuls. Exact for piecewise-linear networks; the Gauss-Newton approximation otherwise.
    Memory: ``N * n * C * d`` numbers.

    Args:
        row_logits: See :data:`RowLogits`.
        loss_fn: See :data:`LossFn`.
        xs: Base points ``(N, n, d)``.
        target: ``(N,)`` class indices.
        max_rows: Rows per model pass when computing ``J``.
    """

    def __init__(
        self,
        row_logits: RowLogits,
        loss_fn: LossFn,
        xs: Tensor,
        target: Tensor,
        max_rows: int | None = None,
        weights: Tensor | None = None,
    ) -> None:
        super().__init__(row_logits, loss_fn, xs, target, max_rows, weights)
        x_all, ex_all = self._rows(1)
        w_all = self._row_weights(1)
        jac, hess, grads = [], [], []
        for s, e in _chunks(x_all.shape[0], max_rows):
            j, a, g = self._jacobian(x_all[s:e], ex_all[s:e], None if w_all is None else w_all[s:e])
            jac.append(j)
            hess.append(a)
            grads.append(g)
        n, c, d = self.n_examples, self.n_copies, self.dim
        j = torch.cat(jac)
        self.n_classes = j.shape[1]
        #: ``(N, n*C, d)`` logit Jacobians of each example's base points.
        self.jacobian = j.reshape(n, c * self.n_classes, d)
        #: ``(N, n, C, C)`` loss Hessians in the logits.
        self.logit_hessian = torch.cat(hess).reshape(n, c, self.n_classes, self.n_classes)
        self._grad = torch.cat(grads).reshape(n, c, d).mean(1)

    def _jacobian(self, x: Tensor, ex: Tensor, w: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        x = x.clone().requires_grad_(True)
        logits = self.row_logits(x, ex)
        check_logits(logits, x.shape[0])
        n_cls = logits.shape[1]
        rows = []
        for k in range(n_cls):
            (jk,) = torch.autograd.grad(
                logits[:, k].sum(), x, retain_graph=k < n_cls - 1, allow_unused=True
            )
            rows.append(torch.zeros_like(x) if jk is None else jk)
        jac = torch.stack(rows, 1).detach()
        z = logits.detach().requires_grad_(True)
        loss = self.loss_fn(z, self.target[ex])
        _check_loss(loss, x.shape[0])
        if w is not None:
            loss = loss * w.to(loss.dtype)
        (gz,) = torch.autograd.grad(loss.sum(), z, create_graph=True)
        cols = []
        for k in range(n_cls):
            if gz.requires_grad:
                (ak,) = torch.autograd.grad(
                    gz[:, k].sum(), z, retain_graph=k < n_cls - 1, allow_unused=True
                )
            else:
                ak = None
            cols.append(torch.zeros_like(z) if ak is None else ak)
        a = torch.stack(cols, 2).detach()
        a = 0.5 * (a + a.transpose(1, 2))
        g = torch.einsum("rkd,rk->rd", jac, gz.detach())
        return jac, a, g

    def gradient(self) -> Tensor:
        """Loss gradients averaged over each example's base points: ``(N, d)``."""
        return self._grad

    def subset(self, idx: Tensor) -> ClosedFormHessian:
        """The operator restricted to the examples ``idx`` (no model pass)."""
        sub = object.__new__(ClosedFormHessian)
        sub.__dict__.update(self.__dict__)
        sub.xs, sub.target = self.xs[idx], self.target[idx]
        sub.n_examples = int(idx.numel())
        sub.jacobian = self.jacobian[idx]
        sub.logit_hessian = self.logit_hessian[idx]
        sub._grad = self._grad[idx]
        sub.weights = None if self.weights is None else self.weights[idx]
        return sub

    def __call__(self, v: Tensor) -> Tensor:
        """``(N, K, d)`` products of each example's averaged Hessian with its ``K`` vectors."""
        n, kc, d = v.shape
        c, k = self.n_copies, self.n_classes
        u = torch.bmm(self.jacobian, v.transpose(1, 2))  # (N, n*C, K)
        w = torch.matmul(self.logit_hessian, u.reshape(n, c, k, kc))  # (N, n, C, K)
        out = torch.bmm(self.jacobian.transpose(1, 2), w.reshape(n, c * k, kc))  # (N, d, K)
        return out.transpose(1, 2) / c

    def dense(self) -> Tensor:
        """The averaged Hessians as dense ``(N, d, d)`` matrices (for tests, small ``d``)."""
        eye = torch.eye(self.dim, dtype=self.jacobian.dtype, device=self.jacobian.device)
        return self(eye.expand(self.n_examples, self.dim, self.dim).contiguous())
