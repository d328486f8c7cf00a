"""The one piece of the Captum contract that Captum's base classes leave to each method.

Captum's ``Attribution`` already answers ``has_convergence_delta() -> False`` and (outside
``PerturbationAttribution``) ``multiplies_by_inputs -> False``; what it does not provide is an
``attribute_future`` that says it is unsupported, which Captum's own methods each write out.
"""

from __future__ import annotations

from typing import Any, NoReturn


class NoAttributeFuture:
    """Mixin: ``attribute_future`` raises ``NotImplementedError`` naming the method.

    None of captum-ext's methods has an asynchronous variant: each needs the values of its
    model evaluations (LEG), its gradients (CAFO/CASO, RelEx) or per-example profiles
    (ParameterSaliency) before it can go on. Put it first among the bases.
    """

    def attribute_future(self, *args: Any, **kwargs: Any) -> NoReturn:
        """Not implemented: no captum-ext method has an asynchronous variant."""
        raise NotImplementedError(
            f"attribute_future is not implemented for {self.get_name()}"  # type: ignore[attr-defined]
        )
