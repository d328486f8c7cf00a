"""Model-parameter randomisation tests (Adebayo et al. 2018, "Sanity Checks for Saliency Maps").

Cascading randomisation re-initialises the layers of a deep copy of the model from the top
(logits) down, cumulatively, and recomputes the explanation after each step; independent
randomisation re-initialises one layer at a time with all others trained. Each explanation is
compared with the trained model's by four similarities (``adebayoj/sanity_checks_saliency``,
with the PAIR ``saliency`` normalisations), per image and then averaged:

1. ``spearman_abs``: Spearman rank correlation of the abs-normalised maps
   (``m = sum_c |e|``, ``(m - min) / (p99 - min)`` clipped to [0, 1]);
2. ``spearman_diverging``: Spearman of the diverging-normalised maps
   (``m = sum_c e``, ``(m + s) / (2 s)`` with ``s = |p99(m)|``, clipped);
3. ``ssim``: SSIM of the 0-1-normalised explanations (Gaussian window, sigma 1.5, 11 taps,
   ``use_sample_covariance=True``, ``data_range=1``; channel mean), equal to scikit-image's;
4. ``hog``: Spearman between HOG features of the abs-normalised maps (9 orientations,
   ``pixels_per_cell = (max(2, H // 8), max(2, W // 8))``, 3 x 3 blocks, L2-Hys).

Layers are the leaf modules that own parameters and have ``reset_parameters`` (BatchNorm
included, as in Quantus' ``MPRT``; its ``reset_parameters`` also resets the running
statistics), in ``named_modules()`` order unless given. Layer ``i`` is re-initialised inside
``torch.random.fork_rng()`` with seed ``seed + i``, so the user's model and RNG state are never
touched. A constant map makes Spearman undefined: it scores 0.0 with a warning (a fully
randomised LEG-TV map can be exactly zero). Similarity should fall towards 0 as more layers are
randomised.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable, Literal, Sequence

import torch
from torch import Tensor, nn

from captum_ext._compat import log_usage
from captum_ext._model_state import eval_mode
from captum_ext.metrics._maps import check_finite, spearman
from captum_ext.metrics._similarity import hog, normalize_01, normalize_abs, normalize_diverging
from captum_ext.metrics._similarity import ssim as _ssim

MEASURES: tuple[str, ...] = ("spearman_abs", "spearman_diverging", "ssim", "hog")


@dataclass
class SanityResult:
    """Similarities to the trained model's explanations after each randomisation step.

    Attributes:
        mode: ``"cascading"`` or ``"independent"``.
        layers: Row labels: ``"original"`` then the layer randomised at each step (cumulative
            for cascading, from the logits down).
        measures: Column labels, see :data:`MEASURES`.
        per_image: Similarities (len(layers), len(measures), N).
    """

    mode: str
    layers: list[str]
    measures: tuple[str, ...]
    per_image: Tensor

    @property
    def table(self) -> Tensor:
        """Mean over images: (len(layers), len(measures))."""
        return self.per_image.mean(-1)

    def as_dict(self) -> dict[str, list[float]]:
        """``{measure: [mean similarity per row]}`` plus ``"layer"`` labels."""
        table = self.table
        return {
            "layer": list(self.layers),
            **{m: table[:, j].tolist() for j, m in enumerate(self.measures)},
        }

    def plot(self, ax: Any = None) -> Any:
        """Plot each measure against the randomisation step (matplotlib); returns the axes."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(max(4.0, 0.5 * len(self.layers)), 3.5))
        x = range(len(self.layers))
        for j, m in enumerate(self.measures):
            ax.plot(x, self.table[:, j].cpu().numpy(), marker="o", label=m)
        ax.set_xticks(list(x))
        ax.set_xticklabels(self.layers, rotation=60, ha="right", fontsize=8)
        ax.set_ylabel("similarity to original")
        ax.set_title(f"{self.mode} randomisation")
        ax.axhline(0.0, color="grey", lw=0.5)
        ax.legend(fontsize=8)
        return ax


def randomizable_layers(model: nn.Module) -> list[str]:
    """Names of leaf modules that own parameters and have ``reset_parameters``, in order."""
    return [
        name
        for name, module in model.named_modules()
        if name
        and next(module.children(), None) is None
        and any(True for _ in module.parameters(recurse=False))
        and callable(getattr(module, "reset_parameters", None))
    ]


@torch.no_grad()
def map_similarities(
    reference: Tensor,
    other: Tensor,
    measures: Sequence[str] = MEASURES,
    ssim_data_range: float | None = 1.0,
    ssim_sample_covariance: bool = True,
) -> Tensor:
    """The sanity-check similarities between two batches of explanations, per image.

    Args:
        reference: Explanations (N, C, H, W) (e.g. of the trained model).
        other: Same shape.
        measures: Any of :data:`MEASURES`.
        ssim_data_range: SSIM's data range for the 0-1 maps (1.0); None uses max - min over
            both maps (Quantus). Adebayo's original runs used 2 (old scikit-image default).
        ssim_sample_covariance: SSIM covariance scaling ``NP / (NP - 1)`` (scikit-image).

    Returns:
        Float64 tensor (len(measures), N).
    """
    if reference.shape != other.shape or reference.dim() != 4:
        raise ValueError(
            "explanations must have the same shape (N, C, H, W), got "
            f"{tuple(reference.shape)} and {tuple(other.shape)}"
        )
    check_finite("explanations", reference)
    check_finite("explanations", other)
    unknown = [m for m in measures if m not in MEASURES]
    if unknown:
        raise ValueError(f"measures must be among {MEASURES}, got {unknown}")
    a = reference.detach().to(torch.float64)
    b = other.detach().to(torch.float64)
    n = a.shape[0]
    rows = []
    for m in measures:
        if m == "spearman_abs":
            rows.append(spearman(normalize_abs(a).reshape(n, -1), normalize_abs(b).reshape(n, -1)))
        elif m == "spearman_diverging":
            da, db = normalize_diverging(a), normalize_diverging(b)
            rows.append(spearman(da.reshape(n, -1), db.reshape(n, -1)))
        elif m == "ssim":
            rows.append(
                _ssim(normalize_01(a), normalize_01(b), ssim_data_range, ssim_sample_covariance)
            )
        else:
            rows.append(spearman(hog(normalize_abs(a)), hog(normalize_abs(b))))
    return torch.stack(rows)


