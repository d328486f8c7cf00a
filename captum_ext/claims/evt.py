"""Claim experiments of the EVT paper: Proposition 1 and the small-sample GPD fit.

Wang & Sato, "Understanding Parameter Saliency via Extreme Value Theory" (arXiv 2310.17951).
Both experiments are synthetic: filter-saliency profiles are drawn from known distributions, so
every true tail probability is known in closed form (``scipy.stats`` ``isf``/``sf``), and our
calibrations (:class:`~captum_ext.calibration.ZScoreCalibration`,
:class:`~captum_ext.calibration.POTCalibration`, :func:`~captum_ext.calibration.fit_gpd`) are
compared with it.

``evt_proposition1``
    *Paper* (Sec. 4.2, Proposition 1, proof in App. B): if every filter's profile is normal,
    ranking filters by z-score is ranking them by the tail probability
    ``P(S_j > s_j)``; Sec. 4.1 (questions 2-3) argues that with differently (heavy-) tailed
    filters the z-score ranking no longer reflects tail probabilities, which POT fixes.
    Eq. 6 as printed reads ``z_j <= z_j' <=> P_j <= P_j'``; since the normal tail is
    decreasing the correct statement is ``z_j <= z_j' <=> P_j >= P_j'`` (the proof's last step
    has the same slip). We test the corrected direction and report the printed one.
    *Protocol*: ``F`` filters, ``N`` reference profiles each, ``M`` test profiles whose true
    tail probabilities ``u`` are log-uniform in ``[1e-4, 0.05]`` (the region POT ranks, above
    the 0.9 threshold); regime "normal" (normals of random mean and scale) and regime "mixed"
    (normal, half-normal, uniform, gamma, exponential, two log-normals, Student-t(4), two
    GPDs with ``xi = 0.2, 0.4``, each at a random scale). Per test profile, Kendall's tau
    between the filter ranking of our z-scores (resp. POT tail probabilities) and the true
    tail-probability ranking; concordance ``= (1 + tau) / 2`` (the fraction of filter pairs
    ordered alike), averaged over test profiles.
    *Rule* (fixed before running): (a) normal regime: z-score concordance ``>= 0.97``
    (Proposition 1 with estimated moments; exactly 1 with the true ones); (b) mixed regime: POT
    concordance ``>=`` z-score concordance ``+ 0.05``. ``holds`` if (a) and (b), ``partly`` if
    only (a), ``does not hold`` if (a) fails.
    *Result at size="default"* (``F = 66``, ``N = 10,000``, ``M = 300``, seed 0): **holds**.
    Normal regime: z-score concordance 0.986 (the rest is the estimation error of the moments:
    1.0 exactly with the true ones), POT 0.967; Eq. 6 as printed would give 0.014. Mixed
    regime: z-score 0.751, POT 0.929; median ``|log10|`` error of the tail probability read
    off the z-score (``1 - Phi(z)``) 1.78 decades vs POT's 0.05.

``gpd_small_sample``
    *Paper* (Sec. 4.3, Eq. 5, Fig. 2): the POT tail probabilities ``P(X > x)`` from a GPD
    fitted by maximum likelihood (Siffer et al.'s Grimshaw fit) are the calibrated rarity of a
    filter's profile. *Protocol*: peaks drawn from a GPD with ``sigma = 1`` and
    ``xi in {-0.4, 0, 0.4}``, ``n`` peaks per sample (10 ... 300), ``R`` samples per cell;
    each sample fitted by (i) :func:`~captum_ext.calibration.fit_gpd` (what
    :class:`~captum_ext.calibration.POTCalibration` uses for ``n >= min_peaks = 10``),
    (ii) ``scipy.stats.genpareto.fit(floc=0)``, (iii) the exponential fallback
    (``xi = 0, sigma = mean``) and (iv) the maximum likelihood over ``xi >= -1`` (ours plus the
    boundary candidate ``xi = -1, sigma = max(Y)``, uniform, ``ll = -n log max(Y)``). For each
    fit: relative error of the fitted quantile (the threshold of tail probability ``p``,
    :func:`~captum_ext.calibration.gpd_quantile`) and of the tail probability at the true
    quantile (:func:`~captum_ext.calibration.gpd_tail_prob`), ``p = 0.1`` and ``0.01`` of the
    peaks; bias and RMSE per cell; the log-likelihood gap ours - scipy. Added after the first
    run, as evidence for the small-sample decision and not part of the rule: the share of fits
    whose ``P`` is within 2x of ``p`` (a log-scale accuracy, ``P = 0`` a miss) and the share
    with ``P = 0`` at the true quantile (beyond the fitted endpoint).
    *Rule* (fixed before running): (a) the fit is an MLE: in every cell, where scipy's
    ``xi > -1`` ours has a log-likelihood ``>= scipy's - 1e-6`` in ``>= 99 %`` of the samples;
    (b) calibrated: at ``n >= 100`` peaks the relative tail-probability error at ``p = 0.01``
    has ``|bias| <= 0.2`` and RMSE ``<= 0.75`` for every ``xi``. ``holds`` if (a) and (b);
    ``partly`` if (b) holds but not (a), or (a) holds and (b) only at ``n = 300``;
    ``does not hold`` otherwise.
    *Result at size="default"* (``R = 250``, seed 0): **does not hold** by the rule, for two
    reasons, neither an implementation error. (a) In 3.2 % of the regular samples of the
    ``xi = -0.4, n = 15`` cell (1 % at ``n = 10``, 0.5 % at 20, 0.6 % at ``xi = 0, n = 10``)
    ours is below scipy's log-likelihood (by up to 5.4): the likelihood has no stationary point
    with ``xi > -1`` and rises towards the boundary ``xi -> -1``; ``fit_gpd`` returns the
    exponential fit there. The issue's larger scipy log-likelihoods (ours lower by up to 14.5
    at 30 peaks, mean -0.81 for ``xi = -0.4``) are all such samples or ``xi < -1`` fits, where
    the likelihood is unbounded. Keeping the exponential there is the better small-sample
    choice on a log scale: at 10 peaks its ``P`` at ``p = 0.1`` is within 2x of the truth in
    0.72 / 0.60 / 0.50 of the samples (``xi = -0.4 / 0 / 0.4``) vs scipy's 0.35 / 0.44 / 0.44,
    and ``P = 0`` at the true 1 % quantile in 0.16 / 0.21 / 0.25 vs 0.73 / 0.53 / 0.42; the
    RMSE of the relative error favours scipy's fit at ``xi = -0.4`` (1.49 vs 3.95 at 15 peaks)
    only because that error is capped at -1 for ``P = 0``. The pure exponential (what
    ``POTCalibration`` uses below ``min_peaks = 10``) is within 2x at ``p = 0.1`` more often
    than ours for ``xi <= 0`` (``xi = -0.4``, 10-30 peaks: 0.79-0.98 vs 0.72-0.84) but less
    for ``xi = 0.4`` (0.40-0.66 vs 0.50-0.82), and at ``p = 0.01`` it is biased for
    ``xi != 0`` at every ``n`` (relative bias of ``P``: +4.2 to +4.7 at ``xi = -0.4``, -0.72 to
    -0.95 at ``xi = 0.4`` from 15 peaks), so ``min_peaks`` stays 10.
    (b) Calibration at 100 peaks fails narrowly: relative bias of ``P``
    at ``p = 0.01`` -0.221 for ``xi = -0.4`` (RMSE 0.68; ``xi = 0``: -0.12 / 0.71; ``xi = 0.4``:
    +0.02 / 0.63); at 300 peaks it is calibrated (``|bias| <= 0.105``, RMSE ``<= 0.46``).
    This is the GPD MLE's own small-sample error (scipy's fit gives the same numbers); the
    paper's setting (~5,000 peaks per filter) is far above it, our benchmark's reference sets
    are not.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch
from scipy import stats

from captum_ext.calibration import (
    Layout,
    POTCalibration,
    ZScoreCalibration,
    fit_gpd,
    gpd_loglik,
    gpd_quantile,
    gpd_tail_prob,
)
from captum_ext.claims._base import ClaimSettings, Outcome, claim, claim_figure, verdict_from

__all__ = ["rank_concordance", "run_gpd_small_sample", "run_proposition1"]

PAPER = "POT-saliency (Wang & Sato, arXiv 2310.17951)"

# ---------------------------------------------------------------------------------------------
# shared helpers


def _uniforms(gen: torch.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Uniforms in ``(0, 1)`` (float64) drawn from ``gen``, as a numpy array."""
    u = torch.rand(shape, generator=gen, dtype=torch.float64)
    return u.clamp(1e-300, 1 - 1e-16).numpy()


