"""Private image-similarity helpers of the sanity checks: normalisations, SSIM and HOG.

Native, batched torch versions that agree with scikit-image's ``structural_similarity`` and
``feature.hog`` (tested against them), so scikit-image stays optional.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def normalize_abs(e: Tensor) -> Tensor:
    """PAIR ``VisualizeImageGrayscale``: ``m = sum_c |e|``, ``(m - min) / (p99 - min)`` in [0, 1].

    Args:
        e: Explanations (N, C, H, W).

    Returns:
        Maps (N, H, W). Where ``p99 == min`` the limit is used: 1 above the minimum, else 0.
    """
    m = e.abs().sum(1)
    flat = m.reshape(m.shape[0], -1)
    vmin = flat.min(1).values.view(-1, 1, 1)
    vmax = torch.quantile(flat, 0.99, dim=1).view(-1, 1, 1)
    span = vmax - vmin
    scaled = (m - vmin) / torch.where(span > 0, span, torch.ones_like(span))
    return torch.where(span > 0, scaled, (m > vmin).to(m.dtype)).clamp(0.0, 1.0)


def normalize_diverging(e: Tensor) -> Tensor:
    """PAIR ``VisualizeImageDiverging``: ``m = sum_c e``, ``(m + s) / (2 s)``, ``s = |p99(m)|``.

    Args:
        e: Explanations (N, C, H, W).

    Returns:
        Maps (N, H, W) in [0, 1]. Where ``s == 0`` the limit is used (1, 0.5 or 0 by sign of m).
    """
    m = e.sum(1)
    span = torch.quantile(m.reshape(m.shape[0], -1), 0.99, dim=1).abs().view(-1, 1, 1)
    scaled = (m + span) / (2 * torch.where(span > 0, span, torch.ones_like(span)))
    return torch.where(span > 0, scaled, 0.5 + 0.5 * torch.sign(m)).clamp(0.0, 1.0)


def normalize_01(e: Tensor) -> Tensor:
    """``(e - min) / (max - min)`` per example over all elements; a constant map gives zeros."""
    flat = e.reshape(e.shape[0], -1)
    vmin = flat.min(1).values.view(-1, *([1] * (e.dim() - 1)))
    span = flat.max(1).values.view_as(vmin) - vmin
    return torch.where(span > 0, (e - vmin) / torch.where(span > 0, span, 1.0), 0.0)


def _symmetric_index(n: int, pad: int, device: torch.device) -> Tensor:
    """Indices of scipy's ``mode="reflect"`` padding (``d c b a | a b c d | d c b a``)."""
    idx = torch.arange(-pad, n + pad, device=device)
    idx = torch.where(idx < 0, -idx - 1, idx)
    return torch.where(idx >= n, 2 * n - idx - 1, idx)


def _filter(x: Tensor, kernel: Tensor) -> Tensor:
    """Separable correlation of (B, H, W) with a 1-D kernel, scipy reflect boundaries."""
    r = kernel.numel() // 2
    h, w = x.shape[-2:]
    x = x[:, _symmetric_index(h, r, x.device)][:, :, _symmetric_index(w, r, x.device)]
    x = x.unsqueeze(1)
    x = F.conv2d(x, kernel.view(1, 1, -1, 1))
    x = F.conv2d(x, kernel.view(1, 1, 1, -1))
    return x[:, 0]


