"""Claim experiments: PILCRO (Moens, Yu & Salimi-Khorshidi, arXiv:2001.09696, 2020).

Two claims of the paper, run on the embedded benchmark (``small_cnn`` on SyntheticShapes,
32 x 32 like the paper's CIFAR-100) with the public API (:class:`captum_ext.losses.PILCRO`,
:mod:`captum_ext.metrics.landscape`):

- :func:`run_initial_landscape` (``pilcro_initial_landscape``): at initialisation a CNN's
  importance landscape is centre-peaked (Section 3.1-3.2, Proposition 1, Figure 2);
- :func:`run_training` (``pilcro_training``): PILCRO flattens the landscape (lower TV) while
  keeping or improving accuracy, training speed and robustness to input noise (abstract,
  Section 4.1, Tables 1-3, Figure 5).

The scale of the penalty (why ``reduction="mean"`` at alpha = 10 is the paper's scale, and why
the literal sum collapses training) is derived in :func:`run_training`'s docstring.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from captum_ext.benchmark import SyntheticShapes, small_cnn, train
from captum_ext.claims._base import ClaimSettings, Outcome, claim, claim_figure, verdict_from
from captum_ext.losses import PILCRO
from captum_ext.metrics.landscape import (
    importance_landscape,
    landscape_total_variation,
    smoothness_map,
)

__all__ = [
    "INIT_MARGIN",
    "NOISE_SIGMA",
    "TARGET_ACCURACY",
    "VARIANTS",
    "centre_border_ratio",
    "run_initial_landscape",
    "run_training",
]

PAPER = "PILCRO (Moens, Yu & Salimi-Khorshidi, arXiv:2001.09696, 2020)"

#: Claim 1: the centre-to-border ratio every initial landscape must exceed (1 = flat).
INIT_MARGIN = 1.1
#: Claim 2: standard deviation of the Gaussian input noise (pixels in [0, 1], then clipped):
#: severity 3 of the CIFAR "gaussian_noise" corruption of Hendrycks & Dietterich (2019), the
#: benchmark of the paper's Appendix E.
NOISE_SIGMA = 0.08
#: Claim 2: the test accuracy whose first crossing measures training speed (chance: 1/6).
TARGET_ACCURACY = 0.6
#: Claim 2: how much accuracy (clean or noisy) PILCRO may lose and still "keep" it.
ACCURACY_SLACK = 0.02

#: The trained variants: PILCRO keyword arguments (``None``: plain cross-entropy). Both PILCRO
#: variants are the paper's best setting, target casting at alpha = alpha0 * T**2 = 10 with
#: T = 10; ``target-mean`` divides the Eq. 9 sum by H x W (the paper's scale, see
#: :func:`run_training`), ``target-sum`` is Eq. 9 literally (run on the off-centre benchmark as
#: the diagnosis of the collapse).
VARIANTS: dict[str, dict | None] = {
    "plain": None,
    "target-mean": {"kind": "target", "alpha0": 0.1, "every": 10, "reduction": "mean"},
    "target-sum": {"kind": "target", "alpha0": 0.1, "every": 10, "reduction": "sum"},
}


# --------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------


def _init_model(seed: int) -> nn.Module:
    """A freshly initialised ``small_cnn(3, 6)`` drawn on a seeded fork of the CPU RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        return small_cnn(3, 6)


