"""``SyntheticShapes``: an embedded image benchmark with exact ground-truth object masks.

Every image shows one object whose *shape* is the class (square, disc, triangle, cross, ring,
bar) at a random position, scale, rotation and colour, on a textured background with
label-free clutter (thin line segments and dots in random colours). The object is painted
opaquely last, so the image differs from the same scene rendered without the object exactly
inside the returned mask.

Randomness is keyed by ``(seed, split, index)`` through :class:`numpy.random.SeedSequence`, so
an item never depends on which other items were rendered, on the order of access or on the
global RNG. The scene (label, object, clutter, pixel noise) and the background texture use
separate streams: changing ``domain`` re-styles the background only, and labels and masks stay
identical, which makes a domain-shift evaluation possible.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

#: The class names, in label order (label ``i`` is ``CLASSES[i]``).
CLASSES: tuple[str, ...] = ("square", "disc", "triangle", "cross", "ring", "bar")
#: The background styles (``domain=``); changing it keeps labels, objects and masks.
DOMAINS: tuple[str, ...] = ("blobs", "stripes")
PLACEMENTS: tuple[str, ...] = ("uniform", "off_center")
_SPLITS = {"train": 0, "test": 1}
_SCENE_STREAM, _BACKGROUND_STREAM = 0, 1


def _shape_mask(label: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Membership of the unit-scale shape ``label`` at object coordinates ``(u, v)``."""
    name = CLASSES[label]
    if name == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.8
    if name == "disc":
        return u * u + v * v <= 0.9**2
    if name == "triangle":
        return (v >= -0.5) & (v <= 1.0 - math.sqrt(3.0) * np.abs(u))
    if name == "cross":
        arm_u = (np.abs(u) <= 0.3) & (np.abs(v) <= 1.0)
        arm_v = (np.abs(v) <= 0.3) & (np.abs(u) <= 1.0)
        return arm_u | arm_v
    if name == "ring":
        r2 = u * u + v * v
        return (r2 <= 1.0) & (r2 >= 0.55**2)
    if name == "bar":
        return (np.abs(u) <= 1.0) & (np.abs(v) <= 0.25)
    raise AssertionError(f"unknown class {label}")


def _fold_outwards(t: float) -> float:
    """Map ``t`` in [0, 1] to [0, 1/4) or [3/4, 1]; a uniform ``t`` stays uniform there."""
    return 0.5 * t if t < 0.5 else 0.5 + 0.5 * t


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    """Convert one HSV colour (all in [0, 1]) to an RGB array of shape (3,)."""
    i = int(h * 6.0) % 6
    f = h * 6.0 - math.floor(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i])


def _segment_distance(xx: np.ndarray, yy: np.ndarray, p0: np.ndarray, p1: np.ndarray) -> np.ndarray:
    """Euclidean distance from every pixel centre to the segment ``p0``-``p1``."""
    d = p1 - p0
    t = ((xx - p0[0]) * d[0] + (yy - p0[1]) * d[1]) / max(float(d @ d), 1e-12)
    t = np.clip(t, 0.0, 1.0)
    return np.hypot(xx - (p0[0] + t * d[0]), yy - (p0[1] + t * d[1]))


def _upsample(grid: np.ndarray, size: int) -> np.ndarray:
    """Bilinearly upsample a (C, h, w) array to (C, size, size)."""
    t = torch.from_numpy(grid[None]).float()
    out = torch.nn.functional.interpolate(
        t, size=(size, size), mode="bilinear", align_corners=False
    )
    return out[0].numpy().astype(np.float64)


