"""Workers for the distributed ParameterSaliency.fit tests (run by ``dist_launch.run_ranks``).

Every worker builds the same seeded model and reference data as the single-process reference in
``tests/calibration/test_distributed_fit.py`` (through :func:`build`), fits on its shard and
writes what the test compares into ``out``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, Subset, TensorDataset

from captum_ext.attr import ParameterSaliency
from captum_ext.calibration import Layout, POTCalibration, ZScoreCalibration
from captum_ext.distributed import ShardSampler, get_context

N_REF = 61  # odd, so 2 and 3 ranks get uneven shards and DistributedSampler pads


def build(n: int = N_REF, wide: bool = False) -> tuple[ParameterSaliency, TensorDataset]:
    """A seeded conv + linear model (7 filters; 8 with ``wide``) and ``n`` reference examples."""
    torch.manual_seed(0)
    ch = 5 if wide else 4
    model = nn.Sequential(
        nn.Conv2d(1, ch, 3), nn.ReLU(), nn.Flatten(), nn.Linear(ch * 36, 3)
    ).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 1, 8, 8, generator=g)
    y = torch.randint(0, 3, (n,), generator=g)
    ps = ParameterSaliency(model, layers=[model[0], model[3]])
    return ps, TensorDataset(x, y)


def calibrations() -> dict[str, object]:
    """The calibrations compared between one process and several (fresh objects)."""
    return {
        "zscore": ZScoreCalibration(),
        "pot": POTCalibration(level=0.8, min_peaks=5),
        "pot_ref": POTCalibration(level=0.75, min_peaks=4, keep_reference=True),
    }


def state(cal: object) -> dict[str, torch.Tensor]:
    """The fitted numbers of a calibration, for comparison."""
    out = {"mean": cal.moments.mean, "m2": cal.moments.m2, "count": cal.moments.count}
    if isinstance(cal, POTCalibration):
        out.update(threshold=cal.threshold, xi=cal.xi, sigma=cal.sigma, n_peaks=cal.n_peaks)
        if cal.keep_reference:
            out["reference"] = cal.reference
    return out


def skewed_profiles(n: int = 200, f: int = 6) -> torch.Tensor:
    """Profiles whose largest values per filter all sit in the first half of the rows."""
    g = torch.Generator().manual_seed(3)
    p = torch.rand(n, f, generator=g, dtype=torch.float64).float()
    return p.sort(dim=0, descending=True).values


def fit_all(rank: int, world: int, out: str, sampler: str = "shard") -> None:
    """Fit every calibration on this rank's shard; save rank 0's files and every rank's state."""
    ps, ds = build()
    results = {}
    for name, cal in calibrations().items():
        if sampler == "shard":
            loader = DataLoader(ds, batch_size=8, sampler=ShardSampler(ds))
        elif sampler == "distributed":  # pads with repeats (61 -> 63 for 3 ranks), shuffled
            loader = DataLoader(ds, batch_size=8, sampler=DistributedSampler(ds, seed=5))
        else:  # user-sharded, very uneven: rank 0 gets 45 examples, the others share the rest
            first = N_REF if sampler == "empty" else 45  # "empty": the other ranks get none
            cut = [0, first, *[first + (N_REF - first) * r // (world - 1) for r in range(1, world)]]
            loader = DataLoader(Subset(ds, range(cut[rank], cut[rank + 1])), batch_size=7)
        ps.fit(loader, cal, internal_batch_size=1)  # profiles independent of batching
        ps.save_calibration(Path(out) / f"{name}.pt")
        results[name] = state(cal)
        results[name + "_info"] = dict(ps.last_fit_info)
    # the global top-K all on one rank: rank 0's shard holds the largest values of every filter
    prof = skewed_profiles()
    half = len(prof) // 2
    mine = prof[:half] if rank == 0 else prof[half:][rank - 1 :: world - 1]
    cal = POTCalibration(level=0.9, min_peaks=3)
    cal.begin(Layout(["a"], [prof.shape[1]], "h"), len(prof))
    cal.update(mine)
    cal.finalize_distributed(get_context())
    results["skewed"] = state(cal)
    torch.save(results, Path(out) / f"rank{rank}.pt")


def mismatches(rank: int, world: int, out: str) -> None:
    """Three faults in one job; each must raise on every rank, and the job must go on."""
    errors = {}
    ps, ds = build(wide=(rank == 1))
    loader = DataLoader(ds, batch_size=8, sampler=ShardSampler(ds))
    try:
        ps.fit(loader, ZScoreCalibration())
    except ValueError as err:
        errors["layout"] = str(err)
    ps, ds = build()
    loader = DataLoader(ds, batch_size=8, sampler=ShardSampler(ds))
    try:
        ps.fit(loader, POTCalibration(level=0.9 if rank == 0 else 0.8))
    except ValueError as err:
        errors["settings"] = str(err)
    bad = ds.tensors[0].clone()
    if rank == 1:
        bad[ShardSampler(ds).indices[2]] = float("nan")  # only rank 1 sees a non-finite input
    loader = DataLoader(TensorDataset(bad, ds.tensors[1]), batch_size=8, sampler=ShardSampler(ds))
    try:
        ps.fit(loader, ZScoreCalibration())
        ps.save_calibration(Path(out) / "must_not_exist.pt")
    except (ValueError, RuntimeError) as err:
        errors["nonfinite"] = f"{type(err).__name__}: {err}"
    torch.save(errors, Path(out) / f"rank{rank}.pt")


class _DyingLoader:
    """Yields batches of a shard; on rank 1 the process dies after the first batch."""

    def __init__(self, loader: DataLoader, rank: int) -> None:
        self.loader, self.rank = loader, rank

    def __iter__(self):
        for i, batch in enumerate(self.loader):
            if self.rank == 1 and i == 1:
                os._exit(17)
            yield batch


def dead_rank(rank: int, world: int, out: str) -> None:
    """Rank 1 dies mid-stream; rank 0 must fail in the merge and save nothing."""
    ps, ds = build()
    loader = DataLoader(ds, batch_size=4, sampler=ShardSampler(ds))
    try:
        ps.fit(_DyingLoader(loader, rank), POTCalibration(level=0.8, min_peaks=5))
        ps.save_calibration(Path(out) / "must_not_exist.pt")
    except RuntimeError as err:
        (Path(out) / f"rank{rank}.err").write_text(str(err))
        raise