def centre_border_ratio(landscape: Tensor) -> float:
    """Mean of the central half-size square over the mean of the outer ring of a landscape.

    The centre is the square ``[H/4, 3H/4) x [W/4, 3W/4)``; the border is the ring of width
    ``max(1, H // 8)`` (4 pixels at 32 x 32) along the four edges. A flat landscape gives 1.

    Args:
        landscape: A map ``(H, W)`` with ``H, W >= 4``.

    Returns:
        The ratio as a float.
    """
    h, w = landscape.shape[-2:]
    if h < 4 or w < 4:
        raise ValueError(f"landscape must be at least 4 x 4, got {(h, w)}")
    centre = landscape[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4].mean()
    ring = max(1, h // 8)
    border = torch.ones(h, w, dtype=torch.bool)
    border[ring : h - ring, ring : w - ring] = False
    return float(centre / landscape[border].mean())


def _landscape(model: nn.Module, images: Tensor, seed: int) -> Tensor:
    """The dataset-level landscape ``I'`` of ``model`` on ``images`` (sampled classes)."""
    return importance_landscape(model, images, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------------------------
# Claim 1: the landscape at initialisation is centre-peaked
# --------------------------------------------------------------------------------------------


@claim(
    name="pilcro_initial_landscape",
    paper=PAPER,
    statement=(
        "At initialisation a CNN's importance landscape is set by its topology: more paths "
        "reach the central pixels, so the centre gets more importance than the border "
        "(Sections 3.1-3.2, Proposition 1, Figure 2)."
    ),
)
def run_initial_landscape(settings: ClaimSettings) -> Outcome:
    """Centre-peaked importance landscapes of ``small_cnn`` at initialisation.

    Paper: Sections 3.1-3.2 and Proposition 1 (with Figure 2: the number of output-to-input
    paths of a stack of 3 x 3 convolutions is a Gaussian bell centred on the middle input
    units), the abstract ("at initialisation, a specific feature importance landscape") and
    the introduction ("when initialized, most networks concentrate their attention on the
    center of the images ... and later during training, learn to attend to peripheral features
    when necessary"). The paper gives no number: the claim is qualitative. Figures 3-4 show
    trained landscapes (as heatmaps, not in the text we have); the claim itself is about
    initialisation.

    Protocol: ``small_cnn(3, 6)`` initialised with ``seed, seed + 1, ...`` (3 / 8 / 16 seeds at
    test / default / full), eval mode. For each, the normalised landscape ``I'`` (Eq. 6,
    sampled classes) on SyntheticShapes test images (64 / 256 / 1000) and on i.i.d. uniform
    noise images of the same number (Proposition 1 says the expected landscape does not depend
    on the input distribution; noise rules out the data's own centre bias). The score is
    :func:`centre_border_ratio` (centre square mean / 4-pixel border ring mean; 1 = flat).
    Also reported, not part of the rule: the ratio of the trained benchmark model
    (``train("small_cnn", "shapes")``) and of the data's smoothness map ``S`` (the uniform
    placement itself puts more edges near the centre).

    Rule (fixed before the run): holds if the ratio exceeds ``INIT_MARGIN = 1.1`` for every
    seed on both kinds of input; partly if the mean ratio over seeds exceeds 1.1 on both; else
    does not hold.

    Result at size="default" (8 seeds, 256 images): holds. The initial centre/border ratio is
    1.86 on shapes (min 1.67) and 1.77 on noise (min 1.62), on noise as on images, so it is
    the architecture and not the data. Its shape differs from the paper's Figure 2 bell: a
    plateau over the interior that falls off over the outer ~4 pixels (the border ring gets
    about 0.55 of the centre's importance). With ``same`` zero padding and global average
    pooling every interior pixel has the same number of paths; only pixels within the
    receptive-field margin of the edge lose some, so "centre-peaked" here means "edges
    neglected". The trained model is more centre-peaked still (4.93-4.95), far
    above the data's own smoothness map (1.49): on uniformly placed objects training does not
    undo the bias (the paper's Figure 3 "SOTA" landscapes likewise keep a high TV).
    """
    n_seeds = settings.pick(3, 8, 16)
    n_images = settings.pick(64, 256, 1000)
    images = SyntheticShapes(n=n_images, split="test", seed=settings.seed).tensors()[0]
    noise = torch.rand(images.shape, generator=torch.Generator().manual_seed(settings.seed))
    shapes_maps, noise_maps = [], []
    for k in range(n_seeds):
        model = _init_model(settings.seed + k).eval()
        shapes_maps.append(_landscape(model, images, settings.seed + k))
        noise_maps.append(_landscape(model, noise, settings.seed + k))
    shapes_ratio = [centre_border_ratio(m) for m in shapes_maps]
    noise_ratio = [centre_border_ratio(m) for m in noise_maps]
    trained = train("small_cnn", "shapes").model
    trained_map = _landscape(trained, images, settings.seed)
    data_ratio = centre_border_ratio(smoothness_map(images))
    every = min(shapes_ratio + noise_ratio) > INIT_MARGIN
    mean_ok = min(_mean(shapes_ratio), _mean(noise_ratio)) > INIT_MARGIN
    verdict = verdict_from(every, mean_ok)
    why = ""
    if verdict != "holds":
        why = (
            f"the initial landscape of small_cnn is not centre-peaked by the margin: minimum "
            f"ratio {min(shapes_ratio + noise_ratio):.3f} (shapes mean {_mean(shapes_ratio):.3f}, "
            f"noise mean {_mean(noise_ratio):.3f})"
        )
    mean_init = torch.stack(noise_maps).mean(0)
    figure = claim_figure(
        settings,
        "pilcro_initial_landscape.png",
        lambda fig: _plot_landscapes(
            fig,
            [torch.stack(shapes_maps).mean(0), mean_init, trained_map],
            ["init, shapes (mean)", "init, noise (mean)", "trained, shapes"],
        ),
        (10.0, 3.2),
    )
    return Outcome(
        paper_value=(
            "qualitative (Proposition 1, Figure 2): at initialisation the centre gets more "
            "importance than the border (a path-count bell centred on the middle pixels)"
        ),
        ours=(
            f"centre/border ratio at init: shapes {_mean(shapes_ratio):.2f} "
            f"(min {min(shapes_ratio):.2f}), noise {_mean(noise_ratio):.2f} "
            f"(min {min(noise_ratio):.2f}) over {n_seeds} seeds; trained "
            f"{centre_border_ratio(trained_map):.2f}; data's S {data_ratio:.2f}"
        ),
        verdict=verdict,
        rule=(
            f"holds if the centre/border ratio (centre half-size square over 4-px border ring) "
            f"exceeds {INIT_MARGIN} for every init seed on both shapes and noise inputs; partly "
            f"if the mean over seeds exceeds {INIT_MARGIN} on both; else does not hold"
        ),
        why=why,
        numbers={
            "init_ratio_shapes": shapes_ratio,
            "init_ratio_noise": noise_ratio,
            "init_tv_shapes": [float(landscape_total_variation(m)) for m in shapes_maps],
            "trained_ratio": centre_border_ratio(trained_map),
            "trained_tv": float(landscape_total_variation(trained_map)),
            "data_smoothness_ratio": data_ratio,
            "mean_init_noise_row": mean_init[mean_init.shape[0] // 2].tolist(),
        },
        figure=figure,
    )


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _plot_landscapes(fig, maps: list[Tensor], titles: list[str]) -> None:
    axes = fig.subplots(1, len(maps))
    for ax, landscape, title in zip(axes, maps, titles):
        im = ax.imshow(landscape.numpy(), cmap="viridis")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
        fig.colorbar(im, ax=ax, fraction=0.046)


# --------------------------------------------------------------------------------------------
# Claim 2: PILCRO training
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Budget:
    """Training budget of one run (the benchmark's AdamW recipe)."""

    n_train: int
    n_test: int
    epochs: int
    evals_per_epoch: int = 2
    batch: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4


@dataclass
class _Run:
    """What one training run measured."""

    accuracy: float
    noisy_accuracy: float
    tv: float
    steps_to_target: float
    curve_steps: list[float] = field(default_factory=list)
    curve_accuracy: list[float] = field(default_factory=list)


def _budget(settings: ClaimSettings) -> _Budget:
    return _Budget(
        n_train=settings.pick(128, 1800, 6000),
        n_test=settings.pick(64, 600, 1200),
        epochs=settings.pick(1, 5, 8),
    )


def _accuracy(model: nn.Module, images: Tensor, labels: Tensor) -> float:
    """Top-1 accuracy of ``model`` (eval mode, no graph) on ``images``."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(images[i : i + 256]).argmax(1) for i in range(0, len(labels), 256)])
    model.train(was_training)
    return float((pred == labels).double().mean())


def _noisy(images: Tensor, sigma: float, seed: int) -> Tensor:
    """``images + N(0, sigma^2)`` clipped to [0, 1], drawn from a generator seeded ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    return (images + sigma * torch.randn(images.shape, generator=gen)).clamp(0.0, 1.0)


def _make_pilcro(variant: str, target_map: Tensor, seed: int) -> PILCRO | None:
    options = VARIANTS[variant]
    if options is None:
        return None
    return PILCRO(**options, target_map=target_map, generator=torch.Generator().manual_seed(seed))


def _fit(
    variant: str,
    seed: int,
    train_set: tuple[Tensor, Tensor],
    target_map: Tensor,
    test_set: tuple[Tensor, Tensor],
    budget: _Budget,
) -> tuple[nn.Module, _Run]:
    """Train ``small_cnn`` with cross-entropy (+ PILCRO) and record the accuracy curve."""
    images, labels = train_set
    model = _init_model(seed)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=budget.lr, weight_decay=budget.weight_decay)
    per_epoch = math.ceil(len(labels) / budget.batch)
    total = per_epoch * budget.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total))
    )
    interval = max(1, per_epoch // budget.evals_per_epoch)
    pilcro = _make_pilcro(variant, target_map, seed)
    run = _Run(0.0, 0.0, 0.0, float(total))
    step, reached = 0, False
    model.train()
    for _ in range(budget.epochs):
        perm = torch.randperm(len(labels), generator=gen)
        for i in range(0, len(labels), budget.batch):
            idx = perm[i : i + budget.batch]
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(images[idx]), labels[idx])
            if pilcro is not None:
                loss = loss + pilcro(model, images[idx])
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if step % interval == 0 or step == total:
                acc = _accuracy(model, *test_set)
                run.curve_steps.append(float(step))
                run.curve_accuracy.append(acc)
                if acc >= TARGET_ACCURACY and not reached:
                    run.steps_to_target, reached = float(step), True
    model.eval()
    return model, run