def ssim(
    x: Tensor,
    y: Tensor,
    data_range: float | None = 1.0,
    use_sample_covariance: bool = True,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> Tensor:
    """Mean SSIM per example, as ``skimage.metrics.structural_similarity`` with Gaussian weights.

    Gaussian window with ``sigma`` and truncate 3.5 (11 taps for 1.5), reflect filtering, mean
    over the interior cropped by half the window; channels are averaged. Maps smaller than the
    window use a uniform window of the largest odd size <= min(H, W) (at least 3), like
    ``structural_similarity(..., gaussian_weights=False, win_size=...)``.

    Args:
        x: Maps (N, C, H, W) or (N, H, W).
        y: Same shape as ``x``.
        data_range: Dynamic range R of ``C1 = (k1 R)^2``, ``C2 = (k2 R)^2``; None uses
            ``max - min`` over both maps of each example (Quantus' convention).
        use_sample_covariance: Scale covariances by ``NP / (NP - 1)`` (scikit-image default).
        sigma: Gaussian window sigma.
        k1: SSIM constant K1.
        k2: SSIM constant K2.

    Returns:
        SSIM per example, float64, shape (N,).
    """
    if x.shape != y.shape:
        raise ValueError(
            f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    if x.dim() == 3:
        x, y = x.unsqueeze(1), y.unsqueeze(1)
    n, c, h, w = x.shape
    x = x.to(torch.float64).reshape(n * c, h, w)
    y = y.to(torch.float64).reshape(n * c, h, w)
    radius = int(3.5 * sigma + 0.5)
    win = 2 * radius + 1
    if min(h, w) >= win:
        t = torch.arange(-radius, radius + 1, device=x.device, dtype=torch.float64)
        kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    else:
        win = min(h, w) if min(h, w) % 2 == 1 else min(h, w) - 1
        if win < 3:
            raise ValueError(f"SSIM needs maps of at least 3 x 3 pixels, got {h} x {w}")
        kernel = torch.ones(win, device=x.device, dtype=torch.float64)
    kernel = kernel / kernel.sum()
    cov_norm = win * win / (win * win - 1) if use_sample_covariance else 1.0
    ux, uy = _filter(x, kernel), _filter(y, kernel)
    vx = cov_norm * (_filter(x * x, kernel) - ux * ux)
    vy = cov_norm * (_filter(y * y, kernel) - uy * uy)
    vxy = cov_norm * (_filter(x * y, kernel) - ux * uy)
    if data_range is None:
        both = torch.cat([x.reshape(n, -1), y.reshape(n, -1)], 1)
        rng = (both.max(1).values - both.min(1).values).repeat_interleave(c).view(-1, 1, 1)
    else:
        rng = torch.full((n * c, 1, 1), float(data_range), dtype=torch.float64, device=x.device)
    c1, c2 = (k1 * rng) ** 2, (k2 * rng) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    pad = (win - 1) // 2
    s = s[:, pad : h - pad, pad : w - pad]
    return s.reshape(n, c, -1).mean(2).mean(1)


def default_pixels_per_cell(height: int, width: int) -> tuple[int, int]:
    """``(max(2, H // 8), max(2, W // 8))`` (Adebayo et al. used 16 px at 299 px)."""
    return max(2, height // 8), max(2, width // 8)


def hog(
    maps: Tensor,
    orientations: int = 9,
    pixels_per_cell: tuple[int, int] | None = None,
    cells_per_block: tuple[int, int] = (3, 3),
) -> Tensor:
    """HOG features of (N, H, W) maps, as ``skimage.feature.hog(..., block_norm="L2-Hys")``.

    Central-difference gradients (zero on the border), unsigned orientations hard-binned into
    ``orientations`` bins over [0, 180), per-cell magnitude sums divided by the cell area,
    overlapping blocks of ``cells_per_block`` cells normalised with L2-Hys (clip at 0.2).

    Args:
        maps: Maps (N, H, W).
        orientations: Number of orientation bins.
        pixels_per_cell: Cell size; None means :func:`default_pixels_per_cell`.
        cells_per_block: Block size in cells.

    Returns:
        Features (N, F), float64, in scikit-image's order.
    """
    n, h, w = maps.shape
    cr, cc = pixels_per_cell or default_pixels_per_cell(h, w)
    br, bc = cells_per_block
    ncr, ncc = h // cr, w // cc
    if ncr < br or ncc < bc:
        raise ValueError(
            f"maps of {h} x {w} pixels are too small for HOG blocks of {br} x {bc} cells of "
            f"{cr} x {cc} pixels"
        )
    m = maps.to(torch.float64)
    g_row = torch.zeros_like(m)
    g_col = torch.zeros_like(m)
    g_row[:, 1:-1, :] = m[:, 2:, :] - m[:, :-2, :]
    g_col[:, :, 1:-1] = m[:, :, 2:] - m[:, :, :-2]
    magnitude = torch.hypot(g_row, g_col)
    angle = torch.rad2deg(torch.atan2(g_row, g_col)) % 180
    edges = torch.arange(1, orientations + 1, dtype=torch.float64, device=m.device)
    edges = edges * (180.0 / orientations)
    # bin i holds [edge_{i-1}, edge_i); an angle rounded to 180 falls in no bin (as skimage)
    bins = (angle.unsqueeze(-1) >= edges).sum(-1)
    votes = F.one_hot(bins, orientations + 1)[..., :orientations] * magnitude.unsqueeze(-1)
    votes = votes[:, : ncr * cr, : ncc * cc]
    hist = votes.reshape(n, ncr, cr, ncc, cc, orientations).sum(dim=(2, 4)) / (cr * cc)
    blocks = hist.unfold(1, br, 1).unfold(2, bc, 1)  # (n, nbr, nbc, O, br, bc)
    blocks = blocks.permute(0, 1, 2, 4, 5, 3)
    flat = blocks.reshape(*blocks.shape[:3], -1)
    eps2 = 1e-10
    out = flat / torch.sqrt(flat.pow(2).sum(-1, keepdim=True) + eps2)
    out = out.clamp(max=0.2)
    out = out / torch.sqrt(out.pow(2).sum(-1, keepdim=True) + eps2)
    return out.reshape(n, -1)


__all__ = [
    "default_pixels_per_cell",
    "hog",
    "normalize_01",
    "normalize_abs",
    "normalize_diverging",
    "ssim",
]