def _explainer(explain: Any, attribute_kwargs: dict) -> Callable[[nn.Module, Tensor, Any], Tensor]:
    if isinstance(explain, type):
        return lambda m, x, t: explain(m).attribute(x, target=t, **attribute_kwargs)
    if callable(explain):
        return lambda m, x, t: explain(m, x, t, **attribute_kwargs)
    raise TypeError(
        "explain must be an attribution class (e.g. captum.attr.Saliency) or a callable "
        f"(model, inputs, target) -> attributions, got {type(explain).__name__}"
    )


def _reinit(module: nn.Module, seed: int, devices: list[int]) -> None:
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        reset = module.reset_parameters
        assert callable(reset)  # model_randomization checked every layer has reset_parameters
        reset()


@log_usage()
def model_randomization(
    model: nn.Module,
    explain: Any,
    inputs: Tensor,
    target: Any = None,
    *,
    mode: Literal["cascading", "independent"] = "cascading",
    layers: Sequence[str] | None = None,
    seed: int = 0,
    measures: Sequence[str] = MEASURES,
    attribute_kwargs: dict | None = None,
    ssim_data_range: float | None = 1.0,
    ssim_sample_covariance: bool = True,
) -> SanityResult:
    """Cascading or independent model-parameter randomisation test (Adebayo et al. 2018).

    The model and its randomised copies run in eval mode; the model's flags are restored.

    Args:
        model: The trained model (never modified: a deep copy is randomised).
        explain: An attribution class (``explain(model).attribute(inputs, target=...)``, e.g.
            ``captum.attr.Saliency``) or a callable ``(model, inputs, target) -> attributions``
            of shape (N, C', H, W) (C' may differ from the inputs', e.g. 1 for Grad-CAM).
        inputs: Images (N, C, H, W).
        target: Explained class; None uses the trained model's prediction for every step.
        mode: ``"cascading"`` (from the logits down, cumulative) or ``"independent"``.
        layers: Layer names in forward order; None uses :func:`randomizable_layers`.
        seed: Layer ``i`` (index in ``layers``) is re-initialised with seed ``seed + i``.
        measures: Any of :data:`MEASURES`.
        attribute_kwargs: Extra keyword arguments of the explanation call.
        ssim_data_range: See :func:`map_similarities`.
        ssim_sample_covariance: See :func:`map_similarities`.

    Returns:
        A :class:`SanityResult` (``.table``, ``.per_image``, ``.as_dict()``, ``.plot()``).

    Examples:
        >>> from captum.attr import Saliency
        >>> res = model_randomization(model, Saliency, images)
        >>> res.as_dict()["spearman_abs"]  # 1.0 for "original", then falling
    """
    if mode not in ("cascading", "independent"):
        raise ValueError(f"mode must be 'cascading' or 'independent', got {mode!r}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if not isinstance(inputs, Tensor) or inputs.dim() != 4:
        shape = tuple(inputs.shape) if isinstance(inputs, Tensor) else type(inputs).__name__
        raise ValueError(f"inputs must be a tensor of shape (N, C, H, W), got {shape}")
    check_finite("inputs", inputs)
    modules = dict(model.named_modules())
    names = list(layers) if layers is not None else randomizable_layers(model)
    if not names:
        raise ValueError("model has no layer with parameters and reset_parameters")
    for name in names:
        if name not in modules or not callable(getattr(modules[name], "reset_parameters", None)):
            raise ValueError(f"layers must name modules with reset_parameters, got {name!r}")
    with eval_mode(model, explain):
        run = _explainer(explain, dict(attribute_kwargs or {}))
        devices = sorted(
            {p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"}
        )
        if target is None:
            with torch.no_grad():
                target = model(inputs).argmax(1)
        original = run(model, inputs, target).detach()
        if (
            original.dim() != 4
            or original.shape[0] != inputs.shape[0]
            or original.shape[-2:] != inputs.shape[-2:]
        ):
            raise ValueError(
                "explanations must have shape (N, C', H, W) with the inputs' N, H, W "
                f"{(inputs.shape[0], *inputs.shape[-2:])}, got {tuple(original.shape)}"
            )
        rows = [
            map_similarities(original, original, measures, ssim_data_range, ssim_sample_covariance)
        ]
        labels = ["original"]
        order = list(reversed(range(len(names)))) if mode == "cascading" else range(len(names))
        cascade = copy.deepcopy(model) if mode == "cascading" else None
        for i in order:
            work = cascade if cascade is not None else copy.deepcopy(model)
            _reinit(dict(work.named_modules())[names[i]], seed + i, devices)
            other = run(work, inputs, target).detach()
            rows.append(
                map_similarities(original, other, measures, ssim_data_range, ssim_sample_covariance)
            )
            labels.append(names[i])
    return SanityResult(mode, labels, tuple(measures), torch.stack(rows))


__all__ = ["MEASURES", "SanityResult", "map_similarities", "model_randomization"]
