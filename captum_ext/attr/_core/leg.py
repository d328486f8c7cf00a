"""LEG and LEG-TV: linearly estimated gradients.

Luo, Barut, Jin, "Statistically Consistent Saliency Estimation" (ICLR 2020 submission, ICCV
2021). Both sample ``n`` perturbations ``z ~ N(0, Sigma)`` on a ``p1 x p2`` grid, upsample them
to the input (nearest), evaluate ``f(x0 + z)`` in batches and form
``ybar = mean_i (f(x0 + z_i) - f(x0)) z_i`` on the grid. :class:`LEG` returns ``Sigma^-1 ybar``
(Eq. 3); :class:`LEGTV` solves the TV-penalised linear program of Eq. 4 in the sparse form of
:mod:`captum_ext.attr._utils.tv_lp`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from captum._utils.typing import TargetType
from torch import Tensor

from captum_ext._compat import _format_output, _format_tensor_into_tuples, _is_tuple, log_usage
from captum_ext.attr._utils.grid import tv_covariance_inverse_apply
from captum_ext.attr._utils.leg_base import GridArg, TensorOrTupleOfTensors, _LEGBase
from captum_ext.attr._utils.tv_lp import SOLVERS, LegTVProblem, theoretical_L

__all__ = ["LEG", "LEGTV", "leg_saliency_map"]


def leg_saliency_map(attributions: Tensor, reduction: str = "sum") -> Tensor:
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

    ``gamma_hat = Sigma^-1 mean_i (f(x0 + z_i) - f(x0)) z_i`` with ``z_i ~ N(0, Sigma)`` on a grid,
    the least-squares linear approximation of ``f`` around ``x0`` (Lemma 1). With the default
    TV-adapted ``Sigma = sigma^2 (D^T D + 1 1^T / P)`` the inverse is applied exactly by fast
    sine / cosine transforms; no matrix is formed.

    Each model evaluation perturbs all channels of all input tensors with independent draws
    (so channels do not bias each other); each channel gets its own estimate. All examples of
    a batch see the same draws (common random numbers), so an example's attribution does not
    depend on the rest of the batch. The output has
    the input's shape: every pixel of a grid cell holds ``gamma_hat(cell) / |cell|``, a
    per-pixel gradient estimate (for ``f(x) = w . x`` with ``w`` constant on cells it is ``w``).
    Use :func:`leg_saliency_map` for the paper's channel-summed ``|.|`` display map.

    Reference: Luo, Barut, Jin. Statistically Consistent Saliency Estimation. ICCV 2021
    (arXiv:1909.06301).

    Examples:
        >>> leg = LEG(lambda x: torch.softmax(model(x), 1))
        >>> attr = leg.attribute(images, target=labels, n_samples=500)
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
        n_samples: int = 500,
        sigma: float = 0.02,
        grid: GridArg = None,
        covariance: str = "tv",
        boundary: str = "padded",
        perturbations_per_eval: int = 64,
        antithetic: bool = False,
        generator: torch.Generator | None = None,
        show_progress: bool = False,
    ) -> TensorOrTupleOfTensors:
        r"""Empirical LEG of each example.

        Args:
            inputs: Tensor ``(N, C, H, W)`` (any extra dims between N and H, W count as
                channels) or a tuple of such tensors (each gets its own grid and estimate;
                they share the model evaluations).
            target: Captum target (int, list, tensor or tuple) selecting one scalar per example.
            additional_forward_args: Extra arguments of ``forward_func`` (repeated per draw).
            n_samples: Model evaluations per example (>= 2); the paper uses 500-3000.
            sigma: Perturbation scale (> 0). With ``covariance="tv"`` the per-pixel std is about
                ``2 sigma`` (``sigma sqrt(4 + 1/P)``); 0.02 (std 0.04) suits [0, 1] images, use
                about 0.09 for ImageNet-normalised inputs. A warning is raised when the std
                exceeds a quarter of an input's value range.
            grid: ``(p1, p2)`` grid (or one per input tensor). Default ``(28, 28)``, shrunk to
                the input size; an explicit grid larger than the input raises ValueError.
            covariance: ``"tv"`` (the paper's Section 4.2 scheme) or ``"isotropic"``
                (``sigma^2 I``).
            boundary: ``"padded"`` (default, the authors' 2020 code: zero-padded differences,
                ``D^T D`` the Dirichlet Laplacian) or ``"none"`` (the paper's ``D``).
            perturbations_per_eval: Draws evaluated per forward pass (the batch holds
                ``N * perturbations_per_eval`` rows). Results do not depend on it.
            antithetic: Use ``+z, -z`` pairs (cancels even-order terms; n_samples even).
            generator: Source of randomness (draws happen on its device); default a generator
                seeded from ``torch.initial_seed()``. The global RNG is never advanced.
            show_progress: Show a tqdm progress bar over the forward passes.

        Returns:
            Signed attributions shaped like ``inputs`` (a tuple if ``inputs`` was a tuple).
        """
        is_tuple = _is_tuple(inputs)
        inputs = _format_tensor_into_tuples(inputs)
        grids = self._check_common(
            inputs, n_samples, sigma, grid, covariance, boundary, perturbations_per_eval, antithetic
        )
        ybars = self._statistics(
            inputs,
            target,
            additional_forward_args,
            n_samples,
            sigma,
            grids,
            covariance,
            boundary,
            perturbations_per_eval,
            antithetic,
            generator,
            show_progress,
        )
        maps = [_empirical_leg(y, sigma, covariance, boundary) for y in ybars]
        return _format_output(is_tuple, self._to_output(maps, inputs, grids))


def _empirical_leg(ybar: Tensor, sigma: float, covariance: str, boundary: str) -> Tensor:
    if covariance == "isotropic":
        return ybar / sigma**2
    g = tv_covariance_inverse_apply(ybar.cpu().numpy(), sigma, boundary)
    return torch.from_numpy(g).to(ybar.device)


class LEGTV(_LEGBase):
    r"""LEG-TV: the total-variation penalised LEG estimate (Definition 2, Eq. 4).

    Solves, per example, input tensor and channel,

        ``min_g ||D g||_1  s.t.  ||D^{+T} (ybar - Sigma g)||_inf <= L``

    with ``ybar = mean_i (f(x0 + z_i) - f(x0)) z_i`` from the same draws as :class:`LEG`.
    ``L = K_L * L_max`` with ``L_max = ||D^{+T} ybar||_inf`` (the smallest L giving ``g = 0``)
    per channel, or the theoretical L of Theorem 1, or an absolute L. With the TV-adapted
    covariance ``D^{+T} Sigma = sigma^2 (D + c 1^T)``, so the LP is sparse (one dense column for
    the padded D, none for the paper's D): 0.13-0.37 s at 28 x 28 instead of 35-80 s for the dense
    paper formulation. ``K_L = 0`` gives empirical LEG (Lemma 3); ``K_L = 1`` gives exact zeros
    (padded D); a model whose output does not depend on the input gives exact zeros.

    For ``boundary="none"`` the paper's mean shift is fixed by ``mean(g) = mean(LEG)``
    (Section 4.1). Differences from the authors' code: one LP per channel with its own L
    (``shared_L=True`` uses the largest ``L_max`` over channels), no quantisation or clipping of
    perturbed inputs, and the 2019 code's extra quadratic term is not added.

    Reference: Luo, Barut, Jin. Statistically Consistent Saliency Estimation. ICCV 2021
    (arXiv:1909.06301).

    Examples:
        >>> legtv = LEGTV(lambda x: torch.softmax(model(x), 1))
        >>> attr = legtv.attribute(images, target=labels, n_samples=500, K_L=0.1)
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
        n_samples: int = 500,
        sigma: float = 0.02,
        grid: GridArg = None,
        covariance: str = "tv",
        boundary: str = "padded",
        K_L: float = 0.1,
        L: float | str | None = None,
        solver: str = "auto",
        shared_L: bool = False,
        perturbations_per_eval: int = 64,
        antithetic: bool = False,
        generator: torch.Generator | None = None,
        show_progress: bool = False,
    ) -> TensorOrTupleOfTensors:
        r"""LEG-TV attributions.

        Args:
            inputs: As in :meth:`LEG.attribute`.
            target: As in :meth:`LEG.attribute`.
            additional_forward_args: As in :meth:`LEG.attribute`.
            n_samples: As in :meth:`LEG.attribute`.
            sigma: As in :meth:`LEG.attribute`.
            grid: As in :meth:`LEG.attribute`.
            covariance: As in :meth:`LEG.attribute`.
            boundary: As in :meth:`LEG.attribute`.
            K_L: Relative constraint level in [0, 1]: ``L = K_L * L_max`` (default 0.1; the
                paper uses 0.05 or 0.1). Ignored when ``L`` is given.
            L: ``None`` (use ``K_L``), a number >= 0 (absolute L, in the units of Eq. 4), or
                ``"theory"``: ``sqrt(2 ||D^+||_1 log(P / 0.05) / n)`` (Theorem 1; conservative: the
                bound assumes perturbations of unit scale, so with the default small sigma it
                usually exceeds ``L_max`` and the map is 0).
            solver: ``"auto"`` (HiGHS dual simplex up to 24 x 24 cells, CLARABEL above),
                ``"highs-ds"``, ``"highs-ipm"`` or ``"clarabel"``.
            shared_L: Use one ``L_max`` (the largest over channels) per example and tensor.
            perturbations_per_eval: As in :meth:`LEG.attribute`.
            antithetic: As in :meth:`LEG.attribute`.
            generator: As in :meth:`LEG.attribute`.
            show_progress: As in :meth:`LEG.attribute`.

        Returns:
            Signed attributions shaped like ``inputs``.

        Raises:
            RuntimeError: The LP solver did not reach optimality (with its status).
        """
        _check_levels([K_L], L, solver)
        return self._run(
            inputs,
            target,
            additional_forward_args,
            n_samples,
            sigma,
            grid,
            covariance,
            boundary,
            [K_L],
            L,
            solver,
            shared_L,
            perturbations_per_eval,
            antithetic,
            generator,
            show_progress,
        )[0]

    @log_usage()
    @torch.no_grad()
    def solution_path(
        self,
        inputs: TensorOrTupleOfTensors,
        target: TargetType = None,
        additional_forward_args: Any = None,
        K_L: Sequence[float] = (0.3, 0.2, 0.1, 0.05),
        n_samples: int = 500,
        sigma: float = 0.02,
        grid: GridArg = None,
        covariance: str = "tv",
        boundary: str = "padded",
        solver: str = "auto",
        shared_L: bool = False,
        perturbations_per_eval: int = 64,
        antithetic: bool = False,
        generator: torch.Generator | None = None,
        show_progress: bool = False,
    ) -> list[TensorOrTupleOfTensors]:
        r"""LEG-TV at several ``K_L`` values from one set of model evaluations.

        The LP of each channel is built once and re-solved per level (HiGHS keeps its basis,
        so later levels warm-start; with CLARABEL L is a cvxpy parameter). Arguments are as
        in :meth:`attribute`.

        Returns:
            One attribution (tensor or tuple, like ``inputs``) per ``K_L``, in the order given.
        """
        ks = [float(k) for k in K_L]
        if not ks:
            raise ValueError("K_L must hold at least one value")
        _check_levels(ks, None, solver)
        return self._run(
            inputs,
            target,
            additional_forward_args,
            n_samples,
            sigma,
            grid,
            covariance,
            boundary,
            ks,
            None,
            solver,
            shared_L,
            perturbations_per_eval,
            antithetic,
            generator,
            show_progress,
        )

    def _run(
        self,
        inputs: TensorOrTupleOfTensors,
        target: TargetType,
        additional_forward_args: Any,
        n_samples: int,
        sigma: float,
        grid: GridArg,
        covariance: str,
        boundary: str,
        ks: list[float],
        L: float | str | None,
        solver: str,
        shared_L: bool,
        perturbations_per_eval: int,
        antithetic: bool,
        generator: torch.Generator | None,
        show_progress: bool,
    ) -> list[TensorOrTupleOfTensors]:
        is_tuple = _is_tuple(inputs)
        inputs = _format_tensor_into_tuples(inputs)
        grids = self._check_common(
            inputs, n_samples, sigma, grid, covariance, boundary, perturbations_per_eval, antithetic
        )
        ybars = self._statistics(
            inputs,
            target,
            additional_forward_args,
            n_samples,
            sigma,
            grids,
            covariance,
            boundary,
            perturbations_per_eval,
            antithetic,
            generator,
            show_progress,
        )
        per_level: list[list[Tensor]] = [[] for _ in ks]
        for ybar, g in zip(ybars, grids):
            maps = torch.zeros(len(ks), *ybar.shape, dtype=torch.float64)
            y_np = ybar.cpu().numpy()
            for n in range(y_np.shape[0]):
                problems = [
                    LegTVProblem(
                        y_np[n, c], sigma, covariance=covariance, boundary=boundary, solver=solver
                    )
                    for c in range(y_np.shape[1])
                ]
                top = max(pr.L_max for pr in problems)
                for c, pr in enumerate(problems):
                    if L == "theory":
                        levels = [theoretical_L(g, n_samples, boundary)]
                    elif L is not None:
                        levels = [float(L)]
                    else:
                        levels = [k * (top if shared_L else pr.L_max) for k in ks]
                    for j, res in enumerate(pr.path(levels)):
                        maps[j, n, c] = torch.from_numpy(res.g)
            for j in range(len(ks)):
                per_level[j].append(maps[j].to(ybar.device))
        return [_format_output(is_tuple, self._to_output(m, inputs, grids)) for m in per_level]


def _check_levels(ks: list[float], L: float | str | None, solver: str) -> None:
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
