"""Similarity of two saliency maps, and saliency stability under adversarial attacks.

Following Ghorbani, Abid and Zou 2019, "Interpretation of Neural Networks is Fragile" (AAAI;
``amiratag/InterpretationFragility``): the map is ``s = sum_c abs(A)`` flattened over pixels, and
two maps are compared by

- the top-k intersection ``|topk(s1) & topk(s2)| / k`` (default k = 2 % of the pixels; the paper
  used k = 1000 at 227-299 px and RelEx 1000 at 224 px; ties: stable, lower flat index first),
- the tie-aware Spearman rank correlation of the full maps,
- the dislocation of the centre of mass ``||C(s1) - C(s2)||_2`` in pixels.

:func:`saliency_stability` attacks the inputs with Captum's ``PGD`` or ``FGSM``, keeps the
examples whose predicted label does not change and reports the three similarities per epsilon.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from captum.robust import FGSM, PGD
from torch import Tensor

from captum_ext._compat import log_usage
from captum_ext._model_state import eval_mode
from captum_ext.metrics._maps import check_finite, pixel_order, reduce_map, spearman


def _pair(a1: Tensor, a2: Tensor, reduction: str) -> tuple[Tensor, Tensor]:
    s1 = reduce_map(a1, reduction, "attributions1")
    s2 = reduce_map(a2, reduction, "attributions2")
    if s1.shape != s2.shape:
        raise ValueError(
            "attributions1 and attributions2 must give maps of the same shape (N, H, W), got "
            f"{tuple(s1.shape)} and {tuple(s2.shape)} (from {tuple(a1.shape)} and "
            f"{tuple(a2.shape)})"
        )
    return s1, s2


def default_k(height: int, width: int) -> int:
    """Default k of the top-k intersection: ``max(1, round(0.02 * H * W))``."""
    return max(1, round(0.02 * height * width))


def topk_intersection(
    attributions1: Tensor,
    attributions2: Tensor,
    k: int | None = None,
    reduction: str = "abs_sum",
) -> Tensor:
    """Share of the k most salient pixels that two maps have in common (Ghorbani et al. 2019).

    Args:
        attributions1: Attributions (N, C, H, W) or maps (N, H, W).
        attributions2: Same shape as ``attributions1``.
        k: Number of top pixels; None means ``max(1, round(0.02 * H * W))``.
        reduction: Channel reduction, ``"abs_sum"`` (default) or ``"sum"``.

    Returns:
        ``|topk(s1) & topk(s2)| / k`` per example, shape (N,), in [0, 1].

    Examples:
        >>> a = torch.tensor([[[3.0, 2.0], [1.0, 0.0]]])
        >>> b = torch.tensor([[[3.0, 0.0], [2.0, 1.0]]])
        >>> topk_intersection(a, b, k=2)
        tensor([0.5000])
    """
    s1, s2 = _pair(attributions1, attributions2, reduction)
    n, h, w = s1.shape
    k = default_k(h, w) if k is None else k
    if not isinstance(k, int) or not 1 <= k <= h * w:
        raise ValueError(f"k must be an int in [1, {h * w}] (the number of pixels), got {k!r}")
    top1 = torch.zeros(n, h * w, dtype=torch.bool, device=s1.device)
    top2 = torch.zeros_like(top1)
    top1.scatter_(1, pixel_order(s1, descending=True)[:, :k], True)
    top2.scatter_(1, pixel_order(s2, descending=True)[:, :k], True)
    return (top1 & top2).sum(1).to(s1.dtype) / k


def rank_correlation(
    attributions1: Tensor, attributions2: Tensor, reduction: str = "abs_sum"
) -> Tensor:
    """Tie-aware Spearman rank correlation of two saliency maps over all pixels.

    Equal to ``scipy.stats.spearmanr`` of the flattened maps. A constant map gives 0.0 (the
    correlation is undefined) and a warning.

    Args:
        attributions1: Attributions (N, C, H, W) or maps (N, H, W).
        attributions2: Same shape as ``attributions1``.
        reduction: Channel reduction, ``"abs_sum"`` (default) or ``"sum"``.

    Returns:
        Correlations per example, shape (N,), in the attributions' dtype.
    """
    s1, s2 = _pair(attributions1, attributions2, reduction)
    flat1, flat2 = s1.reshape(s1.shape[0], -1), s2.reshape(s2.shape[0], -1)
    return spearman(flat1, flat2).to(s1.dtype)


def center_of_mass(attributions: Tensor, reduction: str = "abs_sum") -> Tensor:
    """Centre of mass ``sum_p s_p (row_p, col_p) / sum_p s_p`` of each map, in pixels.

    An all-zero map has no centre of mass; it gets the geometric centre ``((H-1)/2, (W-1)/2)``
    and a warning. With ``reduction="sum"`` a signed map whose positive and negative mass
    cancel has a centre outside the image: that is a ``ValueError``.

    Args:
        attributions: Attributions (N, C, H, W) or maps (N, H, W).
        reduction: Channel reduction, ``"abs_sum"`` (default) or ``"sum"``.

    Returns:
        ``(row, col)`` per example, shape (N, 2).

    Examples:
        >>> m = torch.zeros(1, 4, 5)
        >>> m[0, 1, 3] = 2.0
        >>> center_of_mass(m)
        tensor([[1., 3.]])
    """
    s = reduce_map(attributions, reduction)
    _, h, w = s.shape
    rows = torch.arange(h, device=s.device, dtype=s.dtype)
    cols = torch.arange(w, device=s.device, dtype=s.dtype)
    mass = s.sum(dim=(1, 2))
    empty = mass == 0
    if bool(empty.any()):
        warnings.warn(
            f"{int(empty.sum())} map(s) have zero total mass; using the geometric centre",
            RuntimeWarning,
            stacklevel=2,
        )
    safe = torch.where(empty, torch.ones_like(mass), mass)
    row = (s.sum(2) * rows).sum(1) / safe
    col = (s.sum(1) * cols).sum(1) / safe
    centre = torch.stack([row, col], dim=1)
    outside = ~empty & (
        (row < 0) | (row > h - 1) | (col < 0) | (col > w - 1) | ~torch.isfinite(mass)
    )
    if bool(outside.any()):
        raise ValueError(
            f"attributions: the signed mass of map(s) {outside.nonzero().flatten().tolist()} "
            f"cancels, so its centre of mass lies outside the image; use reduction='abs_sum'"
        )
    geometric = torch.tensor([(h - 1) / 2, (w - 1) / 2], device=s.device, dtype=s.dtype)
    return torch.where(empty.unsqueeze(1), geometric, centre)


def center_of_mass_shift(
    attributions1: Tensor, attributions2: Tensor, reduction: str = "abs_sum"
) -> Tensor:
    """Dislocation ``||C(s1) - C(s2)||_2`` of the centres of mass, in pixels, shape (N,)."""
    _pair(attributions1, attributions2, reduction)
    delta = center_of_mass(attributions1, reduction) - center_of_mass(attributions2, reduction)
    return delta.norm(dim=1)


@dataclass
class StabilityResult:
    """Similarities between clean and attacked saliency maps, per epsilon.

    Attributes:
        epsilons: The attack radii.
        n_kept: Examples whose predicted label survived the attack, per epsilon.
        kept: Boolean masks (N,) of those examples, per epsilon.
        topk: Per-kept-example top-k intersection, per epsilon.
        spearman: Per-kept-example Spearman correlation, per epsilon.
        center_shift: Per-kept-example centre-of-mass dislocation (pixels), per epsilon.
    """

    epsilons: list[float]
    n_kept: list[int] = field(default_factory=list)
    kept: list[Tensor] = field(default_factory=list)
    topk: list[Tensor] = field(default_factory=list)
    spearman: list[Tensor] = field(default_factory=list)
    center_shift: list[Tensor] = field(default_factory=list)

    def summary(self) -> dict[str, list[float]]:
        """Means over kept examples per epsilon (NaN where no example was kept)."""
        nan = float("nan")
        return {
            "epsilon": list(self.epsilons),
            "n_kept": [float(n) for n in self.n_kept],
            **{
                name: [float(v.mean()) if v.numel() else nan for v in getattr(self, name)]
                for name in ("topk", "spearman", "center_shift")
            },
        }


def _explainer(method: Any, attribute_kwargs: dict) -> Callable[[Tensor, Tensor], Tensor]:
    if hasattr(method, "attribute"):
        return lambda x, t: method.attribute(x, target=t, **attribute_kwargs)
    if callable(method):
        return lambda x, t: method(x, t, **attribute_kwargs)
    raise TypeError(
        "method must be an attribution object with .attribute or a callable "
        f"(inputs, target) -> attributions, got {type(method).__name__}"
    )


@log_usage()
def saliency_stability(
    method: Any,
    model: Callable[..., Tensor],
    inputs: Tensor,
    attack: str = "pgd",
    epsilons: tuple[float, ...] = (1 / 255, 2 / 255, 4 / 255, 8 / 255),
    *,
    step_num: int = 40,
    bounds: tuple[float, float] = (float("-inf"), float("inf")),
    k: int | None = None,
    reduction: str = "abs_sum",
    attribute_kwargs: dict | None = None,
) -> StabilityResult:
    """Attack the inputs and compare clean and attacked saliency maps (Ghorbani et al. 2019).

    The model (and the method's) runs in eval mode; every module's flag is restored afterwards.

    The attack is untargeted on the label predicted on the clean input: Captum's
    ``PGD(model).perturb(inputs, radius=eps, step_size=2.5 * eps / step_num, step_num,
    target=pred, norm="Linf")`` or ``FGSM(model).perturb(inputs, eps, target=pred)``. Only
    examples whose predicted label is unchanged are kept; their explanations (for that label)
    are compared with :func:`topk_intersection`, :func:`rank_correlation` and
    :func:`center_of_mass_shift`. Ghorbani's own second-order attacks are not implemented.

    Args:
        method: A Captum-style attribution object (``method.attribute(x, target=...)``) or a
            callable ``(inputs, target) -> attributions``.
        model: The classifier returning logits (N, n_classes).
        inputs: Images (N, C, H, W).
        attack: ``"pgd"`` or ``"fgsm"``.
        epsilons: L-infinity radii, in the units of ``inputs``.
        step_num: PGD iterations.
        bounds: ``(lower, upper)`` clamp of the attacked inputs (e.g. ``(0, 1)`` for images in
            [0, 1]).
        k: Top-k size; None means 2 % of the pixels.
        reduction: Channel reduction of the maps.
        attribute_kwargs: Extra keyword arguments of the explanation call.

    Returns:
        A :class:`StabilityResult`; ``.summary()`` gives the means per epsilon.

    Examples:
        >>> from captum.attr import Saliency
        >>> res = saliency_stability(Saliency(model), model, images, bounds=(0.0, 1.0))
        >>> res.summary()["topk"]  # one mean per epsilon
    """
    if attack not in ("pgd", "fgsm"):
        raise ValueError(f"attack must be 'pgd' or 'fgsm', got {attack!r}")
    if not isinstance(inputs, Tensor) or inputs.dim() != 4:
        shape = tuple(inputs.shape) if isinstance(inputs, Tensor) else type(inputs).__name__
        raise ValueError(f"inputs must be a tensor of shape (N, C, H, W), got {shape}")
    check_finite("inputs", inputs)
    if not epsilons or any(not (math.isfinite(float(e)) and float(e) > 0) for e in epsilons):
        raise ValueError(
            f"epsilons must be a non-empty sequence of finite positive radii, got {epsilons}"
        )
    if len(bounds) != 2 or any(math.isnan(float(b)) for b in bounds) or not bounds[0] < bounds[1]:
        raise ValueError(f"bounds must be (lower, upper) with lower < upper, got {bounds!r}")
    if not isinstance(step_num, int) or step_num < 1:
        raise ValueError(f"step_num must be a positive int, got {step_num!r}")
    with eval_mode(model, method):
        explain = _explainer(method, dict(attribute_kwargs or {}))
        with torch.no_grad():
            pred = model(inputs).argmax(1)
        clean = explain(inputs, pred).detach()
        lower, upper = bounds
        result = StabilityResult([float(e) for e in epsilons])
        for eps in result.epsilons:
            if attack == "pgd":
                adv = PGD(model, lower_bound=lower, upper_bound=upper).perturb(
                    inputs, radius=eps, step_size=2.5 * eps / step_num, step_num=step_num,
                    target=pred, norm="Linf",
                )  # fmt: skip
            else:
                adv = FGSM(model, lower_bound=lower, upper_bound=upper).perturb(
                    inputs, epsilon=eps, target=pred
                )
            adv = adv.detach()
            with torch.no_grad():
                keep = model(adv).argmax(1) == pred
            result.kept.append(keep)
            result.n_kept.append(int(keep.sum()))
            if not bool(keep.any()):
                empty = inputs.new_zeros(0)
                for name in ("topk", "spearman", "center_shift"):
                    getattr(result, name).append(empty)
                continue
            attacked = explain(adv[keep], pred[keep]).detach()
            result.topk.append(topk_intersection(clean[keep], attacked, k, reduction))
            result.spearman.append(rank_correlation(clean[keep], attacked, reduction))
            result.center_shift.append(center_of_mass_shift(clean[keep], attacked, reduction))
    return result


__all__ = [
    "StabilityResult",
    "center_of_mass",
    "center_of_mass_shift",
    "default_k",
    "rank_correlation",
    "saliency_stability",
    "topk_intersection",
]
