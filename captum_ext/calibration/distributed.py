"""Exact merges of calibration statistics across the ranks of a ``torch.distributed`` job.

Each rank streams its own shard of the reference set into a calibration; these functions then
make every rank hold the calibration one process would have fitted on the union:

- moments (count, mean, M2 in float64) are all-gathered and merged with Chan's rule in rank
  order, so the z-scores equal the single-process ones up to float64 rounding;
- for POT, every rank keeps its local top-K per filter with K from the *global* count (the
  global top-K may all come from one rank). The filters are split into one contiguous slice per
  rank; an ``all_to_all`` sends each rank the candidates of its slice from every rank, which
  ``topk`` merges into exactly the single-process top-K, so thresholds and peaks are identical.
  Each rank fits the GPDs of its slice only (the fit is per filter, so the work is divided, not
  repeated) and an all-gather of ``(threshold, xi, sigma, n_peaks)`` completes every rank.

Traffic per rank: ``2 F x 8 B`` sent for the moments (received ``world - 1`` times that), and for
POT about ``F x P x 4 B x (world - 1) / world`` each way, ``P = min(K, largest shard)``, plus
``4 F x 8 B / world`` sent for the fitted parameters.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from captum_ext.calibration._base import Calibration, Layout
from captum_ext.calibration.running_stats import RunningMoments, RunningTopK
from captum_ext.distributed import (
    DistContext,
    all_gather_object,
    all_gather_rows,
    all_gather_tensor,
    all_to_all,
)


def check_same_setup(
    ctx: DistContext, layout: Layout, calibration: Calibration, announced: Any
) -> list[Any]:
    """Fail fast on every rank unless all ranks fit the same layout with the same calibration.

    Called before streaming, so a mismatch raises ``ValueError`` on every rank instead of
    corrupting the merge or hanging in it.

    Args:
        ctx: The distributed context.
        layout: This rank's filter layout.
        calibration: This rank's (unfitted) calibration.
        announced: What this rank knows of the reference size (any picklable value).

    Returns:
        Every rank's ``announced``, in rank order.
    """
    mine = {
        "layout_hash": layout.layout_hash,
        "n_filters": layout.n_filters,
        "n_layers": len(layout.layer_names),
        "calibration": calibration.config(),
        "announced": announced,
    }
    every = all_gather_object(ctx, mine)
    for key, what in (
        ("layout_hash", "the model's filter layout"),
        ("calibration", "the calibration settings"),
    ):
        values = [e[key] for e in every]
        if any(v != values[0] for v in values):
            detail = "; ".join(
                f"rank {r}: {e['n_layers']} layers / {e['n_filters']} filters, hash "
                f"{e['layout_hash']}"
                if key == "layout_hash"
                else f"rank {r}: {e['calibration']}"
                for r, e in enumerate(every)
            )
            raise ValueError(f"the ranks disagree about {what} ({detail})")
    return [e["announced"] for e in every]


def merge_moments(ctx: DistContext, moments: RunningMoments, n_columns: int) -> RunningMoments:
    """Every rank's moments merged in rank order (Chan's rule, float64); returns a new object."""
    n_local = torch.tensor([moments.count], dtype=torch.float64)
    zeros = torch.zeros(n_columns, dtype=torch.float64)
    if moments.count:
        # a non-empty accumulator has its mean and M2 (set by its first non-empty batch)
        assert moments.mean is not None and moments.m2 is not None
        mean, m2 = moments.mean.cpu(), moments.m2.cpu()
    else:
        mean = m2 = zeros
    packed = torch.cat([n_local, mean.to(torch.float64), m2.to(torch.float64)])
    merged = RunningMoments()
    for part in all_gather_tensor(ctx, packed):
        n = int(part[0])
        if n:
            merged._merge(n, part[1 : 1 + n_columns], part[1 + n_columns :])
    if moments.mean is not None:
        # this rank's own non-empty moments were merged, so the merge has them too
        assert merged.mean is not None and merged.m2 is not None
        merged.mean = merged.mean.to(moments.mean.device)
        merged.m2 = merged.m2.to(moments.mean.device)
    return merged


def slice_bounds(n_columns: int, world_size: int) -> list[int]:
    """Start of each rank's contiguous slice of filters, plus ``n_columns`` at the end."""
    return [n_columns * r // world_size for r in range(world_size + 1)]


def merge_topk(
    ctx: DistContext, topk: RunningTopK, k: int, n_columns: int, dtype: torch.dtype
) -> tuple[Tensor, int]:
    """The global top-``k`` (descending) of this rank's slice of filters.

    Args:
        ctx: The distributed context.
        topk: This rank's running top-K (K at least ``k``, or unbounded).
        k: How many largest values per filter to keep over all ranks.
        n_columns: Number of filters ``F``.
        dtype: The dtype the ranks exchange (the profiles' dtype, agreed beforehand).

    Returns:
        ``(top, start)``: ``top`` is ``(F_slice, k)`` sorted descending in ``dtype`` and ``start``
        the flat index of the slice's first filter.
    """
    counts = [int(c) for c in all_gather_tensor(ctx, torch.tensor([topk.count]))]
    width = min(k, max(counts))
    if topk.values is None:
        local = torch.empty(n_columns, 0, dtype=dtype)
    else:
        local = topk.sorted_desc()[:, :width].to(dtype)
    if local.shape[1] < width:  # a short shard: pad with -inf, which never enters the top-k
        pad = torch.full((n_columns, width - local.shape[1]), float("-inf"), dtype=dtype)
        local = torch.cat([local, pad.to(local.device)], dim=1)
    bounds = slice_bounds(n_columns, ctx.world_size)
    rows = max(b - a for a, b in zip(bounds, bounds[1:]))  # Gloo needs equal shapes: pad rows
    chunks = []
    for r in range(ctx.world_size):
        c = local[bounds[r] : bounds[r + 1]]
        fill = torch.full((rows - c.shape[0], width), float("-inf"), dtype=dtype)
        chunks.append(torch.cat([c, fill.to(c.device)]))
    mine = bounds[ctx.rank + 1] - bounds[ctx.rank]
    candidates = torch.cat([c[:mine] for c in all_to_all(ctx, chunks)], dim=1)
    top = candidates.topk(k, dim=1).values if candidates.shape[0] else candidates[:, :k]
    return top, bounds[ctx.rank]


def gather_slices(ctx: DistContext, part: Tensor) -> Tensor:
    """Concatenate every rank's ``(F_slice, ...)`` slice in rank order: ``(F, ...)``."""
    return torch.cat(all_gather_rows(ctx, part), dim=0)


def agreed_dtype(ctx: DistContext, topk: RunningTopK) -> torch.dtype:
    """The profiles' dtype, agreed by all ranks (ranks without data take the others')."""
    mine = None if topk.values is None else str(topk.values.dtype).replace("torch.", "")
    every = [d for d in all_gather_object(ctx, mine) if d is not None]
    if len(set(every)) > 1:
        raise ValueError(f"the ranks' profiles have different dtypes: {sorted(set(every))}")
    return getattr(torch, every[0]) if every else torch.float32
