"""Evaluation metrics; where Captum defines a contract (``captum.metrics``), they plug into it."""

from captum_ext.metrics.fidelity import (
    FidelityCurves,
    auc,
    blur,
    deletion,
    harmonic_fidelity,
    insertion,
    preservation,
)
from captum_ext.metrics.landscape import (
    LandscapeSummary,
    importance_landscape,
    landscape_summary,
    landscape_total_variation,
    smoothness_map,
)
from captum_ext.metrics.robustness import (
    StabilityResult,
    center_of_mass,
    center_of_mass_shift,
    rank_correlation,
    saliency_stability,
    topk_intersection,
)

__all__: list[str] = [
    "FidelityCurves",
    "LandscapeSummary",
    "StabilityResult",
    "auc",
    "blur",
    "center_of_mass",
    "center_of_mass_shift",
    "deletion",
    "harmonic_fidelity",
    "importance_landscape",
    "insertion",
    "landscape_summary",
    "landscape_total_variation",
    "preservation",
    "rank_correlation",
    "saliency_stability",
    "smoothness_map",
    "topk_intersection",
]
