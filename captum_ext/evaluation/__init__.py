"""Evaluation protocols that edit models (filter pruning, one-step fine-tuning)."""

from captum_ext.evaluation.filter_editing import EditCurves, finetuning_curves, pruning_curves
from captum_ext.evaluation.saliency_summary import compare_calibrations

__all__: list[str] = ["EditCurves", "compare_calibrations", "finetuning_curves", "pruning_curves"]
