"""Sampling, batched model evaluation and output assembly shared by LEG and LEG-TV.

Private: :mod:`captum_ext.attr._core.leg` holds the public classes.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Callable, Literal, Union

import numpy as np
import torch
from captum._utils.typing import TargetType
from captum.attr import PerturbationAttribution
from torch import Tensor
from torch.quasirandom import SobolEngine

from captum_ext._compat import (
    NullProgress,
    _expand_additional_forward_args,
    _expand_target,
    _format_additional_forward_args,
    _is_tuple,
    _run_forward,
    _select_targets,
    progress,
)
from captum_ext._model_state import eval_mode
from captum_ext._targets import check_output_target
from captum_ext.attr._utils.contract import (
    NoAttributeFuture,
    check_inputs,
    chunks,
    format_inputs,
    is_batched,
)
from captum_ext.attr._utils.grid import (
    Boundary,
    apply_D,
    apply_Dt,
    cell_sizes,
    sample_tv_perturbations,
    tv_covariance_inverse_apply,
    upsample_nearest,
)
from captum_ext.attr._utils.map_checks import DegenerateAttributionWarning
from captum_ext.attr._utils.tv_lp import Covariance

TensorOrTupleOfTensors = Union[Tensor, tuple[Tensor, ...]]
GridArg = Union[None, tuple[int, int], Sequence[tuple[int, int]]]

_MAX_DEFAULT_SIDE = 28
#: Default grids keep at least this many model evaluations per estimated coefficient.
_DRAWS_PER_COEFFICIENT = 4
Estimator = Literal["ols", "moment", "stein"]
ESTIMATORS: tuple[Estimator, ...] = ("ols", "moment", "stein")
Channels = Literal["shared", "independent"]
CHANNELS: tuple[Channels, ...] = ("shared", "independent")
Sampler = Literal["random", "sobol"]
SAMPLERS: tuple[Sampler, ...] = ("random", "sobol")
#: ``estimator="stein"`` takes the default grid of this many least-squares draws (16 x 16
#: for shared channels), so switching estimators keeps the estimand.
STEIN_GRID_SAMPLES = 2000
#: Below this R^2 the linear fit explains almost none of the output's change (warning).
_LOW_R2 = 0.05


@dataclass(frozen=True)
class LEGSettings:
    """The sampling knobs of one LEG / LEG-TV call (the ``attribute`` arguments of that name).

    Built by the public methods through :meth:`from_arguments` and passed down whole, so
    neither they nor the private steps repeat the list; :meth:`_LEGBase._check_common`
    validates it.
    """

    n_samples: int
    sigma: float
    grid: GridArg
    covariance: Covariance
    boundary: Boundary
    perturbations_per_eval: int
    antithetic: bool
    generator: torch.Generator | None
    show_progress: bool
    estimator: Estimator
    channels: Channels = "shared"
    sampler: Sampler = "random"

    @classmethod
    def from_arguments(cls, arguments: Mapping[str, Any], **overrides: Any) -> LEGSettings:
        """The settings from a public method's ``locals()``, one field per keyword knob.

        The public methods take one keyword per knob (Captum's style), named like these fields;
        passing their ``locals()`` here keeps the list of knobs in one place. ``overrides``
        replaces the fields a method resolves first (LEG-TV's ``boundary=None``).
        """
        values = {f.name: arguments[f.name] for f in fields(cls)}
        values.update(overrides)
        return cls(**values)


@dataclass
class LEGStatistics:
    """The regression statistics of one LEG call, per input tensor.

    Attributes:
        ybar: ``(1/n) sum_i ytilde_i z_i`` in input units (``(N, C', p1, p2)`` float64), or,
            for ``estimator="ols"``, ``Sigma gamma_ols`` (the moment vector the least-squares
            fit implies), so LEG-TV's constraint is centred on the least-squares estimate.
        gamma: The LEG estimate on the grid, same shape (Eq. 3 or least squares).
        scale: The perturbation scale used per example, ``(N,)`` float64 (``sigma`` times
            the example's value range).
        r2: ``(N,)`` share of the output's variance over the draws explained by the linear
            fit (NaN for ``estimator="moment"`` and ``"stein"``, and where the output does
            not vary).
    """

    ybar: list[Tensor]
    gamma: list[Tensor]
    scale: list[Tensor]
    r2: Tensor


class _LEGBase(NoAttributeFuture, PerturbationAttribution):
    """Sampling, batched model evaluation and output assembly shared by LEG and LEG-TV."""

    def __init__(self, forward_func: Callable[..., Tensor]) -> None:
        """Wrap ``forward_func``.

        Args:
            forward_func: The model or any function returning one scalar per example after
                Captum's ``target`` selection (the paper uses a class probability: wrap logits
                in a softmax to follow it).
        """
        PerturbationAttribution.__init__(self, forward_func)

    @property
    def multiplies_by_inputs(self) -> bool:
        """LEG estimates a (local-average) gradient; it is not multiplied by the inputs."""
        return False

    def _estimate(
        self,
        inputs: TensorOrTupleOfTensors,
        target: TargetType,
        additional_forward_args: Any,
        cfg: LEGSettings,
    ) -> tuple[bool, tuple[Tensor, ...], list[tuple[int, int]], LEGStatistics]:
        """Validate, draw, evaluate and fit; sets ``last_info``.

        Returns:
            ``(is_tuple, inputs as a tuple, grids, statistics)``.
        """
        is_tuple = _is_tuple(inputs)
        tensors = format_inputs(inputs)
        grids = self._check_common(tensors, cfg)
        with eval_mode(self.forward_func):
            stats = self._statistics(tensors, target, additional_forward_args, cfg, grids)
        self.last_info = {"r2": stats.r2, "scale": stats.scale, "grid": grids}
        return is_tuple, tensors, grids, stats

    # ------------------------------------------------------------------ validation
    @staticmethod
    def _check_common(inputs: tuple[Tensor, ...], cfg: LEGSettings) -> list[tuple[int, int]]:
        """Validate the inputs and every knob (before any model pass); the grid per tensor."""
        _LEGBase._check_inputs(inputs)
        _LEGBase._check_knobs(cfg)
        # a perturbed gradient informs every cell, so the grid does not follow n_samples there
        budget = STEIN_GRID_SAMPLES if cfg.estimator == "stein" else cfg.n_samples
        grids = _resolve_grids(cfg.grid, inputs, budget, cfg.channels)
        k = _n_coefficients(inputs, grids, cfg.channels)
        if cfg.estimator == "ols":
            if cfg.n_samples < k + 2:
                raise ValueError(
                    f"estimator='ols' needs n_samples >= {k + 2} (one intercept and {k} "
                    f"coefficients: grid cells, times channels when channels='independent'), "
                    f"got n_samples={cfg.n_samples}; raise n_samples, pass a coarser grid, or "
                    f"use estimator='moment' (Eq. 3)"
                )
            if cfg.antithetic and cfg.n_samples < 2 * k:
                # a pair +z, -z spans one direction: n / 2 pairs cannot determine k slopes,
                # and the least-squares solve would return garbage instead of failing
                raise ValueError(
                    f"estimator='ols' with antithetic pairs needs n_samples >= {2 * k} (each "
                    f"pair +z, -z spans one direction, and there are {k} coefficients), got "
                    f"n_samples={cfg.n_samples}; raise n_samples, pass a coarser grid, or "
                    f"pass antithetic=False"
                )
        if cfg.sampler == "sobol" and k > SobolEngine.MAXDIM:
            raise ValueError(
                f"sampler='sobol' supports at most {SobolEngine.MAXDIM} coefficients, got {k}; "
                "pass a coarser grid or sampler='random'"
            )
        return grids

    @staticmethod
    def _check_inputs(inputs: tuple[Tensor, ...]) -> None:
        for i, x in enumerate(inputs):
            if not isinstance(x, Tensor):
                raise TypeError(f"inputs[{i}] must be a Tensor, got {type(x).__name__}")
            if x.dim() < 4:
                raise ValueError(
                    f"inputs must be at least 3-D per example (N, C, H, W), got inputs[{i}] "
                    f"of shape {tuple(x.shape)}"
                )
        check_inputs(inputs)

    @staticmethod
    def _check_knobs(cfg: LEGSettings) -> None:
        n_samples, sigma, estimator = cfg.n_samples, cfg.sigma, cfg.estimator
        covariance, boundary, antithetic = cfg.covariance, cfg.boundary, cfg.antithetic
        if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 2:
            raise ValueError(f"n_samples must be an int >= 2, got {n_samples!r}")
        if antithetic and n_samples % 2:
            raise ValueError(
                f"antithetic=True (the default) needs an even n_samples, got {n_samples}; "
                f"pass an even n_samples or antithetic=False"
            )
        if (
            isinstance(sigma, bool)
            or not isinstance(sigma, (int, float))
            or not (math.isfinite(sigma) and sigma > 0)
        ):
            raise ValueError(f"sigma must be a finite number > 0, got {sigma!r}")
        if covariance not in ("tv", "isotropic"):
            raise ValueError(f"covariance must be 'tv' or 'isotropic', got {covariance!r}")
        if boundary not in ("padded", "none"):
            raise ValueError(f"boundary must be 'padded' or 'none', got {boundary!r}")
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
        if cfg.channels not in CHANNELS:
            raise ValueError(f"channels must be one of {CHANNELS}, got {cfg.channels!r}")
        if cfg.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {cfg.sampler!r}")
        if cfg.sampler == "sobol" and covariance != "isotropic":
            raise ValueError(
                "sampler='sobol' needs covariance='isotropic' (the TV scheme's draws are not "
                f"an inverse-CDF transform of uniforms), got covariance={covariance!r}"
            )
        ppe = cfg.perturbations_per_eval
        if isinstance(ppe, bool) or not isinstance(ppe, int) or ppe < 1:
            raise ValueError(f"perturbations_per_eval must be an int >= 1, got {ppe!r}")
        generator = cfg.generator
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(
                f"generator must be None or a torch.Generator, got {type(generator).__name__}"
            )

    # ------------------------------------------------------------------ sampling
    def _statistics(
        self,
        inputs: tuple[Tensor, ...],
        target: TargetType,
        additional_forward_args: Any,
        cfg: LEGSettings,
        grids: list[tuple[int, int]],
    ) -> LEGStatistics:
        """Evaluate the model on the draws and fit the linear model per example.

        Draws are made at unit scale (``z ~ N(0, Sigma / sigma^2)``) and scaled per example by
        ``sigma`` times its value range, so one set of draws serves the whole batch (common
        random numbers: an example's result does not depend on the rest of the batch).
        """
        scales = [cfg.sigma * _value_range(x) for x in inputs]
        _warn_scale(cfg.sigma, cfg.covariance, grids)
        ytilde, draws, f0, slopes = self._evaluate(
            inputs, target, _format_additional_forward_args(additional_forward_args), cfg, grids,
            scales,
        )  # fmt: skip
        _warn_no_signal(ytilde, f0, self.get_name())
        return _fit(inputs, ytilde, draws if slopes is None else slopes, cfg, grids, scales)

    def _evaluate(
        self,
        inputs: tuple[Tensor, ...],
        target: TargetType,
        args: Any,
        cfg: LEGSettings,
        grids: list[tuple[int, int]],
        scales: list[Tensor],
    ) -> tuple[Tensor, list[Tensor], Tensor, list[Tensor] | None]:
        """Evaluate the model on the draws, ``perturbations_per_eval`` draws per pass.

        Returns ``f(x0 + z) - f(x0)`` ``(n, N)``, the unit draws per tensor ``(n, C' p1 p2)``,
        ``f(x0)`` and, for ``estimator="stein"``, the mean over the draws of the gradient of
        ``f(x0 + scale z)`` with respect to each example's unit draw ``z`` (per tensor,
        ``(N, C' p1 p2)`` float64; None otherwise).
        """
        n_ex = inputs[0].shape[0]
        seeds, gdev = _draw_seeds(cfg)
        runs = _Evaluations(inputs, grids, cfg.channels)
        with self._progress_bar(cfg) as bar:
            f0 = self._scalar_output(inputs, target, args, n_ex, "f(x0)", check=True)
            bar.update()
            for start, stop in chunks(cfg.n_samples, cfg.perturbations_per_eval):
                zs = self._draws(range(start, stop), seeds, inputs, grids, gdev, cfg)
                y, grads = self._perturbed_outputs(inputs, zs, scales, target, args, cfg)
                runs.add(y.reshape(stop - start, n_ex) - f0.unsqueeze(0), zs, grads)
                bar.update()
        return runs.result(f0, cfg.n_samples, stein=cfg.estimator == "stein")

    def _progress_bar(self, cfg: LEGSettings) -> Any:
        """One tick for ``f(x0)`` and one per forward pass over the draws."""
        if not cfg.show_progress:
            return NullProgress()
        passes = math.ceil(cfg.n_samples / cfg.perturbations_per_eval)
        return progress(desc=f"{self.get_name()} attribution", total=passes + 1)

    def _perturbed_outputs(
        self,
        inputs: tuple[Tensor, ...],
        zs: list[Tensor],
        scales: list[Tensor],
        target: TargetType,
        args: Any,
        cfg: LEGSettings,
    ) -> tuple[Tensor, list[Tensor] | None]:
        """``f(x0 + scale z)`` ``(k N,)`` over a chunk of ``k`` unit draws ``zs`` (per tensor).

        With ``estimator="stein"`` also the gradients of :meth:`_stein_pass`, else None.
        """
        k, n_ex = zs[0].shape[0], inputs[0].shape[0]
        call = (_expand_target(target, k), _expand_additional_forward_args(args, k))
        if cfg.estimator == "stein":
            return self._stein_pass(inputs, zs, scales, call, cfg.channels)
        perturbed = tuple(
            (x.unsqueeze(0) + _to_input(z, x, s, cfg.channels)).flatten(0, 1)
            for x, z, s in zip(inputs, zs, scales)
        )
        return self._scalar_output(perturbed, *call, k * n_ex, "f(x0 + z)"), None

    def _stein_pass(
        self,
        inputs: tuple[Tensor, ...],
        zs: list[Tensor],
        scales: list[Tensor],
        call: tuple[Any, Any],
        channels: Channels,
    ) -> tuple[Tensor, list[Tensor]]:
        """One forward and one backward pass over a chunk of ``k`` draws.

        Returns ``f(x0 + scale z)`` ``(k N,)`` and its gradient with respect to each example's
        unit draw, ``(k, N, C' p1 p2)`` float64 per tensor. The draws are repeated per example
        as leaves of the graph, so the backward pass of the upsampling sums each example's
        input gradient over the pixels (and, for shared draws, the channels) of each cell: the
        exact adjoint of how the draw entered the input.
        """
        k, n_ex = zs[0].shape[0], inputs[0].shape[0]
        with torch.enable_grad():
            leaves = [
                z.to(x.dtype).unsqueeze(1).expand(k, n_ex, *z.shape[1:]).clone().requires_grad_()
                for z, x in zip(zs, inputs)
            ]
            perturbed = tuple(
                (x.unsqueeze(0) + _to_input_per_example(z, x, s, channels)).flatten(0, 1)
                for x, z, s in zip(inputs, leaves, scales)
            )
            y = self._scalar_output(perturbed, *call, k * n_ex, "f(x0 + z)")
            try:
                grads = torch.autograd.grad(y.sum(), leaves, allow_unused=True)
            except RuntimeError as err:
                raise ValueError(
                    "estimator='stein' needs a forward_func that autograd can differentiate "
                    f"with respect to its inputs ({err}); use estimator='ols' for a black box"
                ) from None
        out = [
            (torch.zeros_like(z) if g is None else g).flatten(2).double()
            for g, z in zip(grads, leaves)
        ]
        return y.detach(), out

    @staticmethod
    def _draws(
        indices: range,
        seeds: list[int],
        inputs: tuple[Tensor, ...],
        grids: list[tuple[int, int]],
        gdev: torch.device,
        cfg: LEGSettings,
    ) -> list[Tensor]:
        """Unit-scale draws ``indices``: per input tensor, ``(k, C', p1, p2)`` float64.

        Draw ``i`` comes from its own generator (seeded by ``seeds[i]``), which feeds all
        tensors in turn, so tensors and channels get independent draws and the result does not
        depend on how draws are chunked. Every example of the batch gets the same draws
        (common random numbers), so an example's attribution does not depend on the rest of
        the batch.
        """
        antithetic, covariance, boundary = cfg.antithetic, cfg.covariance, cfg.boundary
        if cfg.sampler == "sobol":
            return _sobol_draws(indices, seeds[0], inputs, grids, cfg)
        out: list[list[Tensor]] = [[] for _ in inputs]
        for i in indices:
            gen = torch.Generator(device=gdev).manual_seed(seeds[i // 2 if antithetic else i])
            for t, (x, grid) in enumerate(zip(inputs, grids)):
                rows = _coefficient_rows(x, cfg.channels)
                if covariance == "tv":
                    z = sample_tv_perturbations(
                        rows, grid, 1.0, boundary=boundary, generator=gen, dtype=torch.float64
                    )
                else:
                    z = torch.randn(rows, *grid, generator=gen, device=gdev, dtype=torch.float64)
                out[t].append(-z if antithetic and i % 2 else z)
        return [torch.stack(zs).to(x.device) for zs, x in zip(out, inputs)]

    def _scalar_output(
        self,
        inputs: tuple[Tensor, ...],
        target: TargetType,
        args: Any,
        n: int,
        what: str,
        check: bool = False,
    ) -> Tensor:
        if check:  # validate target against the raw output once, before the draws
            raw = _run_forward(self.forward_func, inputs, None, args)
            if is_batched(raw, n):
                check_output_target(target, tuple(raw.shape), n)
            out = (
                raw
                if target is None or not isinstance(raw, Tensor)
                else _select_targets(raw, target)
            )
        else:
            out = _run_forward(self.forward_func, inputs, target, args)
        if not isinstance(out, Tensor) or out.numel() != n:
            shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(
                f"forward_func must give one scalar per example after target selection "
                f"({n} values for {what}), got output of shape {shape}; pass target= for "
                f"multi-output models"
            )
        out = out.reshape(n)
        if not torch.isfinite(out).all():
            raise ValueError(f"forward_func returned non-finite values for {what}")
        return out

    # ------------------------------------------------------------------ output
    @staticmethod
    def _to_output(
        maps: list[Tensor], inputs: tuple[Tensor, ...], grids: list[tuple[int, int]]
    ) -> tuple[Tensor, ...]:
        """Grid estimates ``(N, C', p1, p2)`` -> per-pixel values shaped like each input.

        A shared estimate (``C'`` all ones) is spread evenly over the channels, so the
        channel sum of a cell's pixels is the cell's estimate.
        """
        out = []
        for m, x, g in zip(maps, inputs, grids):
            size = (x.shape[-2], x.shape[-1])
            per_pixel = m / cell_sizes(size, g).to(device=m.device, dtype=m.dtype)
            spread = int(np.prod(_channels(x))) // int(np.prod(m.shape[1:-2]))
            up = upsample_nearest(per_pixel, size).reshape(x.shape[0], *m.shape[1:-2], *size)
            up = (up / spread).expand(x.shape)
            out.append(up.to(device=x.device, dtype=x.dtype).contiguous())
        return tuple(out)


def _draw_seeds(cfg: LEGSettings) -> tuple[list[int], torch.device]:
    """One seed per independent draw, and the device the draws are made on.

    A seed per draw keeps the draws independent of ``perturbations_per_eval``. Without
    ``cfg.generator`` a fresh, randomly seeded generator gives independent draws per call;
    the global RNG is not used.
    """
    generator = cfg.generator
    if generator is None:
        generator = torch.Generator()
        generator.seed()
    gdev = generator.device
    n_draws = cfg.n_samples // 2 if cfg.antithetic else cfg.n_samples
    seeds = torch.randint(0, 2**62, (n_draws,), generator=generator, device=gdev).tolist()
    return seeds, gdev


class _Evaluations:
    """What :meth:`_LEGBase._evaluate` collects, one chunk of draws at a time."""

    def __init__(
        self, inputs: tuple[Tensor, ...], grids: list[tuple[int, int]], channels: Channels
    ) -> None:
        n_ex = inputs[0].shape[0]
        self.outputs: list[Tensor] = []
        self.unit_draws: list[list[Tensor]] = [[] for _ in inputs]
        self.slope_sums = [
            torch.zeros(n_ex, _coefficient_rows(x, channels) * g[0] * g[1], dtype=torch.float64)
            for x, g in zip(inputs, grids)
        ]

    def add(self, ytilde: Tensor, zs: list[Tensor], grads: list[Tensor] | None) -> None:
        """One chunk: ``f(x0 + z) - f(x0)`` ``(k, N)``, its unit draws and Stein gradients."""
        if grads is not None:
            self.slope_sums = [a + g.sum(0).to(a.device) for a, g in zip(self.slope_sums, grads)]
        self.outputs.append(ytilde.double())
        for t, z in enumerate(zs):
            self.unit_draws[t].append(z.flatten(1))

    def result(
        self, f0: Tensor, n_samples: int, stein: bool
    ) -> tuple[Tensor, list[Tensor], Tensor, list[Tensor] | None]:
        """``(ytilde (n, N), draws per tensor (n, C' p1 p2), f0, mean slopes or None)``."""
        ytilde = torch.cat(self.outputs)
        draws = [torch.cat(d).to(ytilde.device) for d in self.unit_draws]
        slopes = [a.to(ytilde.device) / n_samples for a in self.slope_sums] if stein else None
        return ytilde, draws, f0, slopes


def _channels(x: Tensor) -> tuple[int, ...]:
    return tuple(x.shape[1:-2])


def _coefficient_channels(x: Tensor, channels: Channels) -> tuple[int, ...]:
    """The channel shape of one tensor's coefficients: all ones when draws are shared."""
    return _channels(x) if channels == "independent" else (1,) * len(_channels(x))


def _coefficient_rows(x: Tensor, channels: Channels) -> int:
    return int(np.prod(_coefficient_channels(x, channels)))


def _n_coefficients(
    inputs: tuple[Tensor, ...], grids: list[tuple[int, int]], channels: Channels = "shared"
) -> int:
    return sum(_coefficient_rows(x, channels) * g[0] * g[1] for x, g in zip(inputs, grids))


def _value_range(x: Tensor) -> Tensor:
    """Per-example ``max - min`` over all entries (1 for a constant example), float64 (N,)."""
    flat = x.detach().flatten(1).double()
    span = flat.amax(1) - flat.amin(1)
    return torch.where(span > 0, span, torch.ones_like(span))


def _to_input(z: Tensor, x: Tensor, scale: Tensor, channels: Channels = "shared") -> Tensor:
    """Unit grid draws ``(k, C', p1, p2)`` -> ``(k, N, *x.shape[1:])`` perturbations.

    With shared draws ``C'`` is 1 and the perturbation broadcasts over the channels.
    """
    k, n = z.shape[0], x.shape[0]
    up = upsample_nearest(z.to(x.dtype), (x.shape[-2], x.shape[-1])).reshape(
        k, 1, *_coefficient_channels(x, channels), *x.shape[-2:]
    )
    return up * scale.to(device=x.device, dtype=x.dtype).reshape(1, n, *([1] * (x.dim() - 1)))


def _to_input_per_example(
    z: Tensor, x: Tensor, scale: Tensor, channels: Channels = "shared"
) -> Tensor:
    """Unit grid draws given per example, ``(k, N, C', p1, p2)`` -> ``(k, N, *x.shape[1:])``."""
    k, n = z.shape[:2]
    up = upsample_nearest(z.flatten(0, 1), (x.shape[-2], x.shape[-1])).reshape(
        k, n, *_coefficient_channels(x, channels), *x.shape[-2:]
    )
    return up * scale.to(device=x.device, dtype=x.dtype).reshape(1, n, *([1] * (x.dim() - 1)))


def _fit(
    inputs: tuple[Tensor, ...],
    ytilde: Tensor,
    draws: list[Tensor],
    cfg: LEGSettings,
    grids: list[tuple[int, int]],
    scales: list[Tensor],
) -> LEGStatistics:
    """Fit ``cfg.estimator`` to the evaluations.

    Unit-scale slopes per tensor, rescaled to ``gamma`` (divided by each example's scale) and
    ``Y bar`` (the unit covariance applied, times the scale). For ``estimator="stein"``,
    ``draws`` holds the mean perturbed gradients (the unit-scale slopes themselves).
    """
    n_ex = inputs[0].shape[0]
    covariance, boundary = cfg.covariance, cfg.boundary
    shapes = [(*_coefficient_channels(x, cfg.channels), *g) for x, g in zip(inputs, grids)]
    if cfg.estimator == "ols":
        units, r2 = _least_squares(draws, ytilde)
    elif cfg.estimator == "stein":
        units = draws
        r2 = torch.full((n_ex,), float("nan"), dtype=torch.float64)
    else:
        units = [
            _inverse_unit_covariance(
                (ytilde.T @ z / cfg.n_samples).reshape(n_ex, *shape), covariance, boundary
            ).flatten(1)
            for z, shape in zip(draws, shapes)
        ]
        r2 = torch.full((n_ex,), float("nan"), dtype=torch.float64)
    gammas, ybars = [], []
    for u, shape, s in zip(units, shapes, scales):
        unit = u.reshape(n_ex, *shape)
        view = s.to(unit.device).reshape(n_ex, *([1] * len(shape)))
        gammas.append(unit / view)
        ybars.append(_unit_covariance_apply(unit, covariance, boundary) * view)
    return LEGStatistics(ybars, gammas, [s.double() for s in scales], r2)


def _least_squares(draws: list[Tensor], ytilde: Tensor) -> tuple[list[Tensor], Tensor]:
    """Ordinary least squares of ``ytilde`` on ``[1, z]``, all examples at once.

    Returns the slope per tensor at unit scale (``(N, K_t)``) and the fit's ``R^2`` (``(N,)``).
    Least squares estimates the same ``gamma`` as Eq. 3 (Lemma 1 defines it as the population
    least-squares slope) but does not carry Eq. 3's error ``Sigma^-1 (Z^T Z / n - Sigma) gamma``
    from the sample covariance, which dominates on real models (see the class docstring).
    """
    z = torch.cat(draws, dim=1)
    design = torch.cat([torch.ones(z.shape[0], 1, dtype=z.dtype, device=z.device), z], dim=1)
    # QR is well conditioned here: the design's columns are independent Gaussian draws
    q, r = torch.linalg.qr(design)
    coef = torch.linalg.solve_triangular(r, q.T @ ytilde, upper=True)  # (1 + K, N)
    resid = ytilde - design @ coef
    centred = ytilde - ytilde.mean(0, keepdim=True)
    total = centred.pow(2).sum(0)
    # undefined (NaN) where the output does not vary at all: _warn_no_signal reports that case
    r2 = torch.where(
        total > 0, 1 - resid.pow(2).sum(0) / torch.where(total > 0, total, 1.0), float("nan")
    )
    slopes = coef[1:].T  # (N, K)
    sizes = [d.shape[1] for d in draws]
    return list(slopes.split(sizes, dim=1)), r2


def _unit_covariance_apply(g: Tensor, covariance: Covariance, boundary: Boundary) -> Tensor:
    """``Sigma g / sigma^2`` on grids ``(..., p1, p2)``."""
    if covariance == "isotropic":
        return g
    p = g.shape[-1] * g.shape[-2]
    lap = apply_Dt(apply_D(g, boundary), (g.shape[-2], g.shape[-1]), boundary)
    return lap + g.sum(dim=(-2, -1), keepdim=True) / p


def _inverse_unit_covariance(y: Tensor, covariance: Covariance, boundary: Boundary) -> Tensor:
    """``sigma^2 Sigma^-1 y`` on grids ``(..., p1, p2)``."""
    if covariance == "isotropic":
        return y
    g = tv_covariance_inverse_apply(y.cpu().numpy(), 1.0, boundary)
    return torch.from_numpy(g).to(y.device)


def _default_side(size: int, most: int) -> int:
    """The largest divisor of ``size`` in ``[most / 2, most]`` (equal cells), else ``most``."""
    for d in range(most, 0, -1):
        if size % d == 0:
            return d if 2 * d >= most else most
    return most


def _resolve_grids(
    grid: object,
    inputs: tuple[Tensor, ...],
    n_samples: int = 1000,
    channels: Channels = "shared",
) -> list[tuple[int, int]]:
    # ``grid`` is the user's :data:`GridArg`, typed ``object`` here because this is where any
    # value is validated (the checks below raise for everything but a GridArg).
    if grid is None:
        # about _DRAWS_PER_COEFFICIENT evaluations per coefficient (cells, times channels
        # when each channel has its own draws): 16 x 16 at 1,000 shared draws
        rows = sum(_coefficient_rows(x, channels) for x in inputs)
        side = max(1, round(math.sqrt(n_samples / (_DRAWS_PER_COEFFICIENT * rows))))
        side = min(side, _MAX_DEFAULT_SIDE)
        return [
            (
                _default_side(x.shape[-2], min(side, x.shape[-2])),
                _default_side(x.shape[-1], min(side, x.shape[-1])),
            )
            for x in inputs
        ]
    if isinstance(grid, Sequence) and len(grid) > 0 and isinstance(grid[0], Sequence):
        grids = [tuple(g) for g in grid]
        if len(grids) != len(inputs):
            raise ValueError(f"grid gives {len(grids)} grids for {len(inputs)} input tensors")
    elif isinstance(grid, Sequence) and not isinstance(grid, str):
        grids = [tuple(grid)] * len(inputs)
    else:
        raise TypeError(
            f"grid must be None, a pair of positive ints (p1, p2) or one pair per input tensor, "
            f"got {grid!r}"
        )
    for g, x in zip(grids, inputs):
        if len(g) != 2 or not all(
            isinstance(p, int) and not isinstance(p, bool) and p >= 1 for p in g
        ):
            raise ValueError(f"grid must be a pair of positive ints (p1, p2), got {grid!r}")
        if g[0] > x.shape[-2] or g[1] > x.shape[-1]:
            raise ValueError(
                f"grid {g} is larger than the input's spatial size {tuple(x.shape[-2:])}"
            )
    return grids


def _warn_scale(sigma: float, covariance: Covariance, grids: list[tuple[int, int]]) -> None:
    for i, g in enumerate(grids):
        std = sigma * math.sqrt(4 + 1 / (g[0] * g[1])) if covariance == "tv" else sigma
        if std > 0.25:
            warnings.warn(
                f"sigma={sigma} gives a per-pixel perturbation std of about {std:.3g} times the "
                f"value range of inputs[{i}] (more than a quarter of it): the model's response "
                f"is then far from linear and the estimate mostly noise; lower sigma",
                stacklevel=4,
            )
            return


def _warn_no_signal(ytilde: Tensor, f0: Tensor, name: str) -> None:
    """Warn when the output does not move above float resolution under the perturbations."""
    spread = ytilde.std(0) if ytilde.shape[0] > 1 else ytilde.abs()[0]
    floor = 64 * torch.finfo(f0.dtype).eps * f0.detach().abs().double().clamp(min=1e-30)
    flat = spread <= floor.to(spread.device)
    if bool(flat.any()):
        idx = flat.nonzero().flatten().tolist()
        warnings.warn(
            f"{name}: the model's output barely changes under the perturbations for example(s) "
            f"{idx[:8]} (below float resolution): the estimate is noise or zero. Explain logits "
            f"or log-probabilities rather than a saturated softmax, or raise sigma",
            DegenerateAttributionWarning,
            stacklevel=4,
        )


def _sobol_draws(
    indices: range,
    seed: int,
    inputs: tuple[Tensor, ...],
    grids: list[tuple[int, int]],
    cfg: LEGSettings,
) -> list[Tensor]:
    """Draws ``indices`` from one scrambled Sobol sequence (``sampler="sobol"``).

    Point ``j`` of a scrambled Sobol sequence in ``D`` dimensions (every coefficient of every
    tensor) mapped through the standard-normal inverse CDF is draw ``j`` (with antithetic
    pairs, draws ``2j`` and ``2j + 1`` are ``+z_j`` and ``-z_j``). The sequence is seeded once
    per call (``seed``) and fast-forwarded to each chunk, so the draws do not depend on
    ``perturbations_per_eval``. Every point is marginally ``N(0, I)``; the sequence fills the
    space more evenly than independent draws, which lowers the variance of smooth averages.
    """
    rows = [_coefficient_rows(x, cfg.channels) * g[0] * g[1] for x, g in zip(inputs, grids)]
    dim = sum(rows)  # at most SobolEngine.MAXDIM (checked before any model pass)
    half = 2 if cfg.antithetic else 1
    first, last = indices.start // half, (indices.stop - 1) // half
    engine = SobolEngine(dim, scramble=True, seed=seed % (2**31))
    if first:
        engine.fast_forward(first)
    u = engine.draw(last - first + 1, dtype=torch.float64)
    # scrambled points lie in [0, 1); keep the inverse CDF finite
    z = torch.special.ndtri(u.clamp(2.0**-53, 1.0 - 2.0**-53))
    pick = torch.tensor([i // half - first for i in indices])
    sign = torch.tensor(
        [-1.0 if cfg.antithetic and i % 2 else 1.0 for i in indices], dtype=torch.float64
    )
    z = z[pick] * sign[:, None]
    out, offset = [], 0
    for x, g, r in zip(inputs, grids, rows):
        block = z[:, offset : offset + r].reshape(len(indices), r // (g[0] * g[1]), *g)
        out.append(block.to(x.device))
        offset += r
    return out
