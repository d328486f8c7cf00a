"""Claim experiments: LEG and LEG-TV.

Luo, Barut & Jin, "Statistically Consistent Saliency Estimation" (ICLR 2020 submission, ICCV
2021).

Three claims, each run with the public :class:`~captum_ext.attr.LEG` /
:class:`~captum_ext.attr.LEGTV` at their defaults (only ``n_samples`` and, where the estimand
must not change with ``n``, ``grid`` are set):

* ``leg_consistency``: empirical LEG converges to the Lemma-1 slope at the rate
  ``sqrt(p / n)`` of Section 3 ("classical linear model theory ... on the order of
  ``sqrt(p1 p2 / n)``"), checked on analytic functions whose slope is known in closed form.
* ``legtv_sample_efficiency``: LEG-TV needs fewer model evaluations than LEG to recover a
  sparse, piecewise-constant region of importance (Theorem 1, Section 4: error
  ``sqrt(s log(p / eps) / n)`` with ``s`` the jumps of the truth, against LEG's ``sqrt(p / n)``).
* ``leg_randomization``: LEG and LEG-TV pass the cascading model-randomisation sanity check
  of Adebayo et al. (Section 5.1, Figure 5).

The measured results at ``size="default"`` are in each experiment's docstring.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from captum.attr import Saliency
from torch import Tensor, nn
from torch.nn.functional import avg_pool2d

from captum_ext.attr import LEG, LEGTV
from captum_ext.claims._base import ClaimSettings, Outcome, claim, claim_figure, verdict_from
from captum_ext.metrics import map_similarities, model_randomization

__all__ = [
    "BlockTruth",
    "SineCells",
    "block_truth",
    "cell_sums",
    "fit_loglog_slope",
    "matching_samples",
    "support_recovery",
]

PAPER = "LEG / LEG-TV (Luo, Barut & Jin, ICCV 2021)"

#: Relative perturbation scale of LEG's default (``sigma`` times each example's value range).
_SIGMA = 0.1


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def cell_sums(attributions: Tensor, grid: int) -> Tensor:
    """LEG's per-cell slope from its per-pixel output.

    The sum over each cell's pixels and channels (the output spreads ``gamma(cell)`` evenly
    over them).

    Args:
        attributions: ``(N, C, H, W)`` with ``H`` and ``W`` multiples of ``grid``.
        grid: Cells per side.

    Returns:
        ``(N, grid * grid)`` float64, row-major cells.
    """
    n, _, h, w = attributions.shape
    cells = attributions.double().sum(1).reshape(n, grid, h // grid, grid, w // grid)
    return cells.sum((2, 4)).reshape(n, -1)


@dataclass(frozen=True)
class SineCells:
    """``f(x) = sum_j a_j sin(k u_j(x))`` with ``u_j`` the mean of ``x`` over grid cell ``j``.

    LEG adds the same shift ``s * zeta_j`` (``zeta ~ N(0, I)``, ``s = sigma * range(x0)``) to every
    pixel of cell ``j``, so ``u_j`` moves by exactly that shift and the Lemma-1 slope is, by
    Stein's lemma, ``E[df/du_j] = a_j k cos(k u_j(x0)) exp(-(k s)^2 / 2)`` (closed form).

    Attributes:
        a: Amplitudes, ``(P,)`` float64.
        k: Frequency.
        cell: Pixels per cell side.
    """

    a: Tensor
    k: float
    cell: int

    def __call__(self, x: Tensor) -> Tensor:
        """``f`` per example of ``x`` ``(N, 1, H, W)``, ``(N,)``."""
        u = avg_pool2d(x, self.cell).flatten(1)
        return (self.a * torch.sin(self.k * u)).sum(1)

    def slope(self, x0: Tensor) -> Tensor:
        """The Lemma-1 slope per cell at ``x0`` (one example ``(1, 1, H, W)``), ``(P,)``."""
        s = _SIGMA * float(x0.max() - x0.min())
        u0 = avg_pool2d(x0, self.cell).flatten()
        return self.a * self.k * torch.cos(self.k * u0) * math.exp(-((self.k * s) ** 2) / 2)


@dataclass(frozen=True)
class BlockTruth:
    """``f(x) = gamma . u(x) + c sum_j b_j He3(d_j)``, a block-sparse truth with cubic noise.

    ``u_j`` is the mean of ``x`` over cell ``j``, ``d_j = (u_j(x) - u_j(x0)) / s`` its shift in
    units of LEG's perturbation scale and ``He3(t) = t^3 - 3t``. Since ``E[He3'(zeta)] = 0`` for
    ``zeta ~ N(0, 1)``, the Lemma-1 slope is exactly ``gamma`` (piecewise constant: a few blocks,
    zero elsewhere), while the odd cubic term is noise that antithetic pairs do not cancel.

    Attributes:
        gamma: The true slope per cell, ``(P,)`` float64.
        b: Noise loadings, ``(P,)``.
        c: Noise amplitude.
        x0: The explained example ``(1, 1, H, W)``.
        cell: Pixels per cell side.
    """

    gamma: Tensor
    b: Tensor
    c: float
    x0: Tensor
    cell: int

    @property
    def scale(self) -> float:
        """LEG's perturbation scale ``s = sigma * range(x0)`` at its default ``sigma``."""
        return _SIGMA * float(self.x0.max() - self.x0.min())

    def __call__(self, x: Tensor) -> Tensor:
        """``f`` per example of ``x`` ``(N, 1, H, W)``, ``(N,)``."""
        u = avg_pool2d(x, self.cell).flatten(1)
        d = (u - avg_pool2d(self.x0, self.cell).flatten(1)) / self.scale
        return (self.gamma * u).sum(1) + self.c * (self.b * (d**3 - 3 * d)).sum(1)

    @property
    def support(self) -> Tensor:
        """Boolean ``(P,)``: the cells of the region of importance."""
        return self.gamma != 0


