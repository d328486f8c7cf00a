"""Sampling, batched model evaluation and output assembly shared by LEG and LEG-TV.

Private: :mod:`captum_ext.attr._core.leg` holds the public classes.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any, Callable, Union

import numpy as np
import torch
from captum._utils.typing import TargetType
from captum.attr import PerturbationAttribution
from torch import Tensor

from captum_ext._compat import (
    NullProgress,
    _expand_additional_forward_args,
    _expand_target,
    _format_additional_forward_args,
    _run_forward,
    progress,
)
from captum_ext.attr._utils.contract import NoAttributeFuture
from captum_ext.attr._utils.grid import cell_sizes, sample_tv_perturbations, upsample_nearest

TensorOrTupleOfTensors = Union[Tensor, tuple[Tensor, ...]]
GridArg = Union[None, tuple[int, int], Sequence[tuple[int, int]]]

_DEFAULT_GRID = (28, 28)


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

    # ------------------------------------------------------------------ validation
    @staticmethod
    def _check_common(
        inputs: tuple[Tensor, ...],
        n_samples: int,
        sigma: float,
        grid: GridArg,
        covariance: str,
        boundary: str,
        perturbations_per_eval: int,
        antithetic: bool,
    ) -> list[tuple[int, int]]:
        for i, x in enumerate(inputs):
            if not isinstance(x, Tensor):
                raise TypeError(f"inputs[{i}] must be a Tensor, got {type(x).__name__}")
            if x.dim() < 4:
                raise ValueError(
                    f"inputs must be at least 3-D per example (N, C, H, W), got inputs[{i}] "
                    f"of shape {tuple(x.shape)}"
                )
            if not x.is_floating_point():
                raise TypeError(f"inputs[{i}] must be floating point, got {x.dtype}")
            if x.shape[0] != inputs[0].shape[0]:
                raise ValueError(
                    f"all inputs must have the same batch size, got {[t.shape[0] for t in inputs]}"
                )
            if not torch.isfinite(x).all():
                raise ValueError(f"inputs[{i}] contains non-finite values")
        if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 2:
            raise ValueError(f"n_samples must be an int >= 2, got {n_samples!r}")
        if antithetic and n_samples % 2:
            raise ValueError(f"antithetic=True needs an even n_samples, got {n_samples}")
        if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
            raise ValueError(f"sigma must be a finite number > 0, got {sigma!r}")
        if covariance not in ("tv", "isotropic"):
            raise ValueError(f"covariance must be 'tv' or 'isotropic', got {covariance!r}")
        if boundary not in ("padded", "none"):
            raise ValueError(f"boundary must be 'padded' or 'none', got {boundary!r}")
        ppe = perturbations_per_eval
        if isinstance(ppe, bool) or not isinstance(ppe, int) or ppe < 1:
            raise ValueError(f"perturbations_per_eval must be an int >= 1, got {ppe!r}")
        return _resolve_grids(grid, inputs)

    # ------------------------------------------------------------------ sampling
    def _statistics(
        self,
        inputs: tuple[Tensor, ...],
        target: TargetType,
        additional_forward_args: Any,
        n_samples: int,
        sigma: float,
        grids: list[tuple[int, int]],
        covariance: str,
        boundary: str,
        perturbations_per_eval: int,
        antithetic: bool,
        generator: torch.Generator | None,
        show_progress: bool,
    ) -> list[Tensor]:
        """``ybar`` per input tensor, shape ``(N, C', p1, p2)`` float64 (``C'`` = channels)."""
        args = _format_additional_forward_args(additional_forward_args)
        n_ex = inputs[0].shape[0]
        _warn_scale(inputs, sigma, covariance, grids)
        if generator is None:
            generator = torch.Generator().manual_seed(torch.initial_seed())
        gdev = generator.device
        # one seed per independent draw, so results do not depend on perturbations_per_eval
        n_draws = n_samples // 2 if antithetic else n_samples
        seeds = torch.randint(0, 2**62, (n_draws,), generator=generator, device=gdev).tolist()
        n_chunks = math.ceil(n_samples / perturbations_per_eval)
        bar = (
            progress(desc=f"{self.get_name()} attribution", total=n_chunks + 1)
            if show_progress
            else NullProgress()
        )
        with bar:
            f0 = self._scalar_output(inputs, target, args, n_ex, "f(x0)")
            bar.update()
            acc = [
                torch.zeros(n_ex, *_channels(x), *g, dtype=torch.float64, device=x.device).flatten(
                    1, -3
                )
                for x, g in zip(inputs, grids)
            ]
            for start in range(0, n_samples, perturbations_per_eval):
                k = min(perturbations_per_eval, n_samples - start)
                zs = self._draws(
                    range(start, start + k),
                    seeds,
                    antithetic,
                    inputs,
                    grids,
                    sigma,
                    covariance,
                    boundary,
                    gdev,
                )
                perturbed = tuple(
                    (x.unsqueeze(0) + _to_input(z, x)).flatten(0, 1) for x, z in zip(inputs, zs)
                )
                y = self._scalar_output(
                    perturbed,
                    _expand_target(target, k),
                    _expand_additional_forward_args(args, k),
                    k * n_ex,
                    "f(x0 + z)",
                ).reshape(k, n_ex)
                ytilde = (y - f0.unsqueeze(0)).double()
                for a, z in zip(acc, zs):
                    a += torch.einsum("kn,kcpq->ncpq", ytilde, z.to(a.device))
                bar.update()
        return [a / n_samples for a in acc]

    @staticmethod
    def _draws(
        indices: range,
        seeds: list[int],
        antithetic: bool,
        inputs: tuple[Tensor, ...],
        grids: list[tuple[int, int]],
        sigma: float,
        covariance: str,
        boundary: str,
        gdev: torch.device,
    ) -> list[Tensor]:
        """Draws ``indices``: per input tensor, ``(k, C', p1, p2)`` float64 on its device.

        Draw ``i`` comes from its own generator (seeded by ``seeds[i]``), which feeds all
        tensors in turn, so tensors and channels get independent draws and the result does not
        depend on how draws are chunked. Every example of the batch gets the same draws
        (common random numbers), so an example's attribution does not depend on the rest of
        the batch.
        """
        out: list[list[Tensor]] = [[] for _ in inputs]
        for i in indices:
            gen = torch.Generator(device=gdev).manual_seed(seeds[i // 2 if antithetic else i])
            for t, (x, grid) in enumerate(zip(inputs, grids)):
                rows = int(np.prod(_channels(x)))
                if covariance == "tv":
                    z = sample_tv_perturbations(
                        rows, grid, sigma, boundary=boundary, generator=gen, dtype=torch.float64
                    )
                else:
                    z = sigma * torch.randn(
                        rows, *grid, generator=gen, device=gdev, dtype=torch.float64
                    )
                out[t].append(-z if antithetic and i % 2 else z)
        return [torch.stack(zs).to(x.device) for zs, x in zip(out, inputs)]

    def _scalar_output(
        self, inputs: tuple[Tensor, ...], target: TargetType, args: Any, n: int, what: str
    ) -> Tensor:
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
        """Grid estimates ``(N, C', p1, p2)`` -> per-pixel values shaped like each input."""
        out = []
        for m, x, g in zip(maps, inputs, grids):
            size = tuple(x.shape[-2:])
            per_pixel = m / cell_sizes(size, g).to(device=m.device, dtype=m.dtype)
            up = upsample_nearest(per_pixel, size).reshape(x.shape)
            out.append(up.to(device=x.device, dtype=x.dtype))
        return tuple(out)


def _channels(x: Tensor) -> tuple[int, ...]:
    return tuple(x.shape[1:-2])


def _to_input(z: Tensor, x: Tensor) -> Tensor:
    """Grid draws ``(k, C', p1, p2)`` upsampled to ``(k, 1, *x.shape[1:])`` in x's dtype."""
    k = z.shape[0]
    return upsample_nearest(z.to(x.dtype), tuple(x.shape[-2:])).reshape(k, 1, *x.shape[1:])


def _resolve_grids(grid: GridArg, inputs: tuple[Tensor, ...]) -> list[tuple[int, int]]:
    if grid is None:
        return [
            (min(_DEFAULT_GRID[0], x.shape[-2]), min(_DEFAULT_GRID[1], x.shape[-1])) for x in inputs
        ]
    if isinstance(grid, Sequence) and len(grid) > 0 and isinstance(grid[0], Sequence):
        grids = [tuple(g) for g in grid]
        if len(grids) != len(inputs):
            raise ValueError(f"grid gives {len(grids)} grids for {len(inputs)} input tensors")
    else:
        grids = [tuple(grid)] * len(inputs)
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


def _warn_scale(
    inputs: tuple[Tensor, ...], sigma: float, covariance: str, grids: list[tuple[int, int]]
) -> None:
    for i, (x, g) in enumerate(zip(inputs, grids)):
        std = sigma * math.sqrt(4 + 1 / (g[0] * g[1])) if covariance == "tv" else sigma
        span = (x.flatten(1).amax(1) - x.flatten(1).amin(1)).min().item()
        if span > 0 and std > 0.25 * span:
            warnings.warn(
                f"sigma={sigma} gives a per-pixel perturbation std of about {std:.3g}, more than "
                f"a quarter of the value range {span:.3g} of inputs[{i}]; the default 0.02 suits "
                f"[0, 1] images (about 0.09 for ImageNet-normalised inputs)",
                stacklevel=4,
            )
            return
