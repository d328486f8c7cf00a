"""One call that scores a batch of attributions with the report's metrics, per example.

Used by the ``captum-ext report`` metrics table (one row per method): deletion and insertion AUC
(:mod:`.fidelity`), infidelity (``captum.metrics.infidelity`` with ``normalize=True``, Yeh et
al.'s practice), max-sensitivity (``captum.metrics.sensitivity_max`` with Captum's defaults:
10 uniform samples in the L-infinity ball of radius 0.02), and, when ground-truth masks exist,
the pointing game and its energy-based variant (:mod:`.localization`). Runtime is measured by
the caller around its ``attribute`` call.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from captum.metrics import infidelity, sensitivity_max
from torch import Tensor

from captum_ext._model_state import eval_mode
from captum_ext.metrics.fidelity import deletion, insertion
from captum_ext.metrics.localization import energy_pointing_game, pointing_game
from captum_ext.metrics.perturbations import gaussian_perturbation, uniform_perturbation

#: Metrics in the order the report shows them; ``max_sensitivity`` needs ``explain`` and the
#: last two need ``masks``.
METRIC_NAMES: tuple[str, ...] = (
    "deletion",
    "insertion",
    "infidelity",
    "max_sensitivity",
    "pointing_game",
    "energy",
)
#: Direction of each metric: True when higher is better.
HIGHER_IS_BETTER: dict[str, bool] = {
    "deletion": False,
    "insertion": True,
    "infidelity": False,
    "max_sensitivity": False,
    "pointing_game": True,
    "energy": True,
}


def _sensitivity_explainer(
    explain: Callable[[Tensor, Any], Tensor],
) -> Callable[..., Any]:
    """Adapt ``explain(inputs, target)`` to ``sensitivity_max``, which may pass a 1-tuple."""

    def explanation_func(inputs: Any, target: Any = None) -> Any:
        if isinstance(inputs, tuple):
            return (explain(inputs[0], target).detach(),)
        return explain(inputs, target).detach()

    return explanation_func


def evaluate_attributions(
    model: Callable[..., Tensor],
    inputs: Tensor,
    attributions: Tensor,
    target: Any = None,
    masks: Tensor | None = None,
    *,
    explain: Callable[[Tensor, Any], Tensor] | None = None,
    multiply_by_inputs: bool = False,
    infidelity_perturb_func: Callable[..., Any] | None = None,
    n_perturb_samples: int = 10,
    sensitivity_radius: float = 0.02,
    n_sensitivity_samples: int = 10,
    n_steps: int = 224,
    pixels_per_step: int | None = None,
    max_examples_per_batch: int | None = None,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """Score attributions of a batch of images with the report's metrics, per example.

    ``model`` (and the modules behind ``explain`` where they can be found) run in eval mode;
    every module's flag is restored afterwards, also on errors.

    Args:
        model: Classifier returning logits (N, n_classes).
        inputs: Images (N, C, H, W).
        attributions: Attributions shaped like ``inputs`` (or maps (N, H, W)).
        target: Explained classes (int, list or tensor (N,)); None uses the predicted class.
        masks: Optional ground-truth masks (N, H, W) for the pointing game (tied maxima scored
            by their share inside the mask, ``ties="mean"``, so block-constant maps are not
            judged by their cells' top-left pixels) and energy.
        explain: ``explain(inputs, target) -> attributions``, the method that produced
            ``attributions``; needed for max-sensitivity (skipped when None).
        multiply_by_inputs: The method's ``multiplies_by_inputs``; selects Captum's
            ``infidelity_perturb_func_decorator`` convention for ``I``.
        infidelity_perturb_func: Perturbation for infidelity; None uses Yeh et al.'s noisy
            baseline ``gaussian_perturbation(0.2, noisy_baseline=True)`` (for [0, 1] inputs).
        n_perturb_samples: Infidelity samples per example (Captum's default 10).
        sensitivity_radius: Max-sensitivity L-infinity radius (Captum's default 0.02).
        n_sensitivity_samples: Max-sensitivity samples per example (Captum's default 10).
        n_steps: Deletion / insertion steps (see :func:`.fidelity.deletion`).
        pixels_per_step: Deletion / insertion pixels per step (overrides ``n_steps``).
        max_examples_per_batch: Rows per forward / explanation call in every metric.
        generator: Source of the metrics' randomness (default: seeded from
            ``torch.initial_seed()``).

    Returns:
        ``{name: tensor (N,)}`` for the names in :data:`METRIC_NAMES` that apply (infidelity
        needs attributions shaped like ``inputs``, max-sensitivity ``explain``, the last two
        ``masks``).

    Examples:
        >>> sal = Saliency(model)
        >>> attr = sal.attribute(images, target=labels)
        >>> scores = evaluate_attributions(
        ...     model, images, attr, labels, masks,
        ...     explain=lambda x, t: sal.attribute(x, target=t),
        ... )
        >>> sorted(scores)
        ['deletion', 'energy', 'infidelity', 'insertion', 'max_sensitivity', 'pointing_game']
    """
    with eval_mode(model, explain):
        if target is None:
            with torch.no_grad():
                target = model(inputs).argmax(1)
        fid = {"pixels_per_step": pixels_per_step, "n_steps": n_steps}
        fid["max_examples_per_batch"] = max_examples_per_batch
        out: dict[str, Tensor] = {
            "deletion": deletion(model, inputs, attributions, target, **fid).auc,
            "insertion": insertion(model, inputs, attributions, target, **fid).auc,
        }
        if infidelity_perturb_func is None:
            infidelity_perturb_func = gaussian_perturbation(
                0.2,
                noisy_baseline=True,
                generator=generator,
                multiply_by_inputs=True if multiply_by_inputs else None,  # None: the default
            )
        attr_for_infid = attributions if attributions.shape == inputs.shape else None
        if attr_for_infid is not None:
            out["infidelity"] = infidelity(
                model, infidelity_perturb_func, inputs, attr_for_infid, target=target,
                n_perturb_samples=n_perturb_samples, max_examples_per_batch=max_examples_per_batch,
                normalize=True,
            ).detach()  # fmt: skip
        if explain is not None:
            out["max_sensitivity"] = sensitivity_max(
                _sensitivity_explainer(explain), inputs,
                perturb_func=uniform_perturbation(generator=generator),
                perturb_radius=sensitivity_radius, n_perturb_samples=n_sensitivity_samples,
                max_examples_per_batch=max_examples_per_batch, target=target,
            ).detach()  # fmt: skip
        if masks is not None:
            out["pointing_game"] = pointing_game(attributions, masks, ties="mean")
            out["energy"] = energy_pointing_game(attributions, masks)
    return out


__all__ = ["HIGHER_IS_BETTER", "METRIC_NAMES", "evaluate_attributions"]