def block_truth(grid: int, noise_ratio: float, seed: int, cell: int = 2) -> BlockTruth:
    """A :class:`BlockTruth` with two rectangles (values +1 and -0.7) on a square grid.

    The cubic noise's standard deviation under LEG's draws is ``noise_ratio`` times that of the
    linear signal.

    Args:
        grid: Cells per side (a multiple of 8 keeps the rectangles' proportions).
        noise_ratio: Noise std over signal std (``Var He3 = 6``).
        seed: Seed of the image and the noise loadings.
        cell: Pixels per cell side.
    """
    g = _gen(seed)
    x0 = torch.rand(1, 1, grid * cell, grid * cell, generator=g, dtype=torch.float64)
    gamma = torch.zeros(grid, grid, dtype=torch.float64)
    q = grid / 16
    gamma[int(3 * q) : int(7 * q), int(3 * q) : int(8 * q)] = 1.0
    gamma[int(9 * q) : int(13 * q), int(8 * q) : int(13 * q)] = -0.7
    gamma = gamma.flatten()
    b = torch.randn(grid * grid, generator=g, dtype=torch.float64)
    s = _SIGMA * float(x0.max() - x0.min())
    c = noise_ratio * s * float(gamma.norm()) / math.sqrt(6 * float((b**2).sum()))
    return BlockTruth(gamma, b, c, x0, cell)


def support_recovery(estimate: Tensor, support: Tensor) -> float:
    """Share of the ``k = |support|`` largest ``|estimate|`` cells that lie in ``support``."""
    k = int(support.sum())
    return float(support[estimate.abs().topk(k).indices].double().mean())


def fit_loglog_slope(ns: list[int], errors: list[float]) -> float:
    """Least-squares slope of ``log(error)`` on ``log(n)``."""
    return float(np.polyfit(np.log(ns), np.log(errors), 1)[0])