def _log_uniform(gen: torch.Generator, shape: tuple[int, ...], lo: float, hi: float) -> np.ndarray:
    """Draws log-uniform in ``[lo, hi]``."""
    u = torch.rand(shape, generator=gen, dtype=torch.float64).numpy()
    return np.power(10.0, math.log10(lo) + u * (math.log10(hi) - math.log10(lo)))


# ---------------------------------------------------------------------------------------------
# evt_proposition1

#: The families of the "mixed" regime (frozen at unit scale; each filter gets a random scale).
MIXED_FAMILIES: tuple[tuple[str, Any], ...] = (
    ("normal", stats.norm(loc=3.0)),
    ("half-normal", stats.halfnorm()),
    ("uniform", stats.uniform()),
    ("gamma(3)", stats.gamma(3.0)),
    ("exponential", stats.expon()),
    ("lognormal(0.5)", stats.lognorm(0.5)),
    ("lognormal(1)", stats.lognorm(1.0)),
    ("student-t(4)", stats.t(4.0)),
    ("gpd(0.2)", stats.genpareto(0.2)),
    ("gpd(0.4)", stats.genpareto(0.4)),
    ("normal(wide)", stats.norm(loc=0.0)),
)


def _filters(regime: str, n_filters: int, gen: torch.Generator) -> list[Any]:
    """Frozen scipy distributions of ``n_filters`` synthetic filters of a regime."""
    scales = _log_uniform(gen, (n_filters,), 0.1, 10.0)
    if regime == "normal":
        locs = _uniforms(gen, (n_filters,)) * 2.0
        return [stats.norm(loc=m, scale=s) for m, s in zip(locs, scales)]
    out = []
    for j in range(n_filters):
        _, family = MIXED_FAMILIES[j % len(MIXED_FAMILIES)]
        args, kwds = family.args, dict(family.kwds)
        kwds["loc"] = kwds.get("loc", 0.0) * scales[j]
        kwds["scale"] = scales[j]
        out.append(family.dist(*args, **kwds))
    return out


