"""Shared fixtures: an isolated model cache and a small_cnn trained on SyntheticShapes.

The cache folder of the whole test session is a fresh temporary folder, so tests never read or
write the user's cache and always train at least once. Set ``CAPTUM_EXT_TEST_CACHE`` to a
folder to reuse trained weights across local runs (CI never sets it).
"""

from __future__ import annotations

import os
import tempfile

import pytest
import torch

#: Training budget used in CI: the default one (6,000 images x 8 epochs, about 25 s on 2 idle
#: cores), well inside the 90 s target, so tests exercise exactly the model the report uses.
CI_SHAPES_BUDGET: dict = {}


def pytest_configure(config: pytest.Config) -> None:
    persistent = os.environ.get("CAPTUM_EXT_TEST_CACHE")
    os.environ["CAPTUM_EXT_CACHE"] = persistent or tempfile.mkdtemp(prefix="captum-ext-test-")


@pytest.fixture(scope="session")
def shapes_model():
    """``TrainedModel``: small_cnn trained on SyntheticShapes (32x32) with the CI budget."""
    from captum_ext.benchmark import train

    return train("small_cnn", "shapes", **CI_SHAPES_BUDGET)


@pytest.fixture(scope="session")
def shapes_batch():
    """16 test images of SyntheticShapes as ``(images, labels, masks)``."""
    from captum_ext.benchmark import SyntheticShapes

    return SyntheticShapes(n=16, split="test").tensors()


@pytest.fixture(autouse=True)
def _restore_torch_state():
    """Each test starts from the same global seed and leaves grad mode on."""
    torch.manual_seed(1234)
    yield
    torch.set_grad_enabled(True)
