"""Localisation against ground-truth masks: pointing game and energy-based pointing game.

- Pointing game (Zhang et al. 2016, "Top-down Neural Attention by Excitation Backprop"; TorchRay's
  implementation): a hit when the maximum of the signed map ``sum_c A`` lies inside the mask.
  With ``tolerance`` (pixels, TorchRay used 15 at full resolution), a hit when any mask pixel
  lies within that Euclidean radius. Ties at the maximum go to the first position in row-major
  order (TorchRay's ``argmax``) or, with ``ties="mean"``, count as the share of tied maxima that
  hit: the expected score under a uniformly random choice among them. Block-constant maps
  (Occlusion, LEG's grid cells, LEG-TV's plateaus) have such ties; under the row-major rule
  their score depends on where the block's top-left corner falls, so it changes when the image
  is flipped.
- Energy-based pointing game (Wang et al. 2020, "Score-CAM"): the share of positive mass inside
  the mask, ``sum_{p in mask} s+_p / sum_p s+_p`` with ``s+ = max(sum_c A, 0)``.

Both return per-example values of shape (N,). The embedded ``SyntheticShapes`` benchmark provides
exact object masks.
"""

from __future__ import annotations

import math
import warnings
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from captum_ext._compat import log_usage
from captum_ext.metrics._maps import as_tensor, reduce_map


def _maps_and_masks(attributions: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
    smap = reduce_map(attributions, "sum")
    as_tensor("masks", masks)
    if masks.dim() == 4 and masks.shape[1] == 1:
        masks = masks[:, 0]
    if masks.shape != smap.shape:
        raise ValueError(
            f"masks must have shape (N, H, W) = {tuple(smap.shape)} (or (N, 1, H, W)) to match "
            f"the attributions, got {tuple(masks.shape)}"
        )
    if masks.dtype != torch.bool:
        if not bool(((masks == 0) | (masks == 1)).all()):
            raise ValueError("masks must be boolean or hold only 0 and 1")
        masks = masks.bool()
    return smap, masks.to(smap.device)


def _dilate(masks: Tensor, radius: float) -> Tensor:
    """Pixels within Euclidean distance ``radius`` of a mask pixel (the mask dilated by a disk)."""
    r = int(math.floor(radius))
    if r == 0:
        return masks
    offs = torch.arange(-r, r + 1, device=masks.device, dtype=torch.float64)
    disk = (offs.view(-1, 1) ** 2 + offs.view(1, -1) ** 2) <= float(radius) ** 2
    kernel = disk.to(torch.float32)[None, None]
    hits = F.conv2d(masks[:, None].to(torch.float32), kernel, padding=r)[:, 0]
    return hits > 0.5


@log_usage()
def pointing_game(
    attributions: Tensor,
    masks: Tensor,
    tolerance: float = 0.0,
    ties: Literal["first", "mean"] = "first",
) -> Tensor:
    """Pointing game: is the maximum of the signed map ``sum_c A`` inside the mask?

    Args:
        attributions: Attributions (N, C, H, W) or maps (N, H, W).
        masks: Ground-truth masks (N, H, W) or (N, 1, H, W), boolean or 0/1.
        tolerance: Radius in pixels; a hit when a mask pixel lies within this Euclidean
            distance of the maximum (0: the maximum itself must be inside).
        ties: Positions where the map equals its maximum exactly: ``"first"`` scores the first
            in row-major order (TorchRay's rule); ``"mean"`` scores the share of them that hit,
            the expected hit when one is picked uniformly at random. Only ``"mean"`` is
            unchanged when map and mask are flipped or transposed together.

    Returns:
        Hits as floats, shape (N,): 1.0 or 0.0 with ``ties="first"``, in [0, 1] with
        ``ties="mean"``.

    Examples:
        >>> attr = torch.zeros(1, 3, 4, 4)
        >>> attr[0, :, 1, 2] = 1.0
        >>> mask = torch.zeros(1, 4, 4, dtype=torch.bool)
        >>> mask[0, 1, 2] = True
        >>> pointing_game(attr, mask)
        tensor([1.])
        >>> attr[0, :, 3, 3] = 1.0  # a second maximum, outside the mask
        >>> pointing_game(attr, mask, ties="mean")
        tensor([0.5000])
    """
    smap, masks = _maps_and_masks(attributions, masks)
    if (
        isinstance(tolerance, bool)
        or not isinstance(tolerance, (int, float))
        or not (math.isfinite(tolerance) and tolerance >= 0)
    ):
        raise ValueError(f"tolerance must be a finite number >= 0 (pixels), got {tolerance!r}")
    if ties not in ("first", "mean"):
        raise ValueError(f"ties must be 'first' or 'mean', got {ties!r}")
    n = smap.shape[0]
    flat = smap.reshape(n, -1)
    hit = _dilate(masks, float(tolerance)).reshape(n, -1)
    if ties == "first":
        # argmax returns the first maximal index in row-major order
        first = flat.argmax(1)
        return hit[torch.arange(n, device=smap.device), first].to(smap.dtype)
    top = flat == flat.amax(1, keepdim=True)
    return ((top & hit).sum(1).to(smap.dtype)) / top.sum(1).to(smap.dtype)


@log_usage()
def energy_pointing_game(attributions: Tensor, masks: Tensor) -> Tensor:
    """Energy-based pointing game (Score-CAM): share of positive mass inside the mask.

    Args:
        attributions: Attributions (N, C, H, W) or maps (N, H, W); ``s+ = max(sum_c A, 0)``.
        masks: Ground-truth masks (N, H, W) or (N, 1, H, W), boolean or 0/1.

    Returns:
        ``sum_{p in mask} s+_p / sum_p s+_p`` per example, shape (N,), in [0, 1]. A map without
        positive mass scores 0 (with a warning).

    Examples:
        >>> attr = torch.tensor([[[1.0, 3.0], [-2.0, 0.0]]])
        >>> mask = torch.tensor([[[False, True], [True, True]]])
        >>> energy_pointing_game(attr, mask)
        tensor([0.7500])
    """
    smap, masks = _maps_and_masks(attributions, masks)
    pos = smap.clamp(min=0)
    total = pos.sum(dim=(1, 2))
    inside = (pos * masks).sum(dim=(1, 2))
    empty = total == 0
    if bool(empty.any()):
        warnings.warn(
            f"{int(empty.sum())} map(s) have no positive mass; their energy is set to 0",
            RuntimeWarning,
            stacklevel=2,
        )
    return torch.where(empty, torch.zeros_like(total), inside / torch.where(empty, 1.0, total))


__all__ = ["energy_pointing_game", "pointing_game"]
