"""Small seeded networks shared by the importance-landscape, PILCRO and CAFO/CASO tests."""

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


#: Input size and classes of :func:`tiny_relu`.
D, C = 6, 4


def tiny_relu(seed: int = 0) -> nn.Module:
    """A float64 ReLU MLP ``(N, D) -> (N, C)`` in eval mode, seeded weights, global RNG untouched.

    Piecewise linear, so the closed-form ``J^T A J`` Hessian of CASO is exact.
    """
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return (
            nn.Sequential(nn.Linear(D, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, C))
            .double()
            .eval()
        )


def tiny_batch(n: int = 5, seed: int = 1) -> torch.Tensor:
    """``n`` float64 standard-normal inputs for :func:`tiny_relu`."""
    return torch.randn(n, D, generator=generator(seed), dtype=torch.float64)


def bn_dropout_net(seed: int = 0, p_drop: float = 0.0, classes: int = 3) -> nn.Module:
    """A conv net with BatchNorm and Dropout for ``(N, 2, 6, 6)`` images, in eval mode.

    The running statistics are non-trivial, so train-mode batch statistics differ from them and
    a call that runs the model in train mode changes the result and the buffers. The global RNG
    is left as it was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = nn.Sequential(
            nn.Conv2d(2, 4, 3, padding=1),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.Dropout(p_drop),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
            nn.Linear(16, classes),
        )
        model[1].running_mean.uniform_(-0.5, 0.5)
        model[1].running_var.uniform_(0.5, 2.0)
    return model.eval()


class Raising(nn.Module):
    """Wraps a model and raises ``RuntimeError("boom")`` on every call after ``fail_after``."""

    def __init__(self, inner: nn.Module, fail_after: int) -> None:
        super().__init__()
        self.inner, self.calls, self.fail_after = inner, 0, fail_after

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls > self.fail_after:
            raise RuntimeError("boom")
        return self.inner(x)
