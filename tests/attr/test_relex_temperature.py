"""RelEx's softmax temperature: ``"auto"`` makes the mask independent of the logits' scale."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from small_nets import bn_dropout_net
from torch import nn

from captum_ext.attr import RelEx

KW = dict(n_iter=8, n_samples=4, lambda1=0.01)
X = torch.rand((3, 2, 6, 6), generator=torch.Generator().manual_seed(1))
Y = torch.tensor([0, 2, 1])


class Scaled(nn.Module):
    """The model with its logits multiplied by ``factor`` (a more saturated softmax)."""

    def __init__(self, model: nn.Module, factor: float) -> None:
        super().__init__()
        self.model, self.factor = model, factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) * self.factor


def _masks(model: nn.Module, **kw) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return RelEx(model).attribute(
            X, target=Y, generator=torch.Generator().manual_seed(3), **KW, **kw
        )


def _margins(model: nn.Module) -> torch.Tensor:
    with torch.no_grad():
        z = model(X)
    own = z.gather(1, Y.view(-1, 1)).squeeze(1)
    return own - z.scatter(1, Y.view(-1, 1), float("-inf")).amax(1)


@pytest.mark.parametrize("factor", [2.0, 20.0])
def test_auto_temperature_mask_does_not_depend_on_how_saturated_the_model_is(factor) -> None:
    """Once every target leads its runner-up by log(99), scaling the logits up changes nothing."""
    model = bn_dropout_net(classes=3)
    confident = Scaled(model, 200.0)  # float32 softmax of the target is 1 for these inputs
    assert bool((_margins(confident).abs() > math.log(99)).all())
    masks = _masks(confident, temperature="auto")
    more = _masks(Scaled(model, 200.0 * factor), temperature="auto")
    torch.testing.assert_close(more, masks, rtol=0, atol=1e-4)
    # without it the scale changes the mask, by far more than that tolerance (the check can fail)
    raw = _masks(Scaled(model, 200.0 * factor), temperature=None)
    raw = raw - _masks(confident, temperature=None)
    assert raw.abs().max() > 1e-3


def test_auto_temperature_leaves_unconfident_examples_alone() -> None:
    model = bn_dropout_net(classes=3)
    assert bool((_margins(model).abs() < math.log(99)).all())
    plain = _masks(model, temperature=None)
    torch.testing.assert_close(_masks(model, temperature="auto"), plain, rtol=0, atol=0)


def test_a_fixed_temperature_divides_the_logits() -> None:
    model = bn_dropout_net(classes=3)
    torch.testing.assert_close(
        _masks(model, temperature=4.0),
        _masks(Scaled(model, 0.25), temperature=None),
        rtol=0,
        atol=1e-5,
    )


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf"), "hot", True])
def test_bad_temperature_is_a_clear_error(bad: object) -> None:
    with pytest.raises(ValueError, match="temperature"):
        RelEx(bn_dropout_net()).attribute(X, target=Y, temperature=bad, n_iter=1)


def test_the_default_preset_cools_confident_examples_and_the_papers_do_not() -> None:
    """``temperature="preset"`` (the default) is ``"auto"`` for the default preset and the
    paper's raw softmax (None) for "code" and "supplementary"."""
    confident = Scaled(bn_dropout_net(classes=3), 200.0)
    auto, raw = _masks(confident, temperature="auto"), _masks(confident, temperature=None)
    assert (auto - raw).abs().max() > 1e-3  # the two differ on this model
    torch.testing.assert_close(_masks(confident), auto, rtol=0, atol=0)
    for preset in ("code", "supplementary"):
        torch.testing.assert_close(
            _masks(confident, preset=preset), _masks(confident, preset=preset, temperature=None),
            rtol=0, atol=0,
        )  # fmt: skip
