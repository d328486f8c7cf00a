"""Peaks-over-threshold (POT) calibration of parameter-saliency profiles (POT-saliency).

For each filter ``j`` the reference profiles give a threshold ``T_j`` (the K-th largest value,
``K = N - floor(level N)``, i.e. the reference code's ``sorted[int(level N)]``), peaks
``Y_j = {s - T_j : s > T_j}`` and a GPD fitted to them by maximum likelihood
(:mod:`captum_ext.calibration.gpd`). A test profile ``x > T_j`` gets the tail probability
``P_j(x) = (N_t / N) (1 + xi (x - T) / sigma)^(-1/xi)`` (Eq. 5); filters are ranked by ascending
``P``. The reference set is streamed once, keeping a running top-K per filter (memory ``F x K``,
never ``N x F``), plus float64 moments so that z-scores are available from the same pass.

Differences from the reference code (``Sooh317/POT-saliency``), on purpose:

- the GPD fit is the correct MLE (``spot_compat=True`` reproduces the reference fit);
- a value beyond the endpoint of a ``xi < 0`` fit has ``P = 0`` and ranks first (the reference
  computes NaN, which ``argsort`` puts last);
- filters whose test value does not exceed ``T`` are left out of the ranking, as in the paper,
  instead of being sorted by NaN; ``rank_all=True`` appends them by empirical tail frequency.

Reference:
    Wang & Sato, "Understanding Parameter Saliency via Extreme Value Theory", arXiv 2310.17951.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, NamedTuple

import torch
from torch import Tensor

from captum_ext.calibration._base import Calibration, register_kind
from captum_ext.calibration._state_checks import (
    bad_file,
    require_keys,
    state_float,
    state_int,
    state_tensor,
)
from captum_ext.calibration.distributed import (
    agreed_dtype,
    gather_slices,
    merge_moments,
    merge_topk,
)
from captum_ext.calibration.gpd import fit_gpd, gpd_tail_prob
from captum_ext.calibration.running_stats import RunningMoments, RunningTopK, n_exceed
from captum_ext.calibration.zscore import check_moments_state, floored_std
from captum_ext.distributed import DistContext, agree, all_gather_rows

#: The keys of a saved POT state besides the moments (``reference`` is optional).
POT_KEYS = ("level", "min_peaks", "spot_compat", "threshold", "xi", "sigma", "n_peaks")


class POTScore(NamedTuple):
    """POT scores of test profiles.

    Attributes:
        tail_prob: ``(N, F)`` float64 tail probabilities; the sentinel ``1.0`` ("no evidence of
            extremeness", not a probability) where the value does not exceed the threshold or the
            filter could not be fitted.
        exceeds: ``(N, F)`` bool, value strictly above the threshold of a fitted filter.
    """

    tail_prob: Tensor
    exceeds: Tensor


@register_kind
class POTCalibration(Calibration):
    """GPD tail probabilities per filter, fitted to exceedances over a high threshold.

    Args:
        level: Threshold quantile in (0, 1) (paper: 0.9).
        min_peaks: Filters with ``1 <= N_t < min_peaks`` peaks use the exponential fit
            (``xi = 0``, ``sigma = mean(Y)``) and are counted in one warning.
        keep_reference: Keep all reference profiles (``N x F`` in memory), needed by
            ``rank(..., rank_all=True)``.
        spot_compat: Fit the GPDs as the reference SPOT code does (see
            :func:`captum_ext.calibration.gpd.fit_gpd`); only to reproduce the paper's numbers.
        n_grid: Root-bracketing grid points per interval of the GPD fit (None: automatic).

    Examples:
        >>> cal = ps.fit(loader, POTCalibration(level=0.9))
        >>> scores = ps.score(x, target=y)            # POTScore(tail_prob, exceeds)
        >>> ranks = ps.rank(x, target=y, k=25)        # list of 1-D LongTensors
    """

    kind = "pot"

    def __init__(
        self,
        level: float = 0.9,
        min_peaks: int = 10,
        keep_reference: bool = False,
        spot_compat: bool = False,
        n_grid: int | None = None,
    ) -> None:
        super().__init__()
        n_exceed(level, 10)  # validates level
        if not isinstance(min_peaks, int) or min_peaks < 1:
            raise ValueError(f"min_peaks must be a positive int, got {min_peaks!r}")
        self.level = float(level)
        self.min_peaks = min_peaks
        self.keep_reference = keep_reference
        self.spot_compat = spot_compat
        self.n_grid = n_grid
        self.moments = RunningMoments()
        self.topk = RunningTopK(None)
        self.reference: list[Tensor] | Tensor | None = None

    def begin(self, layout: Any, n_total: int | None = None) -> None:
        """Start a streaming fit for ``layout`` (``n_total``: reference size, if known)."""
        super().begin(layout, n_total)
        self.moments = RunningMoments()
        self.topk = RunningTopK(n_exceed(self.level, n_total) if n_total else None)
        self.reference = [] if self.keep_reference else None

    def update(self, profiles: Tensor) -> None:
        """Add a batch of reference profiles ``(n, n_filters)``."""
        p = self._check_profiles(profiles).detach()
        self.moments.update(p)
        self.topk.update(p)
        if self.keep_reference:
            assert isinstance(self.reference, list)  # begin() made it a list
            self.reference.append(p.cpu())

    def merge(self, other: POTCalibration) -> POTCalibration:
        """Merge another (unfinalized) accumulator of the same layout and ``level``."""
        if self.layout is not None and other.layout is not None:
            self.layout.check(other.layout, "layout")
        if self.topk.k != other.topk.k:
            raise ValueError(f"cannot merge top-K of different K ({self.topk.k} vs {other.topk.k})")
        self.moments.merge(other.moments)
        self.topk.merge(other.topk)
        if self.keep_reference and other.reference is not None:
            assert isinstance(self.reference, list)  # begin() made it a list
            self.reference.extend(other.reference)
        return self

    def config(self) -> dict[str, Any]:
        """The settings that must be equal for two fits to be mergeable."""
        return {
            "kind": self.kind,
            "level": self.level,
            "min_peaks": self.min_peaks,
            "keep_reference": self.keep_reference,
            "spot_compat": self.spot_compat,
            "n_grid": self.n_grid,
        }

    def finalize(self) -> POTCalibration:
        """Thresholds, peaks and GPD fits. Warns about filters with too few peaks."""
        n = self.topk.count
        k = self._n_exceed(n)
        top = self.topk.sorted_desc()[:, :k]
        thr, xi, sigma, counts = self._fit_tails(top)
        return self._set_fit(thr, xi, sigma, counts, n)

    def finalize_distributed(self, ctx: DistContext) -> POTCalibration:
        """Merge every rank's streamed state exactly, fitting each rank's slice of filters.

        Called on every rank of ``ctx`` after each streamed its shard. Thresholds and peaks equal
        one process's on the union exactly; each rank fits the GPDs of ``F / world`` filters and
        every rank ends with all the fits (see :mod:`captum_ext.calibration.distributed`).
        """
        assert self.layout is not None  # begin() set it before the shard was streamed
        f = self.layout.n_filters
        dtype = agreed_dtype(ctx, self.topk)
        self.moments = merge_moments(ctx, self.moments, f)
        n = self.moments.count
        k = self._n_exceed(n)  # the same n on every rank, so every rank raises alike
        top, _ = merge_topk(ctx, self.topk, k, f, dtype)
        with agree(ctx, "the POT fit"):
            part = torch.stack(self._fit_tails(top), dim=1).to(torch.float64).cpu()
        fitted = gather_slices(ctx, part)
        if self.keep_reference:
            local = self._local_reference(f, dtype)
            self.reference = [torch.cat(all_gather_rows(ctx, local))]
        dev = top.device
        thr = fitted[:, 0].to(dev)
        counts = fitted[:, 3].round().to(torch.int64).to(dev)
        return self._set_fit(thr, fitted[:, 1], fitted[:, 2], counts, n)

    def _local_reference(self, n_columns: int, dtype: torch.dtype) -> Tensor:
        if not self.reference:  # a rank without data still sends the agreed dtype
            return torch.empty(0, n_columns, dtype=dtype)
        assert isinstance(self.reference, list)  # still streaming: begin() made it a list
        return torch.cat(self.reference).to(dtype)

    def _n_exceed(self, n: int) -> int:
        if n < 2:
            raise ValueError(f"the POT calibration needs at least 2 reference examples, got {n}")
        k = n_exceed(self.level, n)
        if self.topk.k is not None and k > self.topk.k:
            raise ValueError(
                f"the reference loader yielded {n} examples but n_total={self.n_total} was "
                "announced; pass the right size (len(loader.dataset))"
            )
        return k

    def _fit_tails(self, top: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Threshold, GPD ``xi`` and ``sigma`` and peak count of filters' sorted top-K rows."""
        top = top.to(torch.float64)
        k = top.shape[1]
        thr = top[:, k - 1]
        mask = top > thr[:, None]
        counts = mask.sum(1)
        y = torch.where(mask, top - thr[:, None], 0.0).cpu()
        f = top.shape[0]
        xi = torch.zeros(f, dtype=torch.float64)
        sigma = torch.ones(f, dtype=torch.float64)
        counts_c = counts.cpu()
        few = (counts_c >= 1) & (counts_c < self.min_peaks)
        full = counts_c >= self.min_peaks
        if few.any():
            sigma[few] = y[few].sum(1) / counts_c[few]
        if full.any():
            fit = fit_gpd(y[full], counts_c[full], n_grid=self.n_grid, spot_compat=self.spot_compat)
            xi[full], sigma[full] = fit.xi, fit.sigma
        dev = top.device
        return thr, xi.to(dev), sigma.to(dev), counts

    def _set_fit(
        self, thr: Tensor, xi: Tensor, sigma: Tensor, counts: Tensor, n: int
    ) -> POTCalibration:
        f = thr.shape[0]
        counts_c = counts.cpu()
        n_none = int((counts_c == 0).sum())
        n_few = int(((counts_c >= 1) & (counts_c < self.min_peaks)).sum())
        if n_none:
            warnings.warn(
                f"{n_none} of {f} filters have no reference value above their threshold "
                "(e.g. dead filters); they are left out of POT rankings",
                stacklevel=3,
            )
        if n_few:
            warnings.warn(
                f"{n_few} of {f} filters have fewer than min_peaks={self.min_peaks} peaks; "
                "they use the exponential fit (xi=0, sigma=mean of peaks)",
                stacklevel=3,
            )
        dev = thr.device
        self.threshold, self.xi, self.sigma = thr, xi.to(dev), sigma.to(dev)
        self.n_peaks = counts.to(dev)
        self.n_total = n
        if self.keep_reference:
            ref = torch.cat(self.reference) if isinstance(self.reference, list) else self.reference
            assert ref is not None  # keep_reference: begin() made it a list
            self.reference = ref.t().sort(dim=1).values.contiguous()  # (F, N) ascending
        self.fitted = True
        return self

    def score(self, profiles: Tensor) -> POTScore:
        """Tail probabilities (float64) and the exceedance mask of test profiles ``(N, F)``."""
        self._require_fitted()
        x = self._check_profiles(profiles).to(torch.float64)
        dev = x.device
        thr, xi, sig = self.threshold.to(dev), self.xi.to(dev), self.sigma.to(dev)
        npk = self.n_peaks.to(dev)
        exceeds = (x > thr) & (npk > 0)
        assert self.n_total is not None  # set by finalize or load
        p = gpd_tail_prob(x, thr, xi, sig, npk.clamp_min(1), self.n_total)
        return POTScore(torch.where(exceeds, p, torch.ones_like(p)), exceeds)

    def zscore(self, profiles: Tensor) -> Tensor:
        """Z-scores from the moments accumulated in the same pass (float64)."""
        self._require_fitted()
        x = self._check_profiles(profiles).to(torch.float64)
        std = self.moments.std().to(x.device)
        std = floored_std(std)
        assert self.moments.mean is not None  # std() succeeded: the moments hold data
        return (x - self.moments.mean.to(x.device)) / std

    def rank(self, profiles: Tensor, k: int | None = None, rank_all: bool = False) -> list[Tensor]:
        """Per example, flat filter indices by ascending tail probability (most salient first).

        Only exceeding filters are ranked (the paper), so lengths vary: a list of 1-D
        LongTensors. Ties (e.g. several ``P = 0``) go to the larger ``(x - T) / sigma``, then the
        lower index. ``rank_all=True`` appends the other filters by ascending empirical tail
        frequency ``#{reference > x} / N`` (ties by z-score, then index); this needs
        ``keep_reference=True``, otherwise they are appended by descending z-score with a
        warning. ``k`` truncates each ranking.
        """
        sc = self.score(profiles)
        x = profiles.detach().to(torch.float64)
        dev = x.device
        excess = (x - self.threshold.to(dev)) / self.sigma.to(dev)
        p = torch.where(sc.exceeds, sc.tail_prob, torch.full_like(sc.tail_prob, float("inf")))
        o1 = torch.sort(-excess, dim=1, stable=True).indices
        o2 = torch.sort(p.gather(1, o1), dim=1, stable=True).indices
        order = o1.gather(1, o2)
        n_exc = sc.exceeds.sum(1).tolist()
        rest_order = None
        if rank_all:
            z = self.zscore(x)
            o1 = torch.sort(-z, dim=1, stable=True).indices
            if self.keep_reference and isinstance(self.reference, Tensor):
                ref = self.reference.to(dev)
                above = ref.shape[1] - torch.searchsorted(ref, x.t().contiguous(), right=True)
                emp = above.t().to(torch.float64)
                o2 = torch.sort(emp.gather(1, o1), dim=1, stable=True).indices
                rest_order = o1.gather(1, o2)
            else:
                warnings.warn(
                    "rank_all=True without keep_reference=True: non-exceeding filters are "
                    "appended by descending z-score",
                    stacklevel=2,
                )
                rest_order = o1
        out = []
        for i, m in enumerate(n_exc):
            r = order[i, :m]
            if rest_order is not None:
                ex = sc.exceeds[i]
                rest = rest_order[i][~ex[rest_order[i]]]
                r = torch.cat([r, rest])
            out.append(r if k is None else r[:k])
        return out

    def state_dict(self) -> dict[str, Any]:
        """The fitted state: tensors and plain numbers only."""
        assert self.moments.mean is not None and self.moments.m2 is not None  # fitted: count >= 2
        state = {
            "level": self.level,
            "min_peaks": self.min_peaks,
            "spot_compat": int(self.spot_compat),
            "threshold": self.threshold.cpu(),
            "xi": self.xi.cpu(),
            "sigma": self.sigma.cpu(),
            "n_peaks": self.n_peaks.cpu(),
            "count": int(self.moments.count),
            "mean": self.moments.mean.cpu(),
            "m2": self.moments.m2.cpu(),
        }
        if self.keep_reference:
            assert isinstance(self.reference, Tensor)  # finalize or load made it one tensor
            state["reference"] = self.reference.cpu()
        return state

    @classmethod
    def _check_state(
        cls, state: dict[str, Any], n_filters: int, n_total: int, path: str | os.PathLike
    ) -> None:
        """Check a saved POT state against what :meth:`finalize` can write.

        ``level`` in (0, 1), ``min_peaks >= 1``, ``spot_compat`` 0 or 1; per filter a finite
        ``threshold`` and ``xi``, ``sigma > 0`` (filters without peaks keep ``xi = 0``,
        ``sigma = 1``: the fit never writes NaN or inf) and ``0 <= n_peaks < n_total``; the
        moments (see :func:`~captum_ext.calibration.zscore.check_moments_state`); and, if kept,
        the finite ``reference`` profiles ``(n_filters, n_total)``.
        """
        require_keys(state, POT_KEYS, path)
        state_float(state, "level", path, 0.0, 1.0)
        state_int(state, "min_peaks", path, minimum=1)
        if state_int(state, "spot_compat", path) not in (0, 1):
            raise bad_file(path, f"'spot_compat' must be 0 or 1, got {state['spot_compat']}")
        check_moments_state(state, n_filters, n_total, path)
        state_tensor(state, "threshold", path, (n_filters,))
        state_tensor(state, "xi", path, (n_filters,))
        state_tensor(state, "sigma", path, (n_filters,), positive=True)
        peaks = state_tensor(state, "n_peaks", path, (n_filters,), floating=False, minimum=0)
        if bool((peaks >= n_total).any()):
            raise bad_file(path, f"'n_peaks' has values >= n_total={n_total}")
        if "reference" in state:
            state_tensor(state, "reference", path, (n_filters, n_total))

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the fitted state written by :meth:`state_dict`."""
        self.level, self.min_peaks = float(state["level"]), int(state["min_peaks"])
        self.spot_compat, self.n_grid = bool(state["spot_compat"]), None
        self.threshold, self.xi, self.sigma = state["threshold"], state["xi"], state["sigma"]
        self.n_peaks = state["n_peaks"]
        self.moments = RunningMoments()
        self.moments.count = int(state["count"])
        self.moments.mean, self.moments.m2 = state["mean"], state["m2"]
        self.topk = RunningTopK(None)
        self.keep_reference = "reference" in state
        self.reference = state.get("reference")
