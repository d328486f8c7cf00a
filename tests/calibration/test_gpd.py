"""GPD maximum likelihood: scipy agreement, known parameters, SPOT compatibility, tail probs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import genpareto

from captum_ext.calibration import fit_gpd, gpd_loglik, gpd_quantile, gpd_tail_prob


def _sample(xi: float, sigma: float, n: int, seed: int) -> np.ndarray:
    return genpareto.rvs(xi, scale=sigma, size=n, random_state=np.random.default_rng(seed))


@pytest.mark.parametrize("xi", [-0.2, 0.0, 0.2, 0.4])
def test_recovers_known_parameters_and_beats_scipy(xi: float) -> None:
    cols = [_sample(xi, 1e-3, 4000, seed) for seed in range(4)]
    fit = fit_gpd(torch.tensor(np.stack(cols)))
    # 4000 peaks: the MLE's standard error of xi is ~0.02
    assert (fit.xi - xi).abs().max() < 0.08
    assert ((fit.sigma / 1e-3) - 1).abs().max() < 0.1
    for i, c in enumerate(cols[:2]):
        shape, _, scale = genpareto.fit(c, floc=0)
        ll_scipy = genpareto.logpdf(c, shape, 0, scale).sum()
        assert fit.loglik[i].item() >= ll_scipy - 1e-6
    # the reported loglik is the log-likelihood of the reported parameters
    ll = [
        genpareto.logpdf(c, fit.xi[i].item(), 0, fit.sigma[i].item()).sum()
        for i, c in enumerate(cols)
    ]
    np.testing.assert_allclose(fit.loglik.numpy(), ll, rtol=1e-9)


def test_small_samples_with_several_roots_find_the_best_one() -> None:
    # 11 peaks (N = 110 at level 0.9): w often has several roots, some close together
    g = torch.Generator().manual_seed(0)
    u = torch.rand(300, 11, generator=g, dtype=torch.float64)
    y = torch.cat([-torch.log(u), u + 1e-9, u.pow(3) + 1e-9])
    fit = fit_gpd(y)
    dense = fit_gpd(y, n_grid=256)
    assert (fit.loglik >= dense.loglik - 1e-8).all()
    for i in range(0, 900, 150):
        c = y[i].numpy()
        shape, _, scale = genpareto.fit(c, floc=0)
        if shape > -1:  # scipy may return xi <= -1, where the likelihood is unbounded
            assert fit.loglik[i].item() >= genpareto.logpdf(c, shape, 0, scale).sum() - 1e-6


def test_ragged_rows_and_scale_invariance() -> None:
    a, b = _sample(0.3, 2.0, 500, 10), _sample(-0.1, 0.5, 300, 11)
    fit = fit_gpd([torch.tensor(a), torch.tensor(b)])
    alone = fit_gpd(torch.tensor(b))
    assert fit.n_peaks.tolist() == [500, 300]
    torch.testing.assert_close(fit.xi[1:], alone.xi)
    scaled = fit_gpd(torch.tensor(a) * 1e-6)
    torch.testing.assert_close(scaled.xi, fit.xi[:1], rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(scaled.sigma, fit.sigma[:1] * 1e-6, rtol=1e-7, atol=0)


def test_spot_compat_reproduces_the_reference_defect_on_heavy_tails() -> None:
    y = torch.tensor(_sample(0.2, 1e-3, 5000, 3))
    good = fit_gpd(y)
    ref = fit_gpd(y, spot_compat=True)
    # the reference searches (b, c) far above the true root and returns xi <= 0
    assert good.xi.item() > 0.1
    assert ref.xi.item() <= 0
    assert ref.loglik.item() < good.loglik.item() - 10


def test_spot_compat_agrees_when_the_root_is_negative() -> None:
    # for xi < 0 the reference's left interval is valid: both find the same root, up to the
    # reference's L-BFGS-B tolerance (it minimises sum w^2 from 10 regular start points)
    y = torch.tensor(_sample(-0.2, 1e-3, 2000, 5))  # gradient scale: mean << 1/e
    good, ref = fit_gpd(y), fit_gpd(y, spot_compat=True)
    assert ref.xi.item() < 0
    assert abs(ref.xi.item() - good.xi.item()) < 0.03
    assert good.loglik.item() >= ref.loglik.item() - 1e-9
    assert ref.loglik.item() > good.loglik.item() - 2.0


def test_loglik_closed_forms() -> None:
    y = torch.tensor([[0.5, 1.0, 2.0]], dtype=torch.float64)
    ll0 = gpd_loglik(y, torch.tensor([0.0]), torch.tensor([2.0]))
    assert ll0.item() == pytest.approx(-3 * math.log(2.0) - 3.5 / 2.0)
    # beyond the endpoint of xi < 0: -inf
    assert gpd_loglik(y, torch.tensor([-0.5]), torch.tensor([0.5])).item() == -math.inf


def test_tail_probability_properties() -> None:
    thr, xi, sig, nt, n = 1.0, torch.tensor(-0.25), torch.tensor(0.5), 100, 1000
    assert gpd_tail_prob(torch.tensor(thr), thr, xi, sig, nt, n).item() == pytest.approx(0.1)
    x = torch.linspace(1.0, 5.0, 2001, dtype=torch.float64)
    p = gpd_tail_prob(x, thr, xi, sig, nt, n)
    assert not torch.isnan(p).any()
    assert (p[1:] <= p[:-1]).all()
    endpoint = thr - sig.item() / xi.item()  # 3.0
    assert (p[x >= endpoint] == 0).all() and (p[x < endpoint - 1e-9] > 0).all()
    # xi = 0 is the exponential tail; xi > 0 matches scipy's survival function
    p0 = gpd_tail_prob(torch.tensor(3.0), thr, torch.tensor(0.0), sig, nt, n)
    assert p0.item() == pytest.approx(0.1 * math.exp(-4.0))
    p2 = gpd_tail_prob(torch.tensor(3.0), thr, torch.tensor(0.3), sig, nt, n)
    assert p2.item() == pytest.approx(0.1 * genpareto.sf(2.0, 0.3, scale=0.5))
    # the quantile inverts the tail probability
    for x_ in (0.0, 0.3):
        q = gpd_quantile(1e-3, thr, torch.tensor(x_), sig, nt, n)
        back = gpd_tail_prob(q, thr, torch.tensor(x_), sig, nt, n)
        assert back.item() == pytest.approx(1e-3)


def test_bad_peaks_raise() -> None:
    with pytest.raises(ValueError, match="peak"):
        fit_gpd(torch.tensor([[1.0, -1.0]]))
    with pytest.raises(ValueError, match="at least one peak"):
        fit_gpd(torch.ones(2, 3), counts=torch.tensor([3, 0]))