def _isf_columns(dists: list[Any], u: np.ndarray) -> np.ndarray:
    """Values ``x[:, j]`` with ``P_j(S > x) = u[:, j]`` (inverse survival functions)."""
    return np.stack([d.isf(u[:, j]) for j, d in enumerate(dists)], axis=1)


def _fit_calibrations(ref: np.ndarray) -> tuple[ZScoreCalibration, POTCalibration]:
    """Our z-score and POT (level 0.9) calibrations fitted on reference profiles ``(N, F)``."""
    layout = Layout(["synthetic"], [ref.shape[1]], "synthetic")
    ref_t = torch.from_numpy(ref)
    z = ZScoreCalibration()
    pot = POTCalibration(level=0.9)
    for cal in (z, pot):
        cal.begin(layout, ref.shape[0])
        cal.update(ref_t)
        cal.finalize()
    return z, pot


def rank_concordance(scores: np.ndarray, true_tail: np.ndarray, descending: bool) -> float:
    """Mean over rows of ``(1 + tau) / 2``, Kendall's tau of a score vs the true tail order.

    Args:
        scores: ``(M, F)`` scores of ``M`` test profiles.
        true_tail: ``(M, F)`` true tail probabilities (smaller is more salient).
        descending: True if a larger score means more salient (z-scores), False if smaller
            (tail probabilities).

    Returns:
        The fraction of filter pairs the scores order like the true tail probabilities.
    """
    key = scores if descending else -scores
    taus = [stats.kendalltau(k, -t).statistic for k, t in zip(key, true_tail)]
    return float((1.0 + np.mean(taus)) / 2.0)


def _log10_error(estimate: np.ndarray, truth: np.ndarray) -> float:
    """Median ``|log10(estimate / truth)|`` (estimates clipped at 1e-300)."""
    return float(np.median(np.abs(np.log10(np.clip(estimate, 1e-300, None) / truth))))


