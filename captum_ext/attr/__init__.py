"""Attribution methods that follow Captum's contract.

Each class can replace a Captum attribution in one line, be wrapped in
:class:`captum.attr.NoiseTunnel`, and be scored with :mod:`captum.metrics`.
"""

from captum_ext.attr._core.parameter_saliency import ParameterSaliency
from captum_ext.attr._core.relex import RelEx

__all__: list[str] = ["ParameterSaliency", "RelEx"]