def _evaluate(model: nn.Module, run: _Run, test_set: tuple[Tensor, Tensor], seed: int) -> _Run:
    """Fill in the clean and noisy accuracy and the landscape's TV on the test set."""
    images, labels = test_set
    run.accuracy = _accuracy(model, images, labels)
    run.noisy_accuracy = _accuracy(model, _noisy(images, NOISE_SIGMA, seed), labels)
    run.tv = float(landscape_total_variation(_landscape(model, images, seed)))
    return run


def _gradient_ratios(seed: int, images: Tensor, labels: Tensor, target_map: Tensor) -> dict:
    """``||grad_theta(alpha * penalty)|| / ||grad_theta CE||`` at initialisation, per variant.

    Measured on one batch of a freshly initialised ``small_cnn`` in train mode (the first call
    of PILCRO computes the penalty, weighted by ``alpha = alpha0 * T**2``), every penalty with
    the same sampled classes, so ``target_sum / target_mean`` is exactly ``H * W``.
    """
    model = _init_model(seed).train()
    params = [p for p in model.parameters() if p.requires_grad]

    def norm(loss: Tensor) -> float:
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        return math.sqrt(sum(float(g.pow(2).sum()) for g in grads if g is not None))

    ce = norm(F.cross_entropy(model(images), labels))

    def gen() -> torch.Generator:  # the same sampled classes for every penalty
        return torch.Generator().manual_seed(seed)

    penalties = {
        "target_sum": PILCRO("target", target_map=target_map, generator=gen()),
        "target_mean": PILCRO("target", target_map=target_map, generator=gen(), reduction="mean"),
        "curvature": PILCRO("curvature", generator=gen()),
    }
    return {f"grad_ratio_{k}": norm(p(model, images)) / ce for k, p in penalties.items()}


