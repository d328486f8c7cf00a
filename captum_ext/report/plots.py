"""Matplotlib figures of the report, saved as PNG files."""

from __future__ import annotations

import textwrap
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: the report never opens a window

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from captum_ext._io import atomic_write  # noqa: E402
from captum_ext.visualization import (  # noqa: E402
    _draw_image,
    _image_array,
    _mask_array,
    attribution_to_map,
    show_on_image,
)

#: Resolution of every saved PNG.
DPI = 80
#: Size in inches of a method tile (overlay + raw map): 360 x 180 px at ``DPI``.
TILE_SIZE = (4.5, 2.25)
#: Size in inches of an image tile (the input alone, with its title): 240 x 180 px.
IMAGE_TILE_SIZE = (3.0, 2.25)
#: Font size of the tile titles, in points (12 px at ``DPI``): readable at 100 % zoom.
TILE_FONTSIZE = 11


def display_map(attr: torch.Tensor) -> torch.Tensor:
    """Sum of absolute values over channels, scaled to [0, 1] by its 99th percentile.

    Sparse maps (fewer than 1 % non-zero pixels, e.g. CASO) are scaled by their maximum
    instead, so they do not show as blank. Same as
    :func:`captum_ext.visualization.attribution_to_map` with ``sign="absolute_value"``, without
    its all-zero warning.

    Args:
        attr: One attribution ``(C, H, W)``.

    Returns:
        ``(H, W)`` map in [0, 1] (all zeros for an all-zero attribution).
    """
    return attribution_to_map(attr, "absolute_value", 99.0, warn=False)


def _as_rgb(image: torch.Tensor) -> np.ndarray:
    img = image.detach().cpu().float()
    return (img[0] if img.shape[0] == 1 else img.permute(1, 2, 0).clamp(0, 1)).numpy()


def save_figure(fig: Figure, path: Path, *, tight: bool = True) -> Path:
    """Save ``fig`` as a PNG atomically, and close it if pyplot made it.

    Args:
        fig: A pyplot figure or a plain :class:`~matplotlib.figure.Figure`.
        path: Destination PNG.
        tight: Crop to the drawn content (``bbox_inches="tight"``); False keeps the figure's
            size, so that tiles of one size line up.

    Returns:
        ``path``.
    """
    bbox = "tight" if tight else None
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=DPI, bbox_inches=bbox))
    if fig.canvas.manager is not None:  # a pyplot figure; a plain Figure holds no global state
        plt.close(fig)
    return path


def saliency_grid(
    images: torch.Tensor,
    titles: list[str],
    maps: dict[str, torch.Tensor | None],
    masks: torch.Tensor | None,
    path: Path,
) -> Path:
    """One row per image: the image, then one column per method (``display_map`` of each).

    Methods whose value is None (failed) get an empty column. Ground-truth masks, when given,
    are outlined on the image.
    """
    n, cols = images.shape[0], 1 + len(maps)
    fig, axes = plt.subplots(n, cols, figsize=(1.6 * cols, 1.6 * n), squeeze=False)
    for i in range(n):
        ax = axes[i, 0]
        ax.imshow(_as_rgb(images[i]), cmap="gray")
        if masks is not None:
            ax.contour(masks[i].float().numpy(), levels=[0.5], colors="white", linewidths=0.6)
        ax.set_title(titles[i], fontsize=7)
        for j, (name, attr) in enumerate(maps.items(), start=1):
            ax = axes[i, j]
            if attr is not None:
                ax.imshow(display_map(attr[i]).numpy(), cmap="inferno", vmin=0, vmax=1)
            if i == 0:
                ax.set_title(name, fontsize=7)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    return save_figure(fig, path)


def timing_chart(seconds: dict[str, float], path: Path) -> Path:
    """Horizontal bar chart of the time per image of each method (log scale)."""
    names = list(seconds)
    fig, ax = plt.subplots(figsize=(6, 0.35 * len(names) + 1))
    ax.barh(names, [seconds[k] for k in names], color="tab:blue")
    ax.set_xscale("log")
    ax.set_xlabel("seconds per image")
    ax.invert_yaxis()
    fig.tight_layout()
    return save_figure(fig, path)


