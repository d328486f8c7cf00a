"""Deletion, insertion, preservation: hand-computed values and a per-step reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from torch import nn

from captum_ext.metrics import auc, blur, deletion, harmonic_fidelity, insertion, preservation


def tiny_cnn(channels: int = 3, classes: int = 5) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(channels, 6, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(6, 6, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(24, classes),
    ).eval()


def reference_curve(model, image, smap, target, kind, k, fill):
    """One forward per step for one image, with a Python-sorted pixel order (stable ties)."""
    h, w = smap.shape
    values = smap.flatten().tolist()
    order = sorted(range(h * w), key=lambda i: (-values[i], i))
    if kind == "preservation":
        order = sorted(range(h * w), key=lambda i: (values[i], i))
    n = math.ceil(h * w / k)
    x, src = (fill.clone(), image) if kind == "insertion" else (image.clone(), fill)
    ys = []
    for step in range(n + 1):
        for idx in order[max(0, (step - 1) * k) : min(step * k, h * w)]:
            r, c = divmod(idx, w)
            x[:, r, c] = src[:, r, c]
        with torch.no_grad():
            ys.append(torch.softmax(model(x[None]), 1)[0, target].item())
    return torch.tensor(ys)


def test_auc_of_a_known_step_curve():
    # trapezoids on [0, 1/3, 2/3, 1]: (1+1)/2/3 + (1+0)/2/3 + 0 = 0.5
    assert auc(torch.tensor([[1.0, 1.0, 0.0, 0.0]])).item() == pytest.approx(0.5)
    # non-uniform x: trapezoid by hand
    x = torch.tensor([0.0, 0.5, 1.0])
    assert auc(torch.tensor([2.0, 0.0, 1.0]), x).item() == pytest.approx(0.5 * 1 + 0.5 * 0.5)


def test_deletion_auc_of_a_constant_model_equals_the_constant():
    logits = torch.tensor([0.3, -1.0, 2.0])
    p = torch.softmax(logits, 0)

    def model(x):
        return logits.expand(x.shape[0], 3).clone()

    x = torch.rand(3, 2, 5, 7)
    res = deletion(model, x, torch.rand(3, 2, 5, 7), pixels_per_step=4)
    assert res.curves.shape == (3, math.ceil(35 / 4) + 1)
    torch.testing.assert_close(res.auc, torch.full((3,), p[2].item()))


@pytest.mark.parametrize("kind", ["deletion", "insertion", "preservation"])
@pytest.mark.parametrize("k", [1, 5])
def test_batched_curves_equal_one_forward_per_step(kind, k):
    model = tiny_cnn()
    x = torch.rand(3, 3, 7, 6)
    attr = torch.randn(3, 3, 7, 6)
    attr[0, :, :2] = 0.25  # ties in the map: stable order must put lower indices first
    smap = attr.abs().sum(1)
    fn = {"deletion": deletion, "insertion": insertion, "preservation": preservation}[kind]
    res = fn(model, x, attr, pixels_per_step=k, max_examples_per_batch=7)
    fill = blur(x) if kind == "insertion" else torch.zeros_like(x)
    pred = model(x).argmax(1)
    for i in range(3):
        ref = reference_curve(model, x[i], smap[i], pred[i].item(), kind, k, fill[i])
        torch.testing.assert_close(res.curves[i], ref, atol=1e-5, rtol=1e-5)
    # the AUC is the trapezoid rule on uniform points
    np.testing.assert_allclose(
        res.auc.numpy(), np.trapezoid(res.curves.numpy(), dx=1 / (res.curves.shape[1] - 1)),
        rtol=1e-5,
    )  # fmt: skip
    # batch size of the forward calls does not change anything
    other = fn(model, x, attr, pixels_per_step=k, max_examples_per_batch=1000)
    torch.testing.assert_close(other.curves, res.curves)


def test_first_and_last_points():
    model = tiny_cnn()
    x = torch.rand(2, 3, 8, 8)
    attr = torch.randn(2, 3, 8, 8)
    probs = torch.softmax(model(x), 1)
    pred = probs.argmax(1)
    d = deletion(model, x, attr)  # 64 pixels, n_steps=224 -> k=1, 64 steps
    assert d.curves.shape == (2, 65)
    torch.testing.assert_close(d.curves[:, 0], probs[torch.arange(2), pred])
    zero = torch.softmax(model(torch.zeros_like(x)), 1)[torch.arange(2), pred]
    torch.testing.assert_close(d.curves[:, -1], zero)
    ins = insertion(model, x, attr, substrate="mean")
    mean_img = x.mean(dim=(2, 3), keepdim=True).expand_as(x)
    start = torch.softmax(model(mean_img), 1)[torch.arange(2), pred]
    torch.testing.assert_close(ins.curves[:, 0], start)
    torch.testing.assert_close(ins.curves[:, -1], probs[torch.arange(2), pred])


def test_target_and_forward_args_follow_captum_semantics():
    base = tiny_cnn()

    def model(x, scale):
        return base(x) * scale

    x = torch.rand(4, 3, 6, 6)
    attr = torch.randn(4, 3, 6, 6)
    scale = torch.tensor([1.0, 2.0, 0.5, 3.0])[:, None]
    target = [0, 1, 2, 3]
    res = deletion(model, x, attr, target=target, additional_forward_args=(scale,),
                   pixels_per_step=6, max_examples_per_batch=5)  # fmt: skip
    for i in range(4):
        single = deletion(
            lambda z, i=i: base(z) * scale[i], x[i : i + 1], attr[i : i + 1], target=target[i],
            pixels_per_step=6,
        )  # fmt: skip
        torch.testing.assert_close(res.curves[i], single.curves[0])
    as_tensor = deletion(model, x, attr, target=torch.tensor(target), additional_forward_args=scale,
                         pixels_per_step=6)  # fmt: skip
    torch.testing.assert_close(as_tensor.curves, res.curves)


def test_fraction_axis_uses_true_fractions():
    model = tiny_cnn()
    x, attr = torch.rand(2, 3, 5, 5), torch.randn(2, 3, 5, 5)
    uni = deletion(model, x, attr, pixels_per_step=10)  # 25 px: points at 0, 10, 20, 25
    frac = deletion(model, x, attr, pixels_per_step=10, x_axis="fraction")
    torch.testing.assert_close(frac.fractions, torch.tensor([0.0, 0.4, 0.8, 1.0]))
    expected = np.trapezoid(uni.curves.numpy(), x=[0.0, 0.4, 0.8, 1.0])
    np.testing.assert_allclose(frac.auc.numpy(), expected, rtol=1e-6)
    assert not torch.allclose(frac.auc, uni.auc)


def test_rise_blur_kernel_matches_rise_construction():
    impulse = np.zeros((11, 11))
    impulse[5, 5] = 1
    kernel = gaussian_filter(impulse, 5)
    assert kernel.sum() == pytest.approx(1.0)
    x = torch.rand(1, 2, 16, 16, dtype=torch.float64)
    ours = blur(x)
    # direct correlation with zero padding, channel by channel
    padded = np.pad(x.numpy(), ((0, 0), (0, 0), (5, 5), (5, 5)))
    ref = np.zeros_like(x.numpy())
    for c in range(2):
        for i in range(16):
            for j in range(16):
                ref[0, c, i, j] = (padded[0, c, i : i + 11, j : j + 11] * kernel).sum()
    np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-6, atol=1e-7)
    # reflect padding keeps a constant image constant; zero padding darkens the border
    const = torch.ones(1, 1, 12, 12)
    torch.testing.assert_close(blur(const, padding="reflect"), const)
    assert blur(const)[0, 0, 0, 0] < 0.9


def test_harmonic_mean():
    torch.testing.assert_close(
        harmonic_fidelity(torch.tensor([0.1]), torch.tensor([0.4])), torch.tensor([0.16])
    )


def test_bad_input():
    model = tiny_cnn()
    x = torch.rand(2, 3, 6, 6)
    with pytest.raises(ValueError, match="attributions"):
        deletion(model, x, torch.rand(2, 3, 5, 6))
    with pytest.raises(ValueError, match="attributions"):
        deletion(model, x, torch.rand(3, 3, 6, 6))
    bad = torch.rand(2, 3, 6, 6)
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        deletion(model, x, bad)
    with pytest.raises(ValueError, match="pixels_per_step"):
        deletion(model, x, torch.rand(2, 3, 6, 6), pixels_per_step=37)
    with pytest.raises(TypeError, match="inputs"):
        deletion(model, (x,), torch.rand(2, 3, 6, 6))
    with pytest.raises(ValueError, match="substrate"):
        deletion(model, x, torch.rand(2, 3, 6, 6), substrate="noise")
    with pytest.raises(ValueError, match="substrate"):
        deletion(model, x, torch.rand(2, 3, 6, 6), substrate=torch.zeros(4, 6, 6))
    with pytest.raises(ValueError, match="x_axis"):
        deletion(model, x, torch.rand(2, 3, 6, 6), x_axis="log")
