"""Deletion, insertion and preservation curves and their areas under the curve.

Definitions follow RISE (Petsiuk, Das and Saenko 2018, "RISE: Randomized Input Sampling for
Explanation of Black-box Models", ``eclique/RISE`` ``evaluation.py``) for deletion and insertion,
and the RelEx supplementary (S3.3, ``JBNU-VL/RelEx`` ``utils/evaluations.py``) for preservation:

- The attribution is reduced to a per-pixel map ``s`` (default: sum over channels of ``abs``).
- Pixels are ordered by ``s`` (descending for deletion and insertion, ascending for preservation;
  ties keep the lower row-major index first, a stable sort, where the references use numpy's
  unstable argsort).
- Each step replaces ``k = pixels_per_step`` pixels (all channels of a pixel at once); the default
  ``k = ceil(H * W / n_steps)`` with ``n_steps = 224`` is RISE's and RelEx's 224 at 224 x 224.
  The curve has ``n + 1`` points, ``n = ceil(H * W / k)``: point ``i`` has the first ``i * k``
  ordered pixels replaced (all of them at the last point).
- Deletion and preservation start from the image and replace pixels by the substrate (default 0
  in the model's input space); insertion starts from the blurred image (RISE's 11 x 11 kernel,
  ``scipy.ndimage.gaussian_filter`` of an impulse with sigma 5) and puts original pixels back.
- The score is the softmax probability of the class predicted on the original image (or the
  given target), never re-predicted per step; the AUC is the trapezoid rule on [0, 1].

Deletion: lower is better. Insertion and preservation: higher is better.

Quantus' ``PixelFlipping`` is a different protocol: it flips single elements channel by channel,
its "black" is ``min(x)`` and its AUC is ``np.trapz(dx=1)`` without normalisation, so its numbers
are not comparable with these.

All ``N * (n + 1)`` perturbed images are built from cumulative masks (a rank comparison, no
Python loop over steps) and evaluated in chunks of ``max_examples_per_batch`` rows.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter
from torch import Tensor

from captum_ext._compat import (
    ExpansionTypes,
    _expand_additional_forward_args,
    _expand_target,
    _format_additional_forward_args,
    _run_forward,
    log_usage,
)
from captum_ext._model_state import eval_mode
from captum_ext._targets import check_output_target
from captum_ext.metrics._maps import as_tensor, check_finite, pixel_rank, reduce_map

Substrate = Union[float, str, Tensor]


class FidelityCurves(NamedTuple):
    """Result of :func:`deletion`, :func:`insertion` and :func:`preservation`.

    Attributes:
        curves: Scores ``y_i`` at every step, shape (N, n + 1); column 0 is the start image.
        auc: Area under each curve, shape (N,).
        fractions: Fraction of pixels replaced at each point, shape (n + 1,).
    """

    curves: Tensor
    auc: Tensor
    fractions: Tensor


def rise_blur_kernel(size: int = 11, sigma: float = 5.0) -> Tensor:
    """RISE's blur kernel: a centred ``size x size`` impulse smoothed by ``gaussian_filter``.

    ``scipy.ndimage.gaussian_filter`` uses reflect boundaries and truncate 4, so the tails fold
    back: the kernel sums to 1 and is much flatter than a Gaussian cut at ``size`` taps.

    Args:
        size: Side of the kernel (odd).
        sigma: Standard deviation of the Gaussian filter.

    Returns:
        A float32 tensor of shape (size, size).
    """
    if size < 1 or size % 2 == 0:
        raise ValueError(f"size must be a positive odd int, got {size}")
    impulse = np.zeros((size, size))
    impulse[size // 2, size // 2] = 1.0
    return torch.from_numpy(gaussian_filter(impulse, sigma)).float()


def blur(inputs: Tensor, padding: str = "zeros", size: int = 11, sigma: float = 5.0) -> Tensor:
    """Blur images (N, C, H, W) per channel with :func:`rise_blur_kernel`.

    Args:
        inputs: Images, channels first.
        padding: ``"zeros"`` (RISE: zero padding of ``size // 2``, which darkens the border) or
            ``"reflect"``.
        size: Kernel side.
        sigma: Kernel sigma.

    Returns:
        Blurred images, same shape, dtype and device as ``inputs``.
    """
    if padding not in ("zeros", "reflect"):
        raise ValueError(f"padding must be 'zeros' or 'reflect', got {padding!r}")
    as_tensor("inputs", inputs)
    if inputs.dim() != 4:
        raise ValueError(f"inputs must have shape (N, C, H, W), got {tuple(inputs.shape)}")
    if not inputs.is_floating_point():
        raise TypeError(
            f"inputs must be floating point to blur (an integer image would be truncated to "
            f"zeros), got {inputs.dtype}; convert it, e.g. images.float() / 255"
        )
    c = inputs.shape[1]
    kernel = rise_blur_kernel(size, sigma).to(device=inputs.device, dtype=inputs.dtype)
    weight = kernel.expand(c, 1, size, size)
    half = size // 2
    if padding == "reflect":
        if min(inputs.shape[-2:]) <= half:
            raise ValueError(
                f"padding='reflect' needs images larger than {half} pixels, got "
                f"{tuple(inputs.shape[-2:])}"
            )
        return F.conv2d(F.pad(inputs, (half,) * 4, mode="reflect"), weight, groups=c)
    return F.conv2d(inputs, weight, padding=half, groups=c)


def auc(curves: Tensor, fractions: Tensor | None = None) -> Tensor:
    """Trapezoid area under curves sampled on [0, 1].

    Args:
        curves: Shape (N, n + 1) (or (n + 1,)).
        fractions: x positions (n + 1,); None means uniform spacing, giving
            ``(sum_i y_i - y_0 / 2 - y_n / 2) / n``.

    Returns:
        Areas, shape (N,) (or a scalar tensor for a 1-D curve).

    Examples:
        >>> auc(torch.tensor([[1.0, 1.0, 0.0, 0.0]]))
        tensor([0.5000])
    """
    if curves.shape[-1] < 2:
        raise ValueError(f"curves need at least 2 points, got {curves.shape[-1]}")
    if fractions is None:
        n = curves.shape[-1] - 1
        return (curves.sum(-1) - curves[..., 0] / 2 - curves[..., -1] / 2) / n
    return torch.trapezoid(curves, fractions.to(curves), dim=-1)


def harmonic_fidelity(deletion_auc: Tensor, preservation_auc: Tensor) -> Tensor:
    """RelEx's ``2 / (1 / deletion + 1 / preservation)``, for reference compatibility only.

    It mixes a lower-is-better and a higher-is-better score, so it is not a sound summary;
    it is offered only to compare with numbers produced by ``JBNU-VL/RelEx``.
    """
    return 2.0 / (1.0 / deletion_auc + 1.0 / preservation_auc)


def _substrate(substrate: Substrate, inputs: Tensor, blur_padding: str) -> Tensor:
    if isinstance(substrate, str):
        if substrate == "blur":
            return blur(inputs, blur_padding)
        if substrate == "mean":
            return inputs.mean(dim=(2, 3), keepdim=True).expand_as(inputs)
        raise ValueError(
            f"substrate must be a float, 'mean', 'blur' or a tensor, got {substrate!r}"
        )
    if isinstance(substrate, (int, float)) and not isinstance(substrate, bool):
        if not math.isfinite(substrate):
            raise ValueError(f"substrate must be finite, got {substrate}")
        return torch.full_like(inputs, float(substrate))
    if isinstance(substrate, Tensor):
        check_finite("substrate", substrate)
        try:
            return substrate.to(inputs).expand_as(inputs)
        except RuntimeError as err:
            raise ValueError(
                f"substrate must broadcast to the inputs' shape {tuple(inputs.shape)}, got "
                f"{tuple(substrate.shape)}"
            ) from err
    raise TypeError(
        f"substrate must be a float, 'mean', 'blur' or a tensor, got {type(substrate).__name__}"
    )


def _probabilities(forward_func: Callable[..., Tensor]) -> Callable[..., Tensor]:
    def softmax_output(*args: Any) -> Tensor:
        return torch.softmax(forward_func(*args), dim=1)

    return softmax_output


def _rows(value: Any, start: int, stop: int, total: int) -> Any:
    """Rows ``start:stop`` of an expanded target or forward argument (others pass through)."""
    if isinstance(value, Tensor) and value.dim() > 0 and value.shape[0] == total:
        return value[start:stop]
    if isinstance(value, list) and len(value) == total:
        return value[start:stop]
    return value


def _fidelity_curves(
    kind: str,
    forward_func: Callable[..., Tensor],
    inputs: Tensor,
    attributions: Tensor,
    target: Any,
    additional_forward_args: Any,
    substrate: Substrate,
    pixels_per_step: int | None,
    n_steps: int,
    reduction: str,
    x_axis: str,
    blur_padding: str,
    apply_softmax: bool,
    max_examples_per_batch: int | None,
) -> FidelityCurves:
    if isinstance(inputs, tuple):
        raise TypeError(
            "inputs must be a single (N, C, H, W) tensor; pass other model inputs through "
            "additional_forward_args"
        )
    as_tensor("inputs", inputs)
    if inputs.dim() != 4:
        raise ValueError(f"inputs must have shape (N, C, H, W), got {tuple(inputs.shape)}")
    if inputs.shape[0] == 0:
        raise ValueError("inputs must hold at least one example, got an empty batch")
    check_finite("inputs", inputs)
    maps = reduce_map(attributions, reduction)
    n_ex, _, h, w = inputs.shape
    if maps.shape != (n_ex, h, w):
        raise ValueError(
            f"attributions must match the inputs' batch and spatial size {(n_ex, h, w)}, got "
            f"{tuple(attributions.shape)}"
        )
    p = h * w
    if pixels_per_step is None:
        if not isinstance(n_steps, int) or n_steps < 1:
            raise ValueError(f"n_steps must be a positive int, got {n_steps!r}")
        pixels_per_step = math.ceil(p / n_steps)
    if not isinstance(pixels_per_step, int) or not 1 <= pixels_per_step <= p:
        raise ValueError(
            f"pixels_per_step must be an int in [1, {p}] (the number of pixels), got "
            f"{pixels_per_step!r}"
        )
    if x_axis not in ("uniform", "fraction"):
        raise ValueError(f"x_axis must be 'uniform' or 'fraction', got {x_axis!r}")
    if max_examples_per_batch is None:
        max_examples_per_batch = 128
    if not isinstance(max_examples_per_batch, int) or max_examples_per_batch < 1:
        raise ValueError(
            f"max_examples_per_batch must be a positive int, got {max_examples_per_batch!r}"
        )
    n = math.ceil(p / pixels_per_step)
    counts = (torch.arange(n + 1, device=inputs.device) * pixels_per_step).clamp_(max=p)
    fractions = counts.to(inputs.dtype) / p
    rank = pixel_rank(maps, descending=kind != "preservation")

    fill = _substrate(substrate, inputs, blur_padding)
    # Pixels whose mask is set come from `on`; the others from `off`.
    on, off = (inputs, fill) if kind == "insertion" else (fill, inputs)
    score_fn = _probabilities(forward_func) if apply_softmax else forward_func
    additional_forward_args = _format_additional_forward_args(additional_forward_args)

    with eval_mode(forward_func):
        clean = _run_forward(forward_func, inputs, None, additional_forward_args)
        if target is None:
            if clean.dim() != 2:
                raise ValueError(
                    "target=None needs a model output of shape (N, n_classes) to predict the "
                    f"class, got {tuple(clean.shape)}"
                )
            target = clean.argmax(1)
        else:
            check_output_target(target, tuple(clean.shape), n_ex)

        total = n_ex * (n + 1)
        rows_target = _expand_target(target, n + 1, ExpansionTypes.repeat_interleave)
        rows_args = _expand_additional_forward_args(
            additional_forward_args, n + 1, ExpansionTypes.repeat_interleave
        )
        scores = []
        for start in range(0, total, max_examples_per_batch):
            stop = min(start + max_examples_per_batch, total)
            rows = torch.arange(start, stop, device=inputs.device)
            example, step = rows // (n + 1), rows % (n + 1)
            mask = (rank[example] < counts[step].unsqueeze(1)).view(-1, 1, h, w)
            batch = torch.where(mask, on[example], off[example])
            chunk_args = (
                None
                if rows_args is None
                else tuple(_rows(a, start, stop, total) for a in rows_args)
            )
            out = _run_forward(score_fn, batch, _rows(rows_target, start, stop, total), chunk_args)
            if out.numel() != stop - start:
                raise ValueError(
                    "the model must give one score per example for the target, got output of shape "
                    f"{tuple(out.shape)} for {stop - start} examples"
                )
            scores.append(out.reshape(-1))
    curves = torch.cat(scores).view(n_ex, n + 1)
    check_finite("model output", curves)
    area = auc(curves, fractions if x_axis == "fraction" else None)
    return FidelityCurves(curves, area, fractions)


_DOC_ARGS = """
    Args:
        forward_func: The model (or any callable) returning logits (N, n_classes); with
            ``apply_softmax=False``, any output from which ``target`` selects one score per
            example.
        inputs: Images, shape (N, C, H, W). Other model inputs go in
            ``additional_forward_args``.
        attributions: Attributions (N, C', H, W) or maps (N, H, W); reduced with ``reduction``.
        target: Output index scored at every step, as in Captum (int, list, tensor of shape
            (N,), or tuple). None: the class predicted on the original ``inputs``.
        additional_forward_args: Extra model arguments, expanded per step as in Captum.
        substrate: Value of replaced pixels: a float, ``"mean"`` (per image and channel),
            ``"blur"`` (RISE's blur) or a tensor broadcastable to ``inputs``.
        pixels_per_step: Pixels replaced per step (k). None: ``ceil(H * W / n_steps)``.
        n_steps: Used only when ``pixels_per_step`` is None.
        reduction: ``"abs_sum"`` (default), ``"sum"`` or ``"none"``; see ``_maps.reduce_map``.
        x_axis: ``"uniform"`` (points spaced 1/n, RISE) or ``"fraction"`` (true replaced
            fractions, as torch-cam; differs only when H * W is not a multiple of k).
        blur_padding: ``"zeros"`` (RISE) or ``"reflect"``, for the ``"blur"`` substrate.
        apply_softmax: Score softmax probabilities (default) instead of raw outputs.
        max_examples_per_batch: Perturbed images per forward call (default 128). Results do
            not depend on it.

    Returns:
        :class:`FidelityCurves` ``(curves (N, n + 1), auc (N,), fractions (n + 1,))``.

    The model runs in eval mode (every module's flag restored afterwards, also on errors);
    ``target`` is checked against the model's output (``-1`` is not "the last class").
"""


@log_usage()
@torch.no_grad()
def deletion(
    forward_func: Callable[..., Tensor],
    inputs: Tensor,
    attributions: Tensor,
    target: Any = None,
    additional_forward_args: Any = None,
    *,
    substrate: Substrate = 0.0,
    pixels_per_step: int | None = None,
    n_steps: int = 224,
    reduction: str = "abs_sum",
    x_axis: str = "uniform",
    blur_padding: str = "zeros",
    apply_softmax: bool = True,
    max_examples_per_batch: int | None = None,
) -> FidelityCurves:
    """Deletion curve (RISE): remove the most salient pixels first; lower AUC is better."""
    return _fidelity_curves(
        "deletion", forward_func, inputs, attributions, target, additional_forward_args,
        substrate, pixels_per_step, n_steps, reduction, x_axis, blur_padding, apply_softmax,
        max_examples_per_batch,
    )  # fmt: skip


@log_usage()
@torch.no_grad()
def insertion(
    forward_func: Callable[..., Tensor],
    inputs: Tensor,
    attributions: Tensor,
    target: Any = None,
    additional_forward_args: Any = None,
    *,
    substrate: Substrate = "blur",
    pixels_per_step: int | None = None,
    n_steps: int = 224,
    reduction: str = "abs_sum",
    x_axis: str = "uniform",
    blur_padding: str = "zeros",
    apply_softmax: bool = True,
    max_examples_per_batch: int | None = None,
) -> FidelityCurves:
    """Insertion curve (RISE): restore the most salient pixels first; higher AUC is better."""
    return _fidelity_curves(
        "insertion", forward_func, inputs, attributions, target, additional_forward_args,
        substrate, pixels_per_step, n_steps, reduction, x_axis, blur_padding, apply_softmax,
        max_examples_per_batch,
    )  # fmt: skip


@log_usage()
@torch.no_grad()
def preservation(
    forward_func: Callable[..., Tensor],
    inputs: Tensor,
    attributions: Tensor,
    target: Any = None,
    additional_forward_args: Any = None,
    *,
    substrate: Substrate = 0.0,
    pixels_per_step: int | None = None,
    n_steps: int = 224,
    reduction: str = "abs_sum",
    x_axis: str = "uniform",
    blur_padding: str = "zeros",
    apply_softmax: bool = True,
    max_examples_per_batch: int | None = None,
) -> FidelityCurves:
    """Preservation curve (RelEx): remove the least salient pixels first; higher is better."""
    return _fidelity_curves(
        "preservation", forward_func, inputs, attributions, target, additional_forward_args,
        substrate, pixels_per_step, n_steps, reduction, x_axis, blur_padding, apply_softmax,
        max_examples_per_batch,
    )  # fmt: skip


_EXAMPLES = """
    Examples:
        >>> from captum.attr import Saliency
        >>> attr = Saliency(model).attribute(images, target=labels)
        >>> result = {name}(model, images, attr)
        >>> result.curves.shape, result.auc.shape
        (torch.Size([N, n + 1]), torch.Size([N]))
"""

for _fn in (deletion, insertion, preservation):
    _fn.__doc__ = (
        f"{_fn.__doc__}\n{_DOC_ARGS}{_EXAMPLES.format(name=_fn.__name__)}"
        "\n    Reference: Petsiuk et al. 2018 (RISE); RelEx supplementary S3.3 (preservation).\n"
    )

__all__ = [
    "FidelityCurves",
    "auc",
    "blur",
    "deletion",
    "harmonic_fidelity",
    "insertion",
    "preservation",
    "rise_blur_kernel",
]