def _wrap(text: str, width: int, lines: int = 2) -> str:
    out = textwrap.wrap(text, width) or [""]
    if len(out) > lines:
        out = out[:lines]
        out[-1] = out[-1][: width - 1] + "\u2026"
    return "\n".join(out)


def method_tile(
    image: torch.Tensor,
    attribution: torch.Tensor | None,
    mask: torch.Tensor | None,
    title: str,
    path: Path,
    error: str | None = None,
) -> Path:
    """One PNG of one method on one image: the overlay with its colour bar, the raw map beside.

    The tile is ``TILE_SIZE`` at ``DPI`` (360 x 180 px) with the method name on top. An
    all-zero attribution says so in the title. A failed method (``attribution`` None) shows the
    image alone and ``"failed: "`` with the first 60 characters of ``error``.

    Args:
        image: ``(C, H, W)`` image in [0, 1].
        attribution: Its attribution ``(C, H, W)``, or None if the method failed.
        mask: Optional ``(H, W)`` ground-truth mask, outlined.
        title: The method name.
        path: Destination PNG.
        error: The failure message, when ``attribution`` is None.

    Returns:
        ``path``.
    """
    image = image.detach().cpu().float().clamp(0, 1)  # as saliency_grid: resizing overshoots
    if attribution is None:
        fig = Figure(figsize=TILE_SIZE, layout="compressed")
        ax_img, ax_text = fig.subplots(1, 2)
        _draw_image(
            ax_img, _image_array(image), _mask_array(mask, (image.shape[-2], image.shape[-1]))
        )
        ax_text.axis("off")
        message = _wrap(" ".join((error or "no attribution").split())[:60], 24, lines=3)
        at = {"ha": "center", "transform": ax_text.transAxes}
        ax_text.text(
            0.5,
            0.6,
            "failed",
            va="center",
            color="firebrick",
            weight="bold",
            fontsize=TILE_FONTSIZE + 2,
            **at,
        )
        ax_text.text(0.5, 0.4, message, va="top", fontsize=TILE_FONTSIZE - 1, **at)
        fig.suptitle(_wrap(title, 56, lines=1), fontsize=TILE_FONTSIZE)
        return save_figure(fig, path, tight=False)
    if attribution_to_map(attribution, warn=False).max() == 0:
        title = f"{title} (all zero)"
    with warnings.catch_warnings():
        # the title already says "all zero"
        warnings.filterwarnings("ignore", "the attribution is all zero", UserWarning)
        fig, _ = show_on_image(
            image,
            attribution,
            mask=mask,
            title=_wrap(title, 56, lines=1),
            show_raw=True,
            fontsize=TILE_FONTSIZE,
        )
    fig.set_size_inches(*TILE_SIZE)
    return save_figure(fig, path, tight=False)


def image_tile(image: torch.Tensor, mask: torch.Tensor | None, title: str, path: Path) -> Path:
    """One PNG of the input image alone, mask outlined, titled; as tall as the method tiles.

    Args:
        image: ``(C, H, W)`` image in [0, 1].
        mask: Optional ``(H, W)`` ground-truth mask, outlined in white.
        title: E.g. ``"dog.png: label cat, predicted dog (wrong)"`` (wrapped on 2 lines).
        path: Destination PNG.

    Returns:
        ``path``.
    """
    image = image.detach().cpu().float().clamp(0, 1)
    fig = Figure(figsize=IMAGE_TILE_SIZE, layout="compressed")
    ax = fig.subplots()
    _draw_image(ax, _image_array(image), _mask_array(mask, (image.shape[-2], image.shape[-1])))
    ax.set_title(_wrap(title, 36), fontsize=TILE_FONTSIZE)
    return save_figure(fig, path, tight=False)
