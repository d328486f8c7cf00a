"""Calibrations that turn raw parameter-saliency profiles into comparable scores."""

from captum_ext.calibration._base import Calibration, Layout
from captum_ext.calibration.gpd import (
    GPDFit,
    fit_gpd,
    gpd_loglik,
    gpd_quantile,
    gpd_tail_prob,
)
from captum_ext.calibration.pot import POTCalibration, POTScore
from captum_ext.calibration.running_stats import RunningMoments, RunningTopK, n_exceed
from captum_ext.calibration.zscore import ZScoreCalibration

__all__: list[str] = [
    "Calibration",
    "GPDFit",
    "Layout",
    "POTCalibration",
    "POTScore",
    "RunningMoments",
    "RunningTopK",
    "ZScoreCalibration",
    "fit_gpd",
    "gpd_loglik",
    "gpd_quantile",
    "gpd_tail_prob",
    "n_exceed",
]
