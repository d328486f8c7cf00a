"""CAFO and CASO against exact Hessians, closed forms, Theorem 5 and the Captum contract."""

from __future__ import annotations

import dataclasses
import inspect
import warnings

import pytest
import torch
import torch.nn.functional as F
from captum.attr import NoiseTunnel
from captum.metrics import infidelity, sensitivity_max
from small_nets import C, D, tiny_batch, tiny_relu
from torch import nn

from captum_ext.attr import CAFO, CASO
from captum_ext.attr._utils.context_aware import ContextAwareSettings
from captum_ext.attr._utils.fista import soft_threshold
from captum_ext.attr._utils.hvp import AutogradHessian, ClosedFormHessian


def exact_grad_hess(model: nn.Module, x: torch.Tensor, t: torch.Tensor):
    gs, hs = [], []
    for xi, ti in zip(x, t):

        def loss(z, ti=ti):
            return F.cross_entropy(model(z[None]), ti[None])

        gs.append(torch.autograd.functional.jacobian(loss, xi))
        hs.append(torch.autograd.functional.hessian(loss, xi))
    return torch.stack(gs), torch.stack(hs)


def row_logits(model):
    return lambda rows, ex: model(rows)


def ce(z, t):
    return F.cross_entropy(z, t, reduction="none")


# ------------------------------------------------------------------- Hessian operators
def test_closed_form_and_hvp_equal_autograd_hessian_on_relu_net():
    model, x = tiny_relu(), tiny_batch()
    t = model(x).argmax(1)
    g, h = exact_grad_hess(model, x, t)
    cf = ClosedFormHessian(row_logits(model), ce, x[:, None], t)
    assert torch.allclose(cf.dense(), h, atol=1e-12)
    assert torch.allclose(cf.gradient(), g, atol=1e-12)
    ag = AutogradHessian(row_logits(model), ce, x[:, None], t)
    v = torch.randn(5, 3, D, dtype=torch.float64)
    assert torch.allclose(ag(v), torch.einsum("nij,nkj->nki", h, v), atol=1e-12)
    assert torch.allclose(ag.gradient(), g, atol=1e-12)
    chunked = AutogradHessian(row_logits(model), ce, x[:, None], t, max_rows=4)
    assert torch.allclose(chunked(v), ag(v), atol=1e-12)


def test_smooth_operators_average_exact_hessians_over_copies():
    model, x = tiny_relu(), tiny_batch(3)
    t = torch.tensor([0, 1, 2])
    xs = x[:, None] + 0.3 * torch.randn(3, 4, D, dtype=torch.float64)
    hs = torch.stack([exact_grad_hess(model, xs[:, j], t)[1] for j in range(4)], 1).mean(1)
    cf = ClosedFormHessian(row_logits(model), ce, xs, t)
    assert torch.allclose(cf.dense(), hs, atol=1e-12)
    v = torch.randn(3, 2, D, dtype=torch.float64)
    ag = AutogradHessian(row_logits(model), ce, xs, t)
    assert torch.allclose(ag(v), torch.einsum("nij,nkj->nki", hs, v), atol=1e-12)


# ---------------------------------------------------------------------- closed forms
@pytest.mark.parametrize("hessian", ["hvp", "closed_form"])
def test_caso_lambda1_zero_equals_inverse_formula(hessian):
    model, x = tiny_relu(), tiny_batch()
    t = model(x).argmax(1)
    g, h = exact_grad_hess(model, x, t)
    caso = CASO(model)
    out = caso.attribute(x, target=t, lambda1=0.0, n_iter=300, hessian=hessian, abs=False)
    lam2 = caso.last_info["lambda2"]
    # every knob is in units of u = max |g|: the objective of g / u and H / u
    u = g.abs().amax(1)
    assert torch.allclose(
        caso.last_info["gradient_unit"] * torch.exp(caso.last_info["log_loss_scale"]), u, rtol=1e-9
    )
    top = torch.linalg.eigvalsh(h)[:, -1] / u
    assert torch.allclose(lam2, top / 2 + 10.0, rtol=1e-3)  # power iteration ~ exact
    eye = torch.eye(D, dtype=torch.float64)
    exact = torch.linalg.solve(
        2 * lam2[:, None, None] * eye - h / u[:, None, None], (g / u[:, None])[..., None]
    )[..., 0]
    assert torch.allclose(out, exact, rtol=1e-9, atol=1e-14)


