"""The embedded benchmark: synthetic data with ground truth, real bundled digits, small models.

Nothing here downloads anything: ``SyntheticShapes`` is rendered procedurally, ``Digits`` ships
with scikit-learn, and trained weights are cached on disk (see :mod:`.training`).
"""

from captum_ext.benchmark.digits import Digits
from captum_ext.benchmark.models import MODELS, build_model, resnet18_cifar, small_cnn
from captum_ext.benchmark.shapes import CLASSES, DOMAINS, SyntheticShapes
from captum_ext.benchmark.training import TrainConfig, TrainedModel, cache_dir, train

__all__ = [
    "CLASSES",
    "DOMAINS",
    "MODELS",
    "Digits",
    "SyntheticShapes",
    "TrainConfig",
    "TrainedModel",
    "build_model",
    "cache_dir",
    "resnet18_cifar",
    "small_cnn",
    "train",
]
