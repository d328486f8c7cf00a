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
from captum_ext.metrics.localization import energy_pointing_game, pointing_game
from captum_ext.metrics.perturbations import (
    gaussian_perturbation,
    square_removal_perturbation,
    tv_perturbation,
    uniform_perturbation,
)
from captum_ext.metrics.robustness import (
    StabilityResult,
    center_of_mass,
    center_of_mass_shift,
    rank_correlation,
    saliency_stability,
    topk_intersection,
)
from captum_ext.metrics.sanity import SanityResult, map_similarities, model_randomization
from captum_ext.metrics.summary import evaluate_attributions

__all__: list[str] = [
    "FidelityCurves",
    "LandscapeSummary",
    "SanityResult",
    "StabilityResult",
    "auc",
    "blur",
    "center_of_mass",
    "center_of_mass_shift",
    "deletion",
    "energy_pointing_game",
    "evaluate_attributions",
    "gaussian_perturbation",
    "harmonic_fidelity",
    "importance_landscape",
    "insertion",
    "landscape_summary",
    "landscape_total_variation",
    "map_similarities",
    "model_randomization",
    "pointing_game",
    "preservation",
    "rank_correlation",
    "saliency_stability",
    "smoothness_map",
    "square_removal_perturbation",
    "topk_intersection",
    "tv_perturbation",
    "uniform_perturbation",
]