def test_cafo_is_soft_threshold_over_two_lambda2_for_every_lambda1():
    model, x = tiny_relu(), tiny_batch()
    t = model(x).argmax(1)
    g, _ = exact_grad_hess(model, x, t)
    g = g / g.abs().amax(1, keepdim=True)  # lambda1 and lambda2 are in units of max |g|
    values = [0.0, 1e-3, 1e-2, 5e-2, 0.2]
    cafo = CAFO(model)
    path = cafo.lambda1_path(x, values, target=t, lambda2=3.0, abs=False)
    for lam, attr in zip(values, path):
        assert torch.allclose(attr, soft_threshold(g, lam) / 6.0, atol=1e-15)
        single = cafo.attribute(x, target=t, lambda1=lam, abs=False)  # lambda2 = c1 = 10
        assert torch.allclose(single, soft_threshold(g, lam) / 20.0, atol=1e-15)
        assert torch.equal(cafo.last_info["eta"], (single == 0).double().mean(1))
        # the default returns the paper's importance values |Delta*|, as lambda1_path does
        assert torch.equal(cafo.attribute(x, target=t, lambda1=lam), single.abs())
        assert torch.equal(cafo.lambda1_path(x, [lam], target=t, lambda2=3.0)[0], attr.abs())


def test_hvp_and_closed_form_give_the_same_caso_on_relu_nets(shapes_model, shapes_batch):
    model, x = tiny_relu(), tiny_batch()
    a = CASO(model).attribute(x, hessian="hvp")
    b = CASO(model).attribute(x, hessian="closed_form")
    assert torch.allclose(a, b, atol=1e-12)
    # small_cnn (ReLU, max-pool, eval batch norm) is piecewise linear: the closed form is exact
    net, images = shapes_model.model.eval(), shapes_batch[0][:2]
    ca, cb = CASO(net), CASO(net)
    a = ca.attribute(images, hessian="hvp", lambda1=1e-3)
    b = cb.attribute(images, hessian="closed_form", lambda1=1e-3)
    assert torch.allclose(ca.last_info["top_eigenvalue"], cb.last_info["top_eigenvalue"], rtol=1e-3)
    assert (a - b).norm() <= 1e-3 * b.norm()


def test_theorem5_caso_parallel_to_cafo_only_at_high_confidence():
    torch.manual_seed(0)
    d, n_cls = 20, 1000
    w = torch.randn(n_cls, d, dtype=torch.float64) * torch.logspace(-1, 0.8, d, dtype=torch.float64)
    x = torch.randn(6, d, dtype=torch.float64)

    def model_with_margin(c: float):
        # logits exactly c * e_0 at x: p = [1 - (C-1) eps, eps, ..., eps] as in Thm. 4/5
        def f(inp):
            z = (inp - x) @ w.T
            return z + c * F.one_hot(torch.tensor(0), n_cls).double()

        return f

    cosines = {}
    for c in (0.0, 20.0):
        f = model_with_margin(c)
        # c1 is in units of max |g| (about 10 here at uniform p, where the top Hessian
        # eigenvalue is about 40): c1 = 1 keeps lambda2 comparable to L / 2, as the old
        # absolute c1 = 10 did, so the Hessian term can matter at all
        caso = CASO(f).attribute(
            x, target=0, lambda1=0.0, n_iter=100, hessian="hvp", c1=1.0, abs=False
        )
        cafo = CAFO(f).attribute(x, target=0, lambda1=0.0, abs=False)
        cosines[c] = F.cosine_similarity(caso, cafo, dim=1)
    assert float(torch.softmax(model_with_margin(20.0)(x), 1)[:, 0].min()) > 0.999
    assert bool((cosines[20.0] > 0.99).all())
    assert bool((cosines[0.0] < 0.97).all())  # uniform p: the Hessian term matters