def matching_samples(ns: list[int], errors: list[float], level: float) -> float | None:
    """The smallest ``n`` at which ``errors`` (on the ladder ``ns``) first reach ``level``.

    Interpolated linearly in ``log n`` / ``log error`` between ladder points; ``None`` if never.
    """
    if errors[0] <= level:
        return float(ns[0])
    for i in range(1, len(ns)):
        if errors[i] <= level:
            lo, hi = math.log(errors[i - 1]), math.log(errors[i])
            t = (lo - math.log(level)) / (lo - hi)
            return float(math.exp(math.log(ns[i - 1]) + t * math.log(ns[i] / ns[i - 1])))
    return None


def _save(
    settings: ClaimSettings, name: str, draw: Callable[[Any], None], panels: int
) -> str | None:
    """``draw(axes)`` on one row of ``panels`` axes (4.2 x 3.4 in. each)."""
    return claim_figure(
        settings, name, lambda fig: draw(fig.subplots(1, panels, squeeze=False)[0]),
        (4.2 * panels, 3.4),
    )  # fmt: skip


def _n_axis(ax: Any, ns: list[int]) -> None:
    """Label a log ``n`` axis at the ladder's points only."""
    from matplotlib.ticker import NullFormatter

    ax.set_xticks(ns, [str(n) for n in ns], rotation=45, fontsize=7)
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("model evaluations n")


# --------------------------------------------------------------------------------------------
# 1. Consistency


def _consistency_errors(
    settings: ClaimSettings, ns: list[int], seeds: int, functions: int
) -> list[list[float]]:
    """Relative L2 error of LEG per (n, function x seed)."""
    grid, cell = 4, 2
    out: list[list[float]] = [[] for _ in ns]
    for j in range(functions):
        g = _gen(settings.seed * 1000 + j)
        x0 = torch.rand(1, 1, grid * cell, grid * cell, generator=g, dtype=torch.float64)
        f = SineCells(torch.randn(grid * grid, generator=g, dtype=torch.float64), 10.0, cell)
        truth = f.slope(x0)
        for i, n in enumerate(ns):
            for r in range(seeds):
                gen = _gen(settings.seed * 100_003 + 7919 * j + 101 * r + i)
                att = LEG(f).attribute(x0, n_samples=n, grid=(grid, grid), generator=gen)
                err = (cell_sums(att, grid)[0] - truth).norm() / truth.norm()
                out[i].append(float(err))
    return out