def _regime(regime: str, settings: ClaimSettings, gen: torch.Generator) -> dict[str, Any]:
    """Fit both calibrations on one regime's reference set and score its test profiles."""
    n_filters = settings.pick(33, 66, 132)
    n_ref = settings.pick(5000, 10000, 50000)
    n_test = settings.pick(60, 300, 1000)
    dists = _filters(regime, n_filters, gen)
    ref = _isf_columns(dists, _uniforms(gen, (n_ref, n_filters)))
    u = _log_uniform(gen, (n_test, n_filters), 1e-4, 0.05)
    test = _isf_columns(dists, u)
    z_cal, pot = _fit_calibrations(ref)
    z = z_cal.score(torch.from_numpy(test)).numpy()
    p = pot.score(torch.from_numpy(test)).tail_prob.numpy()
    c_z = rank_concordance(z, u, descending=True)
    return {
        "u": u,
        "z_tail": stats.norm.sf(z),
        "pot": p,
        "conc_z": c_z,
        "conc_pot": rank_concordance(p, u, descending=False),
        "err_z": _log10_error(stats.norm.sf(z), u),
        "err_pot": _log10_error(p, u),
    }


def _plot_proposition1(res: dict[str, dict[str, Any]], settings: ClaimSettings) -> str | None:
    return claim_figure(
        settings, "evt_proposition1.png", lambda fig: _draw_proposition1(fig, res), (9, 4)
    )


def _draw_proposition1(fig: Any, res: dict[str, dict[str, Any]]) -> None:
    axes = fig.subplots(1, 2, sharey=True)
    for ax, (regime, r) in zip(axes, res.items()):
        u = np.log10(r["u"]).ravel()[:3000]
        ax.scatter(
            u,
            np.log10(np.clip(r["z_tail"], 1e-30, None)).ravel()[:3000],
            s=3,
            alpha=0.4,
            label=f"z-score: 1-Phi(z) (conc. {r['conc_z']:.3f})",
        )
        ax.scatter(
            u,
            np.log10(np.clip(r["pot"], 1e-30, None)).ravel()[:3000],
            s=3,
            alpha=0.4,
            label=f"POT: P (conc. {r['conc_pot']:.3f})",
        )
        ax.plot([-4, -1.3], [-4, -1.3], "k--", lw=1)
        ax.set_title(f"{regime} filters")
        ax.set_xlabel("log10 true tail probability")
        ax.set_ylim(-12, 0)
        ax.legend(fontsize=8, loc="lower right")
    axes[0].set_ylabel("log10 estimated tail probability")