# ---------------------------------------------------------------------- lambda1 rule
def test_auto_lambda1_lands_in_window_and_follows_the_grid_rule(shapes_model, shapes_batch):
    net, images = shapes_model.model.eval(), shapes_batch[0][:4]
    caso = CASO(net)
    caso.attribute(images, hessian="closed_form", lambda1_rule="paper")
    info = dict(caso.last_info)
    assert bool(info["in_window"].all())
    assert bool(((info["eta"] >= 0.75) & (info["eta"] < 1.0)).all())
    grid = [0.0, 1e-5, 1e-4, 1e-3, 6.25e-3, 1.25e-2, 2.5e-2, 5e-2]
    caso.lambda1_path(images, grid, hessian="closed_form")
    eta, loss = caso.last_info["eta"], caso.last_info["loss"]
    for i in range(4):
        inside = [k for k in range(len(grid)) if 0.75 <= eta[i, k] < 1.0]
        if inside:  # step 2 of the rule: the highest surrogate loss among grid solutions
            best = max(inside, key=lambda k: (float(loss[i, k]), -grid[k]))
            assert float(info["lambda1"][i]) == grid[best]


def test_batched_lambda1_sweep_equals_a_loop():
    model, x = tiny_relu(), tiny_batch()
    values = [0.0, 1e-3, 1e-2, 3e-2, 0.1]
    for hessian in ("hvp", "closed_form"):
        caso = CASO(model)
        path = caso.lambda1_path(x, values, hessian=hessian, step="backtrack")
        for lam, attr in zip(values, path):
            single = caso.attribute(x, lambda1=lam, hessian=hessian, step="backtrack")
            assert torch.allclose(attr, single, rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("cls", [CAFO, CASO])
def test_lambda1_path_defaults_are_those_of_attribute(cls):
    # lambda1_path fills the knobs not given from these tables, not from attribute's signature
    skip = {"self", "inputs", "target", "additional_forward_args", "lambda1"}
    params = inspect.signature(cls.attribute).parameters
    signature = {name: p.default for name, p in params.items() if name not in skip}
    shared = {f.name: f.default for f in dataclasses.fields(ContextAwareSettings)}
    del shared["lambda1"]
    assert signature == {**shared, **cls._option_defaults}
    model, x = tiny_relu(), tiny_batch(2)
    (path,) = cls(model).lambda1_path(x, [1e-2])
    assert torch.equal(path, cls(model).attribute(x, lambda1=1e-2))
    with pytest.raises(TypeError, match=r"lambda1_path: \['lambda_2'\]"):
        cls(model).lambda1_path(x, [1e-2], lambda_2=1.0)


# ------------------------------------------------------------------- Captum contract
def test_results_do_not_depend_on_batch_composition_and_target_format():
    model, x = tiny_relu(), tiny_batch(8)
    t = [0, 1, 2, 3, 0, 1, 2, 3]
    for method in (CAFO(model), CASO(model)):
        batch = method.attribute(x, target=t)
        assert torch.equal(method.attribute(x, target=torch.tensor(t)), batch)
        for i in (0, 5):
            one = method.attribute(x[i : i + 1], target=t[i])
            assert torch.allclose(one[0], batch[i], rtol=1e-9, atol=1e-15)
        pred = model(x).argmax(1)
        assert torch.equal(method.attribute(x), method.attribute(x, target=pred))


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = tiny_relu()

    def forward(self, a, b, scale):
        return self.net(torch.cat([a, b.flatten(1)], 1)) * scale


def test_tuple_inputs_span_one_joint_problem():
    model, x = TwoInputs(), tiny_batch(4)
    a, b = x[:, :2], x[:, 2:].reshape(4, 2, 2)
    scale = torch.full((4, 1), 1.5, dtype=torch.float64)
    flat = lambda z: model.net(z) * 1.5  # noqa: E731
    for cls in (CAFO, CASO):
        out = cls(model).attribute((a, b), additional_forward_args=(scale,), target=1)
        assert isinstance(out, tuple) and out[0].shape == a.shape and out[1].shape == b.shape
        ref = cls(flat).attribute(x, target=1)
        assert torch.allclose(torch.cat([out[0], out[1].flatten(1)], 1), ref, atol=1e-14)


def test_noise_tunnel_sensitivity_and_infidelity(shapes_model, shapes_batch):
    net, images = shapes_model.model.eval(), shapes_batch[0][:2]
    caso = CASO(net)
    kw = {"hessian": "closed_form", "lambda1": 1e-3}
    for nt_type in ("smoothgrad", "smoothgrad_sq", "vargrad"):
        out = NoiseTunnel(caso).attribute(
            images, nt_type=nt_type, nt_samples=2, stdevs=0.1, target=0, **kw
        )
        assert out.shape == images.shape and bool(torch.isfinite(out).all())
    sens = sensitivity_max(caso.attribute, images, target=0, n_perturb_samples=2, **kw)
    assert sens.shape == (2,) and bool(torch.isfinite(sens).all())
    attr = caso.attribute(images, target=0, **kw)

    def perturb(inputs):
        noise = 0.01 * torch.randn_like(inputs)
        return noise, inputs - noise

    infd = infidelity(net, perturb, images, attr, target=0, n_perturb_samples=2)
    assert infd.shape == (2,) and bool(torch.isfinite(infd).all())


def test_no_side_effects_and_contract_flags():
    model, x = tiny_relu(), tiny_batch(3)
    model[1].train()  # an odd per-module flag that must survive
    params = [p.detach().clone() for p in model.parameters()]
    x.requires_grad_(True)
    x.grad = torch.ones_like(x)
    rng = torch.get_rng_state()
    for method in (CAFO(model), CASO(model)):
        method.attribute(x, n_samples=2)
        assert method.multiplies_by_inputs is False
        assert method.has_convergence_delta() is False
        with pytest.raises(NotImplementedError):
            method.attribute_future()
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), params))
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
    assert [m.training for m in model] == [False, True, False, False, False]
    assert torch.equal(x.grad, torch.ones_like(x)) and x.requires_grad
    assert not any(m._forward_hooks or m._backward_hooks for m in model.modules())
    assert CASO.get_name() == "CASO" and CAFO.get_name() == "CAFO"


