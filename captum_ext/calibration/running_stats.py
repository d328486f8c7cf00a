"""Mergeable streaming statistics: per-column moments (Chan) and per-column running top-K.

Both keep state that two workers can compute on disjoint shards and :meth:`merge` exactly (up to
float64 rounding for the moments), so a distributed fit is a thin layer over them.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


class RunningMoments:
    """Count, mean and M2 (sum of squared deviations) per column, float64, merged by Chan's rule.

    ``delta = mean_b - mean``, ``n' = n + n_b``, ``mean += delta n_b / n'``,
    ``M2 += M2_b + delta^2 n n_b / n'``.

    Examples:
        >>> m = RunningMoments()
        >>> m.update(torch.randn(100, 3)); m.update(torch.randn(50, 3))
        >>> m.std().shape
        torch.Size([3])
    """

    def __init__(self) -> None:
        self.count = 0
        self.mean: Tensor | None = None
        self.m2: Tensor | None = None

    def update(self, batch: Tensor) -> None:
        """Add the rows of ``batch`` ``(n, F)``."""
        b = batch.detach().to(torch.float64)
        if b.dim() != 2:
            raise ValueError(f"batch must be (n, F), got shape {tuple(b.shape)}")
        if b.shape[0] == 0:
            return
        mean_b = b.mean(0)
        m2_b = ((b - mean_b) ** 2).sum(0)
        self._merge(b.shape[0], mean_b, m2_b)

    def _merge(self, n_b: int, mean_b: Tensor, m2_b: Tensor) -> None:
        if self.mean is None or self.count == 0:
            self.count, self.mean, self.m2 = n_b, mean_b.clone(), m2_b.clone()
            return
        if mean_b.shape != self.mean.shape:
            raise ValueError(
                f"cannot merge statistics of {mean_b.shape[0]} columns into {self.mean.shape[0]}"
            )
        assert self.m2 is not None  # set together with self.mean
        n = self.count
        tot = n + n_b
        delta = mean_b.to(self.mean.device) - self.mean
        self.mean = self.mean + delta * (n_b / tot)
        self.m2 = self.m2 + m2_b.to(self.m2.device) + delta**2 * (n * n_b / tot)
        self.count = tot

    def merge(self, other: RunningMoments) -> RunningMoments:
        """Merge another accumulator's statistics into this one (in place); returns self."""
        if other.count:
            # a non-empty accumulator has its mean and M2 (set by its first non-empty batch)
            assert other.mean is not None and other.m2 is not None
            self._merge(other.count, other.mean, other.m2)
        return self

    def std(self) -> Tensor:
        """Unbiased standard deviation ``sqrt(M2 / (N - 1))``; ValueError if N < 2."""
        if self.count < 2 or self.m2 is None:
            raise ValueError(f"the standard deviation needs at least 2 samples, got {self.count}")
        return torch.sqrt(self.m2 / (self.count - 1))


class RunningTopK:
    """The ``k`` largest values seen so far in each column (``k=None`` keeps every value).

    Memory is ``F x k`` in the dtype of the data, never ``N x F`` (unless ``k`` is None).
    """

    def __init__(self, k: int | None) -> None:
        if k is not None and k < 1:
            raise ValueError(f"k must be a positive int or None, got {k}")
        self.k = k
        self.values: Tensor | None = None  # (F, <=k), unsorted
        self.count = 0

    def update(self, batch: Tensor) -> None:
        """Add the rows of ``batch`` ``(n, F)``."""
        b = batch.detach().t()
        self.count += b.shape[1]
        cat = b.clone() if self.values is None else torch.cat([self.values, b], dim=1)
        if self.k is not None and cat.shape[1] > self.k:
            cat = cat.topk(self.k, dim=1).values
        self.values = cat

    def merge(self, other: RunningTopK) -> RunningTopK:
        """Merge another accumulator (same ``k``) into this one (in place); returns self."""
        if other.values is None:
            return self
        self.count -= other.values.shape[1]  # update() adds the columns; fix the count after
        self.update(other.values.t())
        self.count += other.count
        return self

    def sorted_desc(self) -> Tensor:
        """``(F, m)`` kept values, largest first."""
        if self.values is None:
            raise ValueError("no values were added")
        return self.values.sort(dim=1, descending=True).values


def n_exceed(level: float, n: int) -> int:
    """``K = N - floor(level N)``: the threshold is the K-th largest of N reference values.

    ``floor`` uses a small tolerance so that e.g. ``0.29 * 100 = 28.999...`` counts as 29.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    x = level * n
    r = round(x)
    fl = r if abs(x - r) <= 1e-9 * max(1.0, abs(x)) else math.floor(x)
    return n - fl
