"""Importance landscapes, smoothness maps and their total variation (PILCRO analysis)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage
from small_nets import generator, tanh_net
from torch import nn

from captum_ext.benchmark import small_cnn
from captum_ext.metrics import (
    LandscapeSummary,
    importance_landscape,
    landscape_summary,
    landscape_total_variation,
    smoothness_map,
)


def _per_example_grads(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Slow reference: (N, classes, C, H, W) input gradients, one example at a time."""
    rows = []
    for xi in x:
        jac = torch.autograd.functional.jacobian(lambda t: model(t[None])[0], xi)
        rows.append(jac)
    return torch.stack(rows)


def _eq6(sq: torch.Tensor) -> torch.Tensor:
    """Paper Eq. 6 written out for a (C, H, W) map."""
    h, w = sq.shape[-2:]
    return math.sqrt(h * w) * sq.norm(dim=0) / sq.norm()


# ---------------------------------------------------------------------------- landscape


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_landscape_has_unit_mean_square(seed):
    model, x = tanh_net(seed=seed), torch.randn(9, 2, 7, 8)
    landscape = importance_landscape(model, x, generator=generator(seed), internal_batch_size=4)
    assert landscape.shape == (7, 8) and landscape.dtype == x.dtype
    assert abs(float((landscape**2).mean()) - 1.0) < 1e-6


