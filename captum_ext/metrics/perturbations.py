"""Perturbation functions for ``captum.metrics.infidelity`` and ``captum.metrics.sensitivity_max``.

Each factory returns a function that satisfies one of Captum's two ``perturb_func`` contracts,
chosen by ``output``:

- ``output="infidelity"`` (default except for :func:`uniform_perturbation`): called as
  ``perturb_func(inputs)`` or ``perturb_func(inputs, baselines)``, it returns
  ``(perturbations I, perturbed_inputs)`` with ``perturbed_inputs = x - I``, as
  ``infidelity`` expects. With ``multiply_by_inputs=True/False`` it is instead wrapped in
  ``infidelity_perturb_func_decorator(multiply_by_inputs)`` and Captum derives ``I`` (pass the
  attribution method's ``multiplies_by_inputs``).
- ``output="sensitivity"``: called as ``perturb_func(inputs)`` (or
  ``perturb_func(inputs, perturb_radius)`` for :func:`uniform_perturbation` with
  ``radius=None``), it returns the perturbed inputs only, as ``sensitivity_max`` expects.

Inputs are a Tensor or a tuple of Tensors (Captum passes either), the structure is preserved and
every row is perturbed independently, so Captum's repeat-interleaved order is kept. Noise is drawn
from ``generator`` on its device and moved to the inputs' device; the default generator is seeded
from ``torch.initial_seed()`` when the factory is called, so the global RNG is never advanced.

References: Yeh, Hsieh, Suggala, Inouye, Ravikumar 2019, "On the (In)fidelity and Sensitivity of
Explanations" (Gaussian, noisy-baseline and square-removal perturbations, max-sensitivity);
Luo, Barut, Jin, "Statistically Consistent Saliency Estimation", Section 4.2 (TV-correlated
perturbation).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Literal, Sequence

import torch
from captum.metrics import infidelity_perturb_func_decorator
from torch import Tensor

from captum_ext.attr._utils.grid import sample_tv_perturbations, upsample_nearest

# draw(x, fill, radius) -> (I, x_perturbed) for one tensor
_Draw = Callable[[Tensor, Any, Any], "tuple[Tensor, Tensor]"]
_OUTPUTS = ("infidelity", "sensitivity")

#: Which of Captum's ``perturb_func`` contracts a factory's function satisfies.
PerturbOutput = Literal["infidelity", "sensitivity"]


def _generator(generator: torch.Generator | None) -> torch.Generator:
    if generator is None:
        return torch.Generator().manual_seed(torch.initial_seed())
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    return generator


def _positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return float(value)


def _map(inputs: Any, fn: Callable[[Tensor, Any], tuple[Tensor, Tensor]], baselines: Any) -> Any:
    """Apply ``fn(tensor, baseline)`` to a Tensor or each tensor of a tuple; keep the structure."""
    if isinstance(inputs, Tensor):
        if isinstance(baselines, tuple) and len(baselines) == 1:
            baselines = baselines[0]
        return fn(inputs, baselines), False
    if not isinstance(inputs, tuple) or not all(isinstance(t, Tensor) for t in inputs):
        raise TypeError(f"inputs must be a Tensor or a tuple of Tensors, got {type(inputs)}")
    if baselines is None or not isinstance(baselines, tuple):
        baselines = (baselines,) * len(inputs)
    return [fn(x, b) for x, b in zip(inputs, baselines)], True


def _build(
    draw: _Draw, output: PerturbOutput, multiply_by_inputs: bool | None, radius_arg: bool = False
) -> Callable[..., Any]:
    if output not in _OUTPUTS:
        raise ValueError(f"output must be one of {_OUTPUTS}, got {output!r}")

    def pairs(inputs: Any, baselines: Any = None, radius: Any = None) -> tuple[Any, Any]:
        res, is_tuple = _map(inputs, lambda x, b: draw(x, b, radius), baselines)
        if not is_tuple:
            return res
        return tuple(r[0] for r in res), tuple(r[1] for r in res)

    if output == "sensitivity":
        if radius_arg:

            def perturb_radius_func(inputs: Any, perturb_radius: float) -> Any:
                return pairs(inputs, None, perturb_radius)[1]

            return perturb_radius_func

        def perturb_func(inputs: Any) -> Any:
            return pairs(inputs)[1]

        return perturb_func

    if multiply_by_inputs is None:

        def infidelity_func(inputs: Any, baselines: Any = None) -> tuple[Any, Any]:
            return pairs(inputs, baselines)

        return infidelity_func

    @infidelity_perturb_func_decorator(bool(multiply_by_inputs))
    def decorated(inputs: Any, baselines: Any = None) -> Any:
        return pairs(inputs, baselines)[1]

    return decorated


def _noise(shape: torch.Size, x: Tensor, generator: torch.Generator, kind: str) -> Tensor:
    gen_dev = generator.device
    if kind == "normal":
        out = torch.randn(shape, generator=generator, device=gen_dev, dtype=x.dtype)
    else:
        out = torch.rand(shape, generator=generator, device=gen_dev, dtype=x.dtype)
    return out.to(x.device)


def gaussian_perturbation(
    std: float,
    *,
    noisy_baseline: bool = False,
    output: PerturbOutput = "infidelity",
    multiply_by_inputs: bool | None = None,
    generator: torch.Generator | None = None,
) -> Callable[..., Any]:
    """Gaussian perturbations ``I ~ N(0, std^2)`` (Yeh et al. 2019, local setting).

    Args:
        std: Standard deviation (> 0), in input units. Captum's documentation uses 0.003.
        noisy_baseline: Yeh et al.'s MNIST "noisy baseline": ``x - I = clip(x + N(0, std^2),
            x - 1, x)``, so that ``I`` lies in [0, 1] (they used ``std=0.2``).
        output: ``"infidelity"`` (returns ``(I, x - I)``) or ``"sensitivity"`` (returns
            ``x - I``).
        multiply_by_inputs: None, or the attribution's ``multiplies_by_inputs`` to let Captum's
            ``infidelity_perturb_func_decorator`` derive ``I``.
        generator: Source of randomness (default: seeded from ``torch.initial_seed()``).

    Returns:
        A ``perturb_func`` for ``captum.metrics.infidelity`` or ``sensitivity_max``.

    Examples:
        >>> from captum.metrics import infidelity
        >>> g = torch.Generator().manual_seed(0)
        >>> pf = gaussian_perturbation(0.1, generator=g)
        >>> infidelity(model, pf, x, attr, target=0, normalize=True).shape
        torch.Size([N])
    """
    std = _positive("std", std)
    gen = _generator(generator)

    def draw(x: Tensor, fill: Any, radius: Any) -> tuple[Tensor, Tensor]:
        noise = std * _noise(x.shape, x, gen, "normal")
        if noisy_baseline:
            perturbation = (-noise).clamp(0.0, 1.0)
        else:
            perturbation = noise
        return perturbation, x - perturbation

    return _build(draw, output, multiply_by_inputs)


def square_removal_perturbation(
    sizes: Sequence[int] = range(1, 11),
    baseline: float = 0.0,
    *,
    output: PerturbOutput = "infidelity",
    multiply_by_inputs: bool | None = None,
    generator: torch.Generator | None = None,
) -> Callable[..., Any]:
    """Remove a random square (all channels) per draw (Yeh et al. 2019, image setting).

    For each row, a side length is drawn uniformly from ``sizes`` and a position uniformly among
    all squares of that side that fit in the last two dimensions ``(H, W)``; the square is set to
    ``baseline`` (or to the ``baselines`` Captum passes to ``perturb_func``), and
    ``I = x - x_perturbed``.

    Args:
        sizes: Candidate side lengths (default 1..10, Yeh et al.'s global setting).
        baseline: Value of the removed square.
        output: ``"infidelity"`` or ``"sensitivity"``.
        multiply_by_inputs: See :func:`gaussian_perturbation`.
        generator: Source of randomness.

    Returns:
        A ``perturb_func``; it raises ValueError for inputs smaller than the largest square.
    """
    side_list = [int(s) for s in sizes]
    if not side_list or any(s < 1 for s in side_list):
        raise ValueError(f"sizes must be a non-empty sequence of positive ints, got {sizes!r}")
    if not math.isfinite(float(baseline)):
        raise ValueError(f"baseline must be finite, got {baseline}")
    gen = _generator(generator)
    sides_cpu = torch.tensor(side_list)

    def draw(x: Tensor, fill: Any, radius: Any) -> tuple[Tensor, Tensor]:
        if x.dim() < 3:
            raise ValueError(f"inputs must have shape (N, ..., H, W), got {tuple(x.shape)}")
        n, h, w = x.shape[0], x.shape[-2], x.shape[-1]
        if max(side_list) > min(h, w):
            raise ValueError(
                f"sizes must fit in the inputs: largest square {max(side_list)} > "
                f"min(H, W) = {min(h, w)}"
            )
        u = torch.rand(n, 3, generator=gen, device=gen.device, dtype=torch.float64).cpu()
        side = sides_cpu[(u[:, 0] * len(side_list)).long().clamp_(max=len(side_list) - 1)]
        top = (u[:, 1] * (h - side + 1)).floor().long()
        left = (u[:, 2] * (w - side + 1)).floor().long()
        side, top, left = (t.to(x.device).view(n, 1, 1) for t in (side, top, left))
        rows = torch.arange(h, device=x.device).view(1, h, 1)
        cols = torch.arange(w, device=x.device).view(1, 1, w)
        square = (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)
        square = square.view(n, *([1] * (x.dim() - 3)), h, w)
        value = baseline if fill is None else fill
        if isinstance(value, Tensor):
            value = value.to(x)
        perturbed = torch.where(square, value, x)
        return x - perturbed, perturbed

    return _build(draw, output, multiply_by_inputs)


def tv_perturbation(
    sigma: float = 0.02,
    grid: tuple[int, int] | None = None,
    boundary: Literal["padded", "none"] = "padded",
    *,
    output: PerturbOutput = "infidelity",
    multiply_by_inputs: bool | None = None,
    generator: torch.Generator | None = None,
) -> Callable[..., Any]:
    """The TV-correlated Gaussian of the LEG paper (Section 4.2), per channel, upsampled.

    ``z ~ N(0, sigma^2 (D^T D + 1 1^T / P))`` on a ``p1 x p2`` grid, sampled exactly as
    ``sigma (D^T e1 + 1 e2 / sqrt(P))`` (no SVD) by the LEG sampler
    (``captum_ext.attr._utils.grid.sample_tv_perturbations``), drawn independently per row and
    channel and nearest-neighbour upsampled to ``(H, W)``. Returns ``(z, x - z)``. The per-cell
    standard deviation is about ``2 sigma``.

    Args:
        sigma: Standard-deviation multiplier (> 0); 0.02 suits [0, 1] images.
        grid: ``(p1, p2)``; None means ``(min(28, H), min(28, W))``. A grid larger than the
            input raises ValueError.
        boundary: ``"padded"`` (the authors' 2020 code) or ``"none"`` (the paper's D).
        output: ``"infidelity"`` or ``"sensitivity"``.
        multiply_by_inputs: See :func:`gaussian_perturbation`.
        generator: Source of randomness.

    Returns:
        A ``perturb_func`` for inputs of shape (N, ..., H, W).
    """
    sigma = _positive("sigma", sigma)
    if boundary not in ("padded", "none"):
        raise ValueError(f"boundary must be 'padded' or 'none', got {boundary!r}")
    gen = _generator(generator)

    def draw(x: Tensor, fill: Any, radius: Any) -> tuple[Tensor, Tensor]:
        if x.dim() < 3:
            raise ValueError(f"inputs must have shape (N, ..., H, W), got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        cells = (min(28, h), min(28, w)) if grid is None else tuple(grid)
        if len(cells) != 2 or cells[0] > h or cells[1] > w:
            raise ValueError(f"grid must be (p1, p2) with p1 <= {h}, p2 <= {w}, got {grid}")
        rows = int(math.prod(x.shape[:-2]))
        z = sample_tv_perturbations(
            rows, cells, sigma, boundary=boundary, generator=gen, dtype=x.dtype
        )
        z = upsample_nearest(z.to(x.device), (h, w)).reshape(x.shape)
        return z, x - z

    return _build(draw, output, multiply_by_inputs)


def uniform_perturbation(
    radius: float | None = None,
    *,
    output: PerturbOutput = "sensitivity",
    multiply_by_inputs: bool | None = None,
    generator: torch.Generator | None = None,
) -> Callable[..., Any]:
    """Uniform noise in the L-infinity ball: ``x + U(-r, r)`` elementwise (for sensitivity).

    Args:
        radius: The radius r. None (sensitivity only) makes the function take
            ``(inputs, perturb_radius)`` so that ``sensitivity_max``'s ``perturb_radius``
            applies; a number makes it take ``inputs`` only.
        output: ``"sensitivity"`` (default, returns ``x + U``) or ``"infidelity"`` (returns
            ``(I, x - I)`` with ``I ~ U(-r, r)``; needs a radius).
        multiply_by_inputs: See :func:`gaussian_perturbation`.
        generator: Source of randomness.

    Returns:
        A ``perturb_func``.

    Examples:
        >>> from captum.metrics import sensitivity_max
        >>> pf = uniform_perturbation(generator=torch.Generator().manual_seed(0))
        >>> sensitivity_max(Saliency(model).attribute, x, pf, perturb_radius=0.02, target=0)
    """
    if radius is not None:
        radius = _positive("radius", radius)
    elif output == "infidelity":
        raise ValueError("uniform_perturbation(output='infidelity') needs a radius, got None")
    gen = _generator(generator)

    def draw(x: Tensor, fill: Any, r: Any) -> tuple[Tensor, Tensor]:
        r = radius if radius is not None else _positive("perturb_radius", r)
        noise = (2 * _noise(x.shape, x, gen, "uniform") - 1) * r
        return -noise, x + noise

    return _build(draw, output, multiply_by_inputs, radius_arg=radius is None)


__all__ = [
    "gaussian_perturbation",
    "square_removal_perturbation",
    "tv_perturbation",
    "uniform_perturbation",
]