@claim(
    name="leg_consistency",
    paper=PAPER,
    statement=(
        "Empirical LEG is a consistent estimator of the Lemma-1 slope; its error falls at the "
        "rate sqrt(p1 p2 / n) (Section 3)."
    ),
)
def leg_consistency(settings: ClaimSettings) -> Outcome:
    """LEG's error against the closed-form Lemma-1 slope falls like ``n^-1/2``.

    Paper: Section 3 (after Eq. 3): gammahat -> gamma as n -> infinity, at the rate
    ``(1 / lambda_min(Sigma)) sqrt(p1 p2 / n)`` of classical linear-model theory.

    Protocol: ``f(x) = sum_j a_j sin(10 u_j(x))`` with ``u_j`` the mean of an 8 x 8 one-channel
    image over the cells of a 4 x 4 grid (random ``a``, random image in [0, 1]); its Lemma-1
    slope under LEG's draws is ``a_j 10 cos(10 u_j) exp(-(10 s)^2 / 2)`` (Stein's lemma, closed
    form; ``s = 0.1 * range``). LEG at its defaults (least squares, antithetic pairs, isotropic
    draws, ``sigma = 0.1``) with the grid fixed at 4 x 4 (the default grid grows with ``n``, which
    would change the estimand) and ``n`` on a doubling ladder; relative L2 error of the cell
    slopes, root-mean-square over functions x seeds; least-squares slope of log error on log n.

    Rule (fixed before the runs): holds if the log-log slope lies in [-0.65, -0.35] and the
    error at the largest ``n`` is below that at the smallest; partly if the slope is negative
    but outside that band; does not hold otherwise.

    Measured at size="default" (n = 128 ... 16384, 3 functions x 8 seeds, seed 0): log-log
    slope -0.513, relative error 0.214 at n = 128 falling to 0.018 at n = 16384: holds.
    """
    ns = [128 * 2**i for i in range(settings.pick(5, 8, 10))]
    seeds = settings.pick(6, 8, 16)
    functions = settings.pick(2, 3, 5)
    per_n = _consistency_errors(settings, ns, seeds, functions)
    rms = [float(np.sqrt(np.mean(np.square(e)))) for e in per_n]
    slope = fit_loglog_slope(ns, rms)
    holds = -0.65 <= slope <= -0.35 and rms[-1] < rms[0]
    rule = (
        "holds if the least-squares slope of log(RMS relative L2 error) on log(n) lies in "
        "[-0.65, -0.35] and the error falls from the smallest to the largest n; partly if the "
        "slope is negative but outside the band; does not hold otherwise"
    )
    why = ""
    if not holds:
        why = f"log-log slope {slope:.2f} is outside [-0.65, -0.35]: " + (
            "the error falls, but not at rate n^-1/2" if slope < 0 else "the error does not fall"
        )

    def draw(axes: Any) -> None:
        ax = axes[0]
        ax.loglog(ns, rms, "o-", label="LEG (RMS over seeds)")
        ref = [rms[0] * math.sqrt(ns[0] / n) for n in ns]
        ax.loglog(ns, ref, "k--", label="n^-1/2")
        _n_axis(ax, ns)
        ax.set_ylabel("relative L2 error vs Lemma-1 slope")
        ax.set_title(f"LEG consistency: slope {slope:.2f}")
        ax.legend()

    return Outcome(
        paper_value="error of empirical LEG ~ sqrt(p1 p2 / n), i.e. log-log slope -0.5 (Section 3)",
        ours=(
            f"log-log slope {slope:.3f}; relative error {rms[0]:.3f} at n={ns[0]} -> "
            f"{rms[-1]:.4f} at n={ns[-1]} (4 x 4 grid, {functions} sine functions x {seeds} seeds)"
        ),
        verdict=verdict_from(holds, partly=slope < 0),
        rule=rule,
        why=why,
        numbers={"n": [float(n) for n in ns], "rms_relative_error": rms, "loglog_slope": slope},
        figure=_save(settings, "leg_consistency.png", draw, 1),
    )


# --------------------------------------------------------------------------------------------
# 2. Sample efficiency of LEG-TV


def _efficiency_runs(
    truth: BlockTruth, grid: int, ns: list[int], seeds: int, base: int
) -> dict[str, list[list[float]]]:
    """Relative L2 error and support recovery of LEG and LEG-TV per (n, seed)."""
    res: dict[str, list[list[float]]] = {k: [] for k in ("leg_err", "tv_err", "leg_sup", "tv_sup")}
    norm = float(truth.gamma.norm())
    for i, n in enumerate(ns):
        row: dict[str, list[float]] = {k: [] for k in res}
        for r in range(seeds):
            seed = base + 1009 * i + r
            kw = {"n_samples": n, "grid": (grid, grid)}
            leg = cell_sums(LEG(truth).attribute(truth.x0, generator=_gen(seed), **kw), grid)[0]
            tv = cell_sums(LEGTV(truth).attribute(truth.x0, generator=_gen(seed), **kw), grid)[0]
            for name, est in (("leg", leg), ("tv", tv)):
                row[f"{name}_err"].append(float((est - truth.gamma).norm()) / norm)
                row[f"{name}_sup"].append(support_recovery(est, truth.support))
        for k in res:
            res[k].append(row[k])
    return res


