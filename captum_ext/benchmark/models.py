"""Small image classifiers for the embedded benchmark.

- :func:`small_cnn`: four 3x3 conv blocks with BatchNorm and ReLU, global average pooling and a
  linear head; trains in seconds on 2 CPU cores.
- :func:`resnet18_cifar`: torchvision's ``resnet18`` adapted to 32x32 inputs the CIFAR way
  (3x3 stride-1 stem, no max-pool). Needs torchvision (``pip install 'captum-ext[vision]'``).
- :func:`resnet18_224`: torchvision's standard ``resnet18`` (7x7 stride-2 stem, max-pool) with a
  1,000-class head, for 224x224 inputs: the size, head and (once trained) saturated softmax of an
  ImageNet model. Needs torchvision.
- :class:`Saturated` / :func:`saturated`: a wrapper that multiplies a model's logits by a
  constant, so that the float32 softmax of confident predictions is exactly 1.

Every ReLU is its own module (never reused), so Captum's layer and DeepLift-style methods can
hook each one.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Callable

import torch
from torch import nn


def _conv_block(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


def small_cnn(in_channels: int = 3, num_classes: int = 6, width: int = 16) -> nn.Sequential:
    """A small ReLU CNN with BatchNorm: ``(N, C, H, W)`` images to ``(N, num_classes)`` logits.

    Args:
        in_channels: Input channels (3 for SyntheticShapes, 1 for Digits).
        num_classes: Number of output logits.
        width: Channels of the first block; later blocks use ``2 * width`` and ``4 * width``.

    Returns:
        An ``nn.Sequential`` (named children ``features``, ``pool``, ``flatten``, ``fc``).

    Examples:
        >>> model = small_cnn(3, 6)
        >>> model(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 6])
    """
    for name, value in (
        ("in_channels", in_channels),
        ("num_classes", num_classes),
        ("width", width),
    ):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    w = width
    features = nn.Sequential(
        *_conv_block(in_channels, w),
        *_conv_block(w, 2 * w),
        nn.MaxPool2d(2),
        *_conv_block(2 * w, 4 * w),
        nn.MaxPool2d(2),
        *_conv_block(4 * w, 4 * w),
    )
    return nn.Sequential(
        OrderedDict(
            features=features,
            pool=nn.AdaptiveAvgPool2d(1),
            flatten=nn.Flatten(),
            fc=nn.Linear(4 * w, num_classes),
        )
    )


def _torchvision_resnet18(name: str, num_classes: int) -> nn.Module:
    try:
        from torchvision.models import resnet18
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(f"{name} needs torchvision: pip install 'captum-ext[vision]'") from err
    return resnet18(weights=None, num_classes=num_classes)


def resnet18_cifar(in_channels: int = 3, num_classes: int = 6) -> nn.Module:
    """Torchvision's ResNet-18 with a CIFAR-style stem for small (e.g. 32x32) inputs.

    The 7x7 stride-2 stem convolution becomes a 3x3 stride-1 one and the max-pool is removed,
    as is standard for CIFAR. Parameter names are torchvision's (``layer1.0.conv1.weight``, ...),
    so ResNet stage groupings (conv1, conv2_x..conv5_x) apply unchanged.

    Args:
        in_channels: Input channels.
        num_classes: Number of output logits.

    Returns:
        A ``torchvision.models.ResNet``.

    Examples:
        >>> model = resnet18_cifar(3, 6)
        >>> model(torch.zeros(1, 3, 32, 32)).shape
        torch.Size([1, 6])
    """
    model = _torchvision_resnet18("resnet18_cifar", num_classes)
    model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


#: Logits of :func:`resnet18_224`'s head, whatever the number of classes it is trained on.
IMAGENET_CLASSES = 1000


def resnet18_224(in_channels: int = 3, num_classes: int = IMAGENET_CLASSES) -> nn.Module:
    """Torchvision's standard ResNet-18 for 224x224 inputs, with a 1,000-logit head.

    The stem is the ImageNet one (7x7 stride-2 convolution, 3x3 stride-2 max-pool), initialised
    with torchvision's default (random) initialisation; nothing is downloaded. The head always
    has :data:`IMAGENET_CLASSES` logits: a dataset with fewer classes (SyntheticShapes has 6)
    uses the first ``num_classes`` of them and the others are never targets, so a trained model
    pushes them down and its softmax saturates the way an ImageNet classifier's does.

    Args:
        in_channels: Input channels.
        num_classes: Classes of the training data (at most :data:`IMAGENET_CLASSES`); the head
            has :data:`IMAGENET_CLASSES` logits regardless.

    Returns:
        A ``torchvision.models.ResNet`` mapping ``(N, in_channels, 224, 224)`` to ``(N, 1000)``.

    Examples:
        >>> model = resnet18_224()
        >>> model(torch.zeros(1, 3, 224, 224)).shape
        torch.Size([1, 1000])
    """
    if not isinstance(num_classes, int) or not 1 <= num_classes <= IMAGENET_CLASSES:
        raise ValueError(
            f"num_classes must be an int in [1, {IMAGENET_CLASSES}], got {num_classes!r}"
        )
    model = _torchvision_resnet18("resnet18_224", IMAGENET_CLASSES)
    if in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return model


class Saturated(nn.Module):
    """Wrap a classifier so that its logits are multiplied by ``scale``.

    Temperature-scaling a trained model by ``1 / scale`` with a large ``scale`` keeps every
    prediction (the argmax never changes) and every attribution up to the factor ``scale`` for
    methods that are linear in the logits, but makes the float32 softmax of a confident
    prediction *exactly* 1.0: with logit gaps ``d_j`` to the top class the softmax is
    ``1 / (1 + sum_j exp(-scale * d_j))``, which rounds to 1 once the sum is below 2**-24. Real
    ImageNet classifiers are often that confident, and methods that perturb the input and read
    the probability of the target (or its gradient) then see a flat, zero-gradient output.
    Testing a method on ``Saturated(model)`` checks that it still works there.

    The wrapped model is stored as the child ``model`` and is not changed: no parameter, buffer,
    hook or train/eval flag is touched on construction (the wrapper copies the model's
    ``training`` flag to itself). Calling ``.eval()`` or ``.train()`` *on the wrapper* does
    propagate to the model, as for any ``nn.Module``.

    Args:
        model: Module returning logits ``(N, num_classes)``.
        scale: Positive, finite multiplier of the logits. Default: 20.0.

    Examples:
        >>> hot = Saturated(model, scale=20.0)
        >>> hot(x).softmax(1).max(1).values  # tensor([1., 1., ...]) for confident inputs
    """

    def __init__(self, model: nn.Module, scale: float = 20.0) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        scale = float(scale)
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be a positive finite number, got {scale!r}")
        super().__init__()
        self.model = model
        self.scale = scale
        self.training = model.training

    def forward(self, *args, **kwargs) -> torch.Tensor:
        """The wrapped model's output times ``scale``."""
        return self.model(*args, **kwargs) * self.scale

    def extra_repr(self) -> str:
        """Shown by ``repr``: the scale."""
        return f"scale={self.scale}"


def saturated(model: nn.Module, scale: float = 20.0) -> Saturated:
    """The model with its logits multiplied by ``scale``: ``Saturated(model, scale)``.

    Args:
        model: Module returning logits.
        scale: Positive, finite multiplier. Default: 20.0.

    Returns:
        A :class:`Saturated` wrapper; ``model`` itself is not changed.
    """
    return Saturated(model, scale)


#: Registry name -> factory ``(in_channels, num_classes) -> nn.Module`` of an untrained model.
MODELS: dict[str, Callable[..., nn.Module]] = {
    "small_cnn": small_cnn,
    "resnet18": resnet18_cifar,
    "resnet18_224": resnet18_224,
}


def build_model(name: str, in_channels: int, num_classes: int) -> nn.Module:
    """Build an untrained model by registry name (see :data:`MODELS`)."""
    if name not in MODELS:
        raise ValueError(f"model must be one of {sorted(MODELS)}, got {name!r}")
    return MODELS[name](in_channels=in_channels, num_classes=num_classes)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = [
    "IMAGENET_CLASSES",
    "MODELS",
    "Saturated",
    "build_model",
    "count_parameters",
    "resnet18_224",
    "resnet18_cifar",
    "saturated",
    "small_cnn",
]
