"""Small image classifiers for the embedded benchmark.

- :func:`small_cnn`: four 3x3 conv blocks with BatchNorm and ReLU, global average pooling and a
  linear head; trains in seconds on 2 CPU cores.
- :func:`resnet18_cifar`: torchvision's ``resnet18`` adapted to 32x32 inputs the CIFAR way
  (3x3 stride-1 stem, no max-pool). Needs torchvision (``pip install 'captum-ext[vision]'``).

Every ReLU is its own module (never reused), so Captum's layer and DeepLift-style methods can
hook each one.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable

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
    try:
        from torchvision.models import resnet18
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "resnet18_cifar needs torchvision: pip install 'captum-ext[vision]'"
        ) from err
    model = resnet18(weights=None, num_classes=num_classes)
    model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


MODELS: dict[str, Callable[..., nn.Module]] = {
    "small_cnn": small_cnn,
    "resnet18": resnet18_cifar,
}


def build_model(name: str, in_channels: int, num_classes: int) -> nn.Module:
    """Build an untrained model by registry name (see :data:`MODELS`)."""
    if name not in MODELS:
        raise ValueError(f"model must be one of {sorted(MODELS)}, got {name!r}")
    return MODELS[name](in_channels=in_channels, num_classes=num_classes)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = ["MODELS", "build_model", "count_parameters", "resnet18_cifar", "small_cnn"]
