"""Captum's contract, checked for every attribution class in one registry (issue 15).

In the style of Captum's ``tests/attr/helpers/test_config.py``: each class is registered once
below with small settings, and every check runs on every entry it applies to. Seeded entries
get a fresh ``torch.Generator`` with the same seed on every call, so two calls that should
agree draw the same numbers. A new class in ``captum_ext.attr`` must be registered here (the
first test fails otherwise).

Checks: int / list / tensor targets agree; a batch equals its examples one by one; NoiseTunnel
with ``stdevs=0`` equals the plain call (smoothgrad), its square (smoothgrad_sq) and zero
(vargrad); ``sensitivity_max`` with a zero perturbation is 0 and does not depend on
``max_examples_per_batch``; ``infidelity`` does not depend on ``max_examples_per_batch``; hooks
are removed after a call and after one that raises; inputs' ``requires_grad`` and ``.grad`` are
left as they were; parameters, buffers, grads, modes and the global RNG are unchanged (eval
mode here; train mode in ``test_model_state_contract.py``); tuple inputs of mixed shapes give
one result per input; a TorchScript model gives the eager model's result.
"""

from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import pytest
import torch
from captum.attr import GradientAttribution, NoiseTunnel
from captum.log import log_usage
from captum.metrics import infidelity, sensitivity_max
from small_nets import Raising, bn_dropout_net
from torch import nn

import captum_ext.attr as ext_attr
from captum_ext.attr import CAFO, CASO, LEG, LEGTV, ParameterSaliency, RelEx

SEED = 5
X = torch.rand((3, 2, 6, 6), generator=torch.Generator().manual_seed(1))
Y = torch.tensor([0, 2, 1])


def _first_conv(model: nn.Module) -> nn.Module:
    return next(m for m in model.modules() if isinstance(m, nn.Conv2d))


@dataclass
class Entry:
    """One registered attribution class and how to call it cheaply."""

    build: Callable[[nn.Module], Any]
    kwargs: dict = field(default_factory=dict)
    seeded: bool = False  # takes generator=; called with a fresh one of seed SEED
    input_shaped: bool = True  # returns one map per input (NoiseTunnel, metrics apply)


REGISTRY: dict[str, Entry] = {
    "LEG": Entry(LEG, {"n_samples": 64, "grid": (2, 2)}, seeded=True),
    "LEGTV": Entry(LEGTV, {"n_samples": 64, "grid": (2, 2)}, seeded=True),
    "CAFO": Entry(CAFO),
    "SmoothCAFO": Entry(CAFO, {"n_samples": 3}, seeded=True),
    "CASO": Entry(CASO, {"n_iter": 4}, seeded=True),
    "RelEx": Entry(RelEx, {"n_iter": 3, "n_samples": 2}, seeded=True),
    "ParameterSaliency": Entry(lambda m: ParameterSaliency(m, _first_conv(m)), input_shaped=False),
}
#: registry name -> the class it registers (one entry per class, at least)
CLASSES = {
    "LEG": LEG, "LEGTV": LEGTV, "CAFO": CAFO, "SmoothCAFO": CAFO, "CASO": CASO,
    "RelEx": RelEx, "ParameterSaliency": ParameterSaliency,
}  # fmt: skip
INPUT_SHAPED = sorted(k for k, e in REGISTRY.items() if e.input_shaped)


def _kwargs(entry: Entry) -> dict:
    extra = {"generator": torch.Generator().manual_seed(SEED)} if entry.seeded else {}
    return {**entry.kwargs, **extra}


