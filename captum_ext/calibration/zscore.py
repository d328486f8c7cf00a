"""Z-score calibration of parameter-saliency profiles (Levin et al., Eq. 2).

``zhat_j = (sbar_j - mu_j) / sigma_j`` with the per-filter mean and unbiased standard deviation
of the profiles over a reference set, accumulated in float64 in one streaming pass (Chan's
merge per batch, which equals Levin et al.'s batch-1 Welford update).

Reference:
    Levin et al., "Where do Models go Wrong? Parameter-Space Saliency Maps for Explainability",
    NeurIPS 2022.
"""

from __future__ import annotations

import os
from typing import Any, Literal

import torch
from torch import Tensor

from captum_ext.calibration._base import Calibration, register_kind
from captum_ext.calibration._state_checks import bad_file, require_keys, state_int, state_tensor
from captum_ext.calibration.distributed import merge_moments
from captum_ext.calibration.running_stats import RunningMoments
from captum_ext.distributed import DistContext

#: A reference standard deviation at or below this is treated as 1 (as Levin et al.'s code does).
STD_FLOOR = 1e-14


def floored_std(std: Tensor) -> Tensor:
    """``std`` with values at or below :data:`STD_FLOOR` replaced by 1 (z-scores divide by it)."""
    return torch.where(std <= STD_FLOOR, torch.ones_like(std), std)


#: The keys of the saved moments (``count``, per-filter ``mean`` and ``m2``).
MOMENT_KEYS = ("count", "mean", "m2")

#: How :func:`order_filters` orders the filters: most salient first, least first, or random.
FilterOrder = Literal["most", "least", "random"]


def check_moments_state(
    state: dict[str, Any], n_filters: int, n_total: int, path: str | os.PathLike
) -> None:
    """Check saved moments: ``count >= 2`` equal to ``n_total``, finite ``mean``, ``m2 >= 0``.

    Raises:
        ValueError: Naming ``path`` and the problem (a missing key, a wrong type, shape or
            dtype, non-finite values, a count that is not the reference size).
    """
    require_keys(state, MOMENT_KEYS, path)
    count = state_int(state, "count", path, minimum=2)
    if count != n_total:
        raise bad_file(path, f"'count' is {count} but 'n_total' is {n_total}")
    state_tensor(state, "mean", path, (n_filters,))
    state_tensor(state, "m2", path, (n_filters,), minimum=0.0)


def order_filters(
    key: Tensor,
    descending: bool,
    k: int | None = None,
    order: FilterOrder = "most",
    generator: torch.Generator | None = None,
) -> Tensor:
    """Rank columns per row by ``key`` with ties to the lower index; ``(N, k)`` LongTensor.

    ``order="most"`` ranks most salient first, ``"least"`` reverses it, and ``"random"`` is a
    seeded random permutation per row (a baseline; uses ``generator``).
    """
    n, f = key.shape
    k = f if k is None else int(k)
    if not 1 <= k <= f:
        raise ValueError(f"k must be in [1, {f}], got {k}")
    if order == "random":
        if generator is None:
            generator = torch.Generator().manual_seed(torch.initial_seed())
        perms = torch.stack([torch.randperm(f, generator=generator) for _ in range(n)])
        return perms[:, :k].to(key.device)
    if order not in ("most", "least"):
        raise ValueError(f"order must be 'most', 'least' or 'random', got {order!r}")
    desc = descending if order == "most" else not descending
    # a stable sort keeps the lower index first among ties
    idx = torch.sort(key, dim=1, descending=desc, stable=True).indices
    return idx[:, :k]


