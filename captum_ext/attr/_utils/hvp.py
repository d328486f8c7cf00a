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
import torch.nn.functional as F
from torch import Tensor

from captum_ext.attr._utils.contract import check_logits, chunks
from captum_ext.attr._utils.logit_spectrum import leading_eigenpairs

#: ``row_logits(x_rows, example_index) -> logits``: ``x_rows`` is ``(R, d)`` flattened inputs,
#: ``example_index`` the ``(R,)`` example each row belongs to (for additional forward args).
RowLogits = Callable[[Tensor, Tensor], Tensor]
#: ``loss_fn(logits, target) -> (R,)`` per-row losses.
LossFn = Callable[[Tensor, Tensor], Tensor]


def check_hessian_tol(tol: object) -> None:
    """Raise ValueError unless ``tol`` is None or a float in ``[0, 1)`` (not a bool)."""
    if tol is not None and (
        isinstance(tol, bool) or not isinstance(tol, (int, float)) or not 0 <= tol < 1
    ):
        raise ValueError(f"hessian_tol must be None or a float in [0, 1), got {tol!r}")


def _check_loss(loss: Tensor, rows: int) -> None:
    if not isinstance(loss, Tensor) or loss.shape != (rows,):
        shape = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
        raise ValueError(
            f"loss_fn(logits, target) must return per-example losses of shape ({rows},) "
            f"(e.g. reduction='none'), got {shape}"
        )
    if not bool(torch.isfinite(loss).all()):
        raise ValueError("loss_fn returned non-finite values (NaN or inf)")


