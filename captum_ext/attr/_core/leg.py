"""LEG and LEG-TV: linearly estimated gradients.

Luo, Barut, Jin, "Statistically Consistent Saliency Estimation" (ICLR 2020 submission, ICCV
2021). Both sample ``n`` perturbations ``z ~ N(0, Sigma)`` on a ``p1 x p2`` grid, upsample them
to the input (nearest), evaluate ``f(x0 + z)`` in batches and estimate the least-squares slope
``gamma`` of Lemma 1 on the grid: by ordinary least squares (default) or by Eq. 3's moment
estimator ``Sigma^-1 mean_i (f(x0 + z_i) - f(x0)) z_i``. :class:`LEG` returns ``gamma``;
:class:`LEGTV` solves the TV-penalised linear program of Eq. 4 in the sparse form of
:mod:`captum_ext.attr._utils.tv_lp`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from captum._utils.typing import TargetType
from torch import Tensor

from captum_ext._compat import _format_output, log_usage
from captum_ext.attr._utils.grid import Boundary
from captum_ext.attr._utils.leg_base import (
    _LOW_R2,
    Channels,
    Estimator,
    GridArg,
    LEGSettings,
    LEGStatistics,
    Sampler,
    TensorOrTupleOfTensors,
    _LEGBase,
)
from captum_ext.attr._utils.map_checks import DegenerateAttributionWarning, warn_if_degenerate
from captum_ext.attr._utils.tv_lp import SOLVERS, Covariance, LegTVProblem, Solver, theoretical_L

__all__ = ["DEFAULT_N_SAMPLES", "DEFAULT_SIGMA", "LEG", "LEGTV", "leg_saliency_map"]

#: Model evaluations per example by default (see the class docstrings for the measurements).
DEFAULT_N_SAMPLES = 2000
#: Perturbation scale by default, in units of each example's value range.
DEFAULT_SIGMA = 0.1


def leg_saliency_map(attributions: Tensor, reduction: Literal["sum", "mean"] = "sum") -> Tensor:
    """The paper's display map: ``abs`` of the per-channel LEG, reduced over channels.

    Args:
        attributions: Output of :meth:`LEG.attribute` / :meth:`LEGTV.attribute` for one input
            tensor, shape ``(N, C, H, W)`` (extra leading channel dims are reduced too).
        reduction: ``"sum"`` (the paper, Section 3) or ``"mean"`` (the authors' 2020 code).

    Returns:
        Tensor ``(N, H, W)``.
    """
    if attributions.dim() < 3:
        raise ValueError(f"attributions must be (N, C, ..., H, W), got {tuple(attributions.shape)}")
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
    flat = attributions.abs().flatten(1, -3)
    return flat.sum(1) if reduction == "sum" else flat.mean(1)


class LEG(_LEGBase):
    r"""Empirical linearly estimated gradient (LEG, Eq. 3 of Luo, Barut & Jin).

    LEG is the slope ``gamma`` of the least-squares linear approximation of ``f`` around ``x0``
    under Gaussian perturbations ``z ~ N(0, Sigma)`` on a grid (Lemma 1). The default estimator
    fits it by ordinary least squares of ``f(x0 + z_i)`` on ``[1, z_i]``; ``estimator="moment"``
    uses Eq. 3, ``Sigma^-1 mean_i (f(x0 + z_i) - f(x0)) z_i``. Both are consistent, but Eq. 3
    also carries the sample-covariance error ``Sigma^-1 (Z^T Z / n - Sigma) gamma`` (relative
    size ``sqrt(P / n)`` whatever the model), which least squares removes; on a trained CNN
    (1,000 draws, 8 x 8 grid, independent channels) this is the difference between a
    seed-to-seed Spearman correlation of 0.04 and 0.9. Least squares needs
    ``n_samples >= K + 2`` (``K`` = grid cells, times channels with
    ``channels="independent"``). With the TV-adapted ``Sigma = sigma^2 (D^T D + 1 1^T / P)``
    Eq. 3's inverse is applied exactly by fast sine / cosine transforms; no matrix is formed.

    For a model autograd can differentiate, ``estimator="stein"`` estimates the same ``gamma``
    from perturbed gradients: by Stein's identity (the paper's Lemma 1), the least-squares slope
    equals ``E[grad_z f(x0 + z)]``, so each draw contributes a whole gradient instead of one
    number. It costs one backward pass per draw but needs far fewer draws: on small_cnn (4
    images, reference: 8,192 perturbed gradients) 32 gradient draws agree with the limit as well
    as 2,000 least-squares evaluations (Spearman 0.83), and 256 reach 0.97, which least squares
    does not reach at 4,000 (0.90); ``benchmarks/bench_efficiency.py`` measures it in
    forward-pass equivalents. It is not a black-box method: keep ``"ols"`` for models without
    gradients.

    Defaults (measured on the benchmark's small_cnn, 12 correctly classified images, and the
    224 x 224 ResNet-18, logits; ``benchmarks/localisation_check.py`` reruns them): 2,000 draws
    in antithetic pairs, one draw per grid cell shared by its channels
    (``channels="shared"``), a 16 x 16 grid for 32 x 32 and 224 x 224 images (about
    ``sqrt(n / 4)`` cells a side, taken down to a divisor of the side), isotropic covariance
    (the paper's choice for plain LEG) and ``sigma = 0.1`` of each example's value range
    (Section 4.2 of the paper: 0.1 for most results, on images scaled to max 1). The previous
    defaults (independent channels on an 8 x 8 grid, 1,000 draws, ``sigma = 0.02``) gave
    stable maps that pointed at the object no more often than the plain gradient (pointing
    game 0.42, like Saliency), and a 16 x 16 grid with independent channels was noise
    (seed-to-seed Spearman 0.0-0.2): three colour channels triple the coefficients while the
    model mostly responds to local brightness. ``sigma`` trades stability for localisation
    (small_cnn, 2,000 draws, LEG: pointing game 0.67 and seed-to-seed Spearman 0.87 at 0.05,
    0.79 and 0.69 at 0.1; 1,000 draws at 0.1: 0.75 and 0.44; 4,000: 0.67-0.75 and 0.82).
    LEG-TV smooths the same estimate (Spearman 0.79 at the defaults). ``last_info["r2"]``
    holds the share of the output's variation the linear fit explains per example and a
    :class:`DegenerateAttributionWarning` is raised when it falls under 5 % or when the
    output does not move at all (a saturated softmax: explain logits).

    IntegratedGradients points at the benchmark's objects more often (48 correctly classified
    small_cnn images, signed maps: IG 0.96, LEG 0.73, LEG-TV 0.69), and its lead is its
    multiplication by the input, since the benchmark draws its objects brighter than the
    background: without it (the path-mean gradient, IG / x) IG scores 0.71, and the plain
    gradient goes from 0.58 to 0.98 when multiplied by the input. LEG estimates a gradient, as
    the paper defines it, and its pointing game is that of the quantity, not of the
    estimate's noise: 512 perturbed gradients (``estimator="stein"``) also give 0.73, other
    grids less (0.53 on 8 x 8, 0.60 on 32 x 32) and ``sigma`` 0.05 / 0.2 0.71 / 0.77 on the
    16 x 16 grid; LEG and LEG-TV multiplied by the input score 0.79.

    By default every model evaluation adds one draw per grid cell to all channels of the cell
    and to every input tensor's own grid; with ``channels="independent"`` each channel gets its
    own draw and estimate (so channels do not bias each other). All examples of a batch see
    the same draws (common random numbers), so an example's attribution does not depend on
    the rest of the batch. The output has the input's shape: every pixel of a grid cell holds
    ``gamma_hat(cell) / |cell|`` (divided by the channel count too when channels share a
    draw), a per-pixel gradient estimate (for ``f(x) = w . x`` with ``w`` constant on cells
    it is ``w``, or its channel mean when channels are shared).
    Use :func:`leg_saliency_map` for the paper's channel-summed ``|.|`` display map.

    The model runs in eval mode during the call (batch norm uses its running statistics,
    dropout is off); every module's flag is restored afterwards, also when the call raises.
    ``target`` is checked against the model's output before any draw: a class outside
    ``[0, n_classes)`` (``-1`` included) is a ``ValueError``.

    Reference: Luo, Barut, Jin. Statistically Consistent Saliency Estimation. ICCV 2021
    (arXiv:1909.06301).

    Examples:
        >>> leg = LEG(model)  # logits: a saturated softmax does not move under perturbation
        >>> attr = leg.attribute(images, target=labels)
        >>> maps = leg_saliency_map(attr)  # the paper's display map, (N, H, W)
    """

    @classmethod
    def get_name(cls) -> str:
        """Readable name used in progress bars and reports."""
        return "LEG"

    @log_usage()
    @torch.no_grad()
    def attribute(
        self,
        inputs: TensorOrTupleOfTensors,
        target: TargetType = None,
        additional_forward_args: Any = None,
        n_samples: int = DEFAULT_N_SAMPLES,
        sigma: float = DEFAULT_SIGMA,
        grid: GridArg = None,
        covariance: Covariance = "isotropic",
        boundary: Boundary = "padded",
        perturbations_per_eval: int = 64,
        antithetic: bool = True,
        generator: torch.Generator | None = None,
        show_progress: bool = False,
        estimator: Estimator = "ols",
        channels: Channels = "shared",
        sampler: Sampler = "random",
    ) -> TensorOrTupleOfTensors:
        r"""Empirical LEG of each example.

        Args:
            inputs: Tensor ``(N, C, H, W)`` (any extra dims between N and H, W count as
                channels) or a tuple of such tensors (each gets its own grid and estimate;
                they share the model evaluations).
            target: Captum target (int, list, tensor or tuple) selecting one scalar per example.
            additional_forward_args: Extra arguments of ``forward_func`` (repeated per draw).
            n_samples: Model evaluations per example (>= 2; >= coefficients + 2 for least
                squares: cells, times channels when they are independent); the paper uses
                500-3000. Default 2,000.
            sigma: Perturbation scale (finite, > 0) relative to each example's value range
                (``max - min`` over the example): the grid-level std is ``sigma * range``, so
                the same value suits [0, 1] and ImageNet-normalised inputs. With
                ``covariance="tv"`` the per-pixel std is about ``2 sigma`` times that
                (``sqrt(4 + 1/P)``). A warning is raised when the per-pixel std exceeds a
                quarter of the range. ``last_info["scale"]`` holds the scale used.
            grid: ``(p1, p2)`` grid (or one per input tensor). Default: about
                ``sqrt(n_samples / 4)`` cells a side (``sqrt(n_samples / (4 C))`` with
                ``channels="independent"``; at most 28), preferring a divisor of the image side
                (16 x 16 at the default 2,000 draws; ``estimator="stein"`` always takes the
                grid of 2,000 draws), shrunk to the input size; an explicit grid larger than
                the input raises ValueError.
            covariance: ``"isotropic"`` (``sigma^2 I``, default) or ``"tv"`` (the paper's
                Section 4.2 scheme).
            boundary: ``"padded"`` (default, the authors' 2020 code: zero-padded differences,
                ``D^T D`` the Dirichlet Laplacian) or ``"none"`` (the paper's ``D``).
            perturbations_per_eval: Draws evaluated per forward pass (the batch holds
                ``N * perturbations_per_eval`` rows). Results do not depend on it.
            antithetic: Use ``+z, -z`` pairs (default ``True``; ``n_samples`` must then be
                even). The even-order terms of ``f`` cancel exactly in the fit, so the estimate
                keeps its target and loses most of the curvature noise.
            generator: Source of randomness (draws happen on its device). Default: a fresh,
                randomly seeded generator per call, so repeated calls draw independently (pass
                a seeded generator to reproduce a map). The global RNG is never advanced.
            show_progress: Show a tqdm progress bar over the forward passes.
            estimator: ``"ols"`` (least squares, default), ``"moment"`` (Eq. 3) or
                ``"stein"`` (the mean perturbed gradient, for differentiable models: one
                backward pass per draw, far fewer draws; see the class docstring).
            channels: ``"shared"`` (default): one draw per grid cell, added to every channel
                of the cell (a local brightness change), so a cell is one coefficient and
                the estimate is the channel-summed gradient of the cell, spread evenly over
                its channels in the output. ``"independent"``: every channel of every cell
                gets its own draw and its own estimate (the authors' code perturbs channels
                separately), which needs ``C`` times the draws for the same grid.
            sampler: ``"random"`` (default: independent Gaussian draws) or ``"sobol"`` (a
                scrambled Sobol sequence through the normal inverse CDF, quasi-Monte Carlo;
                isotropic draws only). Every draw is marginally ``N(0, I)``, so the estimand
                is the same. On a linear function of 16 cells the moment estimate's error at
                4,096 draws falls to 0.003 (independent draws: 0.054), but on small_cnn's
                16 x 16 grid it saves only 5-12 % of the model passes for a given agreement
                with the reference (``benchmarks/bench_efficiency.py``): in 256 dimensions
                the model's non-linearity, not the draws' unevenness, dominates the error.

        Returns:
            Signed attributions shaped like ``inputs`` (a tuple if ``inputs`` was a tuple).
            ``last_info`` then holds ``r2`` (per example), ``scale`` (per input tensor and
            example) and ``grid``.
        """
        cfg = LEGSettings.from_arguments(locals())
        is_tuple, inputs, grids, stats = self._estimate(
            inputs, target, additional_forward_args, cfg
        )
        out = self._to_output(stats.gamma, inputs, grids)
        # a LEG map is exactly zero only when the output did not move under the draws
        _warn_fit(
            self.get_name(),
            stats,
            out,
            "explain logits rather than a saturated softmax, or raise sigma",
        )
        return _format_output(is_tuple, out)


def _warn_fit(name: str, stats: LEGStatistics, out: tuple[Tensor, ...], hint: str) -> None:
    """One warning per call for blank maps or a linear fit that explains almost nothing."""
    warn_if_degenerate(name, out, hint, stacklevel=4)
    low = stats.r2 < _LOW_R2
    if bool(low.any()):
        idx = low.nonzero().flatten().tolist()
        worst = float(stats.r2[low].min())
        warnings.warn(
            f"{name}: the linear fit explains under {_LOW_R2:.0%} of the output's variation "
            f"for example(s) {idx[:8]} (lowest R^2 {worst:.3f}): the model is far from linear "
            f"at this perturbation scale, so the map is mostly noise; lower sigma or raise "
            f"n_samples",
            DegenerateAttributionWarning,
            stacklevel=4,
        )


def _tv_boundary(boundary: Boundary | None, covariance: str) -> Boundary:
    """LEG-TV's ``boundary``: ``None`` is the paper's ``D`` for isotropic draws, else padded."""
    if boundary is not None:
        return boundary
    return "none" if covariance == "isotropic" else "padded"


class LEGTV(_LEGBase):
    r"""LEG-TV: the total-variation penalised LEG estimate (Definition 2, Eq. 4).

    Solves, per example, input tensor and channel,

        ``min_g ||D g||_1  s.t.  ||D^{+T} (ybar - Sigma g)||_inf <= L``

    with ``ybar = mean_i (f(x0 + z_i) - f(x0)) z_i`` from the same draws as :class:`LEG`
    (``estimator="moment"``) or, by default, ``ybar = Sigma gamma_ols``, the moment vector of
    the least-squares fit, so the constraint is centred on the least-squares LEG.
    ``L = K_L * L_max`` with ``L_max = ||D^{+T} ybar||_inf`` (the smallest L giving ``g = 0``)
    per channel, or the theoretical L of Theorem 1, or an absolute L. With the TV-adapted
    covariance ``D^{+T} Sigma = sigma^2 (D + c 1^T)``, so the LP is sparse (one dense column for
    the padded D, none for the paper's D) and solves far faster than the dense paper
    formulation (``benchmarks/bench_leg_lp.py`` times both at 28 x 28). ``K_L = 0`` gives
    empirical LEG (Lemma 3); ``K_L = 1`` gives exact zeros (padded D); a model whose output
    does not depend on the input gives exact zeros.

    For ``boundary="none"`` the paper's mean shift is fixed by ``mean(g) = mean(LEG)``
    (Section 4.1). Differences from the authors' code: one LP per channel with its own L
    (``shared_L=True`` uses the largest ``L_max`` over channels), no quantisation or clipping of
    perturbed inputs, and the 2019 code's extra quadratic term is not added. Eval mode and the
    ``target`` check are as in :class:`LEG`.

    ``K_L`` shrinks the map by a roughly fixed share whatever ``n``: LEG-TV beats LEG when the
    estimate is noise-dominated (few draws per cell, the paper's regime), while with many draws
    per coefficient least-squares LEG is closer to the truth.

    Reference: Luo, Barut, Jin. Statistically Consistent Saliency Estimation. ICCV 2021
    (arXiv:1909.06301).

    Examples:
        >>> legtv = LEGTV(model)  # logits
        >>> attr = legtv.attribute(images, target=labels, K_L=0.1)
        >>> maps = leg_saliency_map(attr)  # the paper's display map, (N, H, W)
    """

    @classmethod
    def get_name(cls) -> str:
        """Readable name used in progress bars and reports."""
        return "LEG-TV"

    @log_usage()
    @torch.no_grad()
    def attribute(
        self,
        inputs: TensorOrTupleOfTensors,
        target: TargetType = None,
        additional_forward_args: Any = None,
        n_samples: int = DEFAULT_N_SAMPLES,
        sigma: float = DEFAULT_SIGMA,
        grid: GridArg = None,
        covariance: Covariance = "isotropic",
        boundary: Boundary | None = None,
        K_L: float = 0.1,
        L: float | Literal["theory"] | None = None,
        solver: Solver = "auto",
        shared_L: bool = False,
        perturbations_per_eval: int = 64,
        antithetic: bool = True,
        generator: torch.Generator | None = None,
        show_progress: bool = False,
        estimator: Estimator = "ols",
        channels: Channels = "shared",
        sampler: Sampler = "random",
    ) -> TensorOrTupleOfTensors:
        r"""LEG-TV attributions.

        Args:
            inputs: Tensor ``(N, C, H, W)`` (any extra dims between N and H, W count as
                channels) or a tuple of such tensors (each gets its own grid, estimate and
                linear programs; they share the model evaluations).
            target: Captum target (int, list, tensor or tuple) selecting one scalar per
                example; checked against the model's output before any draw.
            additional_forward_args: Extra arguments of ``forward_func`` (repeated per draw).
            n_samples: Model evaluations per example (>= 2; >= coefficients + 2 for least
                squares: cells, times channels when they are independent); the paper uses
                500-3000. Default 2,000.
            sigma: Perturbation scale (finite, > 0) relative to each example's value range
                (``max - min`` over the example): the grid-level std is ``sigma * range``, so
                the same value suits [0, 1] and ImageNet-normalised inputs. With
                ``covariance="tv"`` the per-pixel std is about ``2 sigma`` times that
                (``sqrt(4 + 1/P)``). A warning is raised when the per-pixel std exceeds a
                quarter of the range. ``last_info["scale"]`` holds the scale used.
            grid: ``(p1, p2)`` grid (or one per input tensor) on which ``g`` and the LP live.
                Default: about ``sqrt(n_samples / 4)`` cells a side
                (``sqrt(n_samples / (4 C))`` with ``channels="independent"``; at most 28),
                preferring a divisor of the image side (16 x 16 at the default 2,000 draws;
                ``estimator="stein"`` always takes the grid of 2,000 draws), shrunk to the
                input size; an explicit grid larger than the input raises ValueError.
            covariance: ``"isotropic"`` (``sigma^2 I``, default) or ``"tv"`` (the Section 4.2
                scheme, which the paper pairs with LEG-TV). With the least-squares estimator
                the TV scheme's strongly correlated draws leave the smooth components of
                ``gamma`` poorly determined (small_cnn, 1,000 draws, 8 x 8 grid, independent
                channels, ``sigma = 0.02``: seed-to-seed Spearman 0.73 with ``"tv"``, 0.91
                isotropic; energy on the object 0.24 vs 0.28).
            boundary: ``"none"`` (the paper's ``D``, with the mean of ``g`` fixed to that of
                LEG) or ``"padded"`` (the authors' 2020 code: zero-padded differences,
                ``D^T D`` the Dirichlet Laplacian). It defines the ``D`` of ``||D g||_1``.
                Default ``None``: ``"none"`` with the default isotropic draws, ``"padded"``
                with ``covariance="tv"`` (the authors' pairing; there the draws' covariance
                is built from the same ``D``). ``"padded"`` also penalises ``|g|`` at the
                border cells, pulling every map's border toward 0, a structure the maps of a
                trained and of a randomised model share: on small_cnn (12 test images, 2,000
                draws) LEG-TV's map after randomising all layers kept Spearman 0.23 with the
                trained model's with ``"padded"`` and 0.06 with ``"none"`` (seed-to-seed 0.76
                / 0.68, object energy 0.35 / 0.33, pointing game 0.67 / 0.67), so the paper's
                ``D`` is the default for isotropic draws and passes the randomisation check.
            K_L: Relative constraint level in [0, 1]: ``L = K_L * L_max`` (default 0.1; the
                paper uses 0.05 or 0.1). Ignored when ``L`` is given.
            L: ``None`` (use ``K_L``), a number >= 0 (absolute L, in the units of Eq. 4), or
                ``"theory"``: ``sqrt(2 ||D^+||_1 log(P / 0.05) / n)`` (Theorem 1; conservative: the
                bound assumes perturbations of unit scale, so with sigma well below 1 it
                usually exceeds ``L_max`` and the map is 0).
            solver: ``"auto"`` (HiGHS dual simplex up to 24 x 24 cells, CLARABEL above),
                ``"highs-ds"``, ``"highs-ipm"`` or ``"clarabel"``.
            shared_L: Use one ``L_max`` (the largest over channels) per example and tensor.
            perturbations_per_eval: Draws evaluated per forward pass (the batch holds
                ``N * perturbations_per_eval`` rows). Results do not depend on it.
            antithetic: Use ``+z, -z`` pairs (default ``True``; ``n_samples`` must then be
                even). The even-order terms of ``f`` cancel exactly in the fit, so the estimate
                keeps its target and loses most of the curvature noise.
            generator: Source of randomness (draws happen on its device). Default: a fresh,
                randomly seeded generator per call, so repeated calls draw independently (pass
                a seeded generator to reproduce a map). The global RNG is never advanced.
            show_progress: Show a tqdm progress bar over the forward passes.
            estimator: Which moment vector ``ybar`` centres the constraint: ``"ols"`` (default,
                ``Sigma gamma_ols`` of the least-squares fit), ``"moment"`` (Eq. 3's
                ``mean_i (f(x0 + z_i) - f(x0)) z_i``) or ``"stein"`` (``Sigma`` times the
                mean perturbed gradient, for differentiable models; see :class:`LEG`).
            channels: ``"shared"`` (default): one draw per grid cell, added to every channel
                of the cell (a local brightness change), so a cell is one coefficient and
                the estimate is the channel-summed gradient of the cell, spread evenly over
                its channels in the output. ``"independent"``: every channel of every cell
                gets its own draw and its own estimate (the authors' code perturbs channels
                separately), which needs ``C`` times the draws for the same grid.
            sampler: ``"random"`` (default: independent Gaussian draws) or ``"sobol"`` (a
                scrambled Sobol sequence through the normal inverse CDF, quasi-Monte Carlo;
                isotropic draws only; the same estimand; measured in :meth:`LEG.attribute`).

        Returns:
            Signed attributions shaped like ``inputs`` (a tuple if ``inputs`` was a tuple).
            ``last_info`` then holds ``r2`` (per example), ``scale`` (per input tensor and
            example) and ``grid``.

        Raises:
            RuntimeError: The LP solver did not reach optimality (with its status).
        """
        levels = _Levels([K_L], L, solver, shared_L)
        cfg = _tv_settings(locals())
        return self._attribute(inputs, target, additional_forward_args, cfg, levels)[0]

    @log_usage()
    @torch.no_grad()
    def solution_path(
        self,
        inputs: TensorOrTupleOfTensors,
        target: TargetType = None,
        additional_forward_args: Any = None,
        K_L: Sequence[float] = (0.3, 0.2, 0.1, 0.05),
        n_samples: int = DEFAULT_N_SAMPLES,
        sigma: float = DEFAULT_SIGMA,
        grid: GridArg = None,
        covariance: Covariance = "isotropic",
        boundary: Boundary | None = None,
        solver: Solver = "auto",
        shared_L: bool = False,
        perturbations_per_eval: int = 64,
        antithetic: bool = True,
        generator: torch.Generator | None = None,
        show_progress: bool = False,
        estimator: Estimator = "ols",
        channels: Channels = "shared",
        sampler: Sampler = "random",
    ) -> list[TensorOrTupleOfTensors]:
        r"""LEG-TV at several ``K_L`` values from one set of model evaluations.

        The LP of each channel is built once and re-solved per level (HiGHS keeps its basis,
        so later levels warm-start; with CLARABEL L is a cvxpy parameter).

        Args:
            inputs: Tensor ``(N, C, H, W)`` (any extra dims between N and H, W count as
                channels) or a tuple of such tensors (each gets its own grid, estimate and
                linear programs; they share the model evaluations).
            target: Captum target (int, list, tensor or tuple) selecting one scalar per
                example; checked against the model's output before any draw.
            additional_forward_args: Extra arguments of ``forward_func`` (repeated per draw).
            K_L: The relative constraint levels, each in [0, 1] (``L = K_L * L_max``), at
                least one; solved in the order given. Default ``(0.3, 0.2, 0.1, 0.05)``.
            n_samples: Model evaluations per example, shared by every level (>= 2; >=
                coefficients + 2 for least squares). Default 2,000.
            sigma: Perturbation scale (finite, > 0) relative to each example's value range
                (``max - min`` over the example); ``last_info["scale"]`` holds the scale used.
            grid: ``(p1, p2)`` grid (or one per input tensor). Default: about
                ``sqrt(n_samples / 4)`` cells a side (``sqrt(n_samples / (4 C))`` with
                ``channels="independent"``; at most 28; ``estimator="stein"`` takes the grid
                of 2,000 draws), shrunk to the input size; an explicit grid larger than the
                input raises ValueError.
            covariance: ``"isotropic"`` (``sigma^2 I``, default) or ``"tv"`` (the Section 4.2
                scheme).
            boundary: ``"none"`` (the paper's ``D``, with the mean of ``g`` fixed to that of
                LEG), ``"padded"`` (zero-padded differences) or ``None`` (default: ``"none"``
                for isotropic draws, ``"padded"`` for ``covariance="tv"``), as in
                :meth:`attribute`.
            solver: ``"auto"`` (HiGHS dual simplex up to 24 x 24 cells, CLARABEL above),
                ``"highs-ds"``, ``"highs-ipm"`` or ``"clarabel"``.
            shared_L: Use one ``L_max`` (the largest over channels) per example and tensor.
            perturbations_per_eval: Draws evaluated per forward pass (the batch holds
                ``N * perturbations_per_eval`` rows). Results do not depend on it.
            antithetic: Use ``+z, -z`` pairs (default ``True``; ``n_samples`` must then be
                even). The even-order terms of ``f`` cancel exactly in the fit, so the estimate
                keeps its target and loses most of the curvature noise.
            generator: Source of randomness (draws happen on its device). Default: a fresh,
                randomly seeded generator per call. The global RNG is never advanced.
            show_progress: Show a tqdm progress bar over the forward passes.
            estimator: ``"ols"`` (default: the constraint is centred on ``Sigma gamma_ols``),
                ``"moment"`` (Eq. 3's moment vector) or ``"stein"`` (``Sigma`` times the mean
                perturbed gradient, for differentiable models; see :class:`LEG`).
            channels: ``"shared"`` (default): one draw per grid cell, added to every channel
                of the cell (a local brightness change), so a cell is one coefficient and
                the estimate is the channel-summed gradient of the cell, spread evenly over
                its channels in the output. ``"independent"``: every channel of every cell
                gets its own draw and its own estimate (the authors' code perturbs channels
                separately), which needs ``C`` times the draws for the same grid.
            sampler: ``"random"`` (default: independent Gaussian draws) or ``"sobol"`` (a
                scrambled Sobol sequence through the normal inverse CDF, quasi-Monte Carlo;
                isotropic draws only; the same estimand; measured in :meth:`LEG.attribute`).

        Returns:
            One attribution (tensor or tuple, like ``inputs``) per ``K_L``, in the order given.

        Raises:
            RuntimeError: The LP solver did not reach optimality (with its status).
        """
        ks = [float(k) for k in K_L]
        if not ks:
            raise ValueError("K_L must hold at least one value")
        levels = _Levels(ks, None, solver, shared_L)
        cfg = _tv_settings(locals())
        return self._attribute(inputs, target, additional_forward_args, cfg, levels)

    def _attribute(
        self,
        inputs: TensorOrTupleOfTensors,
        target: TargetType,
        additional_forward_args: Any,
        cfg: LEGSettings,
        levels: _Levels,
    ) -> list[TensorOrTupleOfTensors]:
        """Estimate once, then solve the LP of every example and channel at every level."""
        ks = levels.ks
        is_tuple, inputs, grids, stats = self._estimate(
            inputs, target, additional_forward_args, cfg
        )
        per_level: list[list[Tensor]] = [[] for _ in ks]
        for ybar, g, scale in zip(stats.ybar, grids, stats.scale):
            maps = torch.zeros(len(ks), *ybar.shape, dtype=torch.float64)
            y_np = ybar.cpu().numpy()
            for n in range(y_np.shape[0]):
                problems = [
                    LegTVProblem(
                        y_np[n, c],
                        float(scale[n]),
                        covariance=cfg.covariance,
                        boundary=cfg.boundary,
                        solver=levels.solver,
                    )
                    for c in range(y_np.shape[1])
                ]
                top = max(pr.L_max for pr in problems)
                for c, pr in enumerate(problems):
                    absolute = levels.absolute(pr.L_max, top, g, cfg.n_samples, cfg.boundary)
                    for j, res in enumerate(pr.path(absolute)):
                        maps[j, n, c] = torch.from_numpy(res.g)
            for j in range(len(ks)):
                per_level[j].append(maps[j].to(ybar.device))
        outs = [self._to_output(m, inputs, grids) for m in per_level]
        hint = (
            "L='theory' is conservative (Theorem 1) and often exceeds L_max; use K_L"
            if levels.L == "theory"
            else "lower K_L; if the output does not move, explain logits or raise sigma"
        )
        _warn_fit(self.get_name(), stats, outs[-1], hint)
        return [_format_output(is_tuple, o) for o in outs]


def _tv_settings(arguments: dict[str, Any]) -> LEGSettings:
    """The settings of a LEG-TV call from its arguments, with :func:`_tv_boundary` applied."""
    boundary = _tv_boundary(arguments["boundary"], arguments["covariance"])
    return LEGSettings.from_arguments(arguments, boundary=boundary)


@dataclass(frozen=True)
class _Levels:
    """The LP knobs of one LEG-TV call: the levels ``ks`` (or ``L``), ``solver``, ``shared_L``.

    Checked when built, so a bad level fails before any model pass.
    """

    ks: list[float]
    L: float | Literal["theory"] | None
    solver: Solver
    shared_L: bool

    def __post_init__(self) -> None:
        _check_levels(self.ks, self.L, self.solver)

    def absolute(
        self, L_max: float, top: float, grid: tuple[int, int], n_samples: int, boundary: Boundary
    ) -> list[float]:
        """The absolute L per level for one channel's LP (``top``: the example's largest L_max)."""
        if self.L == "theory":
            return [theoretical_L(grid, n_samples, boundary)]
        if self.L is not None:
            return [float(self.L)]
        return [k * (top if self.shared_L else L_max) for k in self.ks]


def _check_levels(ks: list[float], L: float | str | None, solver: Solver) -> None:
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, (int, float)) or not 0 <= k <= 1:
            raise ValueError(f"K_L must be a number in [0, 1], got {k!r}")
    if L is not None and L != "theory":
        if (
            isinstance(L, bool)
            or not isinstance(L, (int, float))
            or not (math.isfinite(L) and L >= 0)
        ):
            raise ValueError(f"L must be None, 'theory' or a finite number >= 0, got {L!r}")
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
