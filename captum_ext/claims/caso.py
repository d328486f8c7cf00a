"""Claim experiments of CAFO / CASO (Singla, Wallace, Feng & Feizi, ICML 2019).

Two claims, run with the public API (:class:`~captum_ext.attr.CAFO`,
:class:`~captum_ext.attr.CASO`, :mod:`captum_ext.metrics`) on the embedded benchmark:

- ``caso_theorem5`` (:func:`theorem5`): Theorem 5 and Fig. 1 (Sec. 3.2-3.3): with
  ``lambda1 = 0`` the CASO map is almost parallel to the CAFO map (the gradient) when the
  predicted class is confident and the classes are many; at low confidence they differ.
- ``caso_localisation`` (:func:`localisation`): Sec. 4.1 and 5 (Figs. 3-4): the sparse
  context-aware maps are less noisy and more coherent with the object than the gradient.
  The paper shows this only qualitatively; here it is measured as localisation inside the
  object mask (pointing game, energy) and deletion AUC against Captum's ``Saliency``.

Each experiment's docstring states the claim, the protocol, the rule (fixed before any result
was seen) and the result measured at ``size="default"``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from captum.attr import Saliency
from scipy.stats import spearmanr
from torch import Tensor, nn
from torch.nn.utils import skip_init

from captum_ext.attr import CAFO, CASO
from captum_ext.benchmark import SyntheticShapes, saturated, train
from captum_ext.claims._base import ClaimSettings, Outcome, claim, claim_figure, verdict_from
from captum_ext.metrics import energy_pointing_game, pointing_game
from captum_ext.metrics.fidelity import deletion

PAPER = "CAFO / CASO (Singla, Wallace, Feng & Feizi, ICML 2019)"

#: Logit multipliers applied to the trained small_cnn (``saturated``): 1 is the model itself,
#: smaller values lower its confidence (temperature ``1 / scale``).
LOGIT_SCALES = (1.0, 0.5, 0.25, 0.125)

#: Class counts and controlled confidences of the random ReLU networks (Theorem 5's limit).
CLASS_COUNTS = (6, 100, 1000)
CONFIDENCES = (0.5, 0.9, 0.99, 0.999)

#: Confidence from which a prediction counts as "high" in the rule of ``caso_theorem5``.
HIGH_CONFIDENCE = 0.99
#: Cosine that counts as "almost parallel" (the spec's Theorem 5 test: cosine > 0.99).
PARALLEL = 0.99

#: Tolerances of ``caso_localisation``: how far CAFO / CASO may fall behind Saliency and still
#: count as "at least Saliency" (absolute, on the per-image means).
POINTING_TOL = 0.05
ENERGY_TOL = 0.02
DELETION_TOL = 0.02


# --------------------------------------------------------------------------------- helpers
class _ScaledLogits(nn.Module):
    """``model(x) * scale[:, None]``: a per-example temperature passed as a forward argument."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, scale: Tensor) -> Tensor:
        return self.model(x) * scale[:, None]


def _random_relu_mlp(d: int, classes: int, hidden: int, gen: torch.Generator) -> nn.Module:
    """A ReLU MLP ``d -> hidden -> classes`` with He-scaled Gaussian weights from ``gen``."""
    # skip_init: no default initialisation, so the global RNG is never drawn from
    first = skip_init(nn.Linear, d, hidden)
    last = skip_init(nn.Linear, hidden, classes)
    with torch.no_grad():
        for layer in (first, last):
            fan_in = layer.in_features
            layer.weight.copy_(
                torch.randn(layer.out_features, fan_in, generator=gen) * math.sqrt(2.0 / fan_in)
            )
            layer.bias.zero_()
    return nn.Sequential(nn.Flatten(), first, nn.ReLU(), last).eval()


