"""Private helpers shared by the metrics: map reduction, stable pixel orders, tie-aware ranks.

All functions are batched over the leading (example) dimension and work on the device of their
inputs.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

_REDUCTIONS = ("abs_sum", "sum", "none")


def check_finite(name: str, tensor: Tensor) -> None:
    """Raise ValueError if ``tensor`` holds NaN or infinite values."""
    if not torch.isfinite(tensor).all():
        bad = int((~torch.isfinite(tensor)).sum())
        raise ValueError(f"{name} must be finite, got {bad} non-finite value(s)")


def as_tensor(name: str, value: object) -> Tensor:
    """Return ``value`` if it is a tensor, else raise a TypeError naming ``name``."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value


def reduce_map(
    attributions: Tensor, reduction: str = "abs_sum", name: str = "attributions"
) -> Tensor:
    """Reduce attributions of shape (N, C, H, W) or (N, H, W) to per-pixel maps (N, H, W).

    Args:
        attributions: Attributions, channels first.
        reduction: ``"abs_sum"`` (sum over channels of ``abs``, the default of every protocol),
            ``"sum"`` (signed sum over channels) or ``"none"`` (the input must already be
            ``(N, H, W)`` or ``(N, 1, H, W)``).
        name: Argument name used in error messages.

    Returns:
        The maps, shape (N, H, W), in the dtype of ``attributions``.
    """
    as_tensor(name, attributions)
    if attributions.dim() not in (3, 4):
        raise ValueError(
            f"{name} must have shape (N, C, H, W) or (N, H, W), got {tuple(attributions.shape)}"
        )
    if attributions.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one example, got an empty batch")
    check_finite(name, attributions)
    if attributions.dim() == 3:
        return attributions.abs() if reduction == "abs_sum" else attributions
    if reduction == "abs_sum":
        return attributions.abs().sum(1)
    if reduction == "sum":
        return attributions.sum(1)
    if reduction == "none":
        if attributions.shape[1] != 1:
            raise ValueError(
                f"reduction='none' needs single-channel {name}, got "
                f"{attributions.shape[1]} channels"
            )
        return attributions[:, 0]
    raise ValueError(f"reduction must be one of 'abs_sum', 'sum', 'none', got {reduction!r}")


def pixel_order(maps: Tensor, descending: bool) -> Tensor:
    """Stable order of the pixels of each map: ties keep the lower flat (row-major) index first.

    Args:
        maps: Maps of shape (N, H, W) or (N, P).
        descending: Highest values first if True.

    Returns:
        Flat pixel indices, shape (N, P), int64.
    """
    flat = maps.reshape(maps.shape[0], -1)
    return torch.sort(flat, dim=1, descending=descending, stable=True).indices


def pixel_rank(maps: Tensor, descending: bool) -> Tensor:
    """Position of every pixel in :func:`pixel_order` (0 = first), shape (N, P)."""
    order = pixel_order(maps, descending)
    rank = torch.empty_like(order)
    positions = torch.arange(order.shape[1], device=order.device).expand_as(order)
    rank.scatter_(1, order, positions)
    return rank


def average_ranks(values: Tensor) -> Tensor:
    """Tie-aware ranks (1-based, ties get their average rank) along the last dimension.

    Equal to ``scipy.stats.rankdata(method="average")`` applied row by row.

    Args:
        values: Tensor of shape (N, P).

    Returns:
        Float64 ranks, shape (N, P).
    """
    n, p = values.shape
    sorted_vals, order = torch.sort(values, dim=1, stable=True)
    new_group = torch.ones_like(sorted_vals, dtype=torch.bool)
    new_group[:, 1:] = sorted_vals[:, 1:] != sorted_vals[:, :-1]
    group = new_group.long().cumsum(1) - 1  # group id per sorted position, per row
    offset = torch.arange(n, device=values.device).unsqueeze(1) * p
    flat_group = (group + offset).reshape(-1)
    pos = torch.arange(p, device=values.device, dtype=torch.float64).expand(n, p).reshape(-1)
    first = torch.full((n * p,), float(p), dtype=torch.float64, device=values.device)
    last = torch.full((n * p,), -1.0, dtype=torch.float64, device=values.device)
    first.scatter_reduce_(0, flat_group, pos, reduce="amin")
    last.scatter_reduce_(0, flat_group, pos, reduce="amax")
    sorted_rank = ((first[flat_group] + last[flat_group]) / 2 + 1).reshape(n, p)
    ranks = torch.empty_like(sorted_rank)
    ranks.scatter_(1, order, sorted_rank)
    return ranks


_CONSTANT_WARNED = False


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise tie-aware Spearman rank correlation of two (N, P) tensors, float64 (N,).

    Equals ``scipy.stats.spearmanr`` per row. When either row is constant the correlation is
    undefined; the documented convention is 0.0, with a warning (once per process).
    """
    global _CONSTANT_WARNED
    ra, rb = average_ranks(a), average_ranks(b)
    ra = ra - ra.mean(1, keepdim=True)
    rb = rb - rb.mean(1, keepdim=True)
    num = (ra * rb).sum(1)
    den = ra.pow(2).sum(1).sqrt() * rb.pow(2).sum(1).sqrt()
    constant = den == 0
    if bool(constant.any()) and not _CONSTANT_WARNED:
        warnings.warn(
            "Spearman correlation with a constant map is undefined; returning 0.0 for it",
            RuntimeWarning,
            stacklevel=3,
        )
        _CONSTANT_WARNED = True
    return torch.where(constant, torch.zeros_like(num), num / torch.where(constant, 1.0, den))


def check_same_batch(name_a: str, a: Tensor, name_b: str, b: Tensor) -> None:
    """Raise ValueError if two tensors have different shapes."""
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape, got {tuple(a.shape)} and "
            f"{tuple(b.shape)}"
        )


__all__ = [
    "as_tensor",
    "average_ranks",
    "check_finite",
    "check_same_batch",
    "pixel_order",
    "pixel_rank",
    "reduce_map",
    "spearman",
]
