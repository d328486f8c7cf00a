"""Checks of a loaded calibration file's entries, each raising a ValueError naming the file.

Used by :meth:`captum_ext.calibration._base.Calibration.load` and by each kind's
``_check_state``: :func:`bad_file` builds the error, :func:`require_keys`, :func:`state_int`,
:func:`state_float` and :func:`state_tensor` check one entry each.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor


def bad_file(path: str | os.PathLike, problem: str) -> ValueError:
    """The error of a damaged calibration file: names the file and the problem."""
    return ValueError(
        f"calibration file {path} is damaged or not a captum-ext calibration: {problem}"
    )


def require_keys(state: dict[str, Any], keys: Iterable[str], path: str | os.PathLike) -> None:
    """Raise ValueError naming ``path`` and the first of ``keys`` missing from ``state``."""
    for key in keys:
        if key not in state:
            raise bad_file(path, f"missing key {key!r}")


def state_int(
    state: dict[str, Any], key: str, path: str | os.PathLike, minimum: int | None = None
) -> int:
    """``state[key]`` as a Python int (bools refused), at least ``minimum`` if given."""
    value = state[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_file(path, f"{key!r} must be an int, got {type(value).__name__}")
    if minimum is not None and value < minimum:
        raise bad_file(path, f"{key!r} must be >= {minimum}, got {value}")
    return value


def state_float(
    state: dict[str, Any], key: str, path: str | os.PathLike, low: float, high: float
) -> float:
    """``state[key]`` as a finite float strictly inside ``(low, high)``."""
    value = state[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise bad_file(path, f"{key!r} must be a number, got {type(value).__name__}")
    if not low < value < high:  # also refuses NaN
        raise bad_file(path, f"{key!r} must be in ({low:g}, {high:g}), got {value!r}")
    return float(value)


def state_tensor(
    state: dict[str, Any],
    key: str,
    path: str | os.PathLike,
    shape: tuple[int, ...],
    floating: bool = True,
    minimum: float | None = None,
    positive: bool = False,
) -> Tensor:
    """``state[key]`` checked: a tensor of ``shape``, floating (finite) or integer, in range.

    Args:
        state: The loaded file.
        key: The entry to check.
        path: The file, named in the error.
        shape: The expected shape (one entry per filter is ``(layout.n_filters,)``).
        floating: A finite floating-point tensor; ``False``: an integer (not bool) tensor.
        minimum: Every value must be ``>= minimum``.
        positive: Every value must be ``> 0``.

    Raises:
        ValueError: Naming ``path``, ``key`` and the problem.
    """
    value = state[key]
    if not isinstance(value, Tensor):
        raise bad_file(path, f"{key!r} must be a tensor, got {type(value).__name__}")
    if tuple(value.shape) != tuple(shape):
        raise bad_file(
            path,
            f"{key!r} has shape {tuple(value.shape)}, expected {tuple(shape)} (one entry per "
            "filter of the layout: a wrong shape or a wrong layer_counts)",
        )
    if floating:
        if not value.is_floating_point():
            raise bad_file(path, f"{key!r} must be a floating-point tensor, not {value.dtype}")
        bad = int((~torch.isfinite(value)).sum())
        if bad:
            raise bad_file(path, f"{key!r} contains {bad} non-finite value(s) (NaN or inf)")
    elif value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
        raise bad_file(path, f"{key!r} must be an integer tensor, got dtype {value.dtype}")
    if minimum is not None and bool((value < minimum).any()):
        raise bad_file(path, f"{key!r} has values below {minimum:g} (min {value.min().item()})")
    if positive and bool((value <= 0).any()):
        raise bad_file(path, f"{key!r} has values <= 0 (min {value.min().item()})")
    return value