@claim(
    name="pilcro_training",
    paper=PAPER,
    statement=(
        "PILCRO-regularised CNNs have a flat importance landscape (lower TV), train faster, "
        "reach a better accuracy and are more robust to noise at test time than their plain "
        "counterparts (abstract; Section 4.1, Tables 1-3, Figure 5)."
    ),
)
def run_training(settings: ClaimSettings) -> Outcome:
    """Plain vs PILCRO (target casting, alpha = 10) training of ``small_cnn``.

    Paper: abstract ("flat importance landscape, train faster, result in a better accuracy and
    are more robust to noise at test time"); Table 1 (CIFAR-100, ResNet-50, 32 x 32: ¶t with
    alpha = 10 has top-1 0.7041 vs 0.6825 and TV 0.00094 vs 0.0192 without random crops,
    0.7833 vs 0.7610 and TV 0.00088 vs 0.00605 with them); Table 2 (ImageNet: 0.7800 vs
    0.7768, TV 0.00019 vs 0.00499); Figure 5 (faster convergence in the first ImageNet
    epochs); Appendix E, Table 3 (robustness to corruptions).

    The alpha scale. The paper's best run is ¶t at alpha = 10 with T = 10 (alpha = alpha0 T^2,
    so alpha0 = 0.1, ``PILCRO``'s default). Eq. 9 sums over the H x W = 1024 locations of a
    32 x 32 image. For small_cnn at initialisation the mean of (I' - S)^2 is about 0.15, so the
    literal sum is about 150 and alpha times it about 1500: some 800 times the cross-entropy
    (ln 6 = 1.8), with a parameter gradient about 3000 times the cross-entropy's (measured:
    ``grad_ratio_target_sum``). The paper's own numbers rule this out as its operating
    scale: its regularised models reach the same validation loss as the plain ones (Table 1,
    "Loss" 1.39 vs 1.48) and keep or improve accuracy at alpha = 1, 10 and 100, and the same
    alpha range is best at 1024 (CIFAR) and 82,944 (ImageNet, 288^2) locations, where a sum
    would differ 81-fold. A penalty that matters at the level of the cross-entropy at
    alpha = 10 is the per-location mean: alpha * mean((I' - S)^2) is about 1.5, the size of the
    cross-entropy. So the paper's scale is ``reduction="mean"`` (equivalently the sum with
    ``alpha0 = 0.1 / (H W)``), variant ``target-mean``; ``target-sum`` is the literal reading.

    Protocol: two benchmarks, SyntheticShapes with ``placement="uniform"`` (objects anywhere)
    and ``placement="off_center"`` (objects near the corners: the paper's motivating case of
    features away from the network's preferred centre); train and test images of the same
    placement (seed ``settings.seed``). ``small_cnn`` trained with the benchmark's recipe
    (AdamW lr 3e-3, weight decay 1e-4, cosine, batch 64; as ``benchmarks/bench_pilcro.py``),
    plain vs ``target-mean`` with the target map ``S`` of the training images, same
    initialisation, same batches; ``target-sum`` also on the off-centre benchmark (not at
    size="test"). Budget: 128 / 1800 / 6000 training images, 64 / 600 / 1200 test images,
    1 / 5 / 8 epochs (test / default / full); the paper trains ResNet-50 for 200 epochs on 50k
    CIFAR images with SGD. Measured on the test images: TV of ``I'`` (the paper's TV column),
    clean accuracy, accuracy under Gaussian noise (sigma = 0.08 on [0, 1] pixels, clipped:
    CIFAR-C "gaussian_noise" severity 3, the corruption family of the paper's Table 3), and
    training speed: steps until test accuracy (evaluated twice per epoch) first reaches
    ``TARGET_ACCURACY = 0.6`` (the total number of steps if never). Diagnosis: the gradient
    ratios of alpha times each penalty to the cross-entropy at initialisation.

    Rule (fixed before the run), for ``target-mean`` against ``plain`` on each benchmark:
    (a) TV lower; (b) clean accuracy >= plain - 0.02; (c) steps to 0.6 <= plain's;
    (d) noisy accuracy >= plain - 0.02. Holds if (a)-(d) hold on both benchmarks; partly if
    (a) holds on both (the landscape is flattened) but not everything else; else does not
    hold.

    Result at size="default" (seed 0, run of 2026-12-07): partly. ``target-mean`` lowers the TV
    by a third on both benchmarks (uniform 0.0192 -> 0.0132, off-centre 0.0213 -> 0.0144) but
    loses accuracy (0.652 -> 0.605 and 0.680 -> 0.635), is slower to reach 0.6 (145 vs 126 and
    126 vs 98 steps) and is less robust to the noise (0.260 -> 0.240 and 0.345 -> 0.275). The
    literal sum (``target-sum``, off-centre) gives TV 0.0049 at near-chance accuracy (0.208).
    An earlier run (another training environment) gave the same picture within 0.01.

    Why. (1) The literal sum is a scale error, not a bug in the loss: its gradient is about 3000
    times the cross-entropy's on every T = 10-th step; the spikes fill AdamW's second-moment
    estimate, so the cross-entropy's steps shrink by about that factor and training stalls (with
    the paper's SGD it would diverge instead). This is the issue's "0.19 vs 0.88"; alpha0 is H x
    W = 1024 times too large at 32 x 32 under that reading. (2) The curvature penalty at alpha =
    10 has a gradient 25-40 times the cross-entropy's (the paper's best ¶c is alpha = 1), which
    is why it slowed training in the issue. (3) At the paper's scale (mean) the landscape
    flattens as claimed, but the accuracy, speed and noise gains are not reproduced. Our setting
    differs from the paper's: a tiny budget (all accuracies are far below the 0.9+ of the
    benchmark's 6000 x 8 training), one seed, small_cnn, synthetic shapes and AdamW instead of
    ResNet-50, 200 epochs of CIFAR-100 and SGD. The likeliest cause is the sparse schedule under
    AdamW: the penalty's gradient, 3-4 times the cross-entropy's, arrives on one step in ten
    (alpha = alpha0 T^2 makes up for the skipped steps in size, not in how AdamW normalises) and
    inflates AdamW's second moment. Measured separately with the same budget and seed, the same
    average weight spread over every step (``every=1, alpha0=1, reduction="mean"``) gives, on
    the uniform benchmark, TV 0.0105, accuracy 0.680 (plain 0.653), 126 steps to 0.6 (plain 126)
    and noisy accuracy 0.41 (plain 0.262): all four parts of the rule hold; on the off-centre
    one TV 0.0097, accuracy 0.668 (plain 0.675), 126 steps (plain 98) and noisy accuracy 0.433
    (plain 0.345): all but speed (one seed; not part of this experiment's rule, and it costs a
    double backward pass at every step). (4) That robustness to Gaussian noise is not better at
    T = 10 agrees with the paper's own Table 3: on CIFAR-100 the plain (SOTA) model is the most
    robust in the "Noise" category (0.59 vs 0.51 for ¶t, alpha = 10, level 1, RC-); only the
    abstract claims otherwise.
    """
    budget = _budget(settings)
    benchmarks = ("uniform", "off_center")
    runs: dict[str, dict[str, _Run]] = {}
    ratios: dict = {}
    for placement in benchmarks:
        train_x, train_y, _ = SyntheticShapes(
            n=budget.n_train, split="train", seed=settings.seed, placement=placement
        ).tensors()
        test_set = SyntheticShapes(
            n=budget.n_test, split="test", seed=settings.seed, placement=placement
        ).tensors()[:2]
        target_map = smoothness_map(train_x)
        if placement == "off_center":
            ratios = _gradient_ratios(settings.seed, train_x[:32], train_y[:32], target_map)
        variants = ["plain", "target-mean"]
        if placement == "off_center" and settings.size != "test":
            variants.append("target-sum")
        runs[placement] = {}
        for variant in variants:
            model, run = _fit(
                variant, settings.seed, (train_x, train_y), target_map, test_set, budget
            )
            runs[placement][variant] = _evaluate(model, run, test_set, settings.seed)
    return _training_outcome(settings, runs, ratios)