@claim(
    name="evt_proposition1",
    paper=PAPER,
    statement=(
        "Proposition 1: for normally distributed filter saliencies, ranking by z-score equals "
        "ranking by tail probability; for differently tailed filters it does not, and POT "
        "restores the tail-probability ranking."
    ),
)
def run_proposition1(settings: ClaimSettings) -> Outcome:
    """Z-score vs POT rankings against the true tail-probability ranking (module docstring)."""
    gen = torch.Generator().manual_seed(settings.seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = {regime: _regime(regime, settings, gen) for regime in ("normal", "mixed")}
    norm, mixed = res["normal"], res["mixed"]
    ok_a = norm["conc_z"] >= 0.97
    ok_b = mixed["conc_pot"] >= mixed["conc_z"] + 0.05
    verdict = verdict_from(ok_a and ok_b, ok_a)
    why = ""
    if not ok_a:
        why = (
            f"normal regime: the z-score ranking agrees with the true tail ranking on only "
            f"{norm['conc_z']:.3f} of filter pairs"
        )
    elif not ok_b:
        why = (
            f"mixed regime: POT's concordance {mixed['conc_pot']:.3f} is not 0.05 above the "
            f"z-score's {mixed['conc_z']:.3f}"
        )
    numbers: dict[str, float | list[float]] = {
        f"{regime}_{key}": float(r[key])
        for regime, r in res.items()
        for key in ("conc_z", "conc_pot", "err_z", "err_pot")
    }
    numbers["normal_eq6_as_printed"] = 1.0 - norm["conc_z"]
    return Outcome(
        paper_value=(
            "Proposition 1 (Sec. 4.2, App. B): normal filters -> z-score order = tail-"
            "probability order (concordance 1); Sec. 4.1: not so for differently tailed filters"
        ),
        ours=(
            f"normal: z concordance {norm['conc_z']:.3f}, POT {norm['conc_pot']:.3f}; mixed: z "
            f"{mixed['conc_z']:.3f}, POT {mixed['conc_pot']:.3f}; median |log10 error| of the "
            f"tail probability, mixed: z {mixed['err_z']:.2f}, POT {mixed['err_pot']:.2f}"
        ),
        verdict=verdict,
        rule=(
            "(a) normal regime: z-score concordance with the true tail ranking >= 0.97; "
            "(b) mixed regime: POT concordance >= z-score concordance + 0.05. holds: (a) and "
            "(b); partly: (a) only; does not hold: not (a)"
        ),
        why=why,
        numbers=numbers,
        figure=_plot_proposition1(res, settings),
    )


# ---------------------------------------------------------------------------------------------
# gpd_small_sample

#: True shape parameters of the synthetic peaks (short, exponential, heavy tail).
TRUE_XI = (-0.4, 0.0, 0.4)
#: Tail probabilities (within the peaks) at which quantiles and tail probabilities are checked.
TAIL_P = (0.1, 0.01)
#: The fits compared.
METHODS = ("ours", "scipy", "exponential", "mle_xi_ge_-1")


def _scipy_fits(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``scipy.stats.genpareto.fit(floc=0)`` of each row: ``(xi, sigma)``."""
    xi, sig = np.empty(len(y)), np.empty(len(y))
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        for i, row in enumerate(y):
            xi[i], _, sig[i] = stats.genpareto.fit(row, floc=0)
    return xi, sig


def fits_of(y: np.ndarray) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """``(xi, sigma, loglik)`` per row of peaks ``y (R, n)`` for each of :data:`METHODS`."""
    yt = torch.from_numpy(y)
    n = y.shape[1]
    ours = fit_gpd(yt)
    xs, ss = (torch.from_numpy(a) for a in _scipy_fits(y))
    mean = yt.mean(1)
    exp = (torch.zeros_like(mean), mean, -n * (1 + torch.log(mean)))
    ymax = yt.max(1).values
    use_b = -n * torch.log(ymax) > ours.loglik
    bound = (
        torch.where(use_b, -1.0, ours.xi),
        torch.where(use_b, ymax, ours.sigma),
        torch.maximum(ours.loglik, -n * torch.log(ymax)),
    )
    return {
        "ours": (ours.xi, ours.sigma, ours.loglik),
        "scipy": (xs, ss, gpd_loglik(yt, xs, ss)),
        "exponential": exp,
        "mle_xi_ge_-1": bound,
    }


def _errors(xi: torch.Tensor, sigma: torch.Tensor, true_xi: float, n: int) -> dict[str, Any]:
    """Relative errors of fitted quantiles and tail probabilities at :data:`TAIL_P`."""
    out = {}
    npk = torch.full_like(xi, float(n))
    for p in TAIL_P:
        q = float(stats.genpareto.isf(p, true_xi))
        zero = torch.zeros_like(xi)
        q_hat = gpd_quantile(p, zero, xi, sigma, npk, n)
        p_hat = gpd_tail_prob(torch.full_like(xi, q), zero, xi, sigma, npk, n)
        out[f"q{p}"] = ((q_hat - q) / q).numpy()
        out[f"p{p}"] = ((p_hat - p) / p).numpy()
    return out


def _zero_rates(xi: torch.Tensor, sigma: torch.Tensor, true_xi: float, n: int) -> dict[str, float]:
    """Fractions of fits with ``P = 0`` at the true ``p``-quantile, and with ``P`` within 2x.

    The second is a log-scale accuracy (a ``P = 0`` is a miss), symmetric in over- and
    underestimation, unlike the relative error.
    """
    npk = torch.full_like(xi, float(n))
    out = {}
    for p in TAIL_P:
        q = torch.full_like(xi, float(stats.genpareto.isf(p, true_xi)))
        p_hat = gpd_tail_prob(q, torch.zeros_like(xi), xi, sigma, npk, n)
        out[f"p{p}_zero"] = float((p_hat == 0).double().mean())
        out[f"p{p}_within2"] = float(((p_hat >= p / 2) & (p_hat <= 2 * p)).double().mean())
    return out


def _cell(true_xi: float, n: int, reps: int, gen: torch.Generator) -> dict[str, float]:
    """All measurements of one (true xi, n) cell."""
    y = stats.genpareto.isf(_uniforms(gen, (reps, n)), true_xi)
    fits = fits_of(y)
    row: dict[str, float] = {}
    for method, (xi, sig, _) in fits.items():
        for key, err in _errors(xi, sig, true_xi, n).items():
            row[f"{method}_{key}_bias"] = float(np.mean(err))
            row[f"{method}_{key}_rmse"] = float(np.sqrt(np.mean(err**2)))
        for key, rate in _zero_rates(xi, sig, true_xi, n).items():
            row[f"{method}_{key}"] = rate
    gap = (fits["ours"][2] - fits["scipy"][2]).numpy()
    regular = fits["scipy"][0].numpy() > -1
    finite = np.isfinite(gap)  # scipy's ll is +inf where its xi < -1 reaches the endpoint
    row["gap_mean"] = float(gap[finite].mean()) if finite.any() else 0.0
    row["gap_min"] = float(gap[finite].min()) if finite.any() else 0.0
    row["gap_min_where_regular"] = float(gap[regular].min()) if regular.any() else 0.0
    row["scipy_xi_le_-1"] = float(np.mean(~regular))
    row["ours_ok_where_regular"] = float(np.mean(gap[regular] >= -1e-6)) if regular.any() else 1.0
    row["ours_exponential"] = float(np.mean(fits["ours"][0].numpy() == 0.0))
    return row


def _plot_small_sample(
    table: dict[str, list[float]], ns: list[int], settings: ClaimSettings
) -> str | None:
    return claim_figure(
        settings, "gpd_small_sample.png", lambda fig: _draw_small_sample(fig, table, ns), (12, 9)
    )


def _draw_small_sample(fig: Any, table: dict[str, list[float]], ns: list[int]) -> None:
    rows = (
        ("p0.01_rmse", "RMSE rel. error of P at p=0.01", "log"),
        ("p0.1_within2", "share of fits with P within 2x of p=0.1", "linear"),
        ("q0.01_rmse", "RMSE rel. error of the p=0.01 quantile", "log"),
    )
    axes = fig.subplots(len(rows), len(TRUE_XI), sharex=True)
    for col, xi in enumerate(TRUE_XI):
        for row, (key, what, scale) in enumerate(rows):
            ax = axes[row, col]
            for method in METHODS:
                ax.plot(ns, table[f"xi{xi}_{method}_{key}"], "o-", label=method, ms=3)
            ax.set_xscale("log")
            ax.set_yscale(scale)
            ax.set_title(f"xi={xi}: {what}", fontsize=9)
            if row == len(rows) - 1:
                ax.set_xlabel("peaks n")
    axes[0, 0].legend(fontsize=7)


def _mean_over_xi(table: dict[str, list[float]], key: str, i: int) -> float:
    """Mean over :data:`TRUE_XI` of ``table[f"xi{xi}_{key}"][i]``."""
    return float(np.mean([table[f"xi{xi}_{key}"][i] for xi in TRUE_XI]))


def _small_sample_why(table: dict[str, list[float]], ns: list[int], ok_a: bool, ok_b: bool) -> str:
    """The reasons, with the measured numbers, why rule (a) or (b) fails."""
    why = ""
    if not ok_a:
        worst = min(min(table[f"xi{xi}_ours_ok_where_regular"]) for xi in TRUE_XI)
        w2 = {m: _mean_over_xi(table, f"{m}_p0.1_within2", 0) for m in ("ours", "scipy")}
        z = {m: _mean_over_xi(table, f"{m}_p0.01_zero", 0) for m in ("ours", "mle_xi_ge_-1")}
        why += (
            f"(a) fails: where scipy's xi > -1, ours reaches scipy's log-likelihood in only "
            f"{worst:.3f} of the samples of the worst cell. There the likelihood has no "
            "stationary point with xi > -1 and rises towards the boundary xi -> -1 (uniform on "
            "[0, max Y], ll = -n log max Y; beyond it, xi < -1, it is unbounded, which is "
            "where scipy's larger log-likelihoods of the issue come from); fit_gpd returns the "
            "exponential fit there by design, and that is the better choice: at "
            f"n = {ns[0]} (mean over xi) its P at p = 0.1 is within 2x of the truth in "
            f"{w2['ours']:.2f} of the samples vs scipy's {w2['scipy']:.2f}, and it puts the "
            f"true 1 % quantile beyond the fitted endpoint (P = 0, ranked first by POT) in "
            f"{z['ours']:.2f} vs {z['mle_xi_ge_-1']:.2f} for the MLE over xi >= -1; the "
            "boundary and scipy fits have a lower RMSE of the relative error only because "
            "that error is capped at -1 for P = 0. Not an implementation error. "
        )
    if not ok_b:
        big = [i for i, n in enumerate(ns) if n >= 100]
        worst_xi = max(TRUE_XI, key=lambda x: abs(table[f"xi{x}_ours_p0.01_bias"][big[0]]))
        bias = table[f"xi{worst_xi}_ours_p0.01_bias"]
        rmse = table[f"xi{worst_xi}_ours_p0.01_rmse"]
        why += (
            f"(b) fails: at n = {ns[big[0]]} peaks the relative bias of P at p = 0.01 is "
            f"{bias[big[0]]:+.3f} for xi = {worst_xi} (RMSE {rmse[big[0]]:.3f})"
        )
        if len(big) > 1:
            why += f"; at n = {ns[-1]} it is {bias[-1]:+.3f} (RMSE {rmse[-1]:.3f})"
        why += (
            ": the small-sample bias and variance of the GPD MLE (scipy's fit has the same "
            "numbers there). The paper's setting (0.9 threshold on the 50,000 ImageNet "
            "validation images: ~5,000 peaks per filter) is far above this; our benchmark's "
            "reference sets (hundreds to a few thousand images: tens to hundreds of peaks) "
            "are not."
        )
    return why.strip()


@claim(
    name="gpd_small_sample",
    paper=PAPER,
    statement=(
        "The POT tail probabilities from a maximum-likelihood GPD fit of the peaks are "
        "calibrated (Sec. 4.3, Eq. 5)."
    ),
)
def run_gpd_small_sample(settings: ClaimSettings) -> Outcome:
    """Bias/RMSE of fitted thresholds and tail probabilities vs n (module docstring)."""
    gen = torch.Generator().manual_seed(settings.seed)
    ns = [15, 100] if settings.size == "test" else [10, 15, 20, 30, 50, 100, 300]
    reps = settings.pick(40, 250, 2000)
    table: dict[str, list[float]] = {}
    for xi in TRUE_XI:
        for n in ns:
            for key, value in _cell(xi, n, reps, gen).items():
                table.setdefault(f"xi{xi}_{key}", []).append(value)
    ok_a = all(min(table[f"xi{xi}_ours_ok_where_regular"]) >= 0.99 for xi in TRUE_XI)
    big = [i for i, n in enumerate(ns) if n >= 100]

    def calibrated(idx: list[int]) -> bool:
        return all(
            abs(table[f"xi{xi}_ours_p0.01_bias"][i]) <= 0.2
            and table[f"xi{xi}_ours_p0.01_rmse"][i] <= 0.75
            for xi in TRUE_XI
            for i in idx
        )

    ok_b, ok_b300 = calibrated(big), calibrated(big[-1:])
    verdict = verdict_from(ok_a and ok_b, ok_b or (ok_a and ok_b300))
    table["n"] = [float(n) for n in ns]
    summary = "; ".join(
        f"xi={xi}: RMSE p0.01 ours "
        + "/".join(f"{v:.2f}" for v in table[f"xi{xi}_ours_p0.01_rmse"])
        for xi in TRUE_XI
    )
    why = _small_sample_why(table, ns, ok_a, ok_b)
    return Outcome(
        paper_value="Sec. 4.3 / Eq. 5: MLE GPD tail probabilities are calibrated (no figure)",
        ours=f"n = {ns}: {summary}",
        verdict=verdict,
        rule=(
            "(a) where scipy's xi > -1, our log-likelihood >= scipy's - 1e-6 in >= 99 % of the "
            "samples of every (xi, n) cell; (b) at n >= 100 peaks, relative error of the tail "
            "probability at p = 0.01: |bias| <= 0.2 and RMSE <= 0.75 for xi in {-0.4, 0, 0.4}. "
            "holds: (a) and (b); partly: (b) without (a), or (a) with (b) only at n = 300; "
            "does not hold: otherwise"
        ),
        why=why.strip(),
        numbers=dict[str, float | list[float]](table),
        figure=_plot_small_sample(table, ns, settings),
    )
