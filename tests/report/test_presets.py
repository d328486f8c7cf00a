"""The report's ``fast`` preset: reduced budgets at 224 x 224, the methods' defaults on small
images (where the reduced budgets cost quality: 500 LEG draws give an 8 x 8 grid at 32 x 32)."""

from __future__ import annotations

import inspect

import pytest
import torch

from captum_ext.report.method_spec import resolve_kwargs
from captum_ext.report.methods import METHODS


@pytest.mark.parametrize(
    ("name", "budget"), [("LEG", "n_samples"), ("LEG-TV", "n_samples"), ("RelEx", "n_iter")]
)
def test_fast_uses_the_defaults_on_small_images_and_reduces_at_224(name, budget):
    spec = METHODS[name]
    default = inspect.signature(spec.build(torch.nn.Identity()).attribute).parameters[budget]
    small = resolve_kwargs(spec, torch.zeros(2, 3, 32, 32), preset="fast", n_classes=10)
    large = resolve_kwargs(spec, torch.zeros(2, 3, 224, 224), preset="fast", n_classes=1000)
    assert budget not in small  # the method's own default applies
    assert large[budget] < default.default
    # --quick still overrides both
    quick = resolve_kwargs(spec, torch.zeros(2, 3, 32, 32), quick=True, preset="fast")
    assert quick[budget] < default.default
