"""Matplotlib figures of the report, saved as PNG files."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: the report never opens a window

import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from captum_ext._io import atomic_write  # noqa: E402


def display_map(attr: torch.Tensor) -> torch.Tensor:
    """Sum of absolute values over channels, scaled to [0, 1] by its 99th percentile.

    Sparse maps (fewer than 1 % non-zero pixels, e.g. CASO) are scaled by their maximum
    instead, so they do not show as blank.

    Args:
        attr: One attribution ``(C, H, W)``.

    Returns:
        ``(H, W)`` map in [0, 1] (all zeros for an all-zero attribution).
    """
    m = attr.abs().sum(0)
    hi = torch.quantile(m.flatten().double(), 0.99).item()
    if hi <= 0:
        hi = m.max().item()
    return (m / hi).clamp(0, 1) if hi > 0 else torch.zeros_like(m)


def _as_rgb(image: torch.Tensor) -> torch.Tensor:
    img = image.detach().cpu().float()
    return img[0] if img.shape[0] == 1 else img.permute(1, 2, 0).clamp(0, 1)


def save_figure(fig: plt.Figure, path: Path) -> Path:
    """Save ``fig`` as a PNG atomically and close it."""
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=80, bbox_inches="tight"))
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
