"""Attribution methods that follow Captum's contract.

Each class can replace a Captum attribution in one line, be wrapped in
:class:`captum.attr.NoiseTunnel`, and be scored with :mod:`captum.metrics`.
"""

from captum_ext.attr._core.caso import CAFO, CASO
from captum_ext.attr._core.leg import LEG, LEGTV, leg_saliency_map
from captum_ext.attr._core.parameter_saliency import ParameterSaliency
from captum_ext.attr._core.relex import RelEx
from captum_ext.attr._utils.grid import sample_tv_perturbations

__all__: list[str] = [
    "CAFO",
    "CASO",
    "LEG",
    "LEGTV",
    "ParameterSaliency",
    "RelEx",
    "leg_saliency_map",
    "sample_tv_perturbations",
]
