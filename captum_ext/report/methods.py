"""The methods the report runs: one :func:`register` entry each.

Captum's own methods are the baselines; each captum-ext method adds its entry here when it lands.
"""

from __future__ import annotations

from captum.attr import IntegratedGradients, NoiseTunnel, Occlusion, Saliency

from captum_ext.attr import RelEx
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
        kwargs={"n_iter": 50, "n_samples": 50, "samples_per_eval": 800},
        quick_kwargs={"n_iter": 10, "n_samples": 8},
        seeded=True,
        reference="Lim, Lee & Kim 2021, Building Reliable Explanations of Unreliable Neural "
        "Networks: Locally Smoothing Perspective of Model Interpretation",
    )
)
