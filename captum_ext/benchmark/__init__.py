"""The embedded benchmark: synthetic data with ground truth, real digits, and benchmark models.

The models are small CNNs at 32x32 and a 224x224 ResNet-18 with a saturated 1,000-class
softmax (:func:`resnet18_224`, and :func:`saturated` to make any model's softmax saturate).

Nothing here downloads anything: ``SyntheticShapes`` is rendered procedurally, ``Digits`` ships
with scikit-learn, and trained weights are cached on disk (see :mod:`.training`).
"""

from captum_ext.benchmark.digits import Digits
from captum_ext.benchmark.models import (
    MODELS,
    Saturated,
    build_model,
    resnet18_224,
    resnet18_cifar,
    saturated,
    small_cnn,
)
from captum_ext.benchmark.shapes import CLASSES, DOMAINS, SyntheticShapes
from captum_ext.benchmark.training import TrainConfig, TrainedModel, cache_dir, train

__all__ = [
    "CLASSES",
    "DOMAINS",
    "MODELS",
    "Digits",
    "Saturated",
    "SyntheticShapes",
    "TrainConfig",
    "TrainedModel",
    "build_model",
    "cache_dir",
    "resnet18_224",
    "resnet18_cifar",
    "saturated",
    "small_cnn",
    "train",
]
