"""PILCRO loss module: penalties, gradients, schedule, mode restoration, sampling, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from small_nets import generator, tanh_net
from torch import nn

from captum_ext._landscape import (
    curvature_penalty,
    normalise_landscape,
    resolve_kernel,
    sq_input_gradients,
)
from captum_ext.benchmark import SyntheticShapes, small_cnn
from captum_ext.benchmark.shapes import PLACEMENTS
from captum_ext.losses import PILCRO
from captum_ext.metrics.landscape import importance_landscape


def _flat_model(c_in: int = 3, classes: int = 5) -> nn.Module:
    """Linear 1x1 conv + global average pool: d logit / d x is the same at every pixel."""
    return nn.Sequential(
        nn.Conv2d(c_in, 6, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, classes)
    )


class _Raising(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3)
        self.bn = nn.BatchNorm2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom")


# ---------------------------------------------------------------------------- landscape math


@pytest.mark.parametrize("shape", [(3, 5, 7), (1, 4, 4), (2, 3, 9, 6)])
def test_normalised_landscape_has_unit_mean_square(shape):
    maps = torch.rand(*shape, dtype=torch.float64) ** 3
    landscape = normalise_landscape(maps)
    mean_sq = (landscape**2).mean(dim=(-2, -1))
    torch.testing.assert_close(mean_sq, torch.ones_like(mean_sq), rtol=0, atol=1e-12)
    # Eq. 6 by hand: norm over channels, Frobenius norm over everything of one map.
    flat = maps.reshape(-1, *shape[-3:])[0]
    by_hand = math.sqrt(shape[-2] * shape[-1]) * flat.norm(dim=0) / flat.norm()
    torch.testing.assert_close(landscape.reshape(-1, *shape[-2:])[0], by_hand)


def test_sampled_landscape_of_a_random_model_has_unit_mean_square():
    for seed in range(3):
        model, x = tanh_net(seed=seed), torch.randn(6, 2, 7, 8)
        sq, classes = sq_input_gradients(model, x, generator=generator(seed))
        assert classes.shape == (6,)
        mean_sq = (normalise_landscape(sq) ** 2).mean()
        assert abs(float(mean_sq) - 1.0) < 1e-6


@pytest.mark.parametrize("kernel", ["laplace", "laplace8"])
def test_curvature_of_constant_and_affine_landscapes_is_zero(kernel):
    k = resolve_kernel(kernel, torch.device("cpu"), torch.float64)
    rows, cols = torch.arange(9.0).double(), torch.arange(11.0).double()
    hh, ww = torch.meshgrid(rows, cols, indexing="ij")
    for landscape in (torch.full((9, 11), 1.7).double(), 0.3 + 0.05 * hh - 0.02 * ww):
        assert float(curvature_penalty(landscape, k)) < 1e-24
    rough = torch.rand(9, 11, dtype=torch.float64)
    # Independent reference: explicit 'valid' cross-correlation and population variance.
    kn, rn = k.numpy(), rough.numpy()
    lap = np.array([[(rn[i : i + 3, j : j + 3] * kn).sum() for j in range(9)] for i in range(7)])
    assert float(curvature_penalty(rough, k)) == pytest.approx(lap.var(), rel=1e-10)


def test_flat_model_has_zero_curvature_and_zero_target_penalty():
    model, x = _flat_model(), torch.rand(8, 3, 6, 6)
    curvature = PILCRO("curvature", every=1, alpha0=1.0, generator=generator())(model, x)
    assert abs(curvature.detach().item()) < 1e-10
    target = PILCRO(
        "target", every=1, alpha0=1.0, target_map=torch.ones(6, 6), generator=generator()
    )
    assert abs(target(model, x).detach().item()) < 1e-9


def test_target_penalty_is_zero_at_the_landscape_and_a_squared_distance_elsewhere():
    model, x = tanh_net(), torch.randn(10, 2, 7, 8)
    landscape = importance_landscape(model, x, generator=generator(3))  # same draws as below
    at_landscape = PILCRO("target", every=1, target_map=landscape, generator=generator(3))
    assert abs(at_landscape.penalty(model, x).detach().item()) < 1e-9
    shifted = landscape.clone()
    shifted[2, 5] += 0.5
    for reduction, expected in (("sum", 0.25), ("mean", 0.25 / 56)):
        loss = PILCRO("target", target_map=shifted, generator=generator(3), reduction=reduction)
        assert loss.penalty(model, x).item() == pytest.approx(expected, rel=1e-4)


# ---------------------------------------------------------------------------- gradients


def test_penalty_alone_gives_nonzero_gradients_on_every_conv_weight():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = small_cnn(3, 6, width=4)
    model.train()
    x = torch.rand(8, 3, 16, 16)
    for kind, kwargs in (("curvature", {}), ("target", {"target_map": torch.ones(16, 16)})):
        model.zero_grad(set_to_none=True)
        loss = PILCRO(kind, every=1, generator=generator(), **kwargs)(model, x)
        assert loss.requires_grad
        loss.backward()
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        assert len(convs) == 4
        for conv in convs:
            assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0
    assert model.training  # restored after the eval-mode penalty


class _WeightAsInput(nn.Module):
    """A tiny smooth net whose first conv weight is a plain tensor (for gradcheck)."""

    def __init__(self, weight: torch.Tensor, rest: nn.Module) -> None:
        super().__init__()
        self.weight, self.rest = weight, rest

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rest(torch.tanh(F.conv2d(x, self.weight, padding=1)))


@pytest.mark.parametrize("kind", ["curvature", "target"])
def test_penalty_gradient_matches_finite_differences(kind):
    # Independent check of the double backward (create_graph=True): float64 finite differences.
    torch.manual_seed(0)
    rest = nn.Sequential(nn.Conv2d(2, 2, 3), nn.Tanh(), nn.Flatten(), nn.Linear(2 * 9, 3))
    rest = rest.double()
    x = torch.randn(3, 1, 5, 5, dtype=torch.float64)
    target = torch.rand(5, 5, dtype=torch.float64) + 0.5
    extra = {"target_map": target} if kind == "target" else {}

    def penalty(weight: torch.Tensor) -> torch.Tensor:
        loss = PILCRO(kind, every=1, alpha0=1.0, generator=generator(1), **extra)
        return loss(_WeightAsInput(weight, rest), x)

    weight = (0.5 * torch.randn(2, 1, 3, 3, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(penalty, (weight,), eps=1e-6, atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------------------- schedule


def test_schedule_returns_zero_without_calling_the_model_and_scales_by_alpha0_t2():
    model, x = tanh_net(), torch.randn(5, 2, 7, 8)
    model(x)  # materialise the lazy layer
    calls = []
    handle = model.register_forward_hook(lambda *args: calls.append(1))
    try:
        loss = PILCRO("curvature", alpha0=0.3, every=3, generator=generator(7))
        reference = PILCRO("curvature", generator=generator(7))
        values = []
        for i in range(7):
            before = len(calls)
            values.append(loss(model, x))
            assert loss.step == i + 1
            if i % 3 != 0:
                assert len(calls) == before, "off-schedule call ran the model"
                assert values[-1].item() == 0.0 and values[-1].shape == ()
                assert not values[-1].requires_grad
            else:
                assert len(calls) == before + 1
                expected = 0.3 * 9 * reference.penalty(model, x)
                torch.testing.assert_close(values[-1], expected)
        assert loss.alpha == pytest.approx(2.7)
        loss.reset()
        assert loss.step == 0
        before = len(calls)
        loss(model, x)
        assert len(calls) == before + 1  # first call after reset computes
    finally:
        handle.remove()


def test_no_grad_still_computes_the_penalty_without_a_graph():
    model, x = tanh_net(), torch.randn(5, 2, 7, 8)
    with_grad = PILCRO("curvature", every=1, generator=generator(2))(model, x)
    with torch.no_grad():
        without = PILCRO("curvature", every=1, generator=generator(2))(model, x)
    assert with_grad.requires_grad and not without.requires_grad
    torch.testing.assert_close(with_grad.detach(), without)


# ---------------------------------------------------------------------------- side effects


def test_mode_flags_are_restored_per_submodule_and_the_penalty_runs_in_eval():
    model = small_cnn(3, 6, width=4)
    model.train()
    frozen_bn = model.features[1]
    frozen_bn.eval()  # deliberately frozen BatchNorm
    before = [m.training for m in model.modules()]
    seen = []
    handle = model.features[0].register_forward_hook(lambda mod, i, o: seen.append(mod.training))
    try:
        PILCRO("curvature", every=1, generator=generator())(model, torch.rand(4, 3, 12, 12))
    finally:
        handle.remove()
    assert seen == [False]
    assert [m.training for m in model.modules()] == before
    assert not frozen_bn.training


def test_mode_flags_are_restored_when_the_forward_raises():
    model = _Raising()
    model.train()
    model.bn.eval()
    before = [m.training for m in model.modules()]
    loss = PILCRO("curvature", every=1)
    with pytest.raises(RuntimeError, match="boom"):
        loss(model, torch.rand(2, 3, 8, 8))
    assert [m.training for m in model.modules()] == before
    assert loss.step == 0  # a failed call does not advance the schedule


def test_call_leaves_grads_flags_and_global_rng_untouched():
    model, x = tanh_net(), torch.randn(5, 2, 7, 8)
    model(x)
    model[0].bias.requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]
    rng = torch.get_rng_state()
    loss = PILCRO("curvature", every=1)  # default generator: seeded from torch.initial_seed()
    value = loss(model, x)
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(p.grad is None for p in model.parameters())
    assert [p.requires_grad for p in model.parameters()] == flags
    assert value.dtype == x.dtype and value.device == x.device
    # The default generator is reproducible: a fresh module with the same global seed agrees.
    torch.testing.assert_close(PILCRO("curvature", every=1)(model, x), value)


# ---------------------------------------------------------------------------- sampling


class _FixedProbs(nn.Module):
    """Logits log(p) that still depend on the input (through a zero-mean-free linear term)."""

    def __init__(self, probs: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("log_p", probs.log())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.log_p + 1e-3 * x.flatten(1).sum(1, keepdim=True)


def test_classes_are_sampled_from_the_softmax_not_the_argmax():
    probs = torch.tensor([0.2, 0.3, 0.5])
    x = torch.zeros(6000, 1, 3, 3)
    _, classes = sq_input_gradients(_FixedProbs(probs), x, generator=generator(5))
    freq = torch.bincount(classes, minlength=3).double() / len(classes)
    sigma = (probs.double() * (1 - probs.double()) / len(classes)).sqrt()
    assert ((freq - probs.double()).abs() < 5 * sigma).all(), freq
    _, again = sq_input_gradients(_FixedProbs(probs), x, generator=generator(5))
    _, other = sq_input_gradients(_FixedProbs(probs), x, generator=generator(6))
    assert torch.equal(classes, again) and not torch.equal(classes, other)


def test_fixed_generator_gives_reproducible_penalties():
    model, x = tanh_net(classes=6), torch.randn(12, 2, 7, 8)
    first = PILCRO("curvature", every=1, generator=generator(11))(model, x)
    second = PILCRO("curvature", every=1, generator=generator(11))(model, x)
    other = PILCRO("curvature", every=1, generator=generator(12))(model, x)
    assert torch.equal(first, second)
    assert not torch.equal(first, other)


# ---------------------------------------------------------------------------- bad input


def test_bad_input_raises_clear_errors():
    model = tanh_net()
    good = torch.randn(2, 2, 7, 8)
    with pytest.raises(ValueError, match="every must be an int >= 1"):
        PILCRO("curvature", every=0)
    with pytest.raises(ValueError, match="every"):
        PILCRO("curvature", every=2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="kind must be one of"):
        PILCRO("flat")
    with pytest.raises(ValueError, match="kernel must be one of"):
        PILCRO("curvature", kernel="sobel")
    with pytest.raises(ValueError, match="needs target_map"):
        PILCRO("target")
    with pytest.raises(ValueError, match="alpha0"):
        PILCRO("curvature", alpha0=-1.0)
    with pytest.raises(ValueError, match="4-D"):
        PILCRO("curvature")(model, good[0])
    with pytest.raises(ValueError, match=r"at least as large as the 3x3 .*H=2, W=8"):
        PILCRO("curvature")(model, torch.randn(2, 2, 2, 8))
    with pytest.raises(ValueError, match=r"5x5 .*H=4"):
        PILCRO("curvature", kernel=torch.ones(5, 5))(model, torch.randn(2, 2, 4, 8))
    with pytest.raises(ValueError, match=r"target_map must have the inputs' spatial shape"):
        PILCRO("target", target_map=torch.ones(7, 7))(model, good)
    with pytest.raises(ValueError, match="non-finite"):
        PILCRO("curvature")(model, torch.full((2, 2, 7, 8), float("nan")))
    with pytest.raises(TypeError, match="nn.Module"):
        PILCRO("curvature")(lambda t: t, good)


def test_input_independent_logits_raise_instead_of_nan():
    class Constant(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bias = nn.Parameter(torch.randn(3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.bias + 0.0 * x.flatten(1).sum(1, keepdim=True)

    with pytest.raises(ValueError, match="identically zero"):
        PILCRO("curvature", every=1)(Constant(), torch.rand(2, 1, 4, 4))


# ------------------------------------------------------- SyntheticShapes placement (benchmark)


def test_shapes_off_center_placement_moves_only_the_object():
    assert PLACEMENTS == ("uniform", "off_center")
    default, uniform = SyntheticShapes(n=24, size=32), SyntheticShapes(n=24, placement="uniform")
    off = SyntheticShapes(n=24, size=32, placement="off_center")
    for i in range(24):
        image, mask = default.render(i)
        assert np.array_equal(image, uniform.render(i)[0])
        assert off.label(i) == default.label(i)
        # Same scene without the object: only the object moved.
        assert np.array_equal(default.render(i, False)[0], off.render(i, False)[0])
        _, off_mask = off.render(i)
        rows, cols = np.nonzero(off_mask)
        assert abs(rows.mean() - 15.5) > 2.5 and abs(cols.mean() - 15.5) > 2.5
    with pytest.raises(ValueError, match="placement must be one of"):
        SyntheticShapes(n=2, placement="centre")
