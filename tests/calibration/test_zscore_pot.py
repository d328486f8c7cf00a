"""Streaming statistics, z-score and POT calibrations on synthetic profiles."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from scipy.stats import norm

from captum_ext.calibration import (
    Calibration,
    Layout,
    POTCalibration,
    RunningMoments,
    RunningTopK,
    ZScoreCalibration,
    n_exceed,
)


def _layout(f: int) -> Layout:
    return Layout(["a", "b"], [f // 2, f - f // 2], "h")


def _fit(cal, data: torch.Tensor, splits=(7, 30, 1)):
    cal.begin(_layout(data.shape[1]), data.shape[0])
    for part in torch.split(data, list(splits) + [data.shape[0] - sum(splits)]):
        cal.update(part)
    return cal.finalize()


def test_chan_merge_equals_two_pass() -> None:
    g = torch.Generator().manual_seed(0)
    data = torch.randn(200, 5, generator=g, dtype=torch.float64) * 3 + 1e3
    for splits in ([1] * 10 + [190], [100, 100], [3, 197]):
        m = RunningMoments()
        for part in torch.split(data, splits):
            m.update(part)
        torch.testing.assert_close(m.mean, data.mean(0), rtol=1e-13, atol=0)
        torch.testing.assert_close(m.std(), data.std(0, unbiased=True), rtol=1e-10, atol=0)
    a, b = RunningMoments(), RunningMoments()
    a.update(data[:50])
    b.update(data[50:])
    torch.testing.assert_close(a.merge(b).std(), data.std(0), rtol=1e-10, atol=0)
    with pytest.raises(ValueError, match="at least 2"):
        one = RunningMoments()
        one.update(data[:1])
        one.std()


def test_running_topk_any_split_and_merge() -> None:
    data = torch.rand(97, 4, generator=torch.Generator().manual_seed(1))
    ref = data.t().sort(dim=1, descending=True).values[:, :10]
    t = RunningTopK(10)
    for part in torch.split(data, 13):
        t.update(part)
    torch.testing.assert_close(t.sorted_desc(), ref)
    a, b = RunningTopK(10), RunningTopK(10)
    a.update(data[:40])
    b.update(data[40:])
    torch.testing.assert_close(a.merge(b).sorted_desc(), ref)
    assert a.count == 97


@pytest.mark.parametrize(
    ("level", "n", "k"), [(0.9, 50000, 5000), (0.29, 100, 71), (0.7, 10, 3), (0.9, 15, 2)]
)
def test_threshold_rule(level: float, n: int, k: int) -> None:
    assert n_exceed(level, n) == k


@pytest.mark.parametrize("level", [0.0, 1.0, -0.1, 1.5])
def test_level_outside_unit_interval_raises(level: float) -> None:
    with pytest.raises(ValueError, match="level"):
        POTCalibration(level=level)


def test_zscore_matches_formula_and_ranks_ties_to_lower_index() -> None:
    g = torch.Generator().manual_seed(2)
    ref = torch.rand(50, 6, generator=g)
    ref[:, 5] = 0.25  # a constant filter: std 0 -> treated as 1
    cal = _fit(ZScoreCalibration(), ref)
    x = torch.rand(3, 6, generator=g)
    z = cal.score(x)
    mu, sd = ref.double().mean(0), ref.double().std(0)
    sd[5] = 1.0
    torch.testing.assert_close(z, (x.double() - mu) / sd)
    tie = torch.zeros(1, 6, dtype=torch.float64)
    from captum_ext.calibration.zscore import order_filters

    assert order_filters(tie, True).tolist() == [[0, 1, 2, 3, 4, 5]]
    r = cal.rank(x, k=3)
    assert r.shape == (3, 3)
    assert (z.gather(1, r)[:, :-1] >= z.gather(1, r)[:, 1:]).all()
    least = cal.rank(x, order="least")
    assert least[:, 0].tolist() == z.argmin(1).tolist()
    rnd1 = cal.rank(x, order="random", generator=torch.Generator().manual_seed(5))
    rnd2 = cal.rank(x, order="random", generator=torch.Generator().manual_seed(5))
    assert torch.equal(rnd1, rnd2) and sorted(rnd1[0].tolist()) == list(range(6))
    absz = cal.rank(x, rank_by="abs_z")
    assert absz[:, 0].tolist() == z.abs().argmax(1).tolist()


def test_proposition_1_z_ranking_equals_normal_tail_ranking() -> None:
    g = torch.Generator().manual_seed(3)
    f = 40
    mu = torch.rand(f, generator=g, dtype=torch.float64) * 5
    sd = torch.rand(f, generator=g, dtype=torch.float64) * 2 + 0.1
    # exactly normal profiles: the calibration knows mu and sd through its moments
    cal = ZScoreCalibration()
    cal.begin(_layout(f))
    cal.moments.count, cal.moments.mean, cal.moments.m2 = 2, mu.clone(), sd**2
    cal.finalize()
    x = mu + sd * torch.randn(5, f, generator=g, dtype=torch.float64)
    tail = torch.tensor(norm.sf(x.numpy(), loc=mu.numpy(), scale=sd.numpy()))
    assert torch.equal(cal.rank(x), torch.sort(tail, dim=1, stable=True).indices)


def _heavy(n: int, f: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(n, f, generator=g, dtype=torch.float64)
    return (u.pow(-0.25) - 1) * 1e-3  # Pareto-type tail, xi = 0.25


def test_pot_thresholds_peaks_and_scores() -> None:
    ref = _heavy(400, 6, 4)
    cal = _fit(POTCalibration(level=0.9), ref)
    srt = ref.t().sort(dim=1, descending=True).values
    k = n_exceed(0.9, 400)
    torch.testing.assert_close(cal.threshold, srt[:, k - 1])
    assert cal.n_peaks.tolist() == [k - 1] * 6
    x = torch.cat([cal.threshold[None], cal.threshold[None] + 1e-3, srt[:, :1].t() * 10])
    s = cal.score(x)
    assert not s.exceeds[0].any() and s.exceeds[1:].all()
    assert (s.tail_prob[0] == 1.0).all()
    # at the threshold itself the tail probability is N_t / N
    p_at_t = cal.score(cal.threshold[None] + 1e-15).tail_prob
    torch.testing.assert_close(p_at_t, torch.full_like(p_at_t, (k - 1) / 400), rtol=1e-9, atol=0)
    assert (s.tail_prob[2] < s.tail_prob[1]).all()
    # same result for any batch split of the stream
    other = _fit(POTCalibration(level=0.9), ref, splits=(1, 1, 200))
    torch.testing.assert_close(other.xi, cal.xi)


def test_pot_ranking_excludes_non_exceeding_and_orders_endpoint_first() -> None:
    ref = _heavy(300, 5, 6)
    cal = _fit(POTCalibration(level=0.9), ref)
    cal.xi[2], cal.sigma[2] = -0.5, 1e-4  # endpoint at T + 2e-4
    cal.xi[3], cal.sigma[3] = -0.5, 1e-4
    x = cal.threshold.clone()[None].repeat(1, 1)
    x[0, 0] -= 1e-3  # does not exceed: left out
    x[0, 1] += 1e-4
    x[0, 2] += 5e-4  # beyond the endpoint: P = 0
    x[0, 3] += 9e-4  # also P = 0, larger excess: first
    x[0, 4] += 1e-6
    s = cal.score(x)
    assert s.tail_prob[0, 2] == 0 and s.tail_prob[0, 3] == 0
    assert not torch.isnan(s.tail_prob).any()
    (r,) = cal.rank(x)
    assert r.tolist()[:2] == [3, 2] and 0 not in r.tolist() and len(r) == 4


def test_pot_rank_all_by_empirical_frequency() -> None:
    ref = _heavy(200, 4, 7)
    cal = _fit(POTCalibration(level=0.9, keep_reference=True), ref)
    x = ref.median(0).values[None] * torch.tensor([[1.0, 0.5, 1.5, 1.0]], dtype=torch.float64)
    x[0, 3] = cal.threshold[3] * 2
    (r,) = cal.rank(x, rank_all=True)
    assert r[0].item() == 3  # the only exceeding filter comes first
    emp = (ref > x).sum(0)
    assert emp[r[1:]].tolist() == sorted(emp[r[1:]].tolist())
    cal2 = _fit(POTCalibration(level=0.9), ref)
    with pytest.warns(UserWarning, match="z-score"):
        (r2,) = cal2.rank(x, rank_all=True)
    assert len(r2) == 4


def test_pot_degenerate_filters_warn() -> None:
    ref = _heavy(100, 3, 8)
    ref[:, 0] = 0.0  # a dead filter: no peaks
    ref[:95, 1] = 1.0  # T = 1 (10th largest): 5 peaks 1..5 < min_peaks = 6
    ref[95:, 1] = torch.tensor([2.0, 3.0, 4.0, 5.0, 6.0], dtype=torch.float64)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        cal = _fit(POTCalibration(level=0.9, min_peaks=6), ref, splits=(50,))
    msgs = " ".join(str(w.message) for w in rec)
    assert "1 of 3 filters have no reference value" in msgs
    assert "1 of 3 filters have fewer than min_peaks" in msgs
    assert cal.xi[1] == 0 and cal.sigma[1].item() == pytest.approx(3.0)
    (r,) = cal.rank(torch.tensor([[5.0, 7.0, 1.0]], dtype=torch.float64))
    assert 0 not in r.tolist()


def test_save_load_round_trip_and_layout_check(tmp_path) -> None:
    ref = _heavy(120, 4, 9)
    for cal in (_fit(ZScoreCalibration(), ref), _fit(POTCalibration(0.8), ref)):
        path = tmp_path / f"{cal.kind}.pt"
        cal.save(path)
        back = Calibration.load(path, layout=_layout(4))
        assert type(back) is type(cal)
        x = _heavy(3, 4, 10)
        a, b = cal.score(x), back.score(x)
        for u, v in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
            assert torch.equal(u, v)
        with pytest.raises(ValueError, match="different"):
            Calibration.load(path, layout=Layout(["a", "c"], [2, 2], "h"))
        with pytest.raises(ValueError, match="filters"):
            back.score(torch.rand(2, 5, dtype=torch.float64))


def test_bad_profiles_raise() -> None:
    cal = ZScoreCalibration()
    cal.begin(_layout(4))
    with pytest.raises(ValueError, match="non-finite"):
        cal.update(torch.tensor([[1.0, math.nan, 0.0, 0.0]]))
    with pytest.raises(ValueError, match="not fitted"):
        cal.score(torch.rand(1, 4))


def test_pot_and_zscore_merge_of_shards_equals_one_pass() -> None:
    # the mergeable state a distributed fit builds on: shards fitted apart, merged, finalized
    ref = _heavy(300, 5, 11)
    whole = _fit(POTCalibration(level=0.9), ref)
    a, b = POTCalibration(level=0.9), POTCalibration(level=0.9)
    a.begin(_layout(5), 300)
    b.begin(_layout(5), 300)
    a.update(ref[:120])
    b.update(ref[120:200])
    b.update(ref[200:])
    merged = a.merge(b).finalize()
    assert torch.equal(merged.threshold, whole.threshold)
    torch.testing.assert_close(merged.xi, whole.xi, rtol=0, atol=1e-12)
    torch.testing.assert_close(merged.moments.mean, whole.moments.mean, rtol=1e-14, atol=0)
    za, zb = ZScoreCalibration(), ZScoreCalibration()
    za.begin(_layout(5))
    zb.begin(_layout(5))
    za.update(ref[:7])
    zb.update(ref[7:])
    torch.testing.assert_close(za.merge(zb).finalize().std, ref.std(0), rtol=1e-12, atol=0)
    other = ZScoreCalibration()
    other.begin(Layout(["x"], [5], "other"))
    with pytest.raises(ValueError, match="different"):
        za.merge(other)
