"""Every public entry point that runs a user's model leaves it as it was (issue 15, item 5).

One table of entry points, each called on a train-mode model with BatchNorm (non-trivial running
statistics) and Dropout(0.5), one submodule left in eval mode (mixed flags must survive):

- the result equals the same call on the model in eval mode (the call used eval semantics:
  batch statistics and dropout would change it);
- afterwards every module's ``training`` flag, every parameter and buffer (running statistics,
  ``num_batches_tracked``), every ``.grad`` and the global torch RNG state are bit-identical;
- the same holds when the model raises after its first call (in train mode, that first call
  would have updated the BatchNorm statistics).
"""

from __future__ import annotations

import tempfile
import warnings
from typing import Any, Callable

import pytest
import torch
from captum.attr import Saliency
from small_nets import Raising, bn_dropout_net
from torch import nn
from torch.utils.data import TensorDataset

from captum_ext.attr import CAFO, CASO, LEG, LEGTV, ParameterSaliency, RelEx
from captum_ext.dataset_attribution import attribute_dataset
from captum_ext.metrics import (
    deletion,
    evaluate_attributions,
    insertion,
    model_randomization,
    preservation,
    saliency_stability,
)

X = torch.rand((2, 2, 6, 6), generator=torch.Generator().manual_seed(1))
Y = torch.tensor([0, 2])
ATTR = torch.rand((2, 2, 6, 6), generator=torch.Generator().manual_seed(2))
MASKS = torch.zeros(2, 6, 6, dtype=torch.bool)
MASKS[:, 1:4, 1:4] = True


def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(5)


def _first_conv(model: nn.Module) -> nn.Module:
    return next(m for m in model.modules() if isinstance(m, nn.Conv2d))


def _attribute_dataset(model: nn.Module) -> Any:
    with tempfile.TemporaryDirectory() as out:
        return attribute_dataset(Saliency(model), TensorDataset(X, Y), out, batch_size=1).load()


#: name -> call(model) -> result (a tensor or something whose tensors can be compared)
ENTRY_POINTS: dict[str, Callable[[nn.Module], Any]] = {
    "LEG": lambda m: LEG(m).attribute(X, target=Y, n_samples=64, grid=(2, 2), generator=_gen()),
    "LEGTV": lambda m: LEGTV(m).attribute(X, target=Y, n_samples=64, grid=(2, 2), generator=_gen()),
    "LEG stein": lambda m: LEG(m).attribute(
        X, target=Y, n_samples=8, grid=(2, 2), estimator="stein", generator=_gen()
    ),
    "CAFO": lambda m: CAFO(m).attribute(X, target=Y),
    "CASO": lambda m: CASO(m).attribute(X, target=Y, n_iter=3, generator=_gen()),
    "RelEx": lambda m: RelEx(m).attribute(X, target=Y, n_iter=3, n_samples=2, generator=_gen()),
    "ParameterSaliency": lambda m: ParameterSaliency(m, _first_conv(m)).attribute(X, target=Y),
    "deletion": lambda m: deletion(m, X, ATTR, Y, n_steps=6).curves,
    "insertion": lambda m: insertion(m, X, ATTR, Y, n_steps=6).curves,
    "preservation": lambda m: preservation(m, X, ATTR, Y, n_steps=6).curves,
    "evaluate_attributions": lambda m: evaluate_attributions(
        m, X, ATTR, Y, MASKS, n_steps=6, n_perturb_samples=2, generator=_gen()
    ),
    "saliency_stability": lambda m: (
        saliency_stability(Saliency(m), m, X, epsilons=(0.01,), step_num=2).spearman
    ),
    "model_randomization": lambda m: model_randomization(m, Saliency, X, Y).table,
    "attribute_dataset": lambda m: _attribute_dataset(m),
}


def _train_mode_model() -> nn.Module:
    model = bn_dropout_net(p_drop=0.5).train()
    model[4].eval()  # mixed flags survive as they are
    model[6].weight.grad = torch.full_like(model[6].weight, 0.25)
    return model


def _tensors(result: Any) -> list[torch.Tensor]:
    if isinstance(result, torch.Tensor):
        return [result]
    if isinstance(result, dict):
        return [v for k in sorted(result) for v in _tensors(result[k])]
    if isinstance(result, (list, tuple)):
        return [t for r in result for t in _tensors(r)]
    raise AssertionError(f"cannot compare a result of type {type(result).__name__}")


def _state(model: nn.Module) -> tuple[list[bool], dict[str, torch.Tensor], list[Any]]:
    flags = [m.training for m in model.modules()]
    tensors = {k: v.detach().clone() for k, v in model.state_dict().items()}
    grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    return flags, tensors, grads


def _assert_unchanged(model: nn.Module, before: tuple, rng: torch.Tensor) -> None:
    flags, tensors, grads = before
    assert [m.training for m in model.modules()] == flags
    after = model.state_dict()
    for k, v in tensors.items():
        assert torch.equal(after[k], v), k
    for p, g in zip(model.parameters(), grads):
        assert (p.grad is None) == (g is None)
        if g is not None:
            assert torch.equal(p.grad, g)
    assert torch.equal(torch.get_rng_state(), rng)


def _call(name: str, model: nn.Module) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ENTRY_POINTS[name](model)


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_train_mode_model_runs_in_eval_mode_and_is_left_untouched(name: str) -> None:
    reference = _call(name, bn_dropout_net(p_drop=0.5).eval())
    model = _train_mode_model()
    before, rng = _state(model), torch.get_rng_state()
    result = _call(name, model)
    _assert_unchanged(model, before, rng)
    for got, want in zip(_tensors(result), _tensors(reference), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, equal_nan=True)


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_model_is_left_untouched_when_it_raises_midway(name: str) -> None:
    inner = _train_mode_model()
    # ParameterSaliency needs a single (batched) forward, so it fails on that one
    model = Raising(inner, fail_after=0 if name == "ParameterSaliency" else 1)
    before, rng = _state(model), torch.get_rng_state()
    with pytest.raises(RuntimeError, match="boom"):
        _call(name, model)
    assert model.calls >= 1
    _assert_unchanged(model, before, rng)


def test_the_train_mode_checks_can_fail() -> None:
    """A plain train-mode forward changes what the checks above compare."""
    model = _train_mode_model()
    before, rng = _state(model), torch.get_rng_state()
    model(X)
    with pytest.raises(AssertionError):
        _assert_unchanged(model, before, rng)
