"""The closed-form CASO Hessian restricted to the leading eigen-directions of the logit Hessian.

Checked against the exact input Hessian from ``torch.autograd.functional.hessian`` (an
independent computation) on float64 ReLU networks, where ``J^T A J`` is exact, and against the
full closed form (every class) with its operator-norm bound ``max_dropped |l_r| * ||J||_2^2``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from small_nets import tiny_batch, tiny_relu
from test_caso import ce, exact_grad_hess, row_logits
from torch import nn

from captum_ext.attr import CASO
from captum_ext.attr._utils.context_aware import _scaled_cross_entropy
from captum_ext.attr._utils.hvp import ClosedFormHessian
from captum_ext.benchmark import saturated

D_IN, CLASSES = 6, 200


def many_class_relu(seed: int = 0, scale: float = 80.0) -> nn.Module:
    """A float64 ReLU MLP with 200 classes; ``scale`` spreads the logits (std ~9 at 80: top
    probability 0.5-0.99, the competing classes' softmax with a long tail, like an ImageNet
    head's)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = nn.Sequential(
            nn.Linear(D_IN, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, CLASSES)
        ).double()
    with torch.no_grad():
        net[-1].weight.mul_(scale)
    return net.eval()


def test_zero_tol_keeps_the_whole_spectrum_and_equals_the_exact_hessian():
    model, x = tiny_relu(), tiny_batch()
    t = model(x).argmax(1)
    g, h = exact_grad_hess(model, x, t)
    op = ClosedFormHessian(row_logits(model), ce, x[:, None], t, tol=0.0)
    assert torch.allclose(op.dense(), h, atol=1e-12)
    assert torch.allclose(op.gradient(), g, atol=1e-12)


def test_truncation_error_obeys_the_stated_bound_and_shrinks_with_tol():
    model = many_class_relu()
    x = torch.randn(4, D_IN, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    t = model(x).argmax(1)
    full = ClosedFormHessian(row_logits(model), ce, x[:, None], t)
    h_full = full.dense()
    assert torch.allclose(h_full, exact_grad_hess(model, x, t)[1], atol=1e-10)
    jac = torch.stack(
        [torch.autograd.functional.jacobian(lambda z: model(z[None])[0], xi) for xi in x]
    )
    j_norm2 = torch.linalg.matrix_norm(jac, ord=2) ** 2
    a = full.logit_hessian[:, 0]
    mags = torch.linalg.eigvalsh(a).abs().sort(1, descending=True).values
    errors = []
    for tol in (1e-2, 1e-4, 1e-6):
        op = ClosedFormHessian(row_logits(model), ce, x[:, None], t, tol=tol)
        err = torch.linalg.matrix_norm(op.dense() - h_full, ord=2)
        # each row keeps the eigenvalues above tol times its largest; the bound is its largest
        # dropped one times ||J||^2
        keep = (mags > tol * mags[:, :1]).sum(1)
        dropped = torch.cat([mags, torch.zeros_like(mags[:, :1])], 1).gather(1, keep[:, None])
        assert bool((err <= dropped[:, 0] * j_norm2 * (1 + 1e-9) + 1e-12).all())
        assert op.rank == int(keep.max())
        assert torch.allclose(op.gradient(), full.gradient(), atol=1e-12)
        errors.append(float((err / torch.linalg.matrix_norm(h_full, ord=2)).max()))
        assert op.rank < CLASSES // 2  # the point: far fewer passes than classes
    assert errors[0] > errors[1] > errors[2]


def test_a_loss_linear_in_the_logits_needs_no_direction():
    model, x = many_class_relu(), tiny_batch(3)[:, :D_IN]
    t = torch.tensor([0, 5, 7])
    op = ClosedFormHessian(
        row_logits(model), lambda z, tt: z.gather(1, tt[:, None])[:, 0], x[:, None], t, tol=1e-4
    )
    assert op.rank == 0
    assert bool((op.dense() == 0).all())
    jac_t = torch.stack(
        [
            torch.autograd.functional.jacobian(lambda z: model(z[None])[0], xi)[ti]
            for xi, ti in zip(x, t)
        ]
    )
    assert torch.allclose(op.gradient(), jac_t, atol=1e-12)


def test_saturated_rescaled_loss_is_truncated_like_the_plain_one():
    # the stable cross-entropy CASO uses (divided by 1 - p_y) on a confident head: the rescaled
    # spectrum is O(1) however saturated the softmax, so the rule keeps a few directions
    base = many_class_relu()
    x = torch.randn(32, D_IN, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    x = x[base(x).softmax(1).amax(1) > 0.9][:3]
    model = saturated(base)  # logits x 20
    t = model(x).argmax(1)
    full = ClosedFormHessian(row_logits(model), _scaled_cross_entropy, x[:, None], t)
    op = ClosedFormHessian(row_logits(model), _scaled_cross_entropy, x[:, None], t, tol=1e-4)
    rel = torch.linalg.matrix_norm(op.dense() - full.dense(), ord=2) / torch.linalg.matrix_norm(
        full.dense(), ord=2
    )
    assert x.shape[0] == 3
    assert float(model(x).detach().softmax(1).amax(1).min()) > 1 - 1e-12
    assert op.rank < CLASSES // 4
    assert float(rel.max()) < 1e-3


def test_caso_default_tol_matches_every_class_and_reports_the_rank():
    model = many_class_relu()
    x = torch.randn(3, D_IN, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    caso = CASO(model)
    full = caso.attribute(x, hessian="closed_form", hessian_tol=None, lambda1=1e-3)
    assert caso.last_info["hessian_rank"] == CLASSES
    trunc = caso.attribute(x, hessian="closed_form", lambda1=1e-3)
    assert caso.last_info["hessian_rank"] < CLASSES // 2
    hvp = caso.attribute(x, hessian="hvp", lambda1=1e-3)
    for other in (full, hvp):
        cos = F.cosine_similarity(trunc, other, dim=1)
        assert bool((cos > 0.999).all())


@pytest.mark.parametrize("tol", [-0.1, 1.0, float("nan"), "1e-4", True])
def test_bad_hessian_tol_is_a_value_error_naming_it(tol):
    model, x = tiny_relu(), tiny_batch(2)
    with pytest.raises(ValueError, match="hessian_tol"):
        CASO(model).attribute(x, hessian="closed_form", hessian_tol=tol)


def test_truncation_is_per_base_point_so_chunking_does_not_change_the_operator():
    model = many_class_relu()
    x = torch.randn(4, D_IN, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    t = model(x).argmax(1)
    whole = ClosedFormHessian(row_logits(model), ce, x[:, None], t, tol=1e-3)
    single = ClosedFormHessian(row_logits(model), ce, x[:, None], t, tol=1e-3, max_rows=1)
    assert torch.allclose(whole.dense(), single.dense(), atol=1e-12)
    assert torch.allclose(whole.gradient(), single.gradient(), atol=1e-12)
    # the rows need different numbers of directions: the batch computes the most any needs
    one = [x[i : i + 1, None] for i in range(4)]
    counts = [
        ClosedFormHessian(row_logits(model), ce, xi, t[i : i + 1], tol=1e-3).rank
        for i, xi in enumerate(one)
    ]
    assert len(set(counts)) > 1
    assert whole.rank == max(counts)
