"""The methods the report runs: one :func:`register` entry each.

Captum's own methods are the baselines; each captum-ext method adds its entry here when it lands.
"""

from __future__ import annotations

import torch
from captum.attr import IntegratedGradients, NoiseTunnel, Occlusion, Saliency

from captum_ext.attr import CAFO, CASO, LEG, LEGTV, RelEx
from captum_ext.report.registry import MethodSpec, register


def _leg_grid(inputs: torch.Tensor, most: int = 28) -> tuple[int, int]:
    """The largest grid side <= ``most`` (28: the paper's) dividing each image side (equal cells).

    With unequal cells (28 cells over 32 pixels) the per-pixel map shows stripes of 1- and
    2-pixel cells.
    """
    return tuple(max(d for d in range(1, most + 1) if side % d == 0) for side in inputs.shape[-2:])


register(
    MethodSpec(
        "Saliency",
        Saliency,
        kwargs={"abs": True},
        reference="Simonyan et al. 2014, Deep Inside Convolutional Networks",
    )
)
register(
    MethodSpec(
        "IntegratedGradients",
        IntegratedGradients,
        kwargs={"n_steps": 50, "internal_batch_size": 64},
        quick_kwargs={"n_steps": 16},
        reference="Sundararajan et al. 2017, Axiomatic Attribution for Deep Networks",
    )
)
register(
    MethodSpec(
        "Occlusion",
        Occlusion,
        kwargs=lambda x: {
            "sliding_window_shapes": (x.shape[1], 4, 4),
            "strides": (x.shape[1], 2, 2),
            "perturbations_per_eval": 64,
        },
        quick_kwargs=lambda x: {"strides": (x.shape[1], 4, 4)},
        reference="Zeiler & Fergus 2014, Visualizing and Understanding Convolutional Networks",
    )
)
register(
    MethodSpec(
        "SmoothGrad",
        lambda model: NoiseTunnel(Saliency(model)),
        kwargs={
            "nt_type": "smoothgrad",
            "nt_samples": 25,
            "stdevs": 0.15,
            "nt_samples_batch_size": 25,
        },
        quick_kwargs={"nt_samples": 8, "nt_samples_batch_size": 8},
        reference="Smilkov et al. 2017, SmoothGrad: removing noise by adding noise",
    )
)
register(
    MethodSpec(
        "RelEx",
        RelEx,
        kwargs={"n_iter": 50, "n_samples": 50},
        quick_kwargs={"n_iter": 8, "n_samples": 6},
        seeded=True,
        reference="Lim, Lee & Kim 2021, Building Reliable Explanations of Unreliable Neural "
        "Networks: Locally Smoothing Perspective of Model Interpretation",
    )
)
register(
    MethodSpec(
        "LEG",
        lambda model: LEG(lambda x: torch.softmax(model(x), 1)),
        kwargs=lambda x: {
            "n_samples": 500,
            "sigma": 0.02,
            "grid": _leg_grid(x),
            "perturbations_per_eval": 100,
        },
        quick_kwargs=lambda x: {"n_samples": 64, "grid": _leg_grid(x, 8)},
        seeded=True,
        reference="Luo, Barut & Jin 2021, Statistically Consistent Saliency Estimation "
        "(empirical LEG)",
    )
)
register(
    MethodSpec(
        "LEG-TV",
        lambda model: LEGTV(lambda x: torch.softmax(model(x), 1)),
        kwargs=lambda x: {
            "n_samples": 500,
            "sigma": 0.02,
            "K_L": 0.1,
            "grid": _leg_grid(x),
            "perturbations_per_eval": 100,
        },
        quick_kwargs=lambda x: {"n_samples": 64, "grid": _leg_grid(x, 8)},
        seeded=True,
        reference="Luo, Barut & Jin 2021, Statistically Consistent Saliency Estimation",
    )
)
_CASO_REF = (
    "Singla et al. 2019, Understanding Impacts of High-Order Loss Approximations and Features "
    "in Deep Learning Interpretation"
)
register(MethodSpec("CAFO", CAFO, reference=_CASO_REF))
register(
    MethodSpec(
        "CASO",
        CASO,
        # the benchmark models are piecewise linear (ReLU): the closed-form Hessian is exact
        kwargs={"hessian": "closed_form"},
        seeded=True,
        reference=_CASO_REF,
    )
)
register(
    MethodSpec(
        "SmoothCASO",
        CASO,
        kwargs={"hessian": "closed_form", "n_samples": 50, "stdevs": 0.15},
        quick_kwargs={"n_samples": 4},
        seeded=True,
        reference=_CASO_REF,
    )
)
