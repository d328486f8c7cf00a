"""Running a user's model without changing it: eval mode with every module's flag restored.

CAFO/CASO, RelEx and PILCRO's landscape code evaluate the model in eval mode (batch norm then
uses, and never updates, its running statistics; dropout is off), whatever mode the user left
it in, and put each module's own ``training`` flag back afterwards, also when the body raises.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Callable

from torch import nn


def modules_of(forward_func: Callable[..., Any]) -> list[nn.Module]:
    """The modules behind ``forward_func``: a module itself or the owner of a bound method.

    Other callables (lambdas, functions) give ``[]``: their modules cannot be found.
    """
    owner = forward_func if isinstance(forward_func, nn.Module) else None
    if owner is None and isinstance(getattr(forward_func, "__self__", None), nn.Module):
        owner = forward_func.__self__  # type: ignore[attr-defined]
    return [] if owner is None else list(owner.modules())


@contextmanager
def eval_mode(forward_func: Callable[..., Any]) -> Iterator[None]:
    """Every module of ``forward_func`` (see :func:`modules_of`) in eval mode inside the block.

    The per-module ``training`` flags are restored on exit, also when the body raises, so a
    mixed-mode model keeps its mix. Callables whose modules cannot be found are left alone.
    """
    flags = [(m, m.training) for m in modules_of(forward_func)]
    try:
        for m, _ in flags:
            m.training = False
        yield
    finally:
        for m, flag in flags:
            m.training = flag
