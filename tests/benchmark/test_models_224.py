"""The 224x224 benchmark model and the saturating wrapper (issue 13).

``resnet18_224`` is torchvision's standard ResNet-18 with a 1,000-logit head, trained on
SyntheticShapes 224x224. It is a benchmark for attribution at the size users work at, so these
tests check that it is fit for that: accurate, confident (and exactly saturated in float32 once
wrapped in ``saturated``), and relying on the object (Occlusion puts its energy on the object
mask). ``Saturated`` must make float32 softmax exactly 1 without touching the wrapped model.
"""

from __future__ import annotations

import pytest
import torch
from captum.attr import Occlusion
from torch import nn

from captum_ext.benchmark import Saturated, SyntheticShapes, resnet18_224, saturated
from captum_ext.benchmark.models import IMAGENET_CLASSES, build_model
from captum_ext.benchmark.training import default_config
from captum_ext.metrics import energy_pointing_game, pointing_game

#: Stated target of the trained 224 model (measured: 96.7 %).
MIN_TEST_ACCURACY = 0.95


def test_resnet18_224_is_the_standard_imagenet_resnet18():
    model = resnet18_224()
    assert (model.conv1.kernel_size, model.conv1.stride) == ((7, 7), (2, 2))
    assert isinstance(model.maxpool, nn.MaxPool2d)
    assert model.fc.out_features == IMAGENET_CLASSES == 1000
    assert sum(p.numel() for p in model.parameters()) == 11_689_512  # torchvision's count
    # the dataset's 6 classes use the first 6 of the 1,000 logits
    assert build_model("resnet18_224", 3, 6).fc.out_features == 1000
    assert resnet18_224(in_channels=1).conv1.in_channels == 1
    with pytest.raises(ValueError, match="num_classes"):
        resnet18_224(num_classes=1001)
    config = default_config("resnet18_224", "shapes")
    assert config.size == 224 and config.stages == ()


def test_model_224_accuracy_and_confidence(trained_224, model_224):
    assert not model_224.training
    assert trained_224.info["test_accuracy"] >= MIN_TEST_ACCURACY
    # re-measured on fresh test images (not the fixture's pre-selected correct ones)
    images, labels, _ = SyntheticShapes(n=48, size=224, split="test", seed=1).tensors()
    with torch.no_grad():
        logits = torch.cat([model_224(images[i : i + 8]) for i in range(0, 48, 8)])
    probs = logits.softmax(1)
    assert (probs.argmax(1) == labels).float().mean().item() >= 0.9  # measured 0.94
    # the 994 logits that are never a target stay out of the top-6
    assert bool((probs.argmax(1) < 6).all())
    # trained on a CPU budget the model is confident (measured median top-class probability
    # 0.93) but not saturated. saturated() (logits x 20) saturates every prediction at p >= 0.9:
    # its logit gap is >= log 9, so the float32 softmax of the scaled logits is exactly 1.0
    top = probs.max(1).values
    assert top.median().item() >= 0.8
    confident = top >= 0.9
    assert confident.sum().item() >= 12
    hot = (logits * 20.0).softmax(1)
    assert probs.dtype == hot.dtype == torch.float32
    assert bool((hot.max(1).values[confident] == 1.0).all())


def test_occlusion_localises_the_object_on_model_224(model_224, shapes_224_correct):
    """The benchmark is fit for localisation tests: occluding the object is what hurts."""
    images, labels, masks = shapes_224_correct
    attr = Occlusion(model_224).attribute(
        images,
        target=labels,
        # windows about half the object's size (a 56-px window at stride 28 is too coarse for
        # the pointing game: 0.5 on these images, 0.75 with this one)
        sliding_window_shapes=(3, 32, 32),
        strides=(3, 16, 16),
        perturbations_per_eval=50,
    )
    energy = energy_pointing_game(attr, masks)
    area = masks.float().mean(dim=(1, 2))
    assert energy.mean().item() >= 1.5 * area.mean().item()
    # Occlusion's map is constant on each window's stride cell, so its maximum is a plateau:
    # ties="mean" scores the plateau's share inside the mask. ties="first" scores the plateau's
    # top-left pixel, which on a retrained model fell just outside the object on 2 of the 4
    # images (hits 1, 0, 0, 1; ties="mean" 1.0, 0.95, 1.0, 1.0)
    assert pointing_game(attr, masks, ties="mean").mean().item() >= 0.75


def test_fixture_images_are_correct_and_distinct(
    model_224, shapes_224_correct, shapes_model, shapes_32_correct
):
    for model, (images, labels, masks), n, size in (
        (model_224, shapes_224_correct, 4, 224),
        (shapes_model.model, shapes_32_correct, 12, 32),
    ):
        assert images.shape == (n, 3, size, size) and masks.shape == (n, size, size)
        assert masks.dtype == torch.bool and bool(masks.flatten(1).any(1).all())
        with torch.no_grad():
            assert torch.equal(model(images).argmax(1), labels)
        assert len({tuple(img.flatten()[:64].tolist()) for img in images}) == n


def _snapshot(model: nn.Module) -> tuple[dict, list]:
    state = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [(name, m.training) for name, m in model.named_modules()]
    return state, flags


def test_saturated_softmax_is_exactly_one_in_float32(model_224, shapes_224_correct):
    images, labels, _ = shapes_224_correct
    hot = saturated(model_224)
    with torch.no_grad():
        logits = model_224(images)
        scaled = hot(images)
    assert isinstance(hot, Saturated) and hot.scale == 20.0
    assert torch.equal(scaled, logits * 20.0)
    assert torch.equal(scaled.argmax(1), labels)
    probs = scaled.softmax(1)
    assert probs.dtype == torch.float32
    assert bool((probs[torch.arange(len(labels)), labels] == 1.0).all())


def test_saturated_leaves_the_model_unchanged(shapes_model):
    model = shapes_model.model.eval()
    state, flags = _snapshot(model)
    hooks = (len(model._forward_hooks), len(model._forward_pre_hooks))
    hot = Saturated(model, scale=7.5)
    assert hot.model is model and not hot.training
    x = torch.rand(4, 3, 32, 32, requires_grad=True)
    hot(x).sum().backward()
    after, after_flags = _snapshot(model)
    assert after_flags == flags
    assert after.keys() == state.keys()
    assert all(torch.equal(after[k], state[k]) for k in state)  # BN statistics included
    assert (len(model._forward_hooks), len(model._forward_pre_hooks)) == hooks
    assert list(hot.parameters()) == list(model.parameters())
    with torch.no_grad():
        x = torch.rand(3, 3, 32, 32)
        assert torch.equal(hot(x), model(x) * 7.5)
    # a mixed-mode model keeps its per-module flags when wrapped
    model.features[1].train()
    try:
        _, flags = _snapshot(model)
        Saturated(model)
        assert _snapshot(model)[1] == flags
    finally:
        model.eval()


@pytest.mark.parametrize("scale", [0.0, -1.0, float("inf"), float("nan")])
def test_saturated_rejects_bad_scales(scale):
    with pytest.raises(ValueError, match="scale"):
        Saturated(nn.Linear(2, 2), scale)


def test_saturated_rejects_non_modules():
    with pytest.raises(TypeError, match="nn.Module"):
        Saturated(lambda x: x)