def _attribute(name: str, model: Any, inputs: Any, target: Any = Y, **kw: Any) -> Any:
    entry = REGISTRY[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # degenerate-map warnings of the tiny nets
        return entry.build(model).attribute(inputs, target=target, **{**_kwargs(entry), **kw})


def _close(a: Any, b: Any, atol: float = 1e-6) -> None:
    if isinstance(a, (tuple, list)):
        assert isinstance(b, (tuple, list)) and len(a) == len(b)
        for u, v in zip(a, b):
            _close(u, v, atol)
        return
    torch.testing.assert_close(a, b, rtol=1e-5, atol=atol)


def test_every_attribution_class_is_registered() -> None:
    exported = {
        getattr(ext_attr, n)
        for n in ext_attr.__all__
        if inspect.isclass(getattr(ext_attr, n)) and hasattr(getattr(ext_attr, n), "attribute")
    }
    assert exported == set(CLASSES.values())
    for name, entry in REGISTRY.items():
        assert isinstance(entry.build(bn_dropout_net()), CLASSES[name])


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_int_list_and_tensor_targets_agree(name: str) -> None:
    model = bn_dropout_net()
    as_int = _attribute(name, model, X, target=1)
    _close(_attribute(name, model, X, target=[1, 1, 1]), as_int)
    _close(_attribute(name, model, X, target=torch.tensor([1, 1, 1])), as_int)
    _close(_attribute(name, model, X, target=torch.tensor(1)), as_int)
    # and the target matters (the comparison above is not between constant maps)
    other = _attribute(name, model, X, target=2)
    assert (other - as_int).abs().max() > 1e-6


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_a_batch_equals_its_examples_one_by_one(name: str) -> None:
    model = bn_dropout_net()
    batch = _attribute(name, model, X)
    for i in range(len(X)):
        alone = _attribute(name, model, X[i : i + 1], target=Y[i : i + 1])
        _close(alone, batch[i : i + 1])
    flipped = _attribute(name, model, X.flip(0), target=Y.flip(0))
    _close(flipped.flip(0), batch)


@pytest.mark.parametrize("nt_type", ["smoothgrad", "smoothgrad_sq", "vargrad"])
@pytest.mark.parametrize("name", INPUT_SHAPED)
def test_noise_tunnel_with_zero_noise(name: str, nt_type: str) -> None:
    model = bn_dropout_net()
    plain = _attribute(name, model, X)
    entry = REGISTRY[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tunnel = NoiseTunnel(entry.build(model)).attribute(
            X, nt_type=nt_type, nt_samples=3, stdevs=0.0, target=Y, **_kwargs(entry)
        )
    expected = {"smoothgrad": plain, "smoothgrad_sq": plain**2, "vargrad": 0 * plain}[nt_type]
    _close(tunnel, expected)


def _explain(name: str, model: nn.Module) -> Callable[..., Any]:
    """An ``explanation_func`` for Captum's metrics: a fresh seeded call each time."""

    def explain(inputs: torch.Tensor, target: Any = None) -> Any:
        return _attribute(name, model, inputs, target=target)

    return explain


@pytest.mark.parametrize("name", INPUT_SHAPED)
def test_sensitivity_max_with_zero_perturbation_is_zero_at_any_batching(name: str) -> None:
    model = bn_dropout_net()
    explain = _explain(name, model)

    def no_perturbation(inputs: torch.Tensor, perturb_radius: float = 0.0) -> torch.Tensor:
        return inputs.clone()

    results = [
        sensitivity_max(
            explain, X, perturb_func=no_perturbation, n_perturb_samples=2,
            max_examples_per_batch=m, target=Y,
        )
        for m in (1, 3, 6)
    ]  # fmt: skip
    for s in results:
        torch.testing.assert_close(s, torch.zeros(len(X)), rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", INPUT_SHAPED)
def test_infidelity_does_not_depend_on_max_examples_per_batch(name: str) -> None:
    model = bn_dropout_net()
    attributions = _attribute(name, model, X)

    def perturb(inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # deterministic in the inputs, so batching cannot change what is drawn
        noise = 0.05 * torch.sin(17.0 * inputs + inputs.sum(dim=(1, 2, 3), keepdim=True))
        return noise, inputs - noise

    values = [
        infidelity(
            model, perturb, X, attributions, target=Y, n_perturb_samples=4,
            max_examples_per_batch=m,
        )
        for m in (1, 4, 12)
    ]  # fmt: skip
    assert torch.isfinite(values[0]).all()
    for v in values[1:]:
        torch.testing.assert_close(v, values[0], rtol=1e-5, atol=1e-7)


def _hook_counts(model: nn.Module) -> list[int]:
    counts = []
    for m in model.modules():
        counts += [
            len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks),
            len(m._backward_pre_hooks), len(m._state_dict_hooks), len(m._load_state_dict_pre_hooks),
        ]  # fmt: skip
    globals_ = nn.modules.module
    counts += [
        len(globals_._global_forward_hooks), len(globals_._global_forward_pre_hooks),
        len(globals_._global_backward_hooks), len(globals_._global_backward_pre_hooks),
    ]  # fmt: skip
    return counts


def _state(model: nn.Module) -> tuple:
    return (
        [m.training for m in model.modules()],
        {k: v.detach().clone() for k, v in model.state_dict().items()},
        [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        [p.requires_grad for p in model.parameters()],
        torch.get_rng_state(),
    )


def _assert_same_state(before: tuple, after: tuple) -> None:
    assert before[0] == after[0]
    for k, v in before[1].items():
        assert torch.equal(after[1][k], v), k
    for g0, g1 in zip(before[2], after[2]):
        assert (g0 is None) == (g1 is None) and (g0 is None or torch.equal(g0, g1))
    assert before[3] == after[3]
    assert torch.equal(before[4], after[4]), "the global torch RNG was advanced"


def _assert_call_leaves_model_as_it_was(model: nn.Module, call: Callable[[], None]) -> None:
    hooks, before = _hook_counts(model), _state(model)
    call()
    assert _hook_counts(model) == hooks
    _assert_same_state(before, _state(model))


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_model_hooks_grads_and_rng_are_left_as_they_were(name: str) -> None:
    model = bn_dropout_net()
    model[6].weight.grad = torch.full_like(model[6].weight, 0.5)
    model[6].bias.requires_grad_(False)
    _assert_call_leaves_model_as_it_was(model, lambda: _attribute(name, model, X))


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_hooks_are_removed_after_a_call_that_raises(name: str) -> None:
    model = Raising(bn_dropout_net(), fail_after=0 if name == "ParameterSaliency" else 1)

    def call() -> None:
        with pytest.raises(RuntimeError, match="boom"):
            _attribute(name, model, X)

    _assert_call_leaves_model_as_it_was(model, call)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_inputs_requires_grad_and_grad_are_left_as_they_were(name: str) -> None:
    model = bn_dropout_net()
    plain = X.clone()
    result = _attribute(name, model, plain)
    assert not plain.requires_grad and plain.grad is None
    tracked = X.clone().requires_grad_(True)
    tracked.grad = torch.full_like(tracked, 0.25)
    again = _attribute(name, model, tracked)
    assert tracked.requires_grad and torch.equal(tracked.grad, torch.full_like(X, 0.25))
    assert torch.equal(tracked.detach(), X)
    _close(again, result)


class TwoInputNet(nn.Module):
    """Two images of different shapes, ``(N, 2, 6, 6)`` and ``(N, 1, 4, 4)`` (LEG's grids need
    images: a vector input is refused with a ValueError naming it)."""

    def __init__(self) -> None:
        super().__init__()
        self.image = bn_dropout_net(seed=2)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(3)
            self.vector = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))

    def forward(self, image: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
        return self.image(image) + torch.tanh(self.vector(vector))


V = torch.rand((3, 1, 4, 4), generator=torch.Generator().manual_seed(4))


@pytest.mark.parametrize("name", INPUT_SHAPED)
def test_tuple_inputs_of_mixed_shapes_give_one_map_per_input(name: str) -> None:
    model = TwoInputNet().eval()
    image_map, vector_map = _attribute(name, model, (X, V))
    assert image_map.shape == X.shape and vector_map.shape == V.shape
    for part in (image_map, vector_map):
        assert torch.isfinite(part).all() and part.abs().max() > 0
    # one example at a time gives the same pair (the tuple's batch is one batch)
    alone = _attribute(name, model, (X[1:2], V[1:2]), target=Y[1:2])
    _close(alone, (image_map[1:2], vector_map[1:2]))


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_a_torchscript_model_gives_the_eager_result(name: str) -> None:
    model = bn_dropout_net()
    scripted = torch.jit.script(bn_dropout_net())
    if name == "ParameterSaliency":  # needs layer types and torch.func: a clear refusal
        with pytest.raises(TypeError, match="model must be an eager nn.Module"):
            ParameterSaliency(scripted)
        return
    _close(_attribute(name, scripted, X), _attribute(name, model, X), atol=1e-5)


class _Broken(GradientAttribution):
    """Attributions that each break one rule the checks above enforce."""

    def __init__(self, model: nn.Module, flaw: str) -> None:
        super().__init__(model)
        self.model, self.flaw = model, flaw

    @log_usage()
    def attribute(self, inputs: Any, target: Any = None, generator: Any = None) -> Any:
        if isinstance(inputs, tuple):  # as Captum's metrics pass them
            return (self.attribute(inputs[0], target, generator),)
        if self.flaw == "hook":
            self.model.register_forward_hook(lambda *a: None)
        if self.flaw == "train":
            self.model.train()
        if self.flaw == "requires_grad":
            inputs.requires_grad_(True)
        scale = torch.rand(inputs.shape[0], 1, 1, 1, generator=generator)  # per batch row
        if self.flaw == "global_rng":
            scale = scale + torch.rand(1)
        grad = inputs.detach().clone().requires_grad_(True)
        with torch.enable_grad():  # Captum's metrics call under no_grad
            out = self.model(grad)[
                torch.arange(len(grad)), torch.as_tensor(target).expand(len(grad))
            ]
            (g,) = torch.autograd.grad(out.sum(), grad)
        return g * (scale if self.flaw == "per_row" else 1.0)


@pytest.mark.parametrize(
    "flaw, check",
    [
        ("per_row", test_a_batch_equals_its_examples_one_by_one),
        ("per_row", lambda name: test_noise_tunnel_with_zero_noise(name, "smoothgrad")),
        ("per_row", test_sensitivity_max_with_zero_perturbation_is_zero_at_any_batching),
        ("hook", test_model_hooks_grads_and_rng_are_left_as_they_were),
        ("global_rng", test_model_hooks_grads_and_rng_are_left_as_they_were),
        ("train", test_model_hooks_grads_and_rng_are_left_as_they_were),
        ("requires_grad", test_inputs_requires_grad_and_grad_are_left_as_they_were),
    ],
)
def test_the_contract_checks_can_fail(
    flaw: str, check: Callable[[str], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(REGISTRY, "broken", Entry(lambda m: _Broken(m, flaw), seeded=True))
    with pytest.raises(AssertionError):
        check("broken")
