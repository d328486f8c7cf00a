"""Claim experiments of RelEx (Lim, Lee & Kim, CVPR 2021): adversarial stability and fidelity.

Both experiments explain ``small_cnn`` trained on SyntheticShapes (32 x 32, pixels in [0, 1]) on
test images it classifies correctly, and compare RelEx (its defaults: 50 steps of 16 copies,
masks averaged over the last four fifths of the steps) with Saliency, IntegratedGradients and
SmoothGrad (``NoiseTunnel(Saliency)``) from Captum. Every map is reduced to a pixel map
``sum_c abs(A)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from captum.attr import IntegratedGradients, NoiseTunnel, Saliency
from captum.robust import PGD
from scipy.stats import rankdata
from torch import Tensor, nn

from captum_ext.attr import RelEx
from captum_ext.benchmark import SyntheticShapes, train
from captum_ext.claims._base import (
    ClaimSettings,
    Outcome,
    Verdict,
    claim,
    claim_figure,
    verdict_from,
)
from captum_ext.metrics.fidelity import deletion, insertion, preservation
from captum_ext.metrics.robustness import rank_correlation, topk_intersection

PAPER = "RelEx (Lim, Lee & Kim, CVPR 2021)"

#: The compared methods, RelEx first.
METHODS: tuple[str, ...] = ("RelEx", "Saliency", "IntegratedGradients", "SmoothGrad")
#: Baselines RelEx is compared with.
BASELINES: tuple[str, ...] = METHODS[1:]

#: L-infinity radius of the attack the verdict is read at (pixels in [0, 1]).
EPSILON = 2 / 255
#: PGD iterations (the supplementary's 40, S2.2); step ``2.5 * eps / 40`` as in
#: :func:`captum_ext.metrics.robustness.saliency_stability`.
PGD_STEPS = 40
#: Top-k share of the pixels: 10 % (102 of 1024 at 32 x 32). The paper's k = 1000 is 2 % at
#: 224 x 224; 2 % of a 32 x 32 map is 20 pixels, too few for a stable overlap.
TOPK_SHARE = 0.10
#: SmoothGrad noise (absolute std on [0, 1] pixels): RelEx's ``noise_scale = 0.1`` of the range.
SMOOTHGRAD_STD = 0.1


@dataclass(frozen=True)
class _Knobs:
    """The size knobs of one run."""

    n_images: int
    relex_steps: int
    ig_steps: int
    sg_samples: int


def _knobs(settings: ClaimSettings, n_images: tuple[int, int, int]) -> _Knobs:
    return _Knobs(
        n_images=settings.pick(*n_images),
        relex_steps=settings.pick(10, 50, 50),
        ig_steps=settings.pick(16, 32, 50),
        sg_samples=settings.pick(8, 16, 50),
    )


def shapes_model() -> nn.Module:
    """The benchmark's ``small_cnn`` trained on SyntheticShapes (cached), in eval mode."""
    return train("small_cnn", "shapes").model.eval()


