"""Evaluation protocols that edit models, and the dataset-wide runs' earlier home.

Protocols that edit models (filter pruning, one-step fine-tuning) and the comparison of
parameter-saliency calibrations. :func:`attribute_dataset` and :class:`AttributionShards` live in
:mod:`captum_ext.dataset_attribution` and :class:`ShardSampler` in :mod:`captum_ext.distributed`;
they are re-exported here so that code importing them from ``captum_ext.evaluation`` keeps
working.
"""

from captum_ext.dataset_attribution import AttributionShards, attribute_dataset
from captum_ext.distributed import ShardSampler
from captum_ext.evaluation.filter_editing import EditCurves, finetuning_curves, pruning_curves
from captum_ext.evaluation.saliency_summary import compare_calibrations

__all__: list[str] = [
    "AttributionShards",
    "EditCurves",
    "ShardSampler",
    "attribute_dataset",
    "compare_calibrations",
    "finetuning_curves",
    "pruning_curves",
]