def _checks(runs: dict[str, _Run]) -> dict[str, bool]:
    """The four parts of the rule for ``target-mean`` against ``plain`` on one benchmark."""
    plain, reg = runs["plain"], runs["target-mean"]
    return {
        "flatter": reg.tv < plain.tv,
        "accuracy": reg.accuracy >= plain.accuracy - ACCURACY_SLACK,
        "speed": reg.steps_to_target <= plain.steps_to_target,
        "noise": reg.noisy_accuracy >= plain.noisy_accuracy - ACCURACY_SLACK,
    }


def _training_outcome(settings: ClaimSettings, runs: dict, ratios: dict) -> Outcome:
    checks = {placement: _checks(r) for placement, r in runs.items()}
    holds = all(all(c.values()) for c in checks.values())
    partly = all(c["flatter"] for c in checks.values())
    verdict = verdict_from(holds, partly)
    numbers: dict[str, float | list[float]] = dict(ratios)
    for placement, by_variant in runs.items():
        for variant, run in by_variant.items():
            key = f"{placement}_{variant.replace('-', '_')}"
            numbers[f"{key}_tv"] = run.tv
            numbers[f"{key}_accuracy"] = run.accuracy
            numbers[f"{key}_noisy_accuracy"] = run.noisy_accuracy
            numbers[f"{key}_steps_to_target"] = run.steps_to_target
            numbers[f"{key}_curve_accuracy"] = run.curve_accuracy
        numbers[f"{placement}_curve_steps"] = by_variant["plain"].curve_steps
    ours = "; ".join(_describe(placement, r) for placement, r in runs.items())
    failed = [
        f"{part} on {placement}"
        for placement, c in checks.items()
        for part, ok in c.items()
        if not ok
    ]
    why = _why(failed, ratios, runs) if verdict != "holds" else ""
    figure = claim_figure(
        settings, "pilcro_training.png", lambda fig: _plot_training(fig, runs), (10.0, 3.2)
    )
    return Outcome(
        paper_value=(
            "Table 1 (CIFAR-100, ResNet-50): ¶t alpha=10 top-1 0.7041 vs 0.6825, TV 0.00094 vs "
            "0.0192 (RC-), 0.7833 vs 0.7610, TV 0.00088 vs 0.00605 (RC+); faster convergence "
            "(Figure 5); noise robustness claimed in the abstract (Table 3: plain best on Noise)"
        ),
        ours=ours,
        verdict=verdict,
        rule=(
            "for target casting at alpha=10 with mean reduction vs plain, on both the uniform "
            "and the off-centre benchmark: (a) TV lower, (b) clean accuracy >= plain - "
            f"{ACCURACY_SLACK}, (c) steps to test accuracy {TARGET_ACCURACY} <= plain's, (d) "
            f"accuracy under Gaussian noise sigma={NOISE_SIGMA} >= plain - {ACCURACY_SLACK}; "
            "holds if all on both; partly if (a) on both; else does not hold"
        ),
        why=why,
        numbers=numbers,
        figure=figure,
    )


