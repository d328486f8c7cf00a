"""How the ``captum-ext report`` command builds and calls a method: :class:`MethodSpec`.

A spec holds a name, a constructor taking the model, and the keyword arguments of ``attribute``
for each preset (with lighter ones for ``--quick``). The report's methods are the explicit list
:data:`captum_ext.report.methods.METHODS`; adding a method to the report is one entry there.

Presets (:data:`PRESETS`): ``"fast"`` sizes a method for 224 x 224 images on a CPU and
``"paper"`` uses its paper's settings. Each spec says in ``notes`` what a preset changes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Callable, Union

import torch
from torch import nn

#: The presets every method defines (``--preset``); the first is the default.
PRESETS: tuple[str, ...] = ("fast", "paper")

#: ``attribute`` keyword arguments: a dict, or ``f(inputs, n_classes) -> dict`` for options that
#: depend on the batch's shape or the number of classes.
KwargsArg = Union[dict, Callable[[torch.Tensor, int], dict]]


@dataclass(frozen=True)
class MethodSpec:
    """How the report builds and calls one attribution method.

    Attributes:
        name: Unique name shown in the report and accepted by ``--methods``.
        build: ``build(model) -> attribution object`` with an ``attribute`` method. ``model``
            returns logits.
        kwargs: Keyword arguments of ``attribute`` (besides ``inputs`` and ``target``) shared by
            every preset (see :data:`KwargsArg`).
        presets: Per preset name (:data:`PRESETS`), keyword arguments on top of ``kwargs``.
        quick_kwargs: Overrides applied last under ``--quick`` (tests and demos).
        notes: Per preset, one sentence saying what it changes and why (shown in the report).
        seeded: Pass ``generator=`` (a ``torch.Generator`` seeded by the report) to ``attribute``.
        reference: Paper reference shown in the report.
    """

    name: str
    build: Callable[[nn.Module], Any]
    kwargs: KwargsArg = field(default_factory=dict)
    presets: dict[str, KwargsArg] = field(default_factory=dict)
    quick_kwargs: KwargsArg = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    seeded: bool = False
    reference: str = ""

    def run(
        self,
        model: nn.Module,
        inputs: torch.Tensor,
        target: torch.Tensor,
        quick: bool = False,
        seed: int = 0,
        *,
        preset: str = PRESETS[0],
        n_classes: int | None = None,
    ) -> torch.Tensor:
        """Attributions of ``inputs`` for ``target`` (same shape as ``inputs``, detached).

        Methods that draw from the global RNG (e.g. ``NoiseTunnel``) run inside
        ``torch.random.fork_rng`` seeded with ``seed``, so reports are reproducible and the
        caller's RNG state is untouched. ``n_classes`` defaults to the model's output size.
        """
        if n_classes is None:
            with torch.no_grad():
                n_classes = int(model(inputs[:1]).shape[-1])
        kwargs = resolve_kwargs(self, inputs, quick, preset=preset, n_classes=n_classes)
        if self.seeded:
            kwargs["generator"] = torch.Generator(device=inputs.device).manual_seed(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            attr = self.build(model).attribute(inputs, target=target, **kwargs)
        return attr.detach()


def resolve_kwargs(
    spec: MethodSpec,
    inputs: torch.Tensor,
    quick: bool = False,
    *,
    preset: str = PRESETS[0],
    n_classes: int = 2,
) -> dict:
    """The ``attribute`` keyword arguments of ``spec`` for a batch like ``inputs``.

    Raises:
        ValueError: ``preset`` is not one of :data:`PRESETS`.
    """
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    return {
        **_resolve(spec.kwargs, inputs, n_classes),
        **_resolve(spec.presets.get(preset, {}), inputs, n_classes),
        **(_resolve(spec.quick_kwargs, inputs, n_classes) if quick else {}),
    }


def _resolve(kwargs: KwargsArg, inputs: torch.Tensor, n_classes: int) -> dict:
    return dict(kwargs(inputs, n_classes) if callable(kwargs) else kwargs)


def by_name(specs: Iterable[MethodSpec]) -> dict[str, MethodSpec]:
    """``specs`` by name, in their order (names must be unique; presets must be known).

    Raises:
        ValueError: Two specs share a name, or a spec defines a preset not in :data:`PRESETS`.
    """
    methods: dict[str, MethodSpec] = {}
    for spec in specs:
        if spec.name in methods:
            raise ValueError(f"a method named {spec.name!r} is listed twice")
        unknown = set(spec.presets) - set(PRESETS)
        if unknown:
            raise ValueError(f"{spec.name}: unknown presets {sorted(unknown)}; known: {PRESETS}")
        methods[spec.name] = spec
    return methods