@register_kind
class ZScoreCalibration(Calibration):
    """Per-filter z-scores against reference mean and standard deviation.

    Use through :meth:`captum_ext.attr.ParameterSaliency.fit`, or stream profiles yourself
    with :meth:`begin`, :meth:`update` (any batch split) and :meth:`finalize`.

    Examples:
        >>> cal = ps.fit(loader, ZScoreCalibration())
        >>> z = ps.score(x, target=y)          # (N, n_filters) float64
        >>> top = ps.rank(x, target=y, k=10)   # (N, 10) flat filter indices
    """

    kind = "zscore"

    def __init__(self) -> None:
        super().__init__()
        self.moments = RunningMoments()
        self.mean: Tensor | None = None
        self.std: Tensor | None = None

    def begin(self, layout: Any, n_total: int | None = None) -> None:
        """Start a streaming fit for ``layout`` (``n_total``: reference size, if known)."""
        super().begin(layout, n_total)
        self.moments = RunningMoments()

    def update(self, profiles: Tensor) -> None:
        """Add a batch of reference profiles ``(n, n_filters)``."""
        self.moments.update(self._check_profiles(profiles))

    def merge(self, other: ZScoreCalibration) -> ZScoreCalibration:
        """Merge another (unfinalized) accumulator of the same layout into this one."""
        if self.layout is not None and other.layout is not None:
            self.layout.check(other.layout, "layout")
        self.moments.merge(other.moments)
        return self

    def finalize(self) -> ZScoreCalibration:
        """Compute mean and std; ValueError with fewer than 2 reference examples."""
        if self.moments.count < 2:
            raise ValueError(
                f"the z-score calibration needs at least 2 reference examples, got "
                f"{self.moments.count}"
            )
        assert self.moments.mean is not None  # count >= 2: the moments hold data
        self.mean = self.moments.mean.clone()
        self.std = self.moments.std()
        self.n_total = self.moments.count
        self.fitted = True
        return self

    def finalize_distributed(self, ctx: DistContext) -> ZScoreCalibration:
        """Merge every rank's moments (Chan's rule in rank order), then :meth:`finalize`.

        Called on every rank of ``ctx`` after each streamed its shard; every rank ends with the
        same mean and standard deviation, equal to one process's on the union up to rounding.
        """
        assert self.layout is not None  # begin() set it before the shard was streamed
        self.moments = merge_moments(ctx, self.moments, self.layout.n_filters)
        return self.finalize()

    def score(self, profiles: Tensor) -> Tensor:
        """``(profiles - mean) / std`` in float64, ``(N, n_filters)``; std <= 1e-14 counts as 1."""
        self._require_fitted()
        p = self._check_profiles(profiles).to(torch.float64)
        assert self.mean is not None and self.std is not None  # set by finalize or load
        std = floored_std(self.std)
        return (p - self.mean.to(p.device)) / std.to(p.device)

    def rank(
        self,
        profiles: Tensor,
        k: int | None = None,
        rank_by: Literal["z", "abs_z"] = "z",
        order: FilterOrder = "most",
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Flat filter indices ``(N, k)``, most salient first (descending z, ties to lower index).

        Args:
            profiles: Raw profiles ``(N, n_filters)``.
            k: Keep the top ``k`` (default: all).
            rank_by: ``"z"`` or ``"abs_z"`` (also surfaces unusually small gradients).
            order: ``"most"``, ``"least"`` (ascending) or ``"random"`` (seeded baseline).
            generator: Randomness for ``order="random"``.
        """
        z = self.score(profiles)
        if rank_by not in ("z", "abs_z"):
            raise ValueError(f"rank_by must be 'z' or 'abs_z', got {rank_by!r}")
        key = z.abs() if rank_by == "abs_z" else z
        return order_filters(key, True, k, order, generator)

    def state_dict(self) -> dict[str, Any]:
        """The fitted state: tensors and plain numbers only."""
        assert self.moments.mean is not None and self.moments.m2 is not None  # fitted: count >= 2
        return {
            "count": int(self.moments.count),
            "mean": self.moments.mean.cpu(),
            "m2": self.moments.m2.cpu(),
        }

    @classmethod
    def _check_state(
        cls, state: dict[str, Any], n_filters: int, n_total: int, path: str | os.PathLike
    ) -> None:
        """Check the saved moments (see :func:`check_moments_state`)."""
        check_moments_state(state, n_filters, n_total, path)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the fitted state written by :meth:`state_dict`."""
        self.moments = RunningMoments()
        self.moments.count = int(state["count"])
        self.moments.mean = state["mean"].to(torch.float64)
        self.moments.m2 = state["m2"].to(torch.float64)
        self.mean = self.moments.mean.clone()
        self.std = self.moments.std()