def _scales_for_confidence(logits: Tensor, confidence: float, steps: int = 80) -> Tensor:
    """Per-row ``s`` with ``max softmax(s * logits) = confidence`` (bisection on ``log s``).

    The top probability of ``softmax(s z)`` grows monotonically with ``s > 0`` from ``1 / C``
    to 1 (for a unique maximum), so the bisection brackets the root.
    """
    lo = torch.full((logits.shape[0],), -12.0, dtype=torch.float64)
    hi = torch.full((logits.shape[0],), 12.0, dtype=torch.float64)
    z = logits.double()
    for _ in range(steps):
        mid = (lo + hi) / 2
        top = (z * mid.exp()[:, None]).softmax(1).amax(1)
        too_high = top > confidence
        hi = torch.where(too_high, mid, hi)
        lo = torch.where(too_high, lo, mid)
    return ((lo + hi) / 2).exp().float()


def _cafo_caso_cosine(
    model: Callable[..., Tensor],
    x: Tensor,
    target: Tensor,
    args: Any = None,
    hessian: str = "hvp",
    seed: int = 0,
) -> tuple[Tensor, Tensor]:
    """Per-example cosine between CASO and CAFO with ``lambda1 = 0`` (the paper's Fig. 1).

    CASO runs the paper's 10 proximal-gradient iterations (Table 1) with an exact Hessian
    (``"closed_form"`` is exact for ReLU networks, as in the paper's Fig. 1; ``"hvp"`` is exact
    for any network); everything else is the default. The Frobenius difference of Fig. 1,
    after scaling both maps to unit L2 norm, is ``sqrt(2 - 2 cos)``.

    Returns:
        ``(cosine, curvature_share)`` per example, the second ``L / (2 lambda2)`` from
        :attr:`CASO.last_info`: how much of the ridge the Hessian's top eigenvalue cancels
        (0: CASO is CAFO whatever ``H`` looks like).
    """
    # the theorem compares the signed solutions
    cafo = CAFO(model).attribute(x, target, args, lambda1=0.0, abs=False)
    caso_method = CASO(model)
    gen = torch.Generator().manual_seed(seed)  # the power iteration's start vector
    caso = caso_method.attribute(
        x, target, args, lambda1=0.0, hessian=hessian, generator=gen, abs=False
    )
    info = caso_method.last_info
    share = (info["top_eigenvalue"] / (2 * info["lambda2"])).double()
    cos = F.cosine_similarity(cafo.flatten(1).double(), caso.flatten(1).double(), dim=1)
    return cos, share


def rank_one_residual(probs: Tensor) -> Tensor:
    """Theorem 4's quantity per row: ``sqrt(sum_{i>=2} mu_i^2) / mu_1`` of ``diag(p) - p p^T``.

    ``mu_1 >= mu_2 >= ...`` are the eigenvalues of the cross-entropy Hessian in the logits
    (Prop. 1's middle factor). 0 means rank one: then ``H = J A J^T`` is rank one along the
    gradient and CASO with ``lambda1 = 0`` is exactly parallel to CAFO, at any confidence.
    """
    p = probs.double()
    a = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    mu = torch.linalg.eigvalsh(a).flip(-1)
    return mu[:, 1:].norm(dim=1) / mu[:, 0].clamp_min(1e-300)


def _first_correct(model: nn.Module, dataset: SyntheticShapes, count: int) -> tuple[Tensor, ...]:
    """The first ``count`` items of ``dataset`` that ``model`` classifies correctly, stacked."""
    images, labels, masks = dataset.tensors()
    with torch.no_grad():
        keep = model(images).argmax(1) == labels
    idx = keep.nonzero()[:, 0][:count]
    return images[idx], labels[idx], masks[idx]


