"""The report's ``fast`` preset: reduced budgets at 224 x 224, the methods' defaults on small
images (where the reduced budgets cost quality: 500 LEG draws give an 8 x 8 grid at 32 x 32)."""

from __future__ import annotations

import inspect

import pytest
import torch

from captum_ext.attr._core.relex import PRESETS as RELEX_PRESETS
from captum_ext.report.method_spec import resolve_kwargs
from captum_ext.report.methods import METHODS


@pytest.mark.parametrize(
    ("name", "budget"), [("LEG", "n_samples"), ("LEG-TV", "n_samples"), ("RelEx", "n_samples")]
)
def test_fast_uses_the_defaults_on_small_images_and_reduces_at_224(name, budget):
    spec = METHODS[name]
    default = inspect.signature(spec.build(torch.nn.Identity()).attribute).parameters[budget]
    # None: the method's preset supplies it (RelEx)
    limit = default.default if default.default is not None else RELEX_PRESETS["default"][budget]
    small = resolve_kwargs(spec, torch.zeros(2, 3, 32, 32), preset="fast", n_classes=10)
    large = resolve_kwargs(spec, torch.zeros(2, 3, 224, 224), preset="fast", n_classes=1000)
    assert budget not in small  # the method's own default applies
    assert large[budget] < limit
    # --quick still overrides both
    quick = resolve_kwargs(spec, torch.zeros(2, 3, 32, 32), quick=True, preset="fast")
    assert quick[budget] < limit


@pytest.mark.parametrize("name", ["LEG", "LEG-TV"])
def test_leg_fast_at_224_averages_gradients_and_quick_halves_them(name):
    # above 64 x 64 the fast preset switches to the perturbed-gradient mean (bench_efficiency:
    # Spearman 0.97 with the reference at 64 draws vs 0.63 for 500 regression evaluations)
    spec = METHODS[name]
    x = torch.zeros(2, 3, 224, 224)
    fast = resolve_kwargs(spec, x, preset="fast", n_classes=1000)
    quick = resolve_kwargs(spec, x, quick=True, preset="fast", n_classes=1000)
    paper = resolve_kwargs(spec, x, preset="paper", n_classes=1000)
    assert fast["estimator"] == "stein"
    assert quick["estimator"] == "stein" and quick["n_samples"] < fast["n_samples"]
    assert "estimator" not in paper  # the paper's regression
