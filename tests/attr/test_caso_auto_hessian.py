"""CASO's ``hessian="auto"``: the closed form exactly where it equals the true Hessian.

The references are independent: ``torch.autograd.functional.hessian`` per example, and CASO's
own ``hessian="hvp"`` / ``"closed_form"`` routes (each tested against that reference in
``test_caso.py``). The non-piecewise-linear cases are built so that the closed form (the
Gauss-Newton part ``J^T A J``) is wrong by a known term.
"""

from __future__ import annotations

import math

import pytest
import torch
from small_nets import C, D, tiny_batch, tiny_relu
from test_caso import ce, exact_grad_hess, row_logits
from torch import nn

from captum_ext.attr import CASO
from captum_ext.attr._utils.hessian_choice import (
    AUTO_CHECK_TOL,
    AUTO_MAX_RANK,
    check_vector,
    choose_hessian,
)


class GatedQuadratic(nn.Module):
    """A ReLU net plus ``0.5 * s * x0^2`` on every logit of the rows with ``x1 > 0``.

    The gate is piecewise constant, so rows with ``x1 <= 0`` are piecewise linear (closed form
    exact) and the others have logits with Hessian ``s e0 e0^T`` (closed form wrong by
    ``sum_c (d loss / d z_c) s e0 e0^T``, non-zero where the logits' weights differ per class).
    """

    def __init__(self, s: float = 3.0) -> None:
        super().__init__()
        self.body = tiny_relu()
        self.s = s
        gen = torch.Generator().manual_seed(4)
        self.w = nn.Parameter(torch.randn(C, generator=gen, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = (x[:, 1:2] > 0).to(x.dtype)
        return self.body(x) + 0.5 * self.s * gate * x[:, :1] ** 2 * self.w


def _inputs(model: nn.Module) -> torch.Tensor:
    x = tiny_batch()
    assert x.shape[1] == D and x.dtype == torch.float64
    return x


def _net(hidden: nn.Module, classes: int) -> nn.Module:
    """A seeded float64 MLP ``D -> 16 -> classes`` (the global RNG is left as it was)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(D, 16), hidden, nn.Linear(16, classes)).double().eval()


def test_relu_net_takes_the_closed_form_and_it_is_the_exact_hessian():
    model = tiny_relu()
    x = _inputs(model)
    t = model(x).argmax(1)
    choice = choose_hessian(row_logits(model), ce, x[:, None], t, None, None, tol=0.0)
    assert bool(choice.closed_form.all())
    assert float(choice.check_error.max()) < 1e-10
    _, h = exact_grad_hess(model, x, t)
    eye = torch.eye(x.shape[1], dtype=x.dtype).expand(x.shape[0], -1, -1).contiguous()
    assert torch.allclose(choice.operator(eye), h, atol=1e-10)
    caso = CASO(model)
    auto = caso.attribute(x, target=t)
    assert bool(caso.last_info["closed_form"].all())
    closed = CASO(model).attribute(x, target=t, hessian="closed_form")
    assert torch.equal(auto, closed)


def test_gated_rows_are_routed_and_every_example_gets_its_true_hessian():
    model = GatedQuadratic()
    x = _inputs(model)
    x[:, 1] = torch.linspace(-1.0, 1.0, x.shape[0], dtype=x.dtype) + 0.1
    t = model(x).argmax(1)
    smooth_rows = x[:, 1] > 0
    choice = choose_hessian(row_logits(model), ce, x[:, None], t, None, None, tol=0.0)
    assert torch.equal(choice.closed_form, ~smooth_rows)
    # the check measured a real difference where the closed form is wrong
    assert float(choice.check_error[smooth_rows].min()) > AUTO_CHECK_TOL
    _, h = exact_grad_hess(model, x, t)
    eye = torch.eye(x.shape[1], dtype=x.dtype).expand(x.shape[0], -1, -1).contiguous()
    assert torch.allclose(choice.operator(eye), h, atol=1e-10)
    # ... and so does every sub-batch the lambda1 rule asks for
    idx = torch.tensor([0, 1, 3])
    assert torch.allclose(choice.operator.subset(idx)(eye[idx]), h[idx], atol=1e-10)
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    caso = CASO(model)
    batch = caso.attribute(x, target=t, generator=gen())
    assert torch.equal(caso.last_info["closed_form"], ~smooth_rows)
    hvp = CASO(model).attribute(x, target=t, hessian="hvp", generator=gen())
    assert torch.allclose(batch, hvp, atol=1e-8)
    for i in range(x.shape[0]):  # an example's map does not depend on its batch neighbours
        alone = CASO(model).attribute(x[i : i + 1], target=t[i : i + 1], generator=gen())
        assert torch.allclose(alone, batch[i : i + 1], atol=1e-10)


def test_a_smooth_net_takes_double_backward():
    model = _net(nn.Softplus(beta=2), 5)
    x = _inputs(model)
    t = model(x).argmax(1)
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    caso = CASO(model)
    auto = caso.attribute(x, target=t, generator=gen())
    assert not bool(caso.last_info["closed_form"].any())
    assert float(caso.last_info["hessian_check"].min()) > AUTO_CHECK_TOL
    hvp = CASO(model).attribute(x, target=t, hessian="hvp", generator=gen())
    closed = CASO(model).attribute(x, target=t, hessian="closed_form", generator=gen())
    assert torch.equal(auto, hvp)
    assert not torch.allclose(auto, closed, atol=1e-6)  # the route matters on this net


def test_a_flat_softmax_over_many_classes_skips_the_closed_form():
    classes = 3 * AUTO_MAX_RANK
    model = _net(nn.ReLU(), classes)
    with torch.no_grad():
        model[-1].weight.mul_(1e-2)  # near-uniform softmax: every direction of A matters
    x = _inputs(model)
    t = model(x).argmax(1)
    choice = choose_hessian(row_logits(model), ce, x[:, None], t, None, None, tol=1e-4)
    assert choice.rank > AUTO_MAX_RANK
    assert not bool(choice.closed_form.any())
    assert bool(torch.isinf(choice.check_error).all())
    _, h = exact_grad_hess(model, x, t)
    eye = torch.eye(x.shape[1], dtype=x.dtype).expand(x.shape[0], -1, -1).contiguous()
    assert torch.allclose(choice.operator(eye), h, atol=1e-10)


def test_check_vector_is_the_unit_gradient_plus_one_fixed_direction():
    g = torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    v = check_vector(g)[:, 0]
    fixed = v[1]
    assert math.isclose(float(fixed.norm()), 1.0, rel_tol=1e-12)
    assert torch.allclose(v[0] - fixed, torch.tensor([0.6, 0.8, 0.0], dtype=torch.float64))
    assert torch.equal(check_vector(g[:1]), check_vector(g)[:1])  # not per batch position


def test_bad_hessian_names_the_argument():
    model = tiny_relu()
    with pytest.raises(ValueError, match="hessian"):
        CASO(model).attribute(_inputs(model), hessian="exact")


@pytest.mark.parametrize("route", ["blocks", "loop"])
def test_logit_hessian_by_blocks_or_the_fallback_loop_is_exact(monkeypatch, route):
    from captum_ext.attr._utils import hvp
    from captum_ext.attr._utils.hvp import ClosedFormHessian

    if route == "blocks":  # several vmapped blocks of columns instead of one
        monkeypatch.setattr(hvp, "_HESSIAN_BLOCK_NUMBERS", 2 * 5 * C)
    else:  # as if the loss had an operation vmap cannot batch
        real = torch.autograd.grad

        def no_batching(*args, **kwargs):
            if kwargs.get("is_grads_batched"):
                raise RuntimeError("no batching rule")
            return real(*args, **kwargs)

        monkeypatch.setattr(torch.autograd, "grad", no_batching)
    model = tiny_relu()
    x = _inputs(model)
    t = model(x).argmax(1)
    op = ClosedFormHessian(row_logits(model), ce, x[:, None], t, tol=0.0)
    _, h = exact_grad_hess(model, x, t)
    assert torch.allclose(op.dense(), h, atol=1e-12)
