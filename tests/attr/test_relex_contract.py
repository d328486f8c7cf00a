"""RelEx and the Captum contract: batch-position independence (common random numbers),
NoiseTunnel with zero noise, sensitivity_max with zero perturbation, train-mode models left
untouched (mode, buffers, global RNG, also when the model raises) and the degenerate-map warning."""

from __future__ import annotations

import warnings

import pytest
import torch
from captum.attr import NoiseTunnel
from captum.metrics import sensitivity_max
from small_nets import Raising, bn_dropout_net
from torch import nn

from captum_ext.attr import RelEx
from captum_ext.attr._utils.map_checks import DegenerateAttributionWarning

KW = dict(n_iter=6, n_samples=4, lambda1=0.01)


def _inputs(n: int = 4, seed: int = 1) -> torch.Tensor:
    return torch.rand((n, 2, 6, 6), generator=torch.Generator().manual_seed(seed))


def _seeded(seed: int = 3) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_mask_does_not_depend_on_batch_position() -> None:
    """Seeded, an example's mask is the same alone, at any position of a batch, and next to
    different neighbours (the reviewer's failure: per-position streams gave different masks)."""
    model = bn_dropout_net()
    x = _inputs(4)
    relex = RelEx(model)
    batch = relex.attribute(x, target=[0, 1, 2, 0], generator=_seeded(), **KW)
    flipped = relex.attribute(x.flip(0), target=[0, 2, 1, 0], generator=_seeded(), **KW)
    torch.testing.assert_close(flipped.flip(0), batch, rtol=0, atol=1e-6)
    for i, t in enumerate([0, 1, 2, 0]):
        alone = relex.attribute(x[i : i + 1], target=t, generator=_seeded(), **KW)
        torch.testing.assert_close(alone, batch[i : i + 1], rtol=0, atol=1e-6)
    # a different seed really changes the masks (the check above is not vacuous)
    other = relex.attribute(x, target=[0, 1, 2, 0], generator=_seeded(4), **KW)
    assert (other - batch).abs().max() > 1e-3


def test_noise_tunnel_with_zero_noise_equals_the_plain_call() -> None:
    model = bn_dropout_net()
    x = _inputs(2)
    relex = RelEx(model)
    plain = relex.attribute(x, target=[1, 2], **KW)
    with torch.no_grad():
        for nt_type in ("smoothgrad", "vargrad"):
            nt = NoiseTunnel(relex).attribute(
                x, nt_type=nt_type, nt_samples=3, stdevs=0.0, target=[1, 2], **KW
            )
            expected = plain if nt_type == "smoothgrad" else torch.zeros_like(plain)
            torch.testing.assert_close(nt, expected, rtol=0, atol=1e-6)


def test_sensitivity_max_with_zero_perturbation_is_zero() -> None:
    model = bn_dropout_net()
    x = _inputs(2)
    sens = sensitivity_max(
        RelEx(model).attribute, x, target=[1, 2], perturb_radius=0.0, n_perturb_samples=3, **KW
    )
    torch.testing.assert_close(sens, torch.zeros(2), rtol=0, atol=1e-6)
    # with noise the sensitivity is positive: the zero above is not a constant output
    sens = sensitivity_max(
        RelEx(model).attribute, x, target=[1, 2], perturb_radius=0.05, n_perturb_samples=2, **KW
    )
    assert (sens > 1e-4).all(), sens


def test_default_generator_repeats_and_leaves_the_global_rng() -> None:
    model = bn_dropout_net()
    x = _inputs(2)
    relex = RelEx(model)
    state = torch.get_rng_state()
    a = relex.attribute(x, **KW)
    b = relex.attribute(x, **KW)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, b)
    # the default stream is the one seeded with torch.initial_seed()
    c = relex.attribute(x, generator=torch.Generator().manual_seed(torch.initial_seed()), **KW)
    assert torch.equal(a, c)
    # a given generator is advanced: two calls with it are independent draws
    g = _seeded(0)
    d, e = relex.attribute(x, generator=g, **KW), relex.attribute(x, generator=g, **KW)
    assert (d - e).abs().max() > 1e-3


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("fail_after", [None, 2])
def test_train_mode_model_is_run_in_eval_mode_and_left_untouched(fail_after: int | None) -> None:
    """A model in train mode with BatchNorm and Dropout(0.5): the call uses eval semantics (the
    masks equal those of the same model in eval mode), and afterwards every training flag, every
    buffer (running statistics, num_batches_tracked) and the global RNG are bit-identical, also
    when the model raises half-way."""
    x = _inputs(2)
    reference = RelEx(bn_dropout_net(p_drop=0.5).eval()).attribute(x, generator=_seeded(), **KW)
    inner = bn_dropout_net(p_drop=0.5).train()
    inner[6].eval()  # mixed flags survive as they are
    model = inner if fail_after is None else Raising(inner, fail_after)
    flags = [m.training for m in model.modules()]
    before = _snapshot(model)
    state = torch.get_rng_state()
    if fail_after is None:
        masks = RelEx(model).attribute(x, generator=_seeded(), **KW)
        torch.testing.assert_close(masks, reference, rtol=0, atol=1e-6)
    else:
        with pytest.raises(RuntimeError, match="boom"):
            RelEx(model).attribute(x, generator=_seeded(), **KW)
    assert [m.training for m in model.modules()] == flags
    after = model.state_dict()
    for k, v in before.items():
        assert torch.equal(after[k], v), k
    assert torch.equal(torch.get_rng_state(), state)
    assert all(p.grad is None for p in model.parameters())


def test_bound_method_of_a_train_mode_model_also_runs_in_eval_mode() -> None:
    x = _inputs(2)
    reference = RelEx(bn_dropout_net(p_drop=0.5)).attribute(x, generator=_seeded(), **KW)
    model = bn_dropout_net(p_drop=0.5).train()
    before = _snapshot(model)
    masks = RelEx(model.forward).attribute(x, generator=_seeded(), **KW)
    torch.testing.assert_close(masks, reference, rtol=0, atol=1e-6)
    assert model.training and all(m.training for m in model.modules())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_warns_once_on_a_collapsed_mask_and_not_otherwise() -> None:
    """A model that ignores its input: the only gradient is lambda1 * sign(m); normalised over the
    72 entries each entry moves by lr / sqrt(72) = 0.0118 > 0.01 (the largest initial value) in
    the first step, so the mask is exactly 0 after it and stays there (sign(0) = 0)."""
    bias = torch.tensor([0.3, -0.2, 0.1])

    def blind(x: torch.Tensor) -> torch.Tensor:
        return bias.expand(x.shape[0], 3)

    x = _inputs(2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        masks = RelEx(blind).attribute(x, n_iter=3, n_samples=2, lambda1=1.0, momentum=0.0)
    assert torch.equal(masks, torch.zeros_like(masks))
    degenerate = [w for w in caught if issubclass(w.category, DegenerateAttributionWarning)]
    assert len(degenerate) == 1
    assert "RelEx" in str(degenerate[0].message) and "lambda1" in str(degenerate[0].message)
    assert degenerate[0].filename == __file__  # points at the caller of attribute
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        RelEx(bn_dropout_net()).attribute(x, **KW)
    assert not [w for w in caught if issubclass(w.category, DegenerateAttributionWarning)]
