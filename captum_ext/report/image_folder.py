"""Read the user's images for ``captum-ext report --images DIR [--labels CSV] [--masks DIR]``.

Images are PNG/JPEG files in ``DIR`` (or one sub-folder per class, as torchvision's
``ImageFolder``), resized so the shorter side is ``--size`` and centre-cropped to a square. Every
failure is a one-line :class:`ValueError` naming the flag.
"""

from __future__ import annotations

import csv
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from PIL import Image

#: Suffixes read as images and masks (any case).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
#: ``--normalize imagenet``: the channel means and standard deviations of ImageNet.
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


@dataclass(frozen=True)
class ImageSet:
    """The images of ``--images`` with their labels and masks.

    Attributes:
        images: ``(N, 3, S, S)`` float32 in [0, 1].
        names: Paths relative to the folder with ``/`` separators (``cat/001.png``), sorted.
        labels: ``(N,)`` int64 class indices; None when nothing labels the images.
        class_names: The sorted class folder names (ImageFolder layout); else None.
        masks: ``(N, S, S)`` bool object masks; None without ``--masks``.
    """

    images: torch.Tensor
    names: list[str]
    labels: torch.Tensor | None
    class_names: list[str] | None
    masks: torch.Tensor | None


def load_images(
    images: str | os.PathLike,
    *,
    size: int = 224,
    labels: str | os.PathLike | None = None,
    masks: str | os.PathLike | None = None,
    limit: int | None = None,
) -> ImageSet:
    """Read, resize and centre-crop the images of a folder, with their labels and masks.

    Args:
        images: A folder of ``.png``/``.jpg``/``.jpeg`` files, or of class sub-folders holding
            them (the class index is the folder's position in the sorted folder names). Hidden
            files and sub-folders without images are ignored.
        size: Side of the output; the shorter side is resized to it (bilinear, antialiased).
        labels: CSV of ``filename,label`` rows (optional ``filename,label`` header), one per
            image, ``filename`` as in :attr:`ImageSet.names`; not with class folders.
        masks: A folder with one binary mask per image at the same relative path and stem
            (any image suffix); foreground is > 127 in grayscale. Resized (nearest) and cropped
            like its image.
        limit: Keep the first ``limit`` images (by name), after checking ``labels``.

    Returns:
        The :class:`ImageSet`.

    Raises:
        ValueError: A flag is invalid; the message names it.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 8:
        raise ValueError(f"--size must be an integer >= 8, got {size!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"--n-images must be a positive integer, got {limit!r}")
    root = Path(images)
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise ValueError(f"--images {root} {what}")
    names, class_of, class_names = _scan(root)
    if labels is not None:
        if class_names is not None:
            raise ValueError(
                f"--labels cannot be used with the class folders of --images {root} "
                "(the folders already label the images)"
            )
        class_of = _read_labels(Path(labels), names)
    names = names[:limit]
    if masks is not None and not Path(masks).is_dir():
        raise ValueError(f"--masks {masks} is not a folder")
    mask_files = _MaskFinder(Path(masks)) if masks is not None else None
    pixels, fgs = [], []
    for name in names:
        image = _read(root / name, name, "RGB", "--images")
        x = _pixels(image).float() / 255  # exact (to_dtype multiplies by 1/255)
        pixels.append(_square(x, size).clamp(0, 1))
        if mask_files is not None:
            mask_name = mask_files.find(name)
            mask = _read(mask_files.root / mask_name, mask_name, "L", "--masks")
            if mask.size != image.size:
                raise ValueError(
                    f"--masks: mask {mask_name} is {mask.width}x{mask.height} but its image "
                    f"{name} is {image.width}x{image.height}"
                )
            fg = _pixels(mask) > 127
            if not fg.any():
                raise ValueError(f"--masks: mask {mask_name} has no foreground (values > 127)")
            fg = _square(fg.to(torch.uint8), size, nearest=True)[0] > 0
            if not fg.any():
                raise ValueError(
                    f"--masks: mask {mask_name} has no foreground in the {size}x{size} centre crop"
                )
            fgs.append(fg)
    return ImageSet(
        images=torch.stack(pixels),
        names=names,
        labels=None if class_of is None else torch.tensor(class_of[: len(names)]),
        class_names=class_names,
        masks=torch.stack(fgs) if mask_files is not None else None,
    )


def _is_image(p: Path) -> bool:
    return not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()


def _scan(root: Path) -> tuple[list[str], list[int] | None, list[str] | None]:
    """Sorted relative names, class indices and class names (None for a flat folder)."""
    top = sorted(p.name for p in root.iterdir() if _is_image(p))
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    classes = {d.name: sorted(f.name for f in d.iterdir() if _is_image(f)) for d in folders}
    classes = {k: v for k, v in classes.items() if v}
    if top and classes:
        raise ValueError(
            f"--images {root} mixes images ({top[0]}) and class folders ({next(iter(classes))}/); "
            "use one layout"
        )
    if not top and not classes:
        raise ValueError(f"--images {root} holds no PNG or JPEG images")
    if top:
        return top, None, None
    pairs = sorted((f"{c}/{f}", i) for i, c in enumerate(classes) for f in classes[c])
    return [n for n, _ in pairs], [i for _, i in pairs], list(classes)


def _read_labels(path: Path, names: list[str]) -> list[int]:
    """The class index of each of ``names`` from the CSV ``path``."""
    if not path.is_file():
        raise ValueError(f"--labels {path} does not exist")
    found: dict[str, tuple[int, int]] = {}
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            for row in reader:
                cells, line = [c.strip() for c in row], reader.line_num
                if not any(cells):
                    continue
                if not found and [c.lower() for c in cells] == ["filename", "label"]:
                    continue
                if len(cells) != 2:
                    raise ValueError(f"--labels {path} line {line}: expected filename,label")
                name, label = cells[0].replace("\\", "/"), cells[1]
                if not re.fullmatch("[0-9]+", label):
                    raise ValueError(
                        f"--labels {path} line {line}: label {label!r} is not a non-negative "
                        "integer class index"
                    )
                if name in found:
                    raise ValueError(
                        f"--labels {path} line {line}: {name} is listed twice (also line "
                        f"{found[name][1]})"
                    )
                found[name] = (int(label), line)
    except (UnicodeDecodeError, csv.Error) as e:
        raise ValueError(f"--labels {path} is not a UTF-8 CSV file ({e})") from None
    known = set(names)
    extra = [n for n in found if n not in known]
    if extra:
        raise ValueError(
            f"--labels {path} names {_n(len(extra), 'file')} that are not in --images "
            f"(first: {extra[0]})"
        )
    unlabelled = [n for n in names if n not in found]
    if unlabelled:
        raise ValueError(
            f"--labels {path} has no label for {_n(len(unlabelled), 'image')} "
            f"(first: {unlabelled[0]})"
        )
    return [found[n][0] for n in names]


class _MaskFinder:
    """Finds the mask of an image: same relative folder and stem, any image suffix."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.folders: dict[PurePosixPath, dict[str, list[str]]] = {}

    def find(self, name: str) -> str:
        rel = PurePosixPath(name)
        if rel.parent not in self.folders:
            stems: dict[str, list[str]] = {}
            folder = self.root / rel.parent
            for p in sorted(folder.iterdir()) if folder.is_dir() else []:
                if _is_image(p):
                    stems.setdefault(p.stem, []).append(str(rel.parent / p.name))
            self.folders[rel.parent] = stems
        hits = self.folders[rel.parent].get(rel.stem, [])
        if len(hits) != 1:
            which = f"several masks ({', '.join(hits)})" if hits else "no mask"
            raise ValueError(
                f"--masks {self.root} has {which} for {name} (expected {rel.with_suffix('.png')})"
            )
        return hits[0].removeprefix("./")