@claim(
    name="legtv_sample_efficiency",
    paper=PAPER,
    statement=(
        "LEG-TV recovers a sparse, piecewise-constant region of importance with fewer model "
        "evaluations than LEG (Theorem 1: sqrt(s log(p/eps) / n) against sqrt(p / n))."
    ),
)
def legtv_sample_efficiency(settings: ClaimSettings) -> Outcome:
    """LEG-TV needs fewer model evaluations than LEG on a block-structured truth.

    Paper: Theorem 1 (Section 4): LEG-TV's error is bounded by ``sqrt(s log(p / eps) / n)``
    (``s`` = non-zero entries of ``D gamma``), against the ``sqrt(p / n)`` of empirical LEG
    (Section 3); the abstract: "an upper bound on the number of model evaluations needed to
    recover the region of importance".

    Protocol: :class:`BlockTruth` on a 16 x 16 grid (32 x 32 one-channel image; 8 x 8 at
    size="test", 28 x 28 at "full"): two rectangles of slope +1 and -0.7 (45 of 256 cells),
    zero elsewhere, plus an odd cubic Hermite term per cell whose Lemma-1 slope is exactly 0
    and whose std under LEG's draws equals that of the linear signal (``noise_ratio = 1``).
    LEG and LEG-TV (defaults: least squares, antithetic, isotropic, ``sigma = 0.1``, LEG-TV
    ``K_L = 0.1``) with the grid fixed, on a doubling ladder of ``n`` from just above the
    number of cells, several seeds (the same draws for both methods). Measured: relative L2
    error of the cell slopes and support recovery (share of the ``|S|`` largest ``|g|`` inside
    the blocks), means over seeds. ``n*`` = the ``n`` at which LEG-TV's error first reaches
    LEG's error at the largest ``n`` (log-log interpolation on the ladder).

    Rule (fixed before the runs): holds if ``n_max / n* >= 2`` for the L2 error and LEG-TV's
    support recovery reaches LEG's at ``n_max`` by ``n_max / 2``; partly if one of the two, or
    if LEG-TV's L2 error is below LEG's at every ``n``; does not hold otherwise.

    Measured at size="default" (16 x 16 grid, n = 616 ... 4928, 6 seeds, seed 0): LEG's
    relative L2 error at n = 4928 is 0.331; LEG-TV reaches it at n* = 1244 (ratio 4.0) and
    recovers the blocks fully from n = 2464 on (LEG at 4928): holds (run of 2026-12-07; from
    n = 308: 0.333, n* = 1459, ratio 3.4).
    Note that with the least-squares default and antithetic pairs LEG needs ``n >= 2 P``
    (a pair spans one direction); an earlier version of this experiment started at
    ``n = 308`` (154 pairs for 256 slopes), where LEG's fit was rank-deficient garbage,
    until LEG refused such calls; at large ``n`` LEG-TV's fixed relative ``K_L`` leaves a
    shrinkage bias, so the advantage is one of noise, as the class docstring says.
    """
    grid = settings.pick(8, 16, 28)
    cells = grid * grid
    # from 2.4 draws per cell: antithetic least squares needs two draws per slope (1.2 per
    # cell, the first point before, was rank-deficient and LEG's fit there was garbage)
    ns = [2 * int(round(0.6 * cells)) * 2**i for i in range(1, settings.pick(5, 5, 6))]
    seeds = settings.pick(6, 6, 10)
    truth = block_truth(grid, 1.0, settings.seed)
    res = _efficiency_runs(truth, grid, ns, seeds, base=settings.seed * 100_000)
    mean = {k: [float(np.mean(v)) for v in rows] for k, rows in res.items()}
    n_max = ns[-1]
    n_star = matching_samples(ns, mean["tv_err"], mean["leg_err"][-1])
    ratio = n_max / n_star if n_star is not None else 0.0
    sup_hit = [n for n, v in zip(ns, mean["tv_sup"]) if v >= mean["leg_sup"][-1]]
    n_sup = float(sup_hit[0]) if sup_hit else float("inf")
    l2_ok = ratio >= 2
    sup_ok = n_sup <= n_max / 2
    everywhere = all(t < e for t, e in zip(mean["tv_err"], mean["leg_err"]))
    holds = l2_ok and sup_ok
    rule = (
        "holds if LEG-TV reaches LEG's relative L2 error at the largest n with at most half the "
        "samples (n_max / n* >= 2, log-log interpolated) and reaches LEG's support recovery at "
        "the largest n by n_max / 2; partly if only one of the two, or if LEG-TV's error is below "
        "LEG's at every n; does not hold otherwise"
    )
    why = ""
    if not holds:
        why = (
            f"sample ratio {ratio:.2f} for L2 (need >= 2), support recovery reached at "
            f"n={n_sup:g} (need <= {n_max / 2:g}); LEG-TV's relative K_L shrinks the map by a "
            "share that does not fall with n, so its bias caps the error it can reach"
        )

    def draw(axes: Any) -> None:
        axes[0].loglog(ns, mean["leg_err"], "o-", label="LEG")
        axes[0].loglog(ns, mean["tv_err"], "s-", label="LEG-TV (K_L=0.1)")
        axes[0].axhline(mean["leg_err"][-1], color="grey", ls=":", lw=1)
        _n_axis(axes[0], ns)
        axes[0].set_ylabel("relative L2 error")
        axes[0].legend()
        axes[1].semilogx(ns, mean["leg_sup"], "o-", label="LEG")
        axes[1].semilogx(ns, mean["tv_sup"], "s-", label="LEG-TV")
        _n_axis(axes[1], ns)
        axes[1].set_ylabel("support recovery (top-|S| in blocks)")
        axes[1].set_ylim(0, 1.05)
        axes[1].legend()

    return Outcome(
        paper_value=(
            "LEG-TV error ~ sqrt(s log(p/eps) / n) vs LEG's sqrt(p / n): fewer samples for a "
            "sparse region of importance (Theorem 1)"
        ),
        ours=(
            f"LEG-TV matches LEG's L2 error at n={n_max} ({mean['leg_err'][-1]:.3f}) with "
            + (f"n*={n_star:.0f} (ratio {ratio:.2f})" if n_star is not None else "no n tried")
            + f"; support recovery LEG {mean['leg_sup'][-1]:.3f} at n={n_max}, LEG-TV reaches "
            + (f"it at n={n_sup:g}" if sup_hit else "it at no n tried")
            + f" ({grid} x {grid} grid, {seeds} seeds)"
        ),
        verdict=verdict_from(holds, partly=l2_ok or sup_ok or everywhere),
        rule=rule,
        why=why,
        numbers={
            "n": [float(n) for n in ns],
            "leg_rel_error": mean["leg_err"],
            "legtv_rel_error": mean["tv_err"],
            "leg_support_recovery": mean["leg_sup"],
            "legtv_support_recovery": mean["tv_sup"],
            "l2_sample_ratio": ratio,
        },
        figure=_save(settings, "legtv_sample_efficiency.png", draw, 2),
    )


