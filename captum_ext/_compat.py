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
    _run_forward,
    _select_targets,
)
from captum._utils.progress import NullProgress, progress
from captum.log import log_usage

__all__ = [
    "ExpansionTypes",
    "NullProgress",
    "_expand_additional_forward_args",
    "_expand_target",
    "_format_additional_forward_args",
    "_format_output",
    "_format_tensor_into_tuples",
    "_is_tuple",
    "_run_forward",
    "_select_targets",
    "log_usage",
    "progress",
]
