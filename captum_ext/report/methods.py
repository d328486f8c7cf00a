"""The methods the report runs: one :func:`register` entry each.

Captum's own methods are the baselines; each captum-ext method adds its entry here when it lands.
"""

from __future__ import annotations

from captum.attr import IntegratedGradients, NoiseTunnel, Occlusion, Saliency

from captum_ext.attr import CAFO, CASO, LEG, LEGTV, RelEx
from captum_ext.report.registry import MethodSpec, register

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
# LEG and LEG-TV explain the logits (a saturated softmax does not move under perturbation) with
# their own defaults: 1,000 draws, least squares, sigma relative to the image's range, a grid of
# about sqrt(n / 4C) cells a side. Quick mode keeps about four draws per coefficient.
register(
    MethodSpec(
        "LEG",
        LEG,
        kwargs={"perturbations_per_eval": 100},
        quick_kwargs={"n_samples": 200},
        seeded=True,
        reference="Luo, Barut & Jin 2021, Statistically Consistent Saliency Estimation "
        "(empirical LEG, least squares)",
    )
)
register(
    MethodSpec(
        "LEG-TV",
        LEGTV,
        kwargs={"K_L": 0.1, "perturbations_per_eval": 100},
        quick_kwargs={"n_samples": 200},
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