def correct_images(model: nn.Module, count: int, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """The first ``count`` SyntheticShapes test images that ``model`` classifies correctly.

    Args:
        model: The classifier.
        count: Number of images.
        seed: Seed of the dataset (which images are drawn).

    Returns:
        ``(images, labels, object masks)``.
    """
    data = SyntheticShapes(n=max(8 * count, 32), split="test", seed=seed)
    images, labels, masks = data.tensors()
    with torch.no_grad():
        hit = model(images).argmax(1) == labels
    if int(hit.sum()) < count:
        raise RuntimeError(f"only {int(hit.sum())} of {len(data)} test images are correct")
    return images[hit][:count], labels[hit][:count], masks[hit][:count]


@contextmanager
def _seeded_global_rng(seed: int) -> Iterator[None]:
    """Run Captum's ``NoiseTunnel`` (which draws from the global RNG) on a seeded fork of it."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def explainer(
    name: str, model: nn.Module, knobs: _Knobs
) -> Callable[[Tensor, Tensor, int], Tensor]:
    """``explain(inputs, target, seed) -> attributions`` of one method.

    Args:
        name: One of :data:`METHODS`.
        model: The classifier.
        knobs: Sizes (RelEx steps, IG steps, SmoothGrad samples).
    """
    if name == "RelEx":
        relex = RelEx(model)
        return lambda x, t, seed: relex.attribute(
            x, target=t, n_iter=knobs.relex_steps, generator=torch.Generator().manual_seed(seed)
        )
    if name == "Saliency":
        sal = Saliency(model)
        return lambda x, t, seed: sal.attribute(x, target=t)
    if name == "IntegratedGradients":
        ig = IntegratedGradients(model)
        return lambda x, t, seed: ig.attribute(x, target=t, n_steps=knobs.ig_steps)
    if name == "SmoothGrad":
        tunnel = NoiseTunnel(Saliency(model))

        def smoothgrad(x: Tensor, t: Tensor, seed: int) -> Tensor:
            with _seeded_global_rng(seed):
                return tunnel.attribute(
                    x, target=t, nt_type="smoothgrad", nt_samples=knobs.sg_samples,
                    stdevs=SMOOTHGRAD_STD,
                )  # fmt: skip

        return smoothgrad
    raise ValueError(f"name must be one of {METHODS}, got {name!r}")


def pgd_attack(model: nn.Module, images: Tensor, target: Tensor, eps: float) -> Tensor:
    """Untargeted L-inf PGD on ``target`` (Captum's), clamped to [0, 1].

    The attack of ``saliency_stability``: 40 steps of ``2.5 * eps / 40``, no random start.
    """
    attack = PGD(model, lower_bound=0.0, upper_bound=1.0)
    adv = attack.perturb(
        images, radius=eps, step_size=2.5 * eps / PGD_STEPS, step_num=PGD_STEPS, target=target,
        norm="Linf",
    )  # fmt: skip
    return adv.detach()


def _similarity(a: Tensor, b: Tensor, k: int) -> tuple[Tensor, Tensor]:
    return topk_intersection(a, b, k=k), rank_correlation(a, b)


def _mean(values: Tensor) -> float:
    return float(values.mean()) if values.numel() else 0.0


def stability_verdict(numbers: dict) -> tuple[Verdict, list[str], list[str]]:
    """The rule of :func:`adversarial_stability` applied to its ``numbers``.

    Returns:
        ``(verdict, baselines RelEx beats on top-k, baselines it beats on Spearman)``.
    """
    beats = {
        metric: [b for b in BASELINES if numbers[f"{metric}_RelEx"] > numbers[f"{metric}_{b}"]]
        for metric in ("topk", "spearman")
    }
    on_both = set(beats["topk"]) & set(beats["spearman"])
    all_one = any(len(v) == len(BASELINES) for v in beats.values())
    verdict = verdict_from(len(on_both) == len(BASELINES), partly=all_one or bool(on_both))
    return verdict, beats["topk"], beats["spearman"]


def _stability_figure(numbers: dict, settings: ClaimSettings, name: str) -> str | None:
    return claim_figure(
        settings, name, lambda fig: _draw_stability(fig, numbers), (9, 3.2), layout="tight"
    )


def _draw_stability(fig: Any, numbers: dict) -> None:
    axes = fig.subplots(1, 2)
    pos = np.arange(len(METHODS))
    for ax, metric, label in zip(axes, ("topk", "spearman"), ("top-10% intersection", "Spearman")):
        ax.bar(pos - 0.2, [numbers[f"{metric}_{m}"] for m in METHODS], 0.4, label="attacked")
        ax.bar(pos + 0.2, [numbers[f"{metric}_seed_{m}"] for m in METHODS], 0.4,
               label="clean, other seed (noise floor)")  # fmt: skip
        ax.set_xticks(pos, ["RelEx", "Saliency", "IG", "SmoothGrad"])
        ax.set_ylim(0, 1.05)
        ax.set_title(f"{label}, clean vs PGD {EPSILON * 255:.0f}/255", fontsize=9)
    axes[0].legend(fontsize=7, loc="lower left")


@claim(
    name="relex_adversarial_stability",
    paper=PAPER,
    statement=(
        "RelEx's saliency maps are robust to adversarial inputs: under an untargeted PGD attack "
        "they stay more similar to the clean maps (Spearman, top-k intersection) than those of "
        "SmoothGrad, IntegratedGradients and simple gradients."
    ),
)
def adversarial_stability(settings: ClaimSettings) -> Outcome:
    """RelEx's maps change less under a small adversarial attack than gradient maps do.

    Paper: main-paper Figure 3 (Spearman) and supplementary Figure S1 (top-1000 intersection):
    under the untargeted PGD attack (40 iterations, S2.2) on a natural ResNet-50 (ImageNet),
    RelEx keeps the highest similarity between clean and attacked maps at every radius; the
    supplementary's text gives no numbers (the figures are not in the provided text).

    Protocol: ``small_cnn`` on SyntheticShapes, N correctly classified test images (8 at
    "default", 2 at "test", 32 at "full"); Captum's L-inf PGD at eps = 2/255, 40 steps of
    ``2.5 eps / 40``, bounds (0, 1), untargeted on the predicted class (the attack of
    ``saliency_stability``). Every method explains the clean predicted class on the clean and
    on the attacked image (RelEx and SmoothGrad with the same seed for both); the maps are
    compared by the top-10 % intersection and the Spearman correlation. The survivors' means
    (Ghorbani's protocol, examples whose prediction did not flip) are reported too. Noise
    floor: RelEx and SmoothGrad on the clean images with two seeds (no attack).

    Rule (fixed before the run): over all attacked images, "holds" if RelEx's mean top-10 %
    intersection and its mean Spearman both exceed those of each of Saliency,
    IntegratedGradients and SmoothGrad; "partly" if it exceeds all three on one of the two
    metrics, or at least one baseline on both; "does not hold" otherwise.

    Result at size="default" (8 images, PGD flips 3 of them; run of 2026-12-07, RelEx's mask
    starting at 0.005 everywhere, antithetic noisy copies, ``temperature="auto"``, masks
    averaged from a fifth of the steps), top-10 % / Spearman: RelEx 0.82 / 0.92, Saliency
    0.67 / 0.77, IntegratedGradients 0.83 / 0.88, SmoothGrad 0.86 / 0.98: "partly" (RelEx
    beats Saliency on both, IG on Spearman only). Noise floor, two clean seeds: RelEx
    0.83 / 0.90, SmoothGrad 0.70 / 0.91. Averaging the second half instead (the earlier
    default) the same day: RelEx 0.80 / 0.90, floor 0.81 / 0.88; with the paper's raw softmax
    as well: RelEx 0.81 / 0.90, the same floor. With independent copies: RelEx
    0.79 / 0.89, floor 0.79 / 0.86; with the papers' random start U[0, 0.01) as well: RelEx
    0.81 / 0.91, floor 0.74 / 0.79 (the start moves the floor, not the attacked maps, which
    share the seed and hence the start). An earlier run (another training of small_cnn) gave
    RelEx 0.81 / 0.84, floor 0.73 / 0.83, the attacked map drawn with another seed 0.68 / 0.74.

    Why: RelEx's map is the end point of an optimisation that never converges (constant-length
    normalised steps), so it depends on the noise drawn about as much as on a 2/255 attack: its
    clean-vs-attacked agreement sits near its own seed-to-seed floor, below the gradient maps of
    this small, smooth CNN, which the attack barely moves. Measured once separately: at 8/255
    (all 8 predictions flipped) the order is the same (RelEx 0.73 / 0.77, Saliency 0.57 / 0.67,
    IG 0.77 / 0.80, SmoothGrad 0.81 / 0.96). The supplementary's own setting
    (``preset="supplementary"``: lr 1e-3, no momentum, 100 copies; 2 images) gives 0.97 / 1.00
    clean vs attacked with a shared seed, but only because its mask barely leaves the random
    initialisation U[0, 0.01) (final vs initial mask 0.81 / 0.97; two seeds 0.13 / 0.02): the
    agreement is the shared initial noise, not the explanation. The benchmark differs from the
    paper's (ImageNet ResNet-50, radii 0.07 to 8 normalised units, i.e. about 4/255 and up).
    """
    knobs = _knobs(settings, (2, 8, 32))
    model = shapes_model()
    images, labels, _ = correct_images(model, knobs.n_images, settings.seed)
    k = max(1, round(TOPK_SHARE * images.shape[-2] * images.shape[-1]))
    adv = pgd_attack(model, images, labels, EPSILON)
    with torch.no_grad():
        kept = model(adv).argmax(1) == labels
    numbers: dict[str, float | list[float]] = {
        "epsilon": EPSILON,
        "k": float(k),
        "n_images": float(len(images)),
        "flipped": 1.0 - float(kept.float().mean()),
        "linf": float((adv - images).abs().amax()),
    }
    for name in METHODS:
        explain = explainer(name, model, knobs)
        clean = explain(images, labels, settings.seed).detach()
        topk, rho = _similarity(clean, explain(adv, labels, settings.seed).detach(), k)
        numbers[f"topk_{name}"], numbers[f"spearman_{name}"] = _mean(topk), _mean(rho)
        numbers[f"topk_kept_{name}"] = _mean(topk[kept])
        numbers[f"spearman_kept_{name}"] = _mean(rho[kept])
        numbers[f"topk_per_image_{name}"] = topk.tolist()
        if name in ("RelEx", "SmoothGrad"):
            other = explain(images, labels, settings.seed + 1).detach()
            seed_topk, seed_rho = _similarity(clean, other, k)
            # the attacked map drawn with another seed: attack and seed noise together
            cross_topk, cross_rho = _similarity(
                clean, explain(adv, labels, settings.seed + 1).detach(), k
            )
            numbers[f"topk_cross_{name}"] = _mean(cross_topk)
            numbers[f"spearman_cross_{name}"] = _mean(cross_rho)
        else:  # deterministic: two runs give the same map
            seed_topk, seed_rho = torch.ones(1), torch.ones(1)
        numbers[f"topk_seed_{name}"] = _mean(seed_topk)
        numbers[f"spearman_seed_{name}"] = _mean(seed_rho)
    verdict, beat_topk, beat_rho = stability_verdict(numbers)
    ours = (
        f"PGD {EPSILON * 255:.0f}/255 flips {numbers['flipped']:.0%} of {len(images)} images. "
        "Clean vs attacked, top-10% / Spearman (all images): "
        + ", ".join(
            f"{m} {numbers[f'topk_{m}']:.2f} / {numbers[f'spearman_{m}']:.2f}" for m in METHODS
        )
        + ". Noise floor (two clean seeds): "
        + ", ".join(
            f"{m} {numbers[f'topk_seed_{m}']:.2f} / {numbers[f'spearman_seed_{m}']:.2f}"
            for m in ("RelEx", "SmoothGrad")
        )
        + f". RelEx beats {beat_topk or 'none'} on top-k, {beat_rho or 'none'} on Spearman."
    )
    why = "" if verdict == "holds" else _stability_why(numbers)
    return Outcome(
        paper_value=(
            "Figure 3 (main) and Figure S1: under untargeted PGD (40 iterations) RelEx keeps the "
            "highest Spearman and top-1000 intersection between clean and attacked maps, above "
            "SmoothGrad, IntegratedGradients and simple gradients (no numbers in the text)"
        ),
        ours=ours,
        verdict=verdict,
        rule=(
            f"PGD L-inf eps={EPSILON * 255:.0f}/255, 40 steps, all attacked images, clean "
            "predicted class: holds if RelEx's mean top-10% intersection and mean Spearman both "
            "exceed those of Saliency, IntegratedGradients and SmoothGrad; partly if it exceeds "
            "all three on one metric or at least one baseline on both; else does not hold"
        ),
        why=why,
        numbers=numbers,
        figure=_stability_figure(numbers, settings, "relex_adversarial_stability.png"),
    )


def _pair(numbers: dict, key: str) -> str:
    return f"{numbers[f'topk_{key}']:.2f} / {numbers[f'spearman_{key}']:.2f}"


def _stability_why(numbers: dict) -> str:
    return (
        "Not an implementation error (the survivors' numbers match saliency_stability). RelEx's "
        "map is the end point of a stochastic optimisation whose constant-length normalised "
        "steps never converge, so it is not a function of the input alone: two clean runs with "
        f"different seeds agree at top-10% / Spearman {_pair(numbers, 'seed_RelEx')} "
        f"(SmoothGrad {_pair(numbers, 'seed_SmoothGrad')}, Saliency and IG 1). Its clean vs "
        f"attacked agreement with the same seed, {_pair(numbers, 'RelEx')}, is at that floor: "
        "the attack moves RelEx's map no more than a new seed does (with another seed for the "
        f"attacked map: {_pair(numbers, 'cross_RelEx')}), but the optimisation noise alone "
        "keeps it below the gradient maps of this small, smooth CNN, which a 2/255 attack barely "
        f"moves (IG {_pair(numbers, 'IntegratedGradients')}, SmoothGrad "
        f"{_pair(numbers, 'SmoothGrad')}). The benchmark differs from the paper's: a 6-class "
        "32 x 32 CNN instead of ImageNet ResNet-50, whose gradient maps are far more fragile, "
        "and the paper's radii start at 0.07 normalised units (about 4/255) and go to 8. "
        "Measured once separately (docstring): 8/255 gives the same order, and the "
        "supplementary's own setting (lr 1e-3, no momentum) agrees at 0.97 / 1.00 with a "
        "shared seed only because its mask barely leaves its random initialisation (two seeds: "
        "0.13 / 0.02)"
    )


def fidelity_verdict(numbers: dict) -> tuple[Verdict, bool, bool]:
    """The rule of :func:`fidelity` applied to its ``numbers``.

    Returns:
        ``(verdict, RelEx has the lowest deletion AUC, RelEx has the highest preservation AUC)``.
    """
    best_del = all(numbers["deletion_RelEx"] < numbers[f"deletion_{b}"] for b in BASELINES)
    best_pres = all(numbers["preservation_RelEx"] > numbers[f"preservation_{b}"] for b in BASELINES)
    return verdict_from(best_del and best_pres, partly=best_del or best_pres), best_del, best_pres


def _fidelity_figure(curves: dict[str, dict[str, Tensor]], settings: ClaimSettings) -> str | None:
    return claim_figure(
        settings, "relex_fidelity.png", lambda fig: _draw_fidelity(fig, curves), (11, 3.2),
        layout="tight",
    )  # fmt: skip


def _draw_fidelity(fig: Any, curves: dict[str, dict[str, Tensor]]) -> None:
    axes = fig.subplots(1, 3)
    for ax, kind in zip(axes, ("deletion", "preservation", "insertion")):
        for method, by_kind in curves.items():
            mean = by_kind[kind].mean(0).numpy()
            ax.plot(np.linspace(0, 1, len(mean)), mean, label=method)
        ax.set_title(f"{kind} (pixels replaced)", fontsize=9)
        ax.set_xlabel("fraction of pixels", fontsize=8)
    axes[0].set_ylabel("softmax of the predicted class", fontsize=8)
    axes[0].legend(fontsize=7)


def object_auroc(gray: Tensor, objects: Tensor) -> float:
    """Mean over images of the AUROC of the map's values for object against background pixels.

    The Mann-Whitney statistic with average ranks for ties: the probability that a random object
    pixel outranks a random background pixel (1: the map orders the whole object above all of
    the background, which is what preservation rewards; 0.5: chance).

    Args:
        gray: Pixel maps ``(N, P)``.
        objects: Boolean object masks ``(N, P)``.
    """
    scores = []
    for values, inside in zip(gray.numpy(), objects.numpy()):
        ranks = rankdata(values)
        n_in, n_out = int(inside.sum()), int((~inside).sum())
        scores.append((ranks[inside].sum() - n_in * (n_in + 1) / 2) / (n_in * n_out))
    return float(np.mean(scores))


def rank_smoothness(gray: Tensor) -> float:
    """Lag-1 spatial autocorrelation of the maps' pixel ranks (1: smooth, 0: white noise).

    The mean of the vertical and horizontal neighbour products of the centred ranks, over their
    variance, pooled over the images ``(N, H, W)``.
    """
    ranks = gray.flatten(1).argsort(1).argsort(1).to(torch.float64).view_as(gray)
    ranks = ranks - ranks.mean(dim=(1, 2), keepdim=True)
    vertical = (ranks[:, 1:, :] * ranks[:, :-1, :]).mean()
    horizontal = (ranks[:, :, 1:] * ranks[:, :, :-1]).mean()
    return float((vertical + horizontal) / 2 / (ranks * ranks).mean())


def box_blur(attributions: Tensor, size: int = 5) -> Tensor:
    """The gray map ``sum_c abs(A)`` averaged over a ``size`` x ``size`` box, ``(N, 1, H, W)``."""
    gray = attributions.abs().sum(1, keepdim=True)
    return F.avg_pool2d(gray, size, stride=1, padding=size // 2, count_include_pad=False)


#: Table S3 (ImageNet, natural ResNet-50), deletion / preservation AUC.
TABLE_S3 = {
    "RelEx": (0.0567, 0.4093),
    "SmoothGrad": (0.0800, 0.3845),
    "IntegratedGradients": (0.0907, 0.3650),
    "Saliency": (0.1336, 0.2519),
}


@claim(
    name="relex_fidelity",
    paper=PAPER,
    statement=(
        "RelEx's maps are the most faithful to the model: the lowest deletion AUC and the "
        "highest preservation AUC among SmoothGrad, IntegratedGradients and simple gradients "
        "(Table S3)."
    ),
)
def fidelity(settings: ClaimSettings) -> Outcome:
    """RelEx has the best deletion and preservation AUC (Table S3).

    Paper: supplementary Table S3 (ImageNet validation, natural ResNet-50): deletion (lower is
    better) RelEx 0.0567 < SmoothGrad 0.0800 < IntegratedGradients 0.0907 < simple gradient
    0.1336; preservation (higher is better) RelEx 0.4093 > SmoothGrad 0.3845 >
    IntegratedGradients 0.3650 > simple gradient 0.2519 (GradCAM's 0.5647 is higher, but
    GradCAM is not compared here). The paper reports deletion and preservation, not insertion;
    insertion (RISE, blurred start) is reported here as an extra and does not enter the rule.

    Protocol: ``small_cnn`` on SyntheticShapes, N correctly classified test images (8 at
    "default", 2 at "test", 48 at "full"); maps of the predicted class;
    :func:`~captum_ext.metrics.fidelity.deletion` and ``preservation`` with the paper's
    substrate 0 and 224 steps (5 pixels a step at 32 x 32), ``insertion`` from the blurred
    image. The curves only use the pixel order, so the paper's 99th-percentile normalisation
    of the gradient maps changes nothing. Diagnostic (not in the rule): RelEx with
    ``baselines=0.0``, the paper's deletion to black, which is also the metric's substrate.

    Rule (fixed before the run): "holds" if RelEx's mean deletion AUC is the lowest and its
    mean preservation AUC the highest of the four methods; "partly" if only one of the two;
    "does not hold" if neither.

    Result at size="default" (8 images; run of 2026-12-07), deletion / preservation /
    insertion AUC: RelEx 0.155 / 0.442 / 0.841, Saliency 0.237 / 0.384 / 0.738,
    IntegratedGradients 0.227 / 0.434 / 0.795, SmoothGrad 0.216 / 0.682 / 0.787: "partly".
    RelEx has the best deletion and insertion, SmoothGrad the best preservation; the paper's
    order of the baselines (SmoothGrad > IG > Saliency) holds. (An earlier run with another
    training of small_cnn: RelEx 0.150 / 0.470, Saliency 0.222 / 0.348, IG 0.223 / 0.438,
    SmoothGrad 0.227 / 0.673.)

    Why: not the implementation (the AUCs match a per-step loop) nor RelEx's mean-colour
    deletion (``baselines=0``: 0.135 / 0.463), nor object localisation (AUROC of object against
    background pixels about 0.87 for RelEx, IG and SmoothGrad). Preservation blacks out the
    least salient pixels first; on this 32 x 32 CNN scattered black pixels destroy the class
    faster than contiguous black regions, so the metric rewards spatially smooth maps
    (SmoothGrad's ranks have lag-1 autocorrelation 0.83, RelEx's 0.60); blurring every map with
    a 5 x 5 box raises RelEx's preservation to 0.647 and IG's to 0.634 (SmoothGrad 0.695). In
    the paper too the smoothest map, GradCAM, has the best preservation.
    """
    knobs = _knobs(settings, (2, 8, 48))
    model = shapes_model()
    images, labels, objects = correct_images(model, knobs.n_images, settings.seed)
    numbers: dict[str, float | list[float]] = {"n_images": float(len(images))}
    curves: dict[str, dict[str, Tensor]] = {}
    maps = {m: explainer(m, model, knobs)(images, labels, settings.seed) for m in METHODS}
    maps["RelEx_black"] = RelEx(model).attribute(
        images, target=labels, n_iter=knobs.relex_steps, baselines=0.0,
        generator=torch.Generator().manual_seed(settings.seed),
    )  # fmt: skip
    for method, attr in maps.items():
        curves[method] = {}
        gray = attr.detach().abs().sum(1).flatten(1)
        numbers[f"zero_share_{method}"] = float((gray <= 0).float().mean())
        numbers[f"object_auroc_{method}"] = object_auroc(gray, objects.flatten(1))
        numbers[f"smoothness_{method}"] = rank_smoothness(gray.view_as(objects))
        blurred = box_blur(attr.detach())
        numbers[f"preservation_blurred_{method}"] = float(
            preservation(model, images, blurred, target=labels).auc.mean()
        )
        for kind, metric in (
            ("deletion", deletion),
            ("preservation", preservation),
            ("insertion", insertion),
        ):
            result = metric(model, images, attr.detach(), target=labels)
            curves[method][kind] = result.curves
            numbers[f"{kind}_{method}"] = float(result.auc.mean())
            numbers[f"{kind}_per_image_{method}"] = result.auc.tolist()
    verdict, best_del, best_pres = fidelity_verdict(numbers)
    ours = "Deletion / preservation / insertion AUC: " + ", ".join(
        f"{m} {numbers[f'deletion_{m}']:.3f} / {numbers[f'preservation_{m}']:.3f} / "
        f"{numbers[f'insertion_{m}']:.3f}"
        for m in (*METHODS, "RelEx_black")
    )
    why = "" if verdict == "holds" else _fidelity_why(numbers, best_del, best_pres)
    return Outcome(
        paper_value=(
            "Table S3 (ImageNet, natural ResNet-50), deletion / preservation: "
            + ", ".join(f"{m} {d:.4f} / {p:.4f}" for m, (d, p) in TABLE_S3.items())
            + "; RelEx best on both"
        ),
        ours=ours,
        verdict=verdict,
        rule=(
            "holds if RelEx's mean deletion AUC (substrate 0) is the lowest and its mean "
            "preservation AUC the highest of RelEx, Saliency, IntegratedGradients, SmoothGrad; "
            "partly if only one of the two; else does not hold (insertion and RelEx with "
            "baselines=0 are reported, not judged)"
        ),
        why=why,
        numbers=numbers,
        figure=_fidelity_figure(curves, settings),
    )


def _fidelity_why(numbers: dict, best_del: bool, best_pres: bool) -> str:
    lost = [k for k, best in (("deletion", best_del), ("preservation", best_pres)) if not best]
    kind = lost[0]
    sign = 1.0 if kind == "preservation" else -1.0
    winner = max(METHODS, key=lambda m: sign * numbers[f"{kind}_{m}"])

    def each(key: str, fmt: str = ".2f") -> str:
        return ", ".join(f"{m} {numbers[f'{key}_{m}']:{fmt}}" for m in METHODS)

    return (
        f"RelEx is not the best on {' and '.join(lost)}: {winner} is "
        f"({numbers[f'{kind}_{winner}']:.3f} against RelEx's {numbers[f'{kind}_RelEx']:.3f}). "
        "Not an implementation error (the AUCs match a per-step loop) nor the substrate: RelEx "
        "deleting to black like the metric (baselines=0, the paper's setting) gets "
        f"{numbers['deletion_RelEx_black']:.3f} / {numbers['preservation_RelEx_black']:.3f}. "
        "Nor which pixels the maps rank high: RelEx separates object from background pixels "
        f"as well as SmoothGrad does (AUROC {each('object_auroc')}). Preservation blacks out "
        "the least salient pixels first, and on this 32 x 32 CNN scattered black pixels "
        "destroy the class faster than contiguous black regions, so it rewards spatially "
        f"smooth maps: lag-1 rank autocorrelation {each('smoothness')}; blurring every map "
        f"with a 5 x 5 box raises preservation to {each('preservation_blurred', '.3f')}. The "
        "paper's Table S3 shows the same effect for its smoothest map: GradCAM has the best "
        "preservation (0.5647) and a poor deletion (0.1232)"
    )
