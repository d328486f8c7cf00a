"""Evaluation protocols and dataset-wide runs.

Protocols that edit models (filter pruning, one-step fine-tuning), and attribution of a whole
dataset sharded over ranks into resumable chunk files (:func:`attribute_dataset`).
"""

from captum_ext._distributed import ShardSampler
from captum_ext.evaluation.attribution_shards import AttributionShards
from captum_ext.evaluation.dataset_attribution import attribute_dataset
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