def _describe(placement: str, runs: dict[str, _Run]) -> str:
    parts = [
        f"{v} TV {r.tv:.4f}, acc {r.accuracy:.3f}, noisy {r.noisy_accuracy:.3f}, "
        f"steps to {TARGET_ACCURACY} {r.steps_to_target:.0f}"
        for v, r in runs.items()
    ]
    return f"{placement}: " + " | ".join(parts)


def _why(failed: list[str], ratios: dict, runs: dict) -> str:
    text = [f"failed parts: {', '.join(failed)}."]
    if ratios:
        text.append(
            f"At init the parameter gradient of alpha*penalty is "
            f"{ratios['grad_ratio_target_sum']:.0f}x the cross-entropy's for the paper's "
            f"literal sum over H x W, {ratios['grad_ratio_target_mean']:.1f}x with the mean and "
            f"{ratios['grad_ratio_curvature']:.0f}x for curvature at alpha=10: once every "
            "T=10 steps such spikes fill AdamW's second moment and shrink the cross-entropy's "
            "steps, so the literal sum stalls training (a scale error of the Eq. 9 reading, "
            "alpha0 1024x too large at 32x32, not a bug in the loss)."
        )
    off = runs.get("off_center", {})
    if "target-sum" in off:
        text.append(
            f"Literal sum on off-centre: accuracy {off['target-sum'].accuracy:.3f} vs plain "
            f"{off['plain'].accuracy:.3f}."
        )
    text.append(
        "At the paper's (mean) scale the likely cause of the losses is the sparse schedule "
        "under AdamW: spreading the same average weight over every step (every=1, alpha0=1) "
        "kept accuracy and improved noise robustness on both benchmarks in a separate run (speed "
        "only on the uniform one; see the docstring). "
        "Noise robustness not being better agrees with the paper's own Table 3 (plain best in "
        "the Noise category on CIFAR-100). Budget differs from the paper: small_cnn, a few "
        "epochs on thousands of synthetic images, AdamW, one seed, vs ResNet-50, 200 epochs, "
        "SGD on CIFAR-100/ImageNet."
    )
    return " ".join(text)


def _plot_training(fig, runs: dict) -> None:
    axes = fig.subplots(1, len(runs) + 1)
    for ax, (placement, by_variant) in zip(axes, runs.items()):
        for variant, run in by_variant.items():
            ax.plot(run.curve_steps, run.curve_accuracy, marker="o", label=variant)
        ax.axhline(TARGET_ACCURACY, color="grey", lw=0.8, ls="--")
        ax.set_title(f"test accuracy, {placement}", fontsize=9)
        ax.set_xlabel("step")
        ax.legend(fontsize=8)
    ax = axes[-1]
    labels, values = [], []
    for placement, by_variant in runs.items():
        for variant, run in by_variant.items():
            labels.append(f"{placement}\n{variant}")
            values.append(run.tv)
    ax.bar(range(len(values)), values)
    ax.set_xticks(range(len(values)), labels, fontsize=6, rotation=45)
    ax.set_title("landscape TV (test)", fontsize=9)