class SyntheticShapes(Dataset):
    """Shapes on textured, cluttered backgrounds, with exact object masks.

    Args:
        n: Number of items.
        size: Side length in pixels (8 to 224). Default: 32.
        seed: Base seed; items are a deterministic function of ``(seed, split, index)``.
        split: ``"train"`` or ``"test"``: disjoint random streams for the same seed.
        domain: Background style, one of :data:`DOMAINS`. Labels, objects and masks do not
            depend on it.
        n_clutter: Number of distractor strokes and dots per image (label-free).
        placement: Where object centres lie, one of :data:`PLACEMENTS`. ``"uniform"``
            (default): uniform over the positions that keep the object inside the image.
            ``"off_center"``: each centre coordinate is pushed into the outer quarter of its
            range on either side (the fold ``t -> t/2`` or ``1/2 + t/2`` of the same uniform
            draw, which stays uniform there), so objects sit near the corners, never centred.
            Nothing else changes: labels, shapes, colours, clutter and backgrounds are the
            same item for item, and no extra random numbers are drawn.

    Each item is ``(image, label, mask)``: a float32 tensor ``(3, size, size)`` in [0, 1], an
    int label indexing :data:`CLASSES`, and a bool tensor ``(size, size)`` that is True exactly
    on the object.

    Examples:
        >>> ds = SyntheticShapes(n=100, size=32, domain="blobs")
        >>> image, label, mask = ds[0]
        >>> image.shape, CLASSES[label], int(mask.sum()) > 0
        (torch.Size([3, 32, 32]), 'square', True)
    """

    classes = CLASSES
    num_classes = len(CLASSES)
    in_channels = 3
    has_masks = True

    def __init__(
        self,
        n: int = 6000,
        size: int = 32,
        seed: int = 0,
        split: str = "train",
        domain: str = "blobs",
        n_clutter: int = 6,
        placement: str = "uniform",
    ) -> None:
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}")
        if not isinstance(size, int) or not 8 <= size <= 224:
            raise ValueError(f"size must be an int in [8, 224], got {size!r}")
        if split not in _SPLITS:
            raise ValueError(f"split must be one of {sorted(_SPLITS)}, got {split!r}")
        if domain not in DOMAINS:
            raise ValueError(f"domain must be one of {DOMAINS}, got {domain!r}")
        if not isinstance(n_clutter, int) or n_clutter < 0:
            raise ValueError(f"n_clutter must be a non-negative int, got {n_clutter!r}")
        if placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {PLACEMENTS}, got {placement!r}")
        self.n, self.size, self.seed = n, size, seed
        self.placement = placement
        self.split, self.domain, self.n_clutter = split, domain, n_clutter
        coords = np.arange(size, dtype=np.float64) + 0.5
        self._xx, self._yy = np.meshgrid(coords, coords)  # x: column, y: row

    def __len__(self) -> int:
        return self.n

    def _rng(self, index: int, stream: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, _SPLITS[self.split], index, stream])

    def label(self, index: int) -> int:
        """The class of item ``index`` (balanced: ``index % num_classes``)."""
        return index % self.num_classes

    def render(self, index: int, draw_object: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Render item ``index`` as float64 arrays ``(image (3, S, S), mask (S, S))``.

        With ``draw_object=False`` the same scene is rendered without the object (the mask is
        still returned), which is how the mask's exactness is tested.
        """
        if not 0 <= index < self.n:
            raise IndexError(f"index {index} out of range for {self.n} items")
        s = self.size
        scene = self._rng(index, _SCENE_STREAM)
        label = self.label(index)
        # Object geometry and colour (drawn first, so the stream layout is fixed).
        radius = scene.uniform(0.2, 0.3) * s
        cx, cy = scene.uniform(radius + 1.0, s - radius - 1.0, size=2)
        if self.placement == "off_center":
            lo, span = radius + 1.0, s - 2.0 * radius - 2.0
            cx, cy = (lo + span * _fold_outwards((c - lo) / span) for c in (cx, cy))
        theta = scene.uniform(0.0, 2.0 * math.pi)
        obj_colour = _hsv_to_rgb(scene.uniform(), scene.uniform(0.55, 1.0), scene.uniform(0.7, 1.0))
        shade_dir = scene.normal(size=2)
        # Clutter: strokes and dots whose colours are drawn from the same law as the object's.
        strokes = []
        for _ in range(self.n_clutter):
            kind = scene.integers(2)
            colour = _hsv_to_rgb(scene.uniform(), scene.uniform(0.3, 1.0), scene.uniform(0.4, 1.0))
            p0 = scene.uniform(0, s, size=2)
            p1 = p0 + scene.normal(scale=0.25 * s, size=2)
            width = scene.uniform(0.35, 0.6) * s / 32.0 if kind == 0 else 0.0
            dot_r = scene.uniform(0.6, 1.3) * s / 32.0
            strokes.append((kind, colour, p0, p1, width, dot_r))
        noise = scene.normal(scale=0.02, size=(3, s, s))

        image = self._background(index)
        xx, yy = self._xx, self._yy
        for kind, colour, p0, p1, width, dot_r in strokes:
            if kind == 0:
                hit = _segment_distance(xx, yy, p0, p1) <= width
            else:
                hit = np.hypot(xx - p0[0], yy - p0[1]) <= dot_r
            image[:, hit] = colour[:, None]
        c, sn = math.cos(theta), math.sin(theta)
        dx, dy = (xx - cx) / radius, (yy - cy) / radius
        u, v = c * dx + sn * dy, -sn * dx + c * dy
        mask = _shape_mask(label, u, v)
        if draw_object:
            shade = (
                0.12 * (shade_dir[0] * u + shade_dir[1] * v) / (np.linalg.norm(shade_dir) + 1e-12)
            )
            obj = np.clip(obj_colour[:, None, None] + shade[None], 0.0, 1.0)
            image = np.where(mask[None], obj, image)
        image = np.clip(image + noise, 0.0, 1.0)
        return image, mask

    def _background(self, index: int) -> np.ndarray:
        """Domain-specific background texture of item ``index``: float64 (3, S, S)."""
        s = self.size
        bg = self._rng(index, _BACKGROUND_STREAM)
        if self.domain == "blobs":
            base = _hsv_to_rgb(bg.uniform(), bg.uniform(0.0, 0.35), bg.uniform(0.25, 0.55))
            blobs = _upsample(bg.normal(scale=0.12, size=(3, 4, 4)), s)
            grain = _upsample(bg.normal(scale=0.05, size=(3, s // 2, s // 2)), s)
            return np.clip(base[:, None, None] + blobs + grain, 0.0, 1.0)
        # "stripes": two-colour oriented stripes with a checker modulation.
        col_a = _hsv_to_rgb(bg.uniform(), bg.uniform(0.2, 0.6), bg.uniform(0.15, 0.45))
        col_b = _hsv_to_rgb(bg.uniform(), bg.uniform(0.2, 0.6), bg.uniform(0.45, 0.75))
        freq, phi, phase = bg.uniform(3.0, 7.0), bg.uniform(0, math.pi), bg.uniform(0, 2 * math.pi)
        proj = (self._xx * math.cos(phi) + self._yy * math.sin(phi)) / s
        wave = 0.5 + 0.5 * np.sin(2 * math.pi * freq * proj + phase)
        checker = ((self._xx // max(s // 8, 1) + self._yy // max(s // 8, 1)) % 2) * 0.08
        mix = np.clip(wave + checker, 0.0, 1.0)
        return col_a[:, None, None] * (1 - mix) + col_b[:, None, None] * mix

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, torch.Tensor]:
        if index < 0:
            index += self.n
        image, mask = self.render(index)
        return torch.from_numpy(image).float(), self.label(index), torch.from_numpy(mask)

    def tensors(
        self, indices: Sequence[int] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Render several items at once as stacked ``(images, labels, masks)`` tensors."""
        idx = range(self.n) if indices is None else indices
        items = [self[i] for i in idx]
        if not items:
            raise ValueError("indices must select at least one item")
        images = torch.stack([it[0] for it in items])
        labels = torch.tensor([it[1] for it in items], dtype=torch.long)
        masks = torch.stack([it[2] for it in items])
        return images, labels, masks