def test_landscape_of_an_all_ones_linear_conv_stack_is_the_squared_path_count():
    # Closed form (paper Section 3.1): with all-ones 3x3 'valid' convolutions and a sum head,
    # d out / d x_ij is the number of input-to-output paths, a_i * a_j with
    # a = ones(out) convolved with (1, 1, 1) once per layer.
    depth, size = 3, 11
    convs = [nn.Conv2d(1, 1, 3, bias=False) for _ in range(depth)]
    head = nn.Linear((size - 2 * depth) ** 2, 1, bias=False)
    for module in (*convs, head):
        nn.init.ones_(module.weight)
    model = nn.Sequential(*convs, nn.Flatten(), head)
    landscape = importance_landscape(model, torch.randn(3, 1, size, size))
    a = np.ones(size - 2 * depth)
    for _ in range(depth):
        a = np.convolve(a, np.ones(3))
    paths = np.outer(a, a)
    expected = _eq6(torch.from_numpy(paths**2)[None]).float()
    torch.testing.assert_close(landscape, expected, rtol=1e-5, atol=1e-6)
    assert landscape[size // 2, size // 2] > landscape[0, 0]


@pytest.mark.parametrize("label", ["predicted", "given"])
def test_landscape_matches_a_per_example_reference(label):
    model, x = tanh_net(classes=5), torch.randn(7, 2, 7, 8)
    labels = torch.tensor([0, 4, 2, 2, 1, 3, 0])
    jac = _per_example_grads(model, x)
    chosen = model(x).argmax(1) if label == "predicted" else labels
    sq = torch.stack([jac[m, chosen[m]] ** 2 for m in range(7)]).double().mean(0)
    target = labels if label == "given" else None
    got = importance_landscape(model, x, target, label=label, internal_batch_size=3)
    torch.testing.assert_close(got, _eq6(sq).float(), rtol=1e-5, atol=1e-6)
    # The same through a loader of (images, labels, extra) batches, of uneven sizes.
    loader = [(x[:2], labels[:2], None), (x[2:], labels[2:], None)]
    torch.testing.assert_close(importance_landscape(model, loader, label=label), got)


def test_exact_landscape_is_the_probability_weighted_sum_over_classes():
    model, x = tanh_net(classes=4), torch.randn(6, 2, 7, 8)
    jac = _per_example_grads(model, x).double()
    probs = torch.softmax(model(x).double(), 1)
    sq = (probs[:, :, None, None, None] * jac**2).sum(1).mean(0)
    got = importance_landscape(model, x, exact=True, internal_batch_size=4)
    torch.testing.assert_close(got, _eq6(sq).float(), rtol=1e-5, atol=1e-6)


def test_sampled_landscape_is_unbiased_for_the_exact_one():
    # A linear model on a fixed input: the class gradient is W_y, so the sampled estimator
    # averages W_y^2 over y ~ softmax, which converges to the exact p-weighted sum. An argmax
    # rule would converge to W_argmax^2 instead (checked to be far away).
    with torch.random.fork_rng():
        torch.manual_seed(3)
        model = nn.Sequential(nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    x = 0.3 * torch.randn(1, 2, 4, 4).expand(20000, -1, -1, -1).contiguous()
    sampled = importance_landscape(model, x, generator=generator(1), internal_batch_size=20000)
    exact = importance_landscape(model, x[:1], exact=True)
    argmax = importance_landscape(model, x[:1], label="predicted")
    assert (sampled - exact).abs().max() < 0.03
    assert (argmax - exact).abs().max() > 0.1


def test_batch_size_and_generator_determinism():
    model, x = tanh_net(), torch.randn(10, 2, 7, 8)
    small = importance_landscape(model, x, generator=generator(4), internal_batch_size=3)
    large = importance_landscape(model, x, generator=generator(4), internal_batch_size=64)
    torch.testing.assert_close(small, large, rtol=1e-6, atol=1e-7)
    rng = torch.get_rng_state()
    default = importance_landscape(model, x)
    assert torch.equal(torch.get_rng_state(), rng)
    torch.testing.assert_close(importance_landscape(model, x), default)


def _conv_stack(kernel: int, depth: int = 8, width: int = 8) -> nn.Module:
    layers: list[nn.Module] = [nn.Conv2d(3, width, kernel, padding=kernel // 2)]
    for _ in range(depth - 1):
        layers += [nn.ReLU(), nn.Conv2d(width, width, kernel, padding=kernel // 2)]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 4))


def _mean_landscape_at_init(kernel: int, seeds: int = 4) -> torch.Tensor:
    x = torch.rand(48, 3, 16, 16)
    total = torch.zeros(16, 16)
    for seed in range(seeds):
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = _conv_stack(kernel)
        total += importance_landscape(model, x, generator=generator(seed))
    return total / seeds


def test_proposition_1_deep_3x3_stack_favours_the_centre():
    landscape = _mean_landscape_at_init(3)
    centre = landscape[6:10, 6:10].mean()
    corners = landscape[[0, 0, -1, -1], [0, -1, 0, -1]].mean()
    # More paths reach the centre: the paper's Proposition 1 (here a ~7x gap).
    assert centre > 3 * corners, (float(centre), float(corners))


def test_proposition_1_one_by_one_stack_is_flat():
    landscape = _mean_landscape_at_init(1)
    # Flat up to sampling noise (ReLU patterns vary per pixel); the 3x3 stack's spread is ~0.5.
    assert float(landscape.std()) < 0.12
    assert float((landscape - 1).abs().max()) < 0.4


def test_landscape_leaves_the_model_untouched():
    model = small_cnn(3, 6, width=4)
    model.train()
    model.features[1].eval()
    modes = [m.training for m in model.modules()]
    importance_landscape(model, torch.rand(4, 3, 12, 12))
    assert [m.training for m in model.modules()] == modes
    assert all(p.grad is None for p in model.parameters())


def test_input_independent_model_warns_and_returns_zeros():
    class Constant(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bias = nn.Parameter(torch.randn(3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.bias + 0.0 * x.flatten(1).sum(1, keepdim=True)

    with pytest.warns(RuntimeWarning, match="identically zero"):
        landscape = importance_landscape(Constant(), torch.rand(3, 1, 4, 5))
    assert torch.equal(landscape, torch.zeros(4, 5))


def test_landscape_bad_input():
    model, x = tanh_net(), torch.randn(3, 2, 7, 8)
    with pytest.raises(ValueError, match="4-D"):
        importance_landscape(model, x[0])
    with pytest.raises(ValueError, match="label must be one of"):
        importance_landscape(model, x, label="argmax")
    with pytest.raises(ValueError, match="needs target="):
        importance_landscape(model, x, label="given")
    with pytest.raises(ValueError, match="only used with label='given'"):
        importance_landscape(model, x, 1)
    with pytest.raises(ValueError, match=r"lie in \[0, 3\]"):
        importance_landscape(model, x, [0, 1, 4], label="given")
    with pytest.raises(ValueError, match="one class per example"):
        importance_landscape(model, x, [0, 1], label="given")
    with pytest.raises(ValueError, match="share"):
        importance_landscape(model, [x, torch.randn(2, 2, 8, 8)])
    with pytest.raises(ValueError, match="no examples"):
        importance_landscape(model, [])
    with pytest.raises(ValueError, match="non-finite"):
        importance_landscape(model, torch.full((1, 2, 7, 8), float("inf")))
    with pytest.raises(ValueError, match="internal_batch_size"):
        importance_landscape(model, x, internal_batch_size=0)


# ---------------------------------------------------------------------------- smoothness map


def _slow_smoothness(images: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Reference with scipy: mode='mirror' is torch's 'reflect' (edge not repeated)."""
    maps = []
    for image in images:
        lap = np.stack([ndimage.correlate(ch, kernel, mode="mirror") for ch in image])
        if np.linalg.norm(lap) == 0:
            continue
        h, w = lap.shape[-2:]
        maps.append(math.sqrt(h * w) * np.linalg.norm(lap, axis=0) / np.linalg.norm(lap))
    return np.mean(maps, axis=0)


@pytest.mark.parametrize("kernel", ["laplace", "laplace8"])
def test_smoothness_map_matches_a_scipy_reference(kernel):
    images = torch.rand(7, 3, 9, 10, dtype=torch.float64)
    k = {
        "laplace": np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], float),
        "laplace8": np.array([[1, 1, 1], [1, -8, 1], [1, 1, 1]], float),
    }[kernel]
    got = smoothness_map(images, kernel, internal_batch_size=3)
    np.testing.assert_allclose(got.numpy(), _slow_smoothness(images.numpy(), k), rtol=1e-10)
    assert got.shape == (9, 10)


def test_smoothness_map_of_a_single_dot_is_the_normalised_laplacian_stencil():
    image = torch.zeros(1, 2, 7, 7)
    image[0, :, 3, 3] = 1.0
    expected = torch.zeros(7, 7)
    expected[3, 3] = 4.0
    expected[[2, 4, 3, 3], [3, 3, 2, 4]] = 1.0
    expected *= 7 / math.sqrt(20)  # sqrt(H W) / ||stencil||; channels cancel
    torch.testing.assert_close(smoothness_map(image), expected)


def test_smoothness_map_skips_and_counts_constant_images():
    images = torch.rand(5, 3, 8, 8)
    with_constant = torch.cat([images, torch.full((2, 3, 8, 8), 0.37)])
    with pytest.warns(RuntimeWarning, match="skipped 2 constant image"):
        got = smoothness_map(with_constant)
    torch.testing.assert_close(got, smoothness_map(images))
    with pytest.raises(ValueError, match="all 2 images are constant"):
        smoothness_map(torch.ones(2, 3, 8, 8))


def test_smoothness_map_from_a_loader_and_bad_input():
    images = torch.rand(6, 1, 8, 8)
    loader = [(images[:4], torch.zeros(4)), (images[4:], torch.zeros(2))]
    torch.testing.assert_close(smoothness_map(loader), smoothness_map(images))
    with pytest.raises(ValueError, match="4-D"):
        smoothness_map(images[0])
    with pytest.raises(ValueError, match="at least as large as the 3x3"):
        smoothness_map(torch.rand(2, 1, 2, 8))
    with pytest.raises(ValueError, match="kernel must be one of"):
        smoothness_map(images, "sobel")


# ---------------------------------------------------------------------------- total variation


def test_total_variation_by_hand_and_against_a_loop():
    assert float(landscape_total_variation(torch.tensor([[0.0, 1.0], [2.0, 3.0]]))) == 2.5
    assert float(landscape_total_variation(torch.full((4, 5), 2.0))) == 0.0
    maps = torch.rand(3, 4, 6, dtype=torch.float64)
    diffs = []
    for i in range(4):
        for j in range(6):
            if j + 1 < 6:
                diffs.append((maps[:, i, j + 1] - maps[:, i, j]) ** 2)
            if i + 1 < 4:
                diffs.append((maps[:, i + 1, j] - maps[:, i, j]) ** 2)
    assert len(diffs) == 4 * 5 + 3 * 6
    torch.testing.assert_close(landscape_total_variation(maps), torch.stack(diffs).mean(0))


def test_total_variation_bad_input():
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        landscape_total_variation(torch.rand(5))
    with pytest.raises(ValueError, match="two locations"):
        landscape_total_variation(torch.rand(1, 1))
    with pytest.raises(ValueError, match="non-finite"):
        landscape_total_variation(torch.tensor([[0.0, float("nan")]]))


def test_summary_of_the_shapes_model(shapes_model, shapes_batch):
    images = shapes_batch[0]
    summary = landscape_summary(shapes_model.model, images, generator=generator(0))
    assert isinstance(summary, LandscapeSummary)
    landscape = importance_landscape(shapes_model.model, images, generator=generator(0))
    torch.testing.assert_close(summary.landscape, landscape)
    assert summary.total_variation == pytest.approx(float(landscape_total_variation(landscape)))
    assert summary.landscape.shape == images.shape[-2:]
