"""The methods the report runs: the explicit list :data:`METHODS`, one entry each.

Captum's own methods are the baselines; each captum-ext method adds its entry here when it lands.
Every entry defines the two presets of :data:`~captum_ext.report.method_spec.PRESETS`: ``fast``
(sized for 224 x 224 images on a CPU) and ``paper`` (the paper's settings), and says in ``notes``
what each changes. ``--quick`` lowers the work further for tests and demos.
"""

from __future__ import annotations

from typing import Callable

import torch
from captum.attr import IntegratedGradients, NoiseTunnel, Occlusion, Saliency

from captum_ext.attr import CAFO, CASO, LEG, LEGTV, RelEx
from captum_ext.report.method_spec import MethodSpec, by_name


def _occlusion_window(x: torch.Tensor) -> int:
    """Occlusion window side: 1/7 of the image side (32 px at 224), at least 4 px."""
    return max(4, min(x.shape[-2:]) // 7)


def _occlusion(x: torch.Tensor, stride_fraction: int) -> dict:
    w = _occlusion_window(x)
    s = max(1, w // stride_fraction)
    return {
        "sliding_window_shapes": (x.shape[1], w, w),
        "strides": (x.shape[1], s, s),
        "perturbations_per_eval": 64,
    }


#: CASO's ``fast`` settings. Its default ``hessian="auto"`` takes the closed form where it is exact
#: (ReLU networks): then the iterations are matmuls and these cost little quality and save
#: little time; where the Hessian-vector route runs (smooth networks, or a flat softmax over many
#: classes such as random weights) each iteration costs about two Saliency passes per lambda1.
CASO_FAST = {"max_halvings": 6, "n_iter": 5, "power_iter": 5}


#: Images of at most this many pixels (64 x 64) get the methods' own defaults under ``fast``:
#: there they cost seconds per image, and the reduced budgets sized for 224 x 224 cost quality
#: (on small_cnn at 32 x 32, 500 LEG draws give an 8 x 8 grid instead of 16 x 16).
SMALL_IMAGE_PIXELS = 64 * 64


def _is_small(x: torch.Tensor) -> bool:
    """At most :data:`SMALL_IMAGE_PIXELS` pixels per image (or not an image batch)."""
    return x.shape[-2] * x.shape[-1] <= SMALL_IMAGE_PIXELS if x.dim() >= 3 else True


def _fast(reduced: dict) -> Callable[[torch.Tensor, int], dict]:
    """The ``fast`` preset: ``reduced`` above :data:`SMALL_IMAGE_PIXELS`, the defaults below."""

    def kwargs(x: torch.Tensor, n_classes: int) -> dict:
        return {} if _is_small(x) else dict(reduced)

    return kwargs


#: Gradient draws of LEG / LEG-TV's ``fast`` preset above 64 x 64 (``estimator="stein"``). On
#: the trained ResNet-18 at 224 x 224 (2 images, 2 idle CPU cores) 64 draws took 2.7 s per
#: image at Spearman 0.97 with a 1,024-draw reference, where the previous fast preset (least
#: squares on 500 evaluations, an 8 x 8 grid) took 10.6 s at 0.63
#: (``benchmarks/bench_efficiency.py --size 224 --presets-only``); 32 draws gave 0.95, 128
#: gave 0.985 at twice the time.
LEG_FAST_STEIN_DRAWS = 64


#: RelEx's ``fast`` preset above 64 x 64: all 50 steps of the default, 2 noisy copies each.
#: The steps matter, the copies hardly (the noise is redrawn every step and the result averages
#: the masks of the last four fifths of the steps). On the trained ResNet-18 at 224 x 224 (two
#: images, two CPU threads beside other work), against the mean of four default runs: 50 x 2
#: gives Spearman 0.93 (Pearson 0.997) in 6.5 s per image, the earlier 20 x 8 0.86 (0.97) in
#: 12.0 s, 50 x 4 0.95, one default run (50 x 16) 0.97; on two other images 50 x 2 0.96, 50 x 4 0.98
#: (``benchmarks/bench_efficiency.py --size 224 --images 2 --methods RelEx``). Measured
#: when the default averaged the second half (reference: two default runs, which agreed at
#: 0.89): 50 x 2 0.87, 50 x 3 0.89, 40 x 4 0.85, 32 x 3 0.61, 20 x 8 0.42.
RELEX_FAST = {"n_iter": 50, "n_samples": 2}


def _leg_quick(x: torch.Tensor, n_classes: int) -> dict:
    """``--quick``: 200 draws on small images, half the fast preset's gradient draws above."""
    return {"n_samples": 200} if _is_small(x) else {"n_samples": LEG_FAST_STEIN_DRAWS // 2}


# LEG and LEG-TV explain the logits (a saturated softmax does not move under perturbation) with
# sigma relative to the image's range and a grid of about sqrt(n / 4) cells a side (draws
# shared by a cell's channels). Above 64 x 64 the fast preset averages perturbed gradients
# (``estimator="stein"``: the same limit as the regression, far fewer model passes).
_LEG_PRESETS: dict = {
    "fast": _fast(
        {"estimator": "stein", "n_samples": LEG_FAST_STEIN_DRAWS, "perturbations_per_eval": 16}
    ),
    "paper": {"n_samples": 3000, "perturbations_per_eval": 100},
}
_LEG_NOTES = {
    "fast": f"images above 64 x 64 pixels: the mean of {LEG_FAST_STEIN_DRAWS} perturbed "
    "gradients (estimator='stein', the limit the regression estimates) on the default grid "
    "instead of a regression on 2,000 evaluations; smaller images: the defaults",
    "paper": "3,000 evaluations as in the paper's sensitivity analysis, grid 16 x 16",
}
_CASO_REF = (
    "Singla et al. 2019, Understanding Impacts of High-Order Loss Approximations and Features "
    "in Deep Learning Interpretation"
)

#: The report's methods by name, in the order the report shows them.
METHODS: dict[str, MethodSpec] = by_name(
    [
        MethodSpec(
            "Saliency",
            Saliency,
            kwargs={"abs": True},
            notes={"fast": "one gradient; no knobs", "paper": "one gradient; no knobs"},
            reference="Simonyan et al. 2014, Deep Inside Convolutional Networks",
        ),
        MethodSpec(
            "IntegratedGradients",
            IntegratedGradients,
            kwargs={"internal_batch_size": 32},
            presets={"fast": {"n_steps": 32}, "paper": {"n_steps": 300}},
            quick_kwargs={"n_steps": 16},
            notes={
                "fast": "32 steps (Captum's default is 50)",
                "paper": "300 steps, the top of the paper's 20-300 range",
            },
            reference="Sundararajan et al. 2017, Axiomatic Attribution for Deep Networks",
        ),
        MethodSpec(
            "Occlusion",
            Occlusion,
            presets={
                "fast": lambda x, k: _occlusion(x, 2),
                "paper": lambda x, k: _occlusion(x, 4),
            },
            quick_kwargs=lambda x, k: _occlusion(x, 1),
            notes={
                "fast": "a zero square of 1/7 of the side (32 px at 224), stride half the square",
                "paper": "the same square, stride a quarter of it (the paper fixes no size; 4x the "
                "evaluations)",
            },
            reference="Zeiler & Fergus 2014, Visualizing and Understanding Convolutional Networks",
        ),
        MethodSpec(
            "SmoothGrad",
            lambda model: NoiseTunnel(Saliency(model)),
            kwargs={"nt_type": "smoothgrad", "stdevs": 0.15},
            presets={
                "fast": {"nt_samples": 16, "nt_samples_batch_size": 16},
                "paper": {"nt_samples": 50, "nt_samples_batch_size": 25},
            },
            quick_kwargs={"nt_samples": 8, "nt_samples_batch_size": 8},
            notes={
                "fast": "16 noisy copies at 15 % noise",
                "paper": "50 noisy copies at 15 % noise (the paper's n = 50, 10-20 % noise)",
            },
            reference="Smilkov et al. 2017, SmoothGrad: removing noise by adding noise",
        ),
        MethodSpec(
            "RelEx",
            RelEx,
            presets={"fast": _fast(RELEX_FAST), "paper": {"preset": "code"}},
            quick_kwargs={"n_iter": 8, "n_samples": 6},
            notes={
                "fast": "the default's 50 steps with 2 noisy copies each instead of 16 (the "
                "noise is redrawn every step, so the steps average it); images of 64 x 64 "
                "pixels or fewer: the defaults",
                "paper": "the authors' code: 50 steps of 50 copies, lr 0.1, momentum 0.99",
            },
            seeded=True,
            reference="Lim, Lee & Kim 2021, Building Reliable Explanations of Unreliable Neural "
            "Networks: Locally Smoothing Perspective of Model Interpretation",
        ),
        MethodSpec(
            "LEG",
            LEG,
            presets=_LEG_PRESETS,
            quick_kwargs=_leg_quick,
            notes=_LEG_NOTES,
            seeded=True,
            reference="Luo, Barut & Jin 2021, Statistically Consistent Saliency Estimation "
            "(empirical LEG, least squares)",
        ),
        MethodSpec(
            "LEG-TV",
            LEGTV,
            kwargs={"K_L": 0.1},
            presets=_LEG_PRESETS,
            quick_kwargs=_leg_quick,
            notes={k: v + "; LP with K_L = 0.1" for k, v in _LEG_NOTES.items()},
            seeded=True,
            reference="Luo, Barut & Jin 2021, Statistically Consistent Saliency Estimation",
        ),
        MethodSpec(
            "CAFO",
            CAFO,
            presets={"fast": {}, "paper": {"lambda1_rule": "paper"}},
            notes={
                "fast": "lambda1 refined inside the sparsity window (our default)",
                "paper": "lambda1 from the paper's factor-10 grid",
            },
            reference=_CASO_REF,
        ),
        MethodSpec(
            "CASO",
            CASO,
            # hessian="auto" (CASO's default): the closed form where it is exact (ReLU nets),
            # double backward elsewhere, so no setting depends on the number of classes
            presets={"fast": CASO_FAST, "paper": {"lambda1_rule": "paper"}},
            notes={
                "fast": "5 FISTA steps, 5 power iterations and 6 refinement steps of lambda1 "
                "(defaults 10, 10, 20), which matter where the Hessian-vector route runs",
                "paper": "10 FISTA steps, 10 power iterations, lambda1 from the paper's "
                "factor-10 grid",
            },
            seeded=True,
            reference=_CASO_REF,
        ),
        MethodSpec(
            "SmoothCASO",
            CASO,
            kwargs={"stdevs": 0.15},
            presets={
                "fast": {"n_samples": 4, **CASO_FAST},
                "paper": {"n_samples": 50, "lambda1_rule": "paper"},
            },
            quick_kwargs={"n_samples": 2},
            notes={
                "fast": "CASO's fast settings averaged over 4 noisy copies (the paper uses 50)",
                "paper": "50 noisy copies at 15 % noise, as in the paper's text",
            },
            seeded=True,
            reference=_CASO_REF,
        ),
    ]
)


def available_methods() -> dict[str, MethodSpec]:
    """The report's methods by name, in the report's order (:data:`METHODS`)."""
    return METHODS