# --------------------------------------------------------------------------------------------
# 3. Model randomisation


class _SeededExplainer:
    """``(model, inputs, target) -> attributions`` with a fresh seeded generator per call.

    Every randomisation step draws independently and reproducibly.
    """

    def __init__(self, cls: type, seed: int, **kwargs: Any) -> None:
        self.cls, self.seed, self.kwargs, self.calls = cls, seed, kwargs, 0

    def __call__(self, model: nn.Module, inputs: Tensor, target: Any) -> Tensor:
        self.calls += 1
        gen = _gen(self.seed * 1000 + self.calls)
        return self.cls(model).attribute(inputs, target=target, generator=gen, **self.kwargs)


def _correct_images(settings: ClaimSettings, count: int) -> tuple[nn.Module, Tensor, Tensor]:
    from captum_ext.benchmark import train
    from captum_ext.benchmark.training import load_data

    trained = train("small_cnn", "shapes")
    data = load_data(trained.config, "test", n=4 * count + 16)
    images, labels, _ = data.tensors()
    with torch.no_grad():
        hit = (trained.model(images).argmax(1) == labels).nonzero().flatten()
    g = _gen(settings.seed)
    pick = hit[torch.randperm(len(hit), generator=g)[:count]].sort().values
    return trained.model, images[pick], labels[pick]


