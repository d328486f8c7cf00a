"""ParameterSaliency.fit inside a torch.distributed job equals the single-process fit.

The ranks are separate Python processes joined by a Gloo group (``tests/dist_launch.py``); the
single-process reference is fitted here, in the test process, on the same seeded model and data
(``tests/calibration_workers.py``).
"""

from __future__ import annotations

import warnings

import pytest
import torch
from calibration_workers import N_REF, build, calibrations, skewed_profiles, state
from dist_launch import describe, run_ranks
from torch.utils.data import DataLoader

from captum_ext.attr._utils.reference_size import global_size, reference_size
from captum_ext.calibration import Calibration, Layout, POTCalibration
from captum_ext.distributed import ShardSampler, get_context, shard_indices


def _single_process() -> dict[str, dict]:
    ps, ds = build()
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, cal in calibrations().items():
            ps.fit(DataLoader(ds, batch_size=N_REF), cal, internal_batch_size=1)
            out[name] = state(cal)
        prof = skewed_profiles()
        cal = POTCalibration(level=0.9, min_peaks=3)
        cal.begin(Layout(["a"], [prof.shape[1]], "h"), len(prof))
        cal.update(prof)
        out["skewed"] = state(cal.finalize())
    return out


@pytest.fixture(scope="module")
def reference() -> dict[str, dict]:
    return _single_process()


def _assert_same(dist_state: dict, ref: dict, what: str) -> None:
    assert dist_state["count"] == ref["count"], what
    torch.testing.assert_close(dist_state["mean"], ref["mean"], rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(dist_state["m2"], ref["m2"], rtol=1e-10, atol=1e-15)
    if "threshold" in ref:
        # thresholds and peaks are selected, not computed: exactly the single-process ones
        assert torch.equal(dist_state["threshold"], ref["threshold"]), what
        assert torch.equal(dist_state["n_peaks"], ref["n_peaks"]), what
        assert (ref["n_peaks"] >= 3).any(), "the test must exercise the GPD fit"
        torch.testing.assert_close(dist_state["xi"], ref["xi"], rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(dist_state["sigma"], ref["sigma"], rtol=1e-9, atol=1e-12)
    if "reference" in ref:
        assert torch.equal(dist_state["reference"], ref["reference"]), what


@pytest.mark.parametrize(
    "world, sampler",
    [(2, "shard"), (4, "shard"), (3, "distributed"), (2, "uneven"), (3, "empty")],
)
def test_distributed_fit_equals_single_process(world, sampler, reference, tmp_path):
    res = run_ranks(
        "calibration_workers:fit_all", world, tmp_path, out=str(tmp_path), sampler=sampler
    )
    assert all(r.returncode == 0 for r in res), describe(res)
    per_rank = [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]
    for rank, got in enumerate(per_rank):
        for name in ("zscore", "pot", "pot_ref", "skewed"):
            _assert_same(got[name], reference[name], f"{name} on rank {rank} of {world}")
        info = got["zscore_info"]
        assert info["world_size"] == world and info["n_total"] == N_REF
        # each example is streamed by exactly one rank (the DistributedSampler's repeats dropped)
    assert sum(g["zscore_info"]["n_local"] for g in per_rank) == N_REF
    # rank 0 saved the calibration, and it loads into a fresh single-process model
    ps, _ = build()
    for name in ("zscore", "pot", "pot_ref"):
        _assert_same(state(ps.load_calibration(tmp_path / f"{name}.pt")), reference[name], name)


def test_mismatched_ranks_fail_fast_everywhere(tmp_path):
    res = run_ranks("calibration_workers:mismatches", 2, tmp_path, timeout=90, out=str(tmp_path))
    assert all(r.returncode == 0 for r in res), describe(res)
    errs = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for e in errs:
        assert "disagree about the model's filter layout" in e["layout"]
        assert "7 filters" in e["layout"] and "8 filters" in e["layout"]
        assert "disagree about the calibration settings" in e["settings"]
    assert errs[1]["nonfinite"].startswith("ValueError: inputs contain non-finite")
    assert errs[0]["nonfinite"].startswith("RuntimeError: ParameterSaliency.fit failed on rank 1")
    assert not (tmp_path / "must_not_exist.pt").exists()


def test_dead_rank_fails_the_job_and_saves_nothing(tmp_path):
    res = run_ranks("calibration_workers:dead_rank", 2, tmp_path, timeout=90, out=str(tmp_path))
    assert res[1].returncode == 17, describe(res)
    assert res[0].returncode != 0, describe(res)
    assert "killed after" not in res[0].stderr, "rank 0 hung instead of failing"
    assert (tmp_path / "rank0.err").exists()
    assert not (tmp_path / "must_not_exist.pt").exists()


def test_shards_cover_every_example_once():
    for n in (0, 1, 7, 61):
        for world in (1, 2, 3, 5):
            ids = sorted(i for r in range(world) for i in ShardSampler(n, r, world))
            assert ids == list(range(n))
            sizes = [len(shard_indices(n, r, world)) for r in range(world)]
            assert max(sizes) - min(sizes) <= 1
    with pytest.raises(ValueError, match="rank"):
        ShardSampler(10, rank=2, world_size=2)


def test_reference_size_rules():
    _, ds = build()
    assert reference_size(DataLoader(ds), None) == (("share", N_REF), None)
    assert reference_size(DataLoader(ds), 500) == (("global", 500), None)
    loader = DataLoader(ds, sampler=ShardSampler(ds, 1, 3))
    assert reference_size(loader, None) == (("global", N_REF), None)
    sampler = torch.utils.data.DistributedSampler(ds, num_replicas=2, rank=1)
    # 61 examples on 2 ranks: rank 1's 31 slots hold 30 examples and one repeat
    assert reference_size(DataLoader(ds, sampler=sampler), None) == (("global", N_REF), 30)
    assert reference_size(iter([]), None) == (None, None)
    assert global_size([("share", 40), ("share", 21)]) == 61
    assert global_size([("global", 61), ("global", 61)]) == 61
    assert global_size([("share", 40), None]) is None
    with pytest.raises(ValueError, match="different n_total"):
        global_size([("global", 61), ("global", 60)])


def test_distributed_argument_checks():
    assert get_context() is None  # no process group in the test process
    with pytest.raises(ValueError, match="init_process_group"):
        get_context(distributed=True)
    with pytest.raises(TypeError, match="distributed"):
        get_context(distributed="yes")
    ps, ds = build()
    with pytest.raises(ValueError, match="init_process_group"):
        ps.fit(DataLoader(ds), distributed=True)
    with pytest.raises(ValueError, match="n_total"):
        ps.fit(DataLoader(ds), n_total=0)
    assert isinstance(ps.fit(DataLoader(ds, batch_size=16), distributed=False), Calibration)