# ------------------------------------------------------------------------------ Theorem 5
def _spearman(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Spearman's ``(rho, p)`` (scipy), ``(0, 1)`` where it is undefined (a constant input)."""
    rho, p_value = spearmanr(a, b)
    if not (np.isfinite(rho) and np.isfinite(p_value)):
        return 0.0, 1.0
    return float(rho), float(p_value)


def _trained_part(settings: ClaimSettings) -> dict[str, np.ndarray]:
    """Confidence, cosine, curvature share and rank-one residual per (image, logit scale).

    On the trained small_cnn (6 classes); see :func:`_cafo_caso_cosine`.
    """
    model = train("small_cnn", "shapes").model
    n = settings.pick(6, 40, 200)
    images, _, _ = SyntheticShapes(n=n, split="test", seed=settings.seed).tensors()
    rows: dict[str, list[Tensor]] = {"confidence": [], "cosine": [], "share": [], "residual": []}
    for scale in LOGIT_SCALES:
        net = saturated(model, scale)
        with torch.no_grad():
            probs = net(images).softmax(1)
        cos, share = _cafo_caso_cosine(
            net, images, probs.argmax(1), hessian="closed_form", seed=settings.seed
        )
        rows["confidence"].append(probs.amax(1).double())
        rows["cosine"].append(cos)
        rows["share"].append(share)
        rows["residual"].append(rank_one_residual(probs))
    return {k: torch.cat(v).numpy() for k, v in rows.items()}


def _class_count_part(settings: ClaimSettings) -> dict[str, list[float]]:
    """Mean cosine and curvature share per confidence, for each class count.

    Random ReLU MLPs with :data:`CLASS_COUNTS` classes on shapes images, each image's logits
    scaled to every top probability of :data:`CONFIDENCES`.
    """
    gen = torch.Generator().manual_seed(settings.seed)
    n = settings.pick(2, 12, 40)
    images, _, _ = SyntheticShapes(n=n, split="test", seed=settings.seed + 1).tensors()
    out: dict[str, list[float]] = {}
    for classes in CLASS_COUNTS:
        mlp = _random_relu_mlp(images[0].numel(), classes, settings.pick(32, 128, 256), gen)
        net = _ScaledLogits(mlp).eval()
        with torch.no_grad():
            logits = mlp(images)
        target = logits.argmax(1)
        cos, share = [], []
        for p in CONFIDENCES:
            scales = _scales_for_confidence(logits, p)
            c, sh = _cafo_caso_cosine(
                net, images, target, (scales,), hessian="hvp", seed=settings.seed
            )
            cos.append(float(c.mean()))
            share.append(float(sh.mean()))
        out[f"mlp_{classes}_classes_cosine"] = cos
        out[f"mlp_{classes}_classes_curvature_share"] = share
    return out


def _theorem5_figure(
    settings: ClaimSettings, conf: np.ndarray, cos: np.ndarray, by_c: dict[str, list[float]]
) -> str | None:
    def draw(fig: Any) -> None:
        ax1, ax2 = fig.subplots(1, 2)
        ax1.scatter(conf, np.sqrt(np.clip(2 - 2 * cos, 0, None)), s=8)
        ax1.set_xlabel("confidence (top softmax probability)")
        ax1.set_ylabel("||CASO - CAFO|| (unit L2 maps)")
        ax1.set_title("small_cnn, 6 classes (cf. Fig. 1)")
        for classes in CLASS_COUNTS:
            gap = [max(1 - v, 1e-12) for v in by_c[f"mlp_{classes}_classes_cosine"]]
            ax2.plot(CONFIDENCES, gap, marker="o", label=f"{classes} classes")
        ax2.set_xscale("logit")
        ax2.set_yscale("log")
        ax2.set_xlabel("controlled confidence")
        ax2.set_ylabel("1 - cosine(CASO, CAFO)")
        ax2.set_title("random ReLU MLP (Theorem 5)")
        ax2.legend()

    return claim_figure(settings, "caso_theorem5.png", draw, (9.0, 3.6), layout="constrained")


@claim(
    name="caso_theorem5",
    paper=PAPER,
    statement=(
        "With lambda1 = 0, the CASO map is almost parallel to the CAFO map (the gradient) when "
        "the predicted class has probability close to 1 and the classes are many (Theorem 5); "
        "at low confidence the two differ (Fig. 1)."
    ),
)
def theorem5(settings: ClaimSettings) -> Outcome:
    """Theorem 5 / Fig. 1: CASO vs CAFO as a function of confidence and class count.

    **Claim** (Sec. 3.2, Theorem 5; Sec. 3.3, Fig. 1, ResNet-50 on 1,000 ImageNet images): if
    the predicted class has probability ``1 - (c - 1) eps`` with ``c eps -> 0`` as the number
    of classes ``c -> inf``, the input Hessian is rank one along the gradient and CASO
    (``lambda1 = 0``) is parallel to CAFO (``lambda1 = 0``, the gradient). Fig. 1 plots the
    Frobenius difference of the two maps (both scaled to unit L2 norm) against confidence: it
    is large at low confidence and near 0 at high confidence.

    **Protocol.** Both maps with ``lambda1 = 0``, CASO with the closed-form Hessian (exact for
    these ReLU networks) and the paper's 10 proximal-gradient iterations (Table 1), everything
    else the defaults; the cosine of the two maps (the Frobenius difference is
    ``sqrt(2 - 2 cos)``). (A) the trained small_cnn (6 classes) on shapes test images, its
    logits also multiplied by 0.5, 0.25 and 0.125 (:func:`~captum_ext.benchmark.saturated`) to
    lower the confidence: one point per (image, scale). (B) random He-initialised ReLU MLPs
    with 6, 100 and 1,000 classes on shapes images, each image's logits scaled (a per-example
    temperature) so that its top probability is exactly 0.5, 0.9, 0.99 or 0.999.

    **Rule** (fixed before any run): (A) holds if the Spearman correlation of confidence and
    cosine is positive with p < 0.05 and the mean cosine of the points with confidence
    ``>= 0.99`` is ``>= 0.99``; (B) holds if, with 1,000 classes, the mean cosine at
    confidence 0.999 is ``>= 0.99`` and above the one at 0.5, and at 0.999 the 1,000-class
    ``1 - cos`` is at most the 6-class one. ``holds``: (A) and (B); ``partly``: one of them.

    **Result** (``size="default"``, seed 0, run of 2026-12-07): ``partly``. (A) fails:
    Spearman rho(confidence, cosine) = -0.01 (p = 0.9) over 160 points, although the 7 points
    with confidence >= 0.99 have mean cosine 0.9987; the least confident quarter has mean
    cosine 0.9960, the minimum is 0.8682, and the cosine follows the rank-one residual of
    ``diag(p) - p p^T`` instead (rho = -0.21; an earlier run with another training of
    small_cnn: rho 0.00, 0.9992, 0.9951, 0.8334, -0.21). (B) holds: mean cosine at
    confidence 0.5/0.9/0.99/0.999 is 0.9960/0.9984/0.9987/0.9991 (6 classes),
    0.9892/0.9978/0.9989/0.9990 (100) and 0.9932/0.9993/0.9998/0.9998 (1,000). Theorem 5's
    direction (confident and many classes: parallel) holds; Fig. 1's "low confidence:
    different" does not show on this benchmark.

    **Why (A) fails.** The 6-class model's unsure predictions are mostly two-way confusions;
    then ``diag(p) - p p^T`` is nearly rank one along ``e_y - e_j`` and ``H = J A J^T`` is rank
    one along the gradient, so CASO is parallel to CAFO at any confidence: Theorem 4's
    mechanism is the rank of ``A``, which high confidence implies only with many classes and
    spread-out residual mass. Lowering confidence by a temperature (logits times ``s``) also
    scales ``g`` by ``s`` and ``H`` by ``s^2``, so in CASO's units of ``max |g|`` the Hessian
    loses weight against the ridge ``c1``. No implementation error: a dense-Hessian FISTA
    reproduces the least parallel point to 1e-4, and the exact optimum is within 0.004 of the
    paper's 10 iterations there (``tests/claims/test_caso_claims.py``). The paper's Fig. 1
    uses a 1,000-class ImageNet ResNet-50, whose low-confidence predictions spread their mass
    over several classes.
    """
    part_a = _trained_part(settings)
    conf, cos = part_a["confidence"], part_a["cosine"]
    by_c = _class_count_part(settings)
    rho, p_value = _spearman(conf, cos)
    rho_res, _ = _spearman(part_a["residual"], cos)
    high = conf >= HIGH_CONFIDENCE
    high_cos = float(cos[high].mean()) if high.any() else -1.0
    low = conf <= np.quantile(conf, 0.25)
    low_cos = float(cos[low].mean())
    ok_a = rho > 0 and p_value < 0.05 and bool(high.any()) and high_cos >= PARALLEL
    big = by_c[f"mlp_{CLASS_COUNTS[-1]}_classes_cosine"]
    small = by_c[f"mlp_{CLASS_COUNTS[0]}_classes_cosine"]
    ok_b = big[-1] >= PARALLEL and big[-1] > big[0] and (1 - big[-1]) <= (1 - small[-1])
    numbers: dict[str, float | list[float]] = {
        "confidence": conf.tolist(),
        "cosine": cos.tolist(),
        "curvature_share": part_a["share"].tolist(),
        "rank_one_residual": part_a["residual"].tolist(),
        "spearman_rho": rho,
        "spearman_p": p_value,
        "spearman_rho_residual": rho_res,
        "high_confidence_mean_cosine": high_cos,
        "low_quartile_mean_cosine": low_cos,
        "n_high_confidence": float(high.sum()),
        **by_c,
    }
    mlp = "; ".join(
        f"{c} classes " + "/".join(f"{v:.4f}" for v in by_c[f"mlp_{c}_classes_cosine"])
        for c in CLASS_COUNTS
    )
    ours = (
        f"(A) small_cnn: Spearman rho(confidence, cosine) = {rho:.2f} (p = {p_value:.1g}); "
        f"mean cosine {high_cos:.4f} at confidence >= {HIGH_CONFIDENCE} "
        f"({int(high.sum())} of {conf.size} points), {low_cos:.4f} in the least confident "
        f"quarter, min {cos.min():.4f}; rho(rank-one residual of A, cosine) = {rho_res:.2f}. "
        f"(B) random ReLU MLPs, mean cosine at confidence "
        f"{'/'.join(str(p) for p in CONFIDENCES)}: {mlp}"
    )
    why = "" if ok_a and ok_b else _theorem5_why(ok_a, ok_b, rho, high_cos, big, small)
    return Outcome(
        paper_value=(
            "Theorem 5: CASO ~ parallel to CAFO as confidence -> 1 and classes -> inf; Fig. 1 "
            "(ResNet-50, 1,000 ImageNet images): the normalised difference is large at low "
            "confidence and near 0 at high confidence"
        ),
        ours=ours,
        verdict=verdict_from(ok_a and ok_b, ok_a or ok_b),
        rule=(
            "(A) small_cnn: Spearman rho(confidence, cosine) > 0 with p < 0.05 and mean cosine "
            f">= {PARALLEL} over points with confidence >= {HIGH_CONFIDENCE}; (B) random ReLU "
            f"MLPs: with {CLASS_COUNTS[-1]} classes mean cosine >= {PARALLEL} at confidence "
            f"{CONFIDENCES[-1]} and above the one at {CONFIDENCES[0]}, and 1 - cos at "
            f"{CONFIDENCES[-1]} no larger with {CLASS_COUNTS[-1]} than with {CLASS_COUNTS[0]} "
            "classes. holds: (A) and (B); partly: one"
        ),
        why=why,
        numbers=numbers,
        figure=_theorem5_figure(settings, conf, cos, by_c),
    )


#: Why part (A) of ``caso_theorem5`` fails on the benchmark (see the experiment's docstring).
_WHY_A = (
    "Confidence does not order the cosine on the 6-class small_cnn: its unsure predictions are "
    "mostly two-way confusions, where diag(p) - p p^T is nearly rank one along e_y - e_j, so "
    "the Hessian is rank one along the gradient and CASO stays parallel to CAFO at any "
    "confidence (Theorem 4's condition is the rank, which confidence only implies for many "
    "classes with spread-out residual mass); the cosine follows the rank-one residual of "
    "that matrix instead (its rho in ours). Lowering the confidence by a temperature shrinks "
    "the Hessian against the ridge (logits times s: g ~ s, H ~ s^2, so in CASO's units of "
    "max |g| the curvature share L / 2 lambda2 falls with s). Not an implementation error: a "
    "dense-Hessian FISTA reproduces the cosines to 1e-4 (tests). The paper's Fig. 1 trend "
    "comes from 1,000-class ImageNet predictions whose residual mass spreads over several "
    "classes"
)


def _theorem5_why(
    ok_a: bool, ok_b: bool, rho: float, high_cos: float, big: list[float], small: list[float]
) -> str:
    """The reason text of ``caso_theorem5`` for the parts that failed."""
    parts = []
    if not ok_a:
        parts.append(
            f"(A) failed: rho(confidence, cosine) = {rho:.2f}, high-confidence mean cosine = "
            f"{high_cos:.4f}. {_WHY_A}"
        )
    if not ok_b:
        parts.append(
            f"(B) failed: {CLASS_COUNTS[-1]} classes cosine {big[0]:.4f} -> {big[-1]:.4f}, "
            f"{CLASS_COUNTS[0]} classes at {CONFIDENCES[-1]}: {small[-1]:.4f}; the differences "
            "are below 1e-3, so more images (size='full') decide them"
        )
    return "; ".join(parts)


# --------------------------------------------------------------------------- localisation
def _abs_map(attr: Tensor) -> Tensor:
    """The paper's display map ``sum_c |Delta|`` (Appendix D), shape (N, H, W)."""
    return attr.detach().abs().sum(1)


def _methods(model: nn.Module, seed: int) -> dict[str, Callable[[Tensor, Tensor], Tensor]]:
    """The compared methods: Saliency, CAFO and CASO with defaults, and logit-loss variants.

    CASO uses ``hessian="closed_form"``: exact for small_cnn (ReLU, max-pool, eval-mode batch
    norm), so it equals the default ``"hvp"`` up to rounding, at a fraction of the time.
    """
    return {
        "Saliency": lambda x, t: Saliency(model).attribute(x, target=t, abs=True),
        "CAFO": lambda x, t: CAFO(model).attribute(x, t),
        "CASO": lambda x, t: CASO(model).attribute(
            x, t, hessian="closed_form", generator=torch.Generator().manual_seed(seed)
        ),
        "CAFO (loss='logit')": lambda x, t: CAFO(model, loss="logit").attribute(x, t),
        "CASO (loss='logit')": lambda x, t: CASO(model, loss="logit").attribute(
            x, t, hessian="closed_form", generator=torch.Generator().manual_seed(seed)
        ),
    }


def _scores(
    model: nn.Module, images: Tensor, labels: Tensor, masks: Tensor, attr: Tensor
) -> dict[str, Tensor]:
    """Per-image pointing game (ties shared), energy and deletion AUC of one method."""
    smap = _abs_map(attr)
    return {
        "pointing": pointing_game(smap, masks, ties="mean"),
        "energy": energy_pointing_game(smap, masks),
        "deletion": deletion(model, images, attr.detach(), labels).auc,
    }


def _meets(scores: dict[str, dict[str, float]], name: str) -> tuple[bool, bool]:
    """``(localisation, deletion)``: is method ``name`` at least Saliency, within tolerance?"""
    s, ref = scores[name], scores["Saliency"]
    loc = s["pointing"] >= ref["pointing"] - POINTING_TOL and s["energy"] >= (
        ref["energy"] - ENERGY_TOL
    )
    return loc, s["deletion"] <= ref["deletion"] + DELETION_TOL


def _localisation_figure(
    settings: ClaimSettings, scores: dict[str, dict[str, float]]
) -> str | None:
    def draw(fig: Any) -> None:
        axes = fig.subplots(1, 3)
        names = list(scores)
        for ax, (key, title) in zip(
            axes,
            (
                ("pointing", "pointing game (ties='mean')"),
                ("energy", "energy inside mask"),
                ("deletion", "deletion AUC (lower better)"),
            ),
        ):
            ax.bar(range(len(names)), [scores[m][key] for m in names])
            ax.set_xticks(
                range(len(names)), [m.replace(" (", "\n(") for m in names], fontsize=6, rotation=30
            )
            ax.set_title(title, fontsize=9)

    return claim_figure(settings, "caso_localisation.png", draw, (9.0, 3.6), layout="constrained")


@claim(
    name="caso_localisation",
    paper=PAPER,
    statement=(
        "CAFO and CASO (sparse, context-aware) give explanations that are less noisy and more "
        "coherent with the object of interest than the gradient (Sec. 4.1, Sec. 5, Figs. 3-4)."
    ),
)
def localisation(settings: ClaimSettings) -> Outcome:
    """CAFO / CASO against Saliency: localisation inside the object mask and deletion.

    **Claim** (Sec. 4.1, Fig. 3; Sec. 5, Fig. 4 and Appendix H): with group features (the L1
    term, ``lambda1`` chosen by the sparsity-ratio rule) CAFO and CASO remove the gradient's
    spurious noise and give maps more coherent with the object of interest than the vanilla
    gradient. The paper shows this qualitatively only (ImageNet, ResNet-50).

    **Protocol.** small_cnn trained on SyntheticShapes (6 classes, 32 x 32), the first
    correctly classified test images (exact object masks). Methods: Captum's ``Saliency``
    (``abs=True``), CAFO and CASO with their defaults (cross-entropy loss, ``lambda1="auto"``;
    CASO with the closed-form Hessian, exact here), and, to explain the result, both with
    ``loss="logit"``. Maps are the paper's display ``sum_c |Delta|``. Scores: pointing game
    with tied maxima sharing the hit (``ties="mean"``), energy (share of the map inside the
    mask), deletion AUC (zero substrate, softmax of the label; lower is better).

    **Rule** (fixed before any run): localisation is met by a method if its mean pointing game
    is at least Saliency's minus 0.05 and its mean energy at least Saliency's minus 0.02;
    deletion is met if its mean AUC is at most Saliency's plus 0.02. ``holds``: CAFO and CASO
    (defaults) meet both; ``partly``: both meet one of the two.

    **Result** (``size="default"``, seed 0, 64 images): ``partly`` on the run of 2026-12-07
    (small_cnn retrained from scratch), ``holds`` on an earlier run with another training of
    the same configuration: the verdict sits on the pointing-game tolerance. Pointing game /
    energy / deletion AUC, 2026-12-07: Saliency 0.547 / 0.220 / 0.200, CAFO 0.453 / 0.332 /
    0.201, CASO 0.438 / 0.340 / 0.201; with ``loss="logit"`` both 0.547 / 0.344 / 0.203
    (earlier run: Saliency 0.531 / 0.214 / 0.205, CAFO 0.500 / 0.324 / 0.211, CASO 0.516 /
    0.331 / 0.209, logit loss 0.531 / 0.335 / 0.201). In both runs the sparse maps put half
    again as much of their mass inside the object and deletion is a tie; the pointing game of
    the defaults trails Saliency's by 0.015-0.11. That gap is the default loss, not the
    sparsity: the cross-entropy gradient ``J^T (p - e_y)`` adds the competitor classes' input
    gradients to the label's, and with ``loss="logit"`` (the gradient Saliency explains) CAFO
    and CASO point exactly like Saliency in both runs.
    """
    model = train("small_cnn", "shapes").model
    n = settings.pick(8, 64, 240)
    data = SyntheticShapes(n=3 * n, split="test", seed=settings.seed)
    images, labels, masks = _first_correct(model, data, n)
    per_image: dict[str, dict[str, Tensor]] = {}
    for name, method in _methods(model, settings.seed).items():
        per_image[name] = _scores(model, images, labels, masks, method(images, labels))
    scores = {m: {k: float(v.mean()) for k, v in s.items()} for m, s in per_image.items()}
    met = {m: _meets(scores, m) for m in ("CAFO", "CASO")}
    loc_ok = all(v[0] for v in met.values())
    del_ok = all(v[1] for v in met.values())
    numbers: dict[str, float | list[float]] = {"n_images": float(images.shape[0])}
    for m, s in per_image.items():
        key = m.split(" ")[0] + ("_logit" if "logit" in m else "")
        for k, v in s.items():
            numbers[f"{key}_{k}"] = v.double().tolist()
    ours = (
        "; ".join(
            f"{m}: pointing {s['pointing']:.3f}, energy {s['energy']:.3f}, deletion "
            f"{s['deletion']:.3f}"
            for m, s in scores.items()
        )
        + f" ({images.shape[0]} images)"
    )
    why = "" if loc_ok and del_ok else _localisation_why(scores, loc_ok, del_ok)
    return Outcome(
        paper_value=(
            "Figs. 3-4 and Appendix H (qualitative, ImageNet ResNet-50): CAFO/CASO maps are "
            "sparser and more coherent with the object than the gradient; no numbers"
        ),
        ours=ours,
        verdict=verdict_from(loc_ok and del_ok, loc_ok or del_ok),
        rule=(
            "per method, mean over images: localisation met if pointing game (ties='mean') >= "
            f"Saliency - {POINTING_TOL} and energy >= Saliency - {ENERGY_TOL}; deletion met if "
            f"AUC <= Saliency + {DELETION_TOL}. holds: CAFO and CASO (defaults) meet both; "
            "partly: they meet one"
        ),
        why=why,
        numbers=numbers,
        figure=_localisation_figure(settings, scores),
    )


def _localisation_why(scores: dict[str, dict[str, float]], loc_ok: bool, del_ok: bool) -> str:
    """The reason text of ``caso_localisation`` (measured gaps; see the experiment docstring)."""
    ref = scores["Saliency"]
    gaps = ", ".join(
        f"{m}: pointing {s['pointing'] - ref['pointing']:+.3f}, energy "
        f"{s['energy'] - ref['energy']:+.3f}, deletion {s['deletion'] - ref['deletion']:+.3f}"
        for m, s in scores.items()
        if m != "Saliency"
    )
    failed = [n for n, ok in (("localisation", loc_ok), ("deletion", del_ok)) if not ok]
    return f"not met: {', '.join(failed)}; differences to Saliency: {gaps}. {_WHY_LOCALISATION}"


#: Why ``caso_localisation`` falls short where it does (see the experiment's docstring).
_WHY_LOCALISATION = (
    "A default (the loss), not an implementation error: with the default cross-entropy the "
    "map follows g = J^T (p - e_y) = sum_j p_j (grad z_j - grad z_y), which adds the "
    "competitor classes' input gradients to the label's and can move the map's maximum off "
    "the object; with loss='logit' (the gradient Saliency explains) CAFO and CASO "
    "point like Saliency, and the sparsity (lambda1 auto) raises the energy inside the object "
    "for both losses. The paper's own setting (cross-entropy, Sec. 3) is the default used here"
)