@claim(
    name="leg_randomization",
    paper=PAPER,
    statement=(
        "LEG-TV passes the cascading model-randomisation sanity check: after the weights are "
        "randomised its map no longer resembles the trained model's (Section 5.1, Figure 5)."
    ),
)
def leg_randomization(settings: ClaimSettings) -> Outcome:
    """LEG and LEG-TV maps decorrelate from the trained model's when its layers are randomised.

    Paper: Section 5.1 and Figure 5 (VGG-19, cascading randomisation from the logits): the
    LEG-TV estimate is reduced to zero after randomising the top or second top layer.

    Protocol: small_cnn trained on SyntheticShapes (``train("small_cnn", "shapes")``), a few
    correctly classified test images (drawn with ``settings.seed``), logits, the trained
    model's predicted class. :func:`~captum_ext.metrics.model_randomization` in cascading mode
    over all nine parameterised layers, measure ``spearman_abs`` (Spearman rank correlation of
    the absolute maps, per image, then averaged). LEG and LEG-TV at their defaults (2,000
    draws at size="default", 16 x 16 grid; 256 draws and a 4 x 4 grid at size="test"), each
    call with its own seeded generator; Saliency as the reference row. Also reported: the
    seed-to-seed Spearman of the trained model's map (the ceiling of the original row).

    Rule (fixed before the runs): holds if both LEG's and LEG-TV's mean Spearman (absolute
    maps) is below 0.2 once all layers are randomised; partly if one of them is; does not hold
    otherwise.

    Measured at size="default" (6 images, seed 0, 2026-12-07) with today's default (the
    paper's ``D``, ``boundary="none"``, for isotropic draws): after all nine layers are
    randomised the mean Spearman is 0.074 for LEG, 0.040 for LEG-TV and 0.256 for Saliency
    (trained-model seed-to-seed: LEG 0.73, LEG-TV 0.73): holds. With the previous default,
    the authors' padded boundary, the same run gave LEG-TV 0.222 (partly; an earlier
    training of small_cnn 0.203): its TV term also penalises ``|g|`` at border cells, pulling
    every map's border toward 0, a structure the trained and the random maps share
    (separately, 12 other images: padded 0.23, paper's ``D`` 0.06, at seed-to-seed 0.76 /
    0.68 and object energy 0.35 / 0.33; ``tests/attr/test_leg_real_model.py`` pins it). That
    is why the default changed. Saliency keeps 0.26: a random CNN still responds to the
    object's edges (its random maps correlate at 0.16 with each other). The paper's exact
    zeros (Figure 5) come from a fixed penalty level; the default relative ``L = K_L *
    L_max`` is rescaled to each map and never gives zeros for a random model (a default, not
    a bug).
    """
    count = settings.pick(2, 6, 12)
    model, images, labels = _correct_images(settings, count)
    kw: dict[str, Any] = (
        {"n_samples": 256, "grid": (4, 4)} if settings.size == "test" else {"n_samples": 2000}
    )
    explainers: dict[str, Any] = {
        "LEG": _SeededExplainer(LEG, settings.seed, **kw),
        "LEG-TV": _SeededExplainer(LEGTV, settings.seed + 1, **kw),
        "Saliency": Saliency,
    }
    curves: dict[str, list[float]] = {}
    layers: list[str] = []
    for name, explain in explainers.items():
        res = model_randomization_run(model, explain, images, labels, settings.seed)
        curves[name] = res["spearman_abs"]
        layers = res["layers"]
    ceiling = _seed_to_seed(model, images, labels, kw, settings.seed)
    final = {k: v[-1] for k, v in curves.items()}
    leg_ok, tv_ok = final["LEG"] < 0.2, final["LEG-TV"] < 0.2
    holds = leg_ok and tv_ok
    rule = (
        "holds if the mean Spearman rank correlation of the absolute maps with the trained "
        "model's map is below 0.2 for both LEG and LEG-TV after all layers are randomised "
        "(cascading); partly if for one of them; does not hold otherwise"
    )
    why = ""
    if not holds:
        why = (
            f"after randomising all layers Spearman is {final['LEG']:.3f} (LEG) and "
            f"{final['LEG-TV']:.3f} (LEG-TV), Saliency (reference) {final['Saliency']:.3f}. "
            "Check the boundary: the authors' padded boundary (boundary='padded') penalises "
            "border cells, a structure trained and random maps share (LEG-TV 0.22 padded vs "
            "0.04 with the paper's D, the default, on these images at size 'default'); "
            "Saliency's random maps keep image structure (0.16 random-vs-random). The paper's "
            "zero maps (Figure 5) need a fixed L; the default relative level L = K_L * L_max "
            "is rescaled to every map, so it never returns zeros for a random model"
        )

    def draw(axes: Any) -> None:
        ax = axes[0]
        for name, v in curves.items():
            ax.plot(range(len(v)), v, "o-", label=name)
        ax.axhline(0.2, color="grey", ls=":", lw=1)
        ax.set_xticks(range(len(layers)))
        ax.set_xticklabels(layers, rotation=60, fontsize=7)
        ax.set_ylabel("Spearman (abs maps) vs trained")
        ax.set_title("cascading randomisation, small_cnn")
        ax.legend()

    return Outcome(
        paper_value=(
            "LEG-TV reduced to zero after randomising the top or second top layer of VGG-19 "
            "(Section 5.1, Figure 5)"
        ),
        ours=(
            f"Spearman (abs) after all {len(layers) - 1} layers randomised: LEG "
            f"{final['LEG']:.3f}, LEG-TV {final['LEG-TV']:.3f}, Saliency "
            f"{final['Saliency']:.3f} ({count} images; trained-model seed-to-seed: LEG "
            f"{ceiling['LEG']:.2f}, LEG-TV {ceiling['LEG-TV']:.2f})"
        ),
        verdict=verdict_from(holds, partly=leg_ok or tv_ok),
        rule=rule,
        why=why,
        numbers={
            **{f"{k.lower().replace('-', '')}_spearman_abs": v for k, v in curves.items()},
            **{f"{k.lower().replace('-', '')}_seed_to_seed": v for k, v in ceiling.items()},
        },
        figure=_save(settings, "leg_randomization.png", draw, 1),
    )


def model_randomization_run(
    model: nn.Module, explain: Any, images: Tensor, labels: Tensor, seed: int
) -> dict[str, Any]:
    """Cascading :func:`~captum_ext.metrics.model_randomization`, Spearman of absolute maps.

    Returns:
        ``{"layers": [...], "spearman_abs": [...]}`` ("original" first).
    """
    res = model_randomization(
        model, explain, images, labels, seed=seed, measures=("spearman_abs",)
    ).as_dict()
    return {"layers": list(res["layer"]), "spearman_abs": [float(v) for v in res["spearman_abs"]]}


def _seed_to_seed(
    model: nn.Module, images: Tensor, labels: Tensor, kw: dict[str, Any], seed: int
) -> dict[str, float]:
    """Mean Spearman (absolute maps) between two independently seeded trained-model maps.

    How similar a map is to itself: the ceiling of the check's first row.
    """
    out = {}
    for name, cls in (("LEG", LEG), ("LEG-TV", LEGTV)):
        a = cls(model).attribute(images, target=labels, generator=_gen(seed + 77), **kw)
        b = cls(model).attribute(images, target=labels, generator=_gen(seed + 78), **kw)
        out[name] = float(map_similarities(a, b, ("spearman_abs",)).mean())
    return out