class RankExceeded(Exception):
    """:class:`ClosedFormHessian` would keep more logit directions than its ``max_rank``."""

    def __init__(self, rank: int) -> None:
        super().__init__(f"the closed form would keep {rank} logit directions")
        self.rank = rank


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
            for s, e in chunks(x_all.shape[0], self.max_rows):
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
            for s, e in chunks(x_all.shape[0], self.max_rows):
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

    ``A = d^2 loss / d logits^2`` (by autograd in the ``C`` logits, so any ``loss_fn`` works)
    and the gradient ``J^T d loss / d logits`` are computed once per base point; products are
    then three batched matmuls without any model pass. Exact for piecewise-linear networks
    (ReLU, max-pool, eval-mode batch norm); the Gauss-Newton approximation otherwise.

    With ``tol=None`` the ``C`` rows of ``J`` are computed (``C`` vector-Jacobian products per
    base point, ``N * n * C * d`` numbers): 1,000 backward passes for an ImageNet classifier.
    With ``tol`` the operator is built in ``A``'s eigenbasis instead: ``A = V diag(l) V^T``
    gives ``H = sum_r l_r (J^T v_r)(J^T v_r)^T``, and only the directions with ``|l_r| > tol *
    max |l|`` are kept, per base point (found by a partial eigensolver for many classes, see
    :mod:`captum_ext.attr._utils.logit_spectrum`; a chunk of rows computes as many products as
    its most demanding row needs, with zero weight on the rest, so chunking does not change
    ``H``). The dropped part is ``J^T M J`` with ``||M||_2 <= tol ||A||_2``, so ``||H - H_k||_2
    <= tol ||A||_2 ||J||_2^2``. Each kept direction costs one vector-Jacobian product ``J^T
    v_r``, and the gradient one more. For the cross-entropy of a trained classifier ``A``'s
    spectrum follows the softmax of the competing classes: a few large eigenvalues and a plateau
    of tiny ones (the classes the example is nothing like), which is dropped. A loss linear in
    the logits (``A = 0``) keeps no direction: ``H = 0`` exactly. :attr:`rank` holds the most
    kept by a chunk.

    Args:
        row_logits: See :data:`RowLogits`.
        loss_fn: See :data:`LossFn`.
        xs: Base points ``(N, n, d)``.
        target: ``(N,)`` class indices.
        max_rows: Rows per model pass when computing ``J``.
        weights: See :class:`_Base`.
        tol: ``None`` (every class) or the relative eigenvalue below which a direction of
            ``A`` is dropped, in ``[0, 1)``.
        max_rank: Raise :class:`RankExceeded` (after one forward pass, before any backward
            pass) when a chunk would keep more directions than this; ``None``: no limit.
    """

    def __init__(
        self,
        row_logits: RowLogits,
        loss_fn: LossFn,
        xs: Tensor,
        target: Tensor,
        max_rows: int | None = None,
        weights: Tensor | None = None,
        tol: float | None = None,
        max_rank: int | None = None,
    ) -> None:
        super().__init__(row_logits, loss_fn, xs, target, max_rows, weights)
        check_hessian_tol(tol)
        self.tol = tol
        x_all, ex_all = self._rows(1)
        w_all = self._row_weights(1)
        jac, hess, grads = [], [], []
        # chunk by chunk, so that one chunk's graph is alive at a time (``max_rows``)
        for s, e in chunks(x_all.shape[0], max_rows):
            w = None if w_all is None else w_all[s:e]
            x, logits, gz, basis, a = self._logit_problem(x_all[s:e], ex_all[s:e], w)
            if max_rank is not None and basis.shape[2] > max_rank:
                raise RankExceeded(int(basis.shape[2]))
            j, g = self._products(x, logits, gz, basis)
            jac.append(j)
            hess.append(a)
            grads.append(g)
        #: Basis vectors kept (``C`` classes, or the most eigenpairs of ``A`` kept by a chunk).
        self.rank = max(int(j.shape[1]) for j in jac)
        # chunks that kept fewer directions get zero ones (zero J^T v and eigenvalue: exact)
        jac = [F.pad(j, (0, 0, 0, self.rank - j.shape[1])) for j in jac]
        hess = [F.pad(a, (0, self.rank - a.shape[2], 0, self.rank - a.shape[1])) for a in hess]
        n, c, d = self.n_examples, self.n_copies, self.dim
        #: ``(N, n*k, d)``: ``J^T`` applied to each base point's ``k`` basis vectors.
        self.jacobian = torch.cat(jac).reshape(n, c * self.rank, d)
        #: ``(N, n, k, k)`` loss Hessians in the logits, in that basis.
        self.logit_hessian = torch.cat(hess).reshape(n, c, self.rank, self.rank)
        self._grad = torch.cat(grads).reshape(n, c, d).mean(1)

    def _logit_problem(
        self, x: Tensor, ex: Tensor, w: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """One forward pass of a chunk: inputs, logits, ``d loss / dz``, basis and ``A``."""
        x = x.clone().requires_grad_(True)
        logits = self.row_logits(x, ex)
        check_logits(logits, x.shape[0])
        if self.tol is None:
            gz, a = self._logit_derivatives(logits.detach(), ex, w)
            eye = torch.eye(a.shape[1], dtype=a.dtype, device=a.device)
            return x, logits, gz, eye.expand_as(a), a
        # float64 logits: the spectrum's tail is then the loss's, not float32 rounding (which
        # would put ~1e-8 on every one of C eigenvalues and defeat a small tol)
        gz, a = self._logit_derivatives(logits.detach().double(), ex, w)
        gz = gz.to(logits.dtype)
        lam, vec = leading_eigenpairs(a, self.tol)  # sorted by |l|, largest first
        # keep every direction whose |l_r| exceeds tol * max |l| (sorted: a prefix)
        mags = lam.abs()
        kept = mags > self.tol * mags[:, :1]  # per row, so chunking does not change the result
        keep = int(kept.sum(1).max())
        lam = torch.where(kept, lam, torch.zeros_like(lam))[:, :keep]
        basis = vec[:, :, :keep].to(logits.dtype)
        return x, logits, gz, basis, torch.diag_embed(lam).to(logits.dtype)

    def _logit_derivatives(
        self, logits: Tensor, ex: Tensor, w: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """``d loss / dz`` ``(R, C)`` and ``A = d^2 loss / dz^2`` ``(R, C, C)`` (symmetrised)."""
        z = logits.requires_grad_(True)
        loss = self.loss_fn(z, self.target[ex])
        _check_loss(loss, z.shape[0])
        if w is not None:
            loss = loss * w.to(loss.dtype)
        (gz,) = torch.autograd.grad(loss.sum(), z, create_graph=True)
        if not gz.requires_grad:  # a loss linear in the logits: A = 0
            return gz.detach(), torch.zeros(*z.shape, z.shape[1], dtype=z.dtype, device=z.device)
        a = _logit_hessian_columns(gz, z).detach()
        return gz.detach(), 0.5 * (a + a.transpose(1, 2))

    def _products(
        self, x: Tensor, logits: Tensor, gz: Tensor, basis: Tensor
    ) -> tuple[Tensor, Tensor]:
        """``J^T`` applied to each basis column ``(R, k, d)`` and to ``gz`` ``(R, d)``."""
        vectors = [basis[:, :, r] for r in range(basis.shape[2])]
        if self.tol is not None:  # the gradient needs its own pass outside the class basis
            vectors.append(gz)
        rows = []
        for i, v in enumerate(vectors):
            (jv,) = torch.autograd.grad(
                logits, x, v.to(logits.dtype), retain_graph=i < len(vectors) - 1,
                allow_unused=True,
            )  # fmt: skip
            rows.append(torch.zeros_like(x) if jv is None else jv)
        g = rows.pop() if self.tol is not None else None
        jac = torch.stack(rows, 1).detach() if rows else x.new_zeros(x.shape[0], 0, x.shape[1])
        if g is None:
            g = torch.einsum("rkd,rk->rd", jac, gz)
        return jac, g.detach()

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
        c, k = self.n_copies, self.rank
        u = torch.bmm(self.jacobian, v.transpose(1, 2))  # (N, n*C, K)
        w = torch.matmul(self.logit_hessian, u.reshape(n, c, k, kc))  # (N, n, C, K)
        out = torch.bmm(self.jacobian.transpose(1, 2), w.reshape(n, c * k, kc))  # (N, d, K)
        return out.transpose(1, 2) / c

    def dense(self) -> Tensor:
        """The averaged Hessians as dense ``(N, d, d)`` matrices (for tests, small ``d``)."""
        eye = torch.eye(self.dim, dtype=self.jacobian.dtype, device=self.jacobian.device)
        return self(eye.expand(self.n_examples, self.dim, self.dim).contiguous())


#: Numbers per batched backward over the logits when building ``A`` (columns x rows x classes).
_HESSIAN_BLOCK_NUMBERS = 1 << 24


def _logit_hessian_columns(gz: Tensor, z: Tensor) -> Tensor:
    """``(R, C, C)`` with ``[:, :, k] = d gz[:, k] / dz``: columns in vmapped backward passes.

    ``autograd.grad(..., is_grads_batched=True)`` computes a block of columns per call (one
    vmapped pass over the small logits-to-loss graph instead of one Python-level pass per
    class); a ``loss_fn`` that ``vmap`` cannot batch gets the column-by-column loop.
    """
    rows, n_cls = z.shape
    block = max(1, min(n_cls, _HESSIAN_BLOCK_NUMBERS // max(1, rows * n_cls)))
    eye = torch.eye(n_cls, dtype=z.dtype, device=z.device)
    cols = []
    try:
        for s, stop in chunks(n_cls, block):
            e = eye[s:stop, None, :].expand(-1, rows, n_cls)
            (ak,) = torch.autograd.grad(
                gz, z, e, retain_graph=True, is_grads_batched=True, allow_unused=True
            )
            cols.append(torch.zeros_like(e) if ak is None else ak)
    except RuntimeError:  # an operation without a batching rule
        cols = []
        for k in range(n_cls):
            (ak,) = torch.autograd.grad(gz[:, k].sum(), z, retain_graph=True, allow_unused=True)
            cols.append((torch.zeros_like(z) if ak is None else ak)[None])
    return torch.cat(cols).permute(1, 2, 0)
