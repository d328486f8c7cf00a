"""Pieces of the Captum contract that Captum's base classes leave to each method.

Captum's ``Attribution`` already answers ``has_convergence_delta() -> False`` and (outside
``PerturbationAttribution``) ``multiplies_by_inputs -> False``; what it does not provide is an
``attribute_future`` that says it is unsupported, which Captum's own methods each write out.
The input checks (:func:`format_inputs`, :func:`check_inputs`) and the default generator
(:func:`default_generator`) every attribution class shares also live here.
"""

from __future__ import annotations

from typing import Any, NoReturn, Protocol

import torch
from torch import Tensor

from captum_ext._compat import _format_tensor_into_tuples


class _Named(Protocol):
    """What :class:`NoAttributeFuture` needs of the class it is mixed into (an Attribution)."""

    def get_name(self) -> str: ...


class NoAttributeFuture:
    """Mixin: ``attribute_future`` raises ``NotImplementedError`` naming the method.

    None of captum-ext's methods has an asynchronous variant: each needs the values of its
    model evaluations (LEG), its gradients (CAFO/CASO, RelEx) or per-example profiles
    (ParameterSaliency) before it can go on. Put it first among the bases.
    """

    def attribute_future(self: _Named, *args: Any, **kwargs: Any) -> NoReturn:
        """Not implemented: no captum-ext method has an asynchronous variant."""
        raise NotImplementedError(f"attribute_future is not implemented for {self.get_name()}")


def format_inputs(inputs: Any) -> tuple[Tensor, ...]:
    """Captum's ``_format_tensor_into_tuples`` with a ``TypeError`` naming ``inputs``.

    Captum's helper asserts (an ``AssertionError`` that ``python -O`` even removes); every
    captum-ext method formats its inputs here instead.

    Raises:
        TypeError: ``inputs`` is not a tensor or a tuple of tensors (a list or a NumPy array,
            for example).
    """
    if isinstance(inputs, tuple):
        bad = [type(x).__name__ for x in inputs if not isinstance(x, Tensor)]
        if bad or not inputs:
            raise TypeError(
                "inputs must be a tensor or a non-empty tuple of tensors, got a tuple holding "
                f"{', '.join(bad) or 'nothing'}"
            )
    elif not isinstance(inputs, Tensor):
        hint = " (convert it with torch.as_tensor)" if hasattr(inputs, "__array__") else ""
        raise TypeError(
            f"inputs must be a tensor or a tuple of tensors, got {type(inputs).__name__}{hint}"
        )
    return _format_tensor_into_tuples(inputs)


def check_inputs(inputs: tuple[Tensor, ...]) -> int:
    """The batch size ``N`` of formatted ``inputs``, after the checks every method makes.

    Raises:
        TypeError: An input is not a floating-point tensor.
        ValueError: The inputs do not share a non-empty batch dimension 0, or one holds NaN or
            infinite values.
    """
    n = inputs[0].shape[0] if inputs and inputs[0].dim() > 0 else 0
    for i, x in enumerate(inputs):
        if not isinstance(x, Tensor):
            raise TypeError(f"inputs[{i}] must be a Tensor, got {type(x).__name__}")
        if x.dim() == 0 or x.shape[0] != n or n == 0:
            raise ValueError(
                "inputs must share a non-empty batch dimension 0, got shapes "
                f"{[tuple(t.shape) for t in inputs]}"
            )
        if not x.is_floating_point():
            raise TypeError(f"inputs[{i}] must be a floating-point tensor, got dtype {x.dtype}")
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"inputs[{i}] contains non-finite values (NaN or infinite)")
    return n


def default_generator(
    generator: torch.Generator | None, device: torch.device | str = "cpu"
) -> torch.Generator:
    """``generator``, or for ``None`` a new one on ``device`` seeded from ``torch.initial_seed()``.

    The global RNG is never advanced, and repeated calls with ``generator=None`` repeat the same
    draws (until the user reseeds torch).
    """
    if generator is not None:
        return generator
    return torch.Generator(device=device).manual_seed(torch.initial_seed())


def check_logits(logits: object, rows: int, where: str = "the inputs") -> Tensor:
    """``logits`` if it is a finite ``(rows, C)`` tensor; a ValueError naming the problem else.

    Args:
        logits: What ``forward_func`` returned.
        rows: The batch size it was called with.
        where: Which inputs it was called on, for the message.
    """
    if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[0] != rows:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(
            f"forward_func must return logits of shape (batch, num_classes) = ({rows}, C), "
            f"got {shape}"
        )
    if not bool(torch.isfinite(logits).all()):
        raise ValueError(f"forward_func returned non-finite logits (NaN or infinite) on {where}")
    return logits


def is_batched(arg: object, n: int) -> bool:
    """Whether an additional forward argument is a tensor with the ``n`` examples on dim 0."""
    return isinstance(arg, Tensor) and arg.dim() > 0 and arg.shape[0] == n


def select_args(args: Any, index: slice | Tensor, n: int) -> Any:
    """``additional_forward_args`` for the examples ``index`` of a batch of ``n``.

    Tensors with the batch on dim 0 are indexed; every other argument is passed as it is
    (Captum's rule for ``additional_forward_args``). ``None`` stays ``None``.
    """
    if args is None:
        return None
    return tuple(a[index] if is_batched(a, n) else a for a in args)


def chunks(total: int, size: int | None) -> list[tuple[int, int]]:
    """``(start, stop)`` of consecutive chunks of at most ``size`` rows (``None``: one chunk)."""
    step = total if size is None or size >= total else size
    return [(s, min(s + step, total)) for s in range(0, total, max(step, 1))]


def check_batch_size(value: object, name: str = "internal_batch_size") -> int | None:
    """``value`` if it is a batch knob's valid value: ``None`` or an int ``>= 1`` (not a bool).

    Args:
        value: What the user passed.
        name: The argument's name, for the message.

    Raises:
        ValueError: ``value`` is not ``None`` nor a positive int (``True``/``False`` included).
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be None or a positive int (>= 1), got {value!r}")
    return value
