"""Class-index targets for methods whose loss needs one class per example.

CASO/CAFO, RelEx, ParameterSaliency and the importance landscape evaluate a loss of the logits
against a class, so a Captum ``target`` must be one class index per example: an int (the same
class for all), a list of ``N`` ints, or an integer tensor of shape ``()``, ``(1,)`` or ``(N,)``.
Tuple targets (Captum's multi-dimensional output indexing) are rejected. ``None`` (the predicted
class) needs the model and is handled by each caller.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor


def class_index_targets(
    target: Any, n: int, device: torch.device | None = None, n_classes: int | None = None
) -> Tensor:
    """Turn an int, list or tensor ``target`` into a LongTensor of shape ``(n,)``.

    Args:
        target: An int, a list of ``n`` ints, or an integer tensor of shape ``()``, ``(1,)``
            or ``(n,)``.
        n: Number of examples.
        device: Device of the result (default: the tensor's own, or CPU).
        n_classes: If given, every class must lie in ``[0, n_classes)``.

    Returns:
        The classes, ``torch.long`` of shape ``(n,)``.

    Raises:
        ValueError: For tuples, bools, lists of the wrong length or type, non-integer
            tensors, wrong shapes and (with ``n_classes``) classes out of range.
    """
    if isinstance(target, tuple):
        raise ValueError(
            "target must be a class index per example (an int, a list of ints or a 1-D tensor); "
            f"tuple targets are not supported (the loss needs a class index), got {target!r}"
        )
    if isinstance(target, bool):
        raise ValueError(f"target must be an int, a list of ints or a tensor, got {target!r}")
    if isinstance(target, int):
        classes = torch.full((n,), target, dtype=torch.long, device=device)
    elif isinstance(target, list):
        if len(target) != n or not all(
            isinstance(t, int) and not isinstance(t, bool) for t in target
        ):
            raise ValueError(
                f"target: a list needs {n} ints (one class per example), got {target!r}"
            )
        classes = torch.tensor(target, dtype=torch.long, device=device)
    elif isinstance(target, Tensor):
        if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
            raise ValueError(f"target: a tensor must be of integer dtype, got {target.dtype}")
        device = target.device if device is None else device
        if target.numel() == 1 and target.dim() <= 1:
            classes = target.reshape(1).to(device=device, dtype=torch.long).expand(n)
        elif target.dim() == 1 and target.shape[0] == n:
            classes = target.to(device=device, dtype=torch.long)
        else:
            raise ValueError(
                f"target: a tensor must have shape (), (1,) or ({n},) (one class per example), "
                f"got {tuple(target.shape)}"
            )
    else:
        raise ValueError(
            f"target must be None, an int, a list of ints or a tensor, got {type(target).__name__}"
        )
    if n_classes is not None and bool(((classes < 0) | (classes >= n_classes)).any()):
        raise ValueError(
            f"target out of range: classes must be in [0, {n_classes}), got {classes.tolist()}"
        )
    return classes


def check_output_target(target: Any, output_shape: tuple[int, ...], n: int) -> None:
    """Check a Captum ``target`` against a model output of shape ``output_shape``.

    For methods that accept Captum's full target semantics (LEG, LEG-TV, the fidelity metrics):
    ``None`` for an output with one value per example; for an output ``(n, K)`` an int, a list
    of ``n`` ints or an integer tensor (see :func:`class_index_targets`) with classes in
    ``[0, K)``; for an output ``(n, d1, d2, ...)`` a tuple of indices, or a list of ``n``
    tuples, each index in range. Negative indices are rejected: ``-1`` is not "the last class".

    Raises:
        ValueError: For every target that does not select one value per example, naming
            ``target`` and the output's shape.
    """
    dims = tuple(output_shape[1:])
    if target is None:
        if math.prod(dims) != 1:
            raise ValueError(
                f"target=None needs one output value per example, but forward_func returns "
                f"shape {tuple(output_shape)}; pass target= (e.g. the class index per example)"
            )
        return
    if not dims:
        raise ValueError(
            f"target must be None for a forward_func that returns one value per example "
            f"(shape {tuple(output_shape)}), got {target!r}"
        )
    if isinstance(target, tuple) or (
        isinstance(target, list) and target and isinstance(target[0], tuple)
    ):
        rows = [target] * n if isinstance(target, tuple) else target
        if len(rows) != n:
            raise ValueError(f"target: a list of tuples needs {n} entries, got {len(rows)}")
        for row in rows:
            if (
                not isinstance(row, tuple)
                or len(row) != len(dims)
                or not all(
                    isinstance(i, int) and not isinstance(i, bool) and 0 <= i < d
                    for i, d in zip(row, dims)
                )
            ):
                raise ValueError(
                    f"target: each index tuple must have {len(dims)} non-negative ints below "
                    f"{dims} (the output's shape after the batch), got {row!r}"
                )
        return
    if len(dims) != 1:
        raise ValueError(
            f"target: forward_func returns shape {tuple(output_shape)}; pass a tuple of "
            f"{len(dims)} indices (or a list of {n} tuples), got {target!r}"
        )
    class_index_targets(target, n, n_classes=dims[0])