def test_show_progress(capsys):
    model, x = tiny_relu(), tiny_batch(2)
    CASO(model).attribute(x, show_progress=True)
    CAFO(model).attribute(x, show_progress=True)
    err = capsys.readouterr().err
    assert "CASO attribution: 100%" in err and "CAFO attribution: 100%" in err


class _Concave(nn.Module):
    """Logits ``(-||x||^2, sum x)``: the loss ``"logit"`` of class 0 has Hessian ``-2 I``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([-(x**2).sum(1), x.sum(1)], 1)


def _spy_bars(monkeypatch) -> list:
    """Every bar CAFO/CASO create, with its total at creation: ``[(bar, total), ...]``."""
    import captum_ext.attr._utils.context_aware as context_aware

    made: list = []
    real = context_aware.progress

    def spy(*args, **kwargs):
        bar = real(*args, **kwargs)
        made.append((bar, bar.total))
        return bar

    monkeypatch.setattr(context_aware, "progress", spy)
    return made


@pytest.mark.parametrize(
    "case", ["refine", "paper", "indefinite", "fixed_lambda1", "lambda1_path", "cafo"]
)
def test_progress_bar_total_is_fixed_at_creation_and_reached_exactly(monkeypatch, case):
    # the bar once grew its total per solve and ran past it ("20/20 100%", then "21it")
    made = _spy_bars(monkeypatch)
    model, x = tiny_relu(), tiny_batch(3)
    if case == "indefinite":  # Hessian -2 I: power iteration runs twice
        caso = CASO(_Concave(), loss="logit")
        caso.attribute(x, target=0, hessian="hvp", show_progress=True)
        assert caso.last_info["indefinite"]
    elif case == "lambda1_path":
        CASO(model).lambda1_path(x, [1e-3, 1e-2], show_progress=True)
    elif case == "cafo":
        CAFO(model).attribute(x, show_progress=True)
    else:
        kw = {"lambda1": 1e-2} if case == "fixed_lambda1" else {"lambda1_rule": case}
        CASO(model).attribute(x, show_progress=True, **kw)
    ((bar, total),) = made
    assert bar.total == total and bar.n == total


def test_batch_knob_and_generator_determinism():
    model, x = tiny_relu(), tiny_batch(4)
    for cls, kw in (
        (CASO, {"hessian": "hvp", "lambda1": 1e-2}),
        (CASO, {"hessian": "closed_form"}),
        (CAFO, {}),
    ):
        runs = [
            cls(model).attribute(
                x,
                n_samples=3,
                generator=torch.Generator().manual_seed(7),
                internal_batch_size=size,
                **kw,
            )  # fmt: skip
            for size in (None, 5, None)
        ]
        assert torch.equal(runs[0], runs[2])
        assert torch.allclose(runs[0], runs[1], rtol=1e-9, atol=1e-15)
        other = cls(model).attribute(x, n_samples=3, generator=torch.Generator().manual_seed(8))
        assert not torch.equal(other, runs[0])


def test_smooth_cafo_averages_gradients_with_the_target_fixed():
    model, x = tiny_relu(), tiny_batch(3)
    t = torch.tensor([3, 3, 3])
    out = CAFO(model).attribute(
        x, target=t, lambda1=0.0, n_samples=16, stdevs=0.5,
        generator=torch.Generator().manual_seed(3), abs=False,
    )  # fmt: skip
    # the copies as documented: x + stdevs * (max - min) * N(0, 1), one (n, d) draw shared
    # by the examples (an example's copies do not depend on its position in the batch)
    noise = torch.randn(1, 16, D, generator=torch.Generator().manual_seed(3), dtype=x.dtype)
    span = (x.amax(1) - x.amin(1))[:, None, None]
    xs = x[:, None] + 0.5 * span * noise
    grads = torch.stack([exact_grad_hess(model, xs[:, j], t)[0] for j in range(16)], 1)
    mean = grads.mean(1)  # Def. 4: the plain average, in units of its max |.|
    assert torch.allclose(out, mean / mean.abs().amax(1, keepdim=True) / 20.0, atol=1e-14)
    smooth_hvp = CASO(model).attribute(x, target=t, n_samples=4, hessian="hvp")
    smooth_cf = CASO(model).attribute(x, target=t, n_samples=4, hessian="closed_form")
    assert torch.allclose(smooth_hvp, smooth_cf, atol=1e-12)


# ------------------------------------------------------------------------ bad input
def test_bad_input_raises_clear_errors():
    model, x = tiny_relu(), tiny_batch(2)
    caso = CASO(model)
    bad = x.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        caso.attribute(bad)
    with pytest.raises(ValueError, match=r"target must be class indices in \[0, 4\)"):
        caso.attribute(x, target=7)
    with pytest.raises(ValueError, match="tuple"):
        caso.attribute(x, target=(0, 1))
    with pytest.raises(ValueError, match="lambda2"):
        caso.attribute(x, lambda2=0.0)
    with pytest.raises(ValueError, match="n_iter"):
        caso.attribute(x, n_iter=0)
    with pytest.raises(ValueError, match="lambda1"):
        caso.attribute(x, lambda1=-1.0)
    with pytest.raises(ValueError, match="hessian"):
        caso.attribute(x, hessian="exact")
    with pytest.raises(ValueError, match="one class per example"):
        caso.attribute(x, target=[0, 1, 2])
    with pytest.raises(ValueError, match="non-finite logits"):
        CAFO(lambda z: model(z) * float("inf")).attribute(x)
    with pytest.raises(ValueError, match="per-example losses"):
        CAFO(model, loss_fn=lambda z, t: F.cross_entropy(z, t)).attribute(x)


def test_too_small_lambda2_is_raised_with_a_warning():
    torch.manual_seed(0)
    w = 30 * torch.randn(C, D, dtype=torch.float64)
    x = tiny_batch(2)

    def model(z):
        return z @ w.T

    caso = CASO(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        caso.attribute(x, lambda2=1e-3, lambda1=0.0)
    assert any("non-concave" in str(c.message) for c in caught)
    info = caso.last_info
    top = info["top_eigenvalue"]
    assert torch.equal(info["lambda2_raised"], top / 2 >= 1e-3)
    assert bool(info["lambda2_raised"].any())
    expected = torch.where(info["lambda2_raised"], top / 2 + 10.0, torch.full_like(top, 1e-3))
    assert torch.allclose(info["lambda2"], expected)