def _read(path: Path, name: str, mode: str, flag: str) -> Image.Image:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            return im.convert(mode)
    except (OSError, Image.DecompressionBombError) as e:
        raise ValueError(f"{flag}: cannot read {name} ({e})") from None


def _square(x: torch.Tensor, size: int, nearest: bool = False) -> torch.Tensor:
    """Resize so the shorter side is ``size`` (bilinear or nearest), then centre-crop."""
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as F

    mode = InterpolationMode.NEAREST_EXACT if nearest else InterpolationMode.BILINEAR
    x = F.resize(x, [size], interpolation=mode, antialias=not nearest)
    return F.center_crop(x, [size, size])


def _pixels(image: Image.Image) -> torch.Tensor:
    """The ``(C, H, W)`` uint8 tensor of a PIL image."""
    from torchvision.transforms.v2 import functional as F

    return F.to_image(image).as_subclass(torch.Tensor)


def _n(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def parse_normalize(spec: str) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """The channel means and standard deviations of ``--normalize``.

    Args:
        spec: ``imagenet``, ``none``, ``MEAN,STD`` (all channels) or ``M1,M2,M3,S1,S2,S3``.

    Returns:
        ``(means, stds)``, three floats each, or None for ``none``.

    Raises:
        ValueError: ``spec`` is none of these, a number is not finite or a std is <= 0.
    """
    text = str(spec).strip().lower()
    if text == "imagenet":
        return IMAGENET
    if text == "none":
        return None
    bad = ValueError(
        f"--normalize must be imagenet, none, MEAN,STD or three means and three stds, got {spec!r}"
    )
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise bad from None
    if len(values) not in (2, 6) or not all(math.isfinite(v) for v in values):
        raise bad
    mean, std = (values[:1] * 3, values[1:] * 3) if len(values) == 2 else (values[:3], values[3:])
    if min(std) <= 0:
        raise ValueError(f"--normalize: the standard deviations must be > 0, got {spec!r}")
    return tuple(mean), tuple(std)


class Normalized(nn.Module):
    """``model((x - mean) / std)``: a model taking images in [0, 1].

    Args:
        model: The wrapped model (kept as :attr:`model`, not modified).
        mean: Channel means.
        std: Channel standard deviations (> 0).
    """

    # Buffers registered in __init__; declared so that they type as tensors, not as
    # ``nn.Module.__getattr__``'s ``Tensor | Module``.
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.model = model
        mean_t = torch.as_tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1)
        std_t = torch.as_tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1)
        if mean_t.shape != std_t.shape or not bool((std_t > 0).all()):
            raise ValueError("Normalized: mean and std need the same length and std > 0")
        self.register_buffer("mean", mean_t, persistent=False)
        self.register_buffer("std", std_t, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The wrapped model's output on the normalised ``x``."""
        return self.model((x - self.mean) / self.std)
