"""Small seeded networks shared by the importance-landscape and PILCRO tests."""

from __future__ import annotations

import torch
from torch import nn


def generator(seed: int = 0) -> torch.Generator:
    """A CPU generator seeded with ``seed``."""
    return torch.Generator().manual_seed(seed)


def tanh_net(c_in: int = 2, classes: int = 4, seed: int = 0) -> nn.Module:
    """Two 3x3 tanh convs and a linear head for ``(N, c_in, 7, 8)`` inputs, seeded weights.

    Smooth (tanh) so that input gradients and their derivatives are well defined everywhere; the
    global RNG is left as it was.
    """
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nn.Sequential(
            nn.Conv2d(c_in, 4, 3, padding=1),
            nn.Tanh(),
            nn.Conv2d(4, 3, 3),
            nn.Tanh(),
            nn.Flatten(),
            nn.Linear(3 * 5 * 6, classes),
        )
