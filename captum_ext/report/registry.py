"""The method registry of the ``captum-ext report`` command.

Adding a method to the report is one :func:`register` call in
:mod:`captum_ext.report.methods`: a name, a constructor taking the model, and the keyword
arguments of ``attribute`` (with lighter ones for ``--quick``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn


@dataclass(frozen=True)
class MethodSpec:
    """How the report builds and calls one attribution method.

    Attributes:
        name: Unique name shown in the report and accepted by ``--methods``.
        build: ``build(model) -> attribution object`` with an ``attribute`` method. ``model``
            returns logits.
        kwargs: Keyword arguments of ``attribute`` (besides ``inputs`` and ``target``), or a
            function of the input batch returning them (for shape-dependent options).
        quick_kwargs: Overrides of ``kwargs`` under ``--quick`` (a dict or such a function).
        seeded: Pass ``generator=`` (a ``torch.Generator`` seeded by the report) to ``attribute``.
        reference: Paper reference shown in the report.
    """

    name: str
    build: Callable[[nn.Module], Any]
    kwargs: dict | Callable[[torch.Tensor], dict] = field(default_factory=dict)
    quick_kwargs: dict | Callable[[torch.Tensor], dict] = field(default_factory=dict)
    seeded: bool = False
    reference: str = ""

    def run(
        self,
        model: nn.Module,
        inputs: torch.Tensor,
        target: torch.Tensor,
        quick: bool,
        seed: int = 0,
    ) -> torch.Tensor:
        """Attributions of ``inputs`` for ``target`` (same shape as ``inputs``, detached).

        Methods that draw from the global RNG (e.g. ``NoiseTunnel``) run inside
        ``torch.random.fork_rng`` seeded with ``seed``, so reports are reproducible and the
        caller's RNG state is untouched.
        """
        kwargs = resolve_kwargs(self, inputs, quick)
        if self.seeded:
            kwargs["generator"] = torch.Generator(device=inputs.device).manual_seed(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            attr = self.build(model).attribute(inputs, target=target, **kwargs)
        return attr.detach()


def resolve_kwargs(spec: MethodSpec, inputs: torch.Tensor, quick: bool) -> dict:
    """The ``attribute`` keyword arguments of ``spec`` for a batch like ``inputs``."""
    return {
        **_resolve(spec.kwargs, inputs),
        **(_resolve(spec.quick_kwargs, inputs) if quick else {}),
    }


def _resolve(kwargs: dict | Callable[[torch.Tensor], dict], inputs: torch.Tensor) -> dict:
    return dict(kwargs(inputs) if callable(kwargs) else kwargs)


#: Filled by :mod:`captum_ext.report.methods`; use :func:`available_methods` to read it.
METHODS: dict[str, MethodSpec] = {}


def available_methods() -> dict[str, MethodSpec]:
    """All registered methods by name (imports :mod:`captum_ext.report.methods` on first use)."""
    from captum_ext.report import methods  # noqa: F401 - registering happens at import

    return METHODS


def register(spec: MethodSpec) -> MethodSpec:
    """Add ``spec`` to :data:`METHODS` (names must be unique)."""
    if spec.name in METHODS:
        raise ValueError(f"a method named {spec.name!r} is already registered")
    METHODS[spec.name] = spec
    return spec
