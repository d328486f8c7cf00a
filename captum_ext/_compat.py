"""One place for the private Captum helpers captum-ext relies on.

Captum's helpers under ``captum._utils`` and ``captum.attr._utils`` are private and get renamed
between releases (``_format_input`` became ``_format_tensor_into_tuples`` in 0.7). Importing
them only here keeps an upstream rename a one-file fix.
"""

from captum._utils.common import (
    ExpansionTypes,
    _expand_additional_forward_args,
    _expand_target,
    _format_additional_forward_args,
    _format_output,
    _format_tensor_into_tuples,
    _is_tuple,
    _reduce_list,
    _run_forward,
    _select_targets,
    safe_div,
)
from captum._utils.gradient import (
    apply_gradient_requirements,
    compute_gradients,
    undo_gradient_requirements,
)
from captum._utils.progress import NullProgress, progress
from captum.attr._utils.batching import _batched_generator, _batched_operator
from captum.attr._utils.common import (
    _format_input_baseline,
    _tensorize_baseline,
    _validate_input,
)
from captum.log import log_usage

__all__ = [
    "ExpansionTypes",
    "NullProgress",
    "_batched_generator",
    "_batched_operator",
    "_expand_additional_forward_args",
    "_expand_target",
    "_format_additional_forward_args",
    "_format_input_baseline",
    "_format_output",
    "_format_tensor_into_tuples",
    "_is_tuple",
    "_reduce_list",
    "_run_forward",
    "_select_targets",
    "_tensorize_baseline",
    "_validate_input",
    "apply_gradient_requirements",
    "compute_gradients",
    "log_usage",
    "progress",
    "safe_div",
    "undo_gradient_requirements",
]
