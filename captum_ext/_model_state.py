"""Running a user's model without changing it: eval mode with every module's flag restored.

Every captum-ext entry point that evaluates a model (the attribution methods, the metrics, the
dataset runner, PILCRO's landscape code) runs it in eval mode (batch norm then uses, and never
updates, its running statistics; dropout is off and draws nothing from the global RNG), whatever
mode the user left it in, and puts each module's own ``training`` flag back afterwards, also
when the body raises.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from torch import nn


def modules_of(*funcs: Any) -> list[nn.Module]:
    """The modules behind each of ``funcs``, without repeats.

    Each may be a module, a bound method of a module, a Captum attribution object (its
    ``forward_func``), a bound method of one (``ig.attribute``) or a ``functools.partial`` of
    any of these. Other callables (lambdas, plain functions) give nothing: their modules
    cannot be found.
    """
    seen: dict[int, nn.Module] = {}
    for func in funcs:
        owner = _owner(func, depth=0)
        if owner is not None:
            for m in owner.modules():
                seen.setdefault(id(m), m)
    return list(seen.values())


def _owner(func: Any, depth: int) -> nn.Module | None:
    if isinstance(func, nn.Module):
        return func
    if depth > 4 or func is None:
        return None
    if isinstance(func, functools.partial):
        return _owner(func.func, depth + 1)
    bound = getattr(func, "__self__", None)
    if bound is not None:
        return _owner(bound, depth + 1)
    inner = getattr(func, "forward_func", None)
    return None if inner is None else _owner(inner, depth + 1)


@contextmanager
def eval_mode(*funcs: Any) -> Iterator[None]:
    """Every module behind ``funcs`` (see :func:`modules_of`) in eval mode inside the block.

    The per-module ``training`` flags are restored on exit, also when the body raises, so a
    mixed-mode model keeps its mix. Callables whose modules cannot be found are left alone.
    """
    flags = [(m, m.training) for m in modules_of(*funcs)]
    try:
        for m, _ in flags:
            m.training = False
        yield
    finally:
        for m, flag in flags:
            m.training = flag
