"""Attribution maps drawn over their image, for notebooks and reports.

:func:`attribution_to_map` turns one attribution into a display map scaled to [0, 1] (or
[-1, 1] for signed maps), like Captum's ``visualize_image_attr``; :func:`show_on_image` blends
that map over the image with a colour bar, like pytorch-grad-cam's ``show_cam_on_image``.

Figures are made with :class:`matplotlib.figure.Figure` directly, not pyplot: no backend is
selected, no window opens and no global figure state is kept. Save them with ``fig.savefig`` or
show them in a notebook with ``display(fig)``.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Literal, overload

import numpy as np
import torch
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from torch import Tensor

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import SubFigure

__all__ = ["attribution_to_map", "show_on_image"]

#: The accepted values of ``sign``, as in Captum's ``visualize_image_attr``.
SIGNS = ("absolute_value", "positive", "negative", "all")

#: The type of a ``sign`` argument: one of :data:`SIGNS`.
Sign = Literal["absolute_value", "positive", "negative", "all"]

_LABELS = {
    "absolute_value": "|attribution| (scaled)",
    "positive": "positive attr. (scaled)",
    "negative": "negative attr. (scaled)",
    "all": "attribution (scaled)",
}


def attribution_to_map(
    attribution: Tensor,
    sign: Sign = "absolute_value",
    percentile: float = 99.0,
    *,
    warn: bool = True,
) -> Tensor:
    """Reduce one attribution to a 2-D display map, scaled by a percentile.

    The channels are summed first: ``|a|`` summed for ``"absolute_value"``, the signed sum
    clamped at 0 for ``"positive"``, minus the signed sum clamped at 0 for ``"negative"``, and
    the signed sum for ``"all"``. The map is divided by the ``percentile``-th percentile of its
    absolute values (values above it clip to 1), like Captum's ``_normalize_attr``. A sparse map
    whose percentile is 0 (fewer than ``100 - percentile`` % non-zero pixels, e.g. fewer than
    1 % at the default 99) is divided by its maximum instead, so it does not show as blank.

    Args:
        attribution: One attribution, ``(C, H, W)`` or ``(H, W)``; not modified.
        sign: ``"absolute_value"``, ``"positive"``, ``"negative"`` or ``"all"``.
        percentile: Scaling percentile in ``(0, 100]``; 100 scales by the maximum.
        warn: Emit a :class:`UserWarning` when the map is all zero.

    Returns:
        ``(H, W)`` float map on the CPU, in [0, 1], or in [-1, 1] for ``sign="all"``; all zeros
        (with one warning when ``warn``) for a map that is all zero.

    Raises:
        ValueError: ``attribution`` is not 2-D or 3-D, is empty or has NaN/infinite values;
            ``sign`` is not one of the choices; ``percentile`` is outside ``(0, 100]``.

    Example:
        >>> attr = torch.tensor([[[0.0, -2.0], [1.0, 4.0]]])
        >>> attribution_to_map(attr, percentile=100)
        tensor([[0.0000, 0.5000],
                [0.2500, 1.0000]])
    """
    if sign not in SIGNS:
        raise ValueError(f"sign must be one of {', '.join(map(repr, SIGNS))}; got {sign!r}")
    if isinstance(percentile, bool) or not isinstance(percentile, (int, float)):
        raise ValueError(f"percentile must be a number in (0, 100]; got {percentile!r}")
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile must be in (0, 100]; got {percentile!r}")
    if not isinstance(attribution, Tensor) or attribution.ndim not in (2, 3):
        shape = tuple(attribution.shape) if isinstance(attribution, Tensor) else type(attribution)
        raise ValueError(f"attribution must be a (C, H, W) or (H, W) tensor; got {shape}")
    a = attribution.detach().cpu()
    dtype = a.dtype if a.is_floating_point() else torch.float32
    a = a.double()
    if a.numel() == 0:
        raise ValueError(f"attribution is empty (shape {tuple(attribution.shape)})")
    if not torch.isfinite(a).all():
        raise ValueError("attribution contains NaN or infinite values")
    if a.ndim == 2:
        a = a.unsqueeze(0)
    if sign == "absolute_value":
        m = a.abs().sum(0)
    else:
        s = a.sum(0)
        m = s if sign == "all" else s.clamp(min=0) if sign == "positive" else (-s).clamp(min=0)
    mag = m.abs().flatten().numpy()
    hi = float(np.percentile(mag, percentile))  # linear interpolation, as torch.quantile
    if hi <= 0:
        hi = float(mag.max())
    if hi <= 0:
        if warn:
            msg = f"the attribution is all zero (sign={sign!r}): the map is blank"
            warnings.warn(msg, UserWarning, stacklevel=2)
        return torch.zeros(m.shape, dtype=dtype)
    return (m / hi).clamp(-1.0 if sign == "all" else 0.0, 1.0).to(dtype)


def _image_array(image: Tensor) -> np.ndarray:
    """``(C, H, W)`` image in [0, 1] -> ``(H, W)`` or ``(H, W, 3)`` array; ValueError if bad."""
    if not isinstance(image, Tensor) or image.ndim != 3 or image.shape[0] not in (1, 3):
        shape = tuple(image.shape) if isinstance(image, Tensor) else type(image)
        raise ValueError(f"image must be a (C, H, W) tensor with 1 or 3 channels; got {shape}")
    img = image.detach().cpu().float()
    if img.numel() == 0 or not torch.isfinite(img).all():
        raise ValueError("image is empty or contains NaN or infinite values")
    lo, hi = img.min().item(), img.max().item()
    if lo < -1e-4 or hi > 1 + 1e-4:
        raise ValueError(
            f"image must have values in [0, 1]; got [{lo:.3g}, {hi:.3g}] "
            "(undo the normalisation first, e.g. image * std + mean)"
        )
    img = img.clamp(0, 1)
    return img[0].numpy() if img.shape[0] == 1 else img.permute(1, 2, 0).numpy()


def _mask_array(mask: Tensor | None, size: tuple[int, int]) -> np.ndarray | None:
    if mask is None:
        return None
    ok = isinstance(mask, Tensor) and tuple(mask.shape[-2:]) == size
    if not ok or mask.numel() != size[0] * size[1]:
        shape = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask)
        raise ValueError(f"mask must be a tensor of shape {size} or (1, *{size}); got {shape}")
    return mask.detach().cpu().float().reshape(size).numpy()


def _draw_image(ax: Axes, img: np.ndarray, mask: np.ndarray | None, color: str = "white") -> None:
    """The image (gray for one channel), the mask outlined, the axis frame off."""
    ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
    _draw_mask(ax, mask, color)
    ax.axis("off")


def _draw_mask(ax: Axes, mask: np.ndarray | None, color: str) -> None:
    if mask is not None and mask.min() < 0.5 < mask.max():  # a constant mask has no outline
        ax.contour(mask, levels=[0.5], colors=color, linewidths=1.2)


@overload
def show_on_image(
    image: Tensor,
    attribution: Tensor,
    *,
    sign: Sign = ...,
    alpha: float = ...,
    cmap: str | None = ...,
    percentile: float = ...,
    mask: Tensor | None = ...,
    title: str | None = ...,
    colorbar: bool = ...,
    show_raw: bool = ...,
    ax: None = ...,
    fontsize: float = ...,
) -> tuple[Figure, list[Axes]]: ...


@overload
def show_on_image(  # an ``ax`` of a subfigure draws into (and returns) that subfigure
    image: Tensor,
    attribution: Tensor,
    *,
    sign: Sign = ...,
    alpha: float = ...,
    cmap: str | None = ...,
    percentile: float = ...,
    mask: Tensor | None = ...,
    title: str | None = ...,
    colorbar: bool = ...,
    show_raw: bool = ...,
    ax: Axes | None,
    fontsize: float = ...,
) -> tuple[Figure | SubFigure, list[Axes]]: ...


def show_on_image(
    image: Tensor,
    attribution: Tensor,
    *,
    sign: Sign = "absolute_value",
    alpha: float = 0.5,
    cmap: str | None = None,
    percentile: float = 99.0,
    mask: Tensor | None = None,
    title: str | None = None,
    colorbar: bool = True,
    show_raw: bool = False,
    ax: Axes | None = None,
    fontsize: float = 10,
) -> tuple[Figure | SubFigure, list[Axes]]:
    """Draw an attribution as a heat map blended over its image, with a colour bar.

    The map is :func:`attribution_to_map` of ``attribution``, drawn with ``cmap`` at opacity
    ``alpha`` over the image (``"jet"`` by default, as pytorch-grad-cam; ``"bwr"`` from -1 to 1
    for ``sign="all"``). ``show_raw`` adds the map alone beside the overlay (``"inferno"`` for
    unsigned maps), for where the overlay hides detail. Nothing is shown: call
    ``fig.savefig(...)``, or ``display(fig)`` in a notebook. The inputs are not modified.

    Args:
        image: ``(C, H, W)`` image with 1 or 3 channels and values in [0, 1] (undo any
            normalisation first).
        attribution: ``(C, H, W)`` or ``(H, W)`` attribution of ``image`` (same ``H, W``).
        sign: Which part of the attribution to show: ``"absolute_value"``, ``"positive"``,
            ``"negative"`` or ``"all"`` (signed).
        alpha: Opacity of the heat map over the image, in [0, 1].
        cmap: Matplotlib colormap name of the heat map (default ``"jet"``, ``"bwr"`` for
            ``"all"``).
        percentile: Scaling percentile of :func:`attribution_to_map`.
        mask: Optional ``(H, W)`` ground-truth mask, outlined in white.
        title: Optional title (of the figure when ``show_raw``, else of the axes).
        colorbar: Add a colour bar of the scaled attribution.
        show_raw: Also draw the map alone in a second axes of the same size.
        ax: Draw into this axes (and its figure) instead of a new figure; not with ``show_raw``.
        fontsize: Font size of the title, in points (labels are 2 points smaller).

    Returns:
        The figure (``ax.figure`` when ``ax`` is given, a ``SubFigure`` if ``ax`` is in one)
        and the list of axes drawn into (the overlay, then the raw map if any); colour bars are
        extra axes of the figure.

    Raises:
        ValueError: ``image`` is not ``(C, H, W)`` in [0, 1]; ``attribution`` does not match its
            size or is not finite; ``mask`` does not match; ``sign``, ``percentile`` or ``alpha``
            is invalid; ``ax`` is given with ``show_raw=True``.

    Example:
        >>> image = torch.rand(3, 32, 32)
        >>> attribution = torch.randn(3, 32, 32)
        >>> fig, axes = show_on_image(image, attribution, title="Saliency", show_raw=True)
        >>> fig.savefig("saliency.png")  # doctest: +SKIP
    """
    if ax is not None and show_raw:
        raise ValueError("show_raw=True needs a figure of its own: pass ax=None")
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1]; got {alpha!r}")
    img = _image_array(image)
    size = (image.shape[-2], image.shape[-1])
    if not isinstance(attribution, Tensor) or tuple(attribution.shape[-2:]) != size:
        shape = tuple(attribution.shape) if isinstance(attribution, Tensor) else type(attribution)
        raise ValueError(f"attribution must have the image's size {size}; got shape {shape}")
    mask_np = _mask_array(mask, size)
    amap = attribution_to_map(attribution, sign, percentile).float().numpy()
    signed = sign == "all"
    norm = Normalize(vmin=-1.0 if signed else 0.0, vmax=1.0)
    fig: Figure | SubFigure
    if ax is None:
        fig = Figure(figsize=(5.8 if show_raw else 3.3, 2.8), layout="compressed")
        axes = list(fig.subplots(1, 2 if show_raw else 1, squeeze=False)[0])
    else:
        fig, axes = ax.figure, [ax]
    over = axes[0]
    _draw_image(over, img, mask_np)
    heat_cmap = cmap or ("bwr" if signed else "jet")
    over.imshow(amap, cmap=heat_cmap, norm=norm, alpha=alpha, interpolation="nearest")
    ticks = [-1.0, 0.0, 1.0] if signed else [0.0, 0.5, 1.0]
    if colorbar:  # from an opaque mappable: the bar shows the colours, not the faded blend
        bar = fig.colorbar(ScalarMappable(norm, heat_cmap), ax=over, shrink=0.9, ticks=ticks)
        bar.set_label(_LABELS[sign], fontsize=max(fontsize - 2, 1))
        bar.ax.tick_params(labelsize=max(fontsize - 2, 1))
    if show_raw:
        raw = axes[1]
        raw_cmap = (cmap or "bwr") if signed else "inferno"
        shown = raw.imshow(amap, cmap=raw_cmap, norm=norm, interpolation="nearest")
        _draw_mask(raw, mask_np, "black" if signed else "white")
        raw.axis("off")
        if colorbar:
            bar = fig.colorbar(shown, ax=raw, shrink=0.9, ticks=ticks)
            bar.ax.tick_params(labelsize=max(fontsize - 2, 1))
    if title is not None:
        if show_raw:
            fig.suptitle(title, fontsize=fontsize)
        else:
            over.set_title(title, fontsize=fontsize)
    return fig, axes
