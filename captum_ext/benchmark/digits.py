"""``Digits``: scikit-learn's bundled handwritten digits, upsampled to 28x28.

Real data that ships inside scikit-learn (1,797 images of 8x8 pixels, 10 classes), so nothing is
downloaded. Images are scaled to [0, 1] and bilinearly upsampled; the split is a fixed
seed-permuted 80/20 split. There are no ground-truth masks.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

_TEST_FRACTION = 0.2


def _load_digits() -> tuple[torch.Tensor, torch.Tensor]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("Digits needs scikit-learn: pip install 'captum-ext[report]'") from err
    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32) / 16.0
    return images, torch.tensor(data.target, dtype=torch.long)


class Digits(Dataset):
    """Handwritten digits (scikit-learn's UCI copy) as ``(1, size, size)`` float images.

    Args:
        split: ``"train"`` (80 %) or ``"test"`` (20 %) of a permutation fixed by ``seed``.
        size: Output side length (8 to 224); 28 by default, like MNIST.
        seed: Seed of the train/test permutation.

    Each item is ``(image, label)``.

    Examples:
        >>> ds = Digits(split="test")
        >>> image, label = ds[0]
        >>> image.shape
        torch.Size([1, 28, 28])
    """

    num_classes = 10
    in_channels = 1
    has_masks = False
    classes = tuple(str(i) for i in range(10))

    def __init__(self, split: str = "train", size: int = 28, seed: int = 0) -> None:
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if not isinstance(size, int) or not 8 <= size <= 224:
            raise ValueError(f"size must be an int in [8, 224], got {size!r}")
        images, labels = _load_digits()
        perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
        n_test = int(round(_TEST_FRACTION * len(labels)))
        idx = perm[:n_test] if split == "test" else perm[n_test:]
        up = torch.nn.functional.interpolate(
            images[idx, None], size=(size, size), mode="bilinear", align_corners=False
        )
        self.images = up.clamp(0.0, 1.0).contiguous()
        self.labels = labels[idx]
        self.split, self.size, self.seed = split, size, seed

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All ``(images, labels)`` as stacked tensors."""
        return self.images, self.labels
