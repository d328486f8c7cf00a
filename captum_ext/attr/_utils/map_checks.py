"""Checks on finished attribution maps: warn instead of returning a silently useless map.

Every captum-ext method calls :func:`warn_if_degenerate` once per ``attribute`` call on its
output. A map is *blank* when an example's attributions are exactly zero, or so small relative
to the input's scale that float32 display code (``captum.attr.visualization``) cannot normalise
them; it is *non-finite* when it holds NaN or Inf. Either case emits one
:class:`DegenerateAttributionWarning` per call that names the examples and the knob to change.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["DegenerateAttributionWarning", "blank_examples", "warn_if_degenerate"]

#: Largest absolute attribution at or below which an example's map counts as blank. Captum's
#: ``visualize_image_attr`` refuses a scale factor below 1e-5 after its percentile step, and
#: float32 gradients of a saturated softmax sit at 1e-18 - 1e-10; 1e-12 flags those without
#: touching legitimately small but usable maps.
BLANK_ATOL = 1e-12


class DegenerateAttributionWarning(UserWarning):
    """An attribution map is blank, non-finite, or a selection rule did not succeed."""


def blank_examples(attributions: Tensor | Sequence[Tensor], atol: float = BLANK_ATOL) -> Tensor:
    """Boolean ``(N,)``: True where every entry of the example (over all tensors) is ``<= atol``."""
    tensors = (attributions,) if isinstance(attributions, Tensor) else tuple(attributions)
    peak = torch.stack([t.detach().abs().flatten(1).amax(1).double() for t in tensors]).amax(0)
    return peak <= atol


def _indices(mask: Tensor, limit: int = 8) -> str:
    idx = mask.nonzero().flatten().tolist()
    shown = ", ".join(str(i) for i in idx[:limit])
    return shown + (f", ... ({len(idx)} in all)" if len(idx) > limit else "")


def warn_if_degenerate(
    method: str,
    attributions: Tensor | Sequence[Tensor],
    hint: str,
    stacklevel: int = 3,
) -> None:
    """Warn once if any example's map is non-finite or blank.

    Args:
        method: Name of the method, used in the message (``"LEG"``, ``"CASO"``, ...).
        attributions: The map(s) about to be returned, batch first.
        hint: What the user should change, e.g. ``"raise sigma"``.
        stacklevel: Passed to :func:`warnings.warn` (3 points at the caller of ``attribute``
            when called from a helper of ``attribute``).
    """
    tensors = (attributions,) if isinstance(attributions, Tensor) else tuple(attributions)
    if not tensors or tensors[0].dim() == 0 or tensors[0].shape[0] == 0:
        return
    bad = torch.stack([~torch.isfinite(t.detach()).flatten(1).all(1) for t in tensors]).any(0)
    if bad.any():
        warnings.warn(
            f"{method}: non-finite attributions for example(s) {_indices(bad)}; {hint}",
            DegenerateAttributionWarning,
            stacklevel=stacklevel,
        )
        return
    blank = blank_examples(tensors)
    if blank.any():
        warnings.warn(
            f"{method}: blank attributions (all |a| <= {BLANK_ATOL:g}) for example(s) "
            f"{_indices(blank)}; {hint}",
            DegenerateAttributionWarning,
            stacklevel=stacklevel,
        )
