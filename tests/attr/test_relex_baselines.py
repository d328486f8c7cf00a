"""RelEx's ``baselines``: what deleted entries become (default: each example's mean colour)."""

from __future__ import annotations

import warnings

import pytest
import torch
from small_nets import bn_dropout_net

from captum_ext.attr import RelEx

KW = dict(n_iter=6, n_samples=3, lambda1=0.01)
X = torch.rand((3, 2, 6, 6), generator=torch.Generator().manual_seed(1))
Y = torch.tensor([0, 2, 1])


def _masks(forward, inputs=X, **kw) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return RelEx(forward).attribute(
            inputs, target=Y, generator=torch.Generator().manual_seed(3), **{**KW, **kw}
        )


def test_a_baseline_is_deletion_in_coordinates_shifted_by_it() -> None:
    """RelEx with baseline b on f equals RelEx deleting to 0 on u -> f(u + b) at x - b: the
    model sees b + m (x_i - b) either way (a scalar b keeps the noise scale, max - min)."""
    model = bn_dropout_net(classes=3)
    shifted = _masks(lambda u: model(u + 0.3), X - 0.3, baselines=0.0)
    torch.testing.assert_close(_masks(model, baselines=0.3), shifted, rtol=0, atol=1e-5)
    assert (_masks(model, baselines=0.0) - shifted).abs().max() > 1e-3  # b matters


def test_mean_is_each_examples_mean_colour_and_the_default() -> None:
    model = bn_dropout_net(classes=3)
    colour = X.mean((2, 3), keepdim=True)
    expected = _masks(model, baselines=colour)
    torch.testing.assert_close(_masks(model, baselines="mean"), expected, rtol=0, atol=0)
    torch.testing.assert_close(_masks(model), expected, rtol=0, atol=0)
    # a per-example tensor (N, C, 1, 1) and the full (N, C, H, W) tensor agree
    full = _masks(model, baselines=colour.expand_as(X).clone())
    torch.testing.assert_close(full, expected, rtol=0, atol=0)


@pytest.mark.parametrize("preset", ["code", "supplementary"])
def test_the_papers_presets_delete_to_zero(preset: str) -> None:
    model = bn_dropout_net(classes=3)
    kw = dict(preset=preset, n_samples=3)
    torch.testing.assert_close(_masks(model, **kw), _masks(model, baselines=0.0, **kw))


def test_tuple_inputs_take_one_baseline_each() -> None:
    model = lambda a, b: bn_dropout_net(classes=3)(a + b)  # noqa: E731
    both = (X, X.flip(0))
    got = _masks(model, both, baselines=(0.0, "mean"))
    assert isinstance(got, tuple) and len(got) == 2
    with pytest.raises(ValueError, match="one baseline per input"):
        _masks(model, both, baselines=(0.0,))


@pytest.mark.parametrize(
    "bad, error",
    [
        ("median", ValueError),
        (float("nan"), ValueError),
        (torch.zeros(2, 2, 6, 6), ValueError),
        (torch.zeros(3, 2, 6, 6, dtype=torch.long), TypeError),
        ([0.0], TypeError),
        (True, TypeError),
    ],
)
def test_bad_baselines_are_clear_errors(bad: object, error: type) -> None:
    with pytest.raises(error, match="baselines"):
        RelEx(bn_dropout_net()).attribute(X, target=Y, baselines=bad, n_iter=1)
