"""RelEx: mask explanations optimised over a Gaussian neighbourhood of the input.

Lim, Lee, Kim, "Building Reliable Explanations of Unreliable Neural Networks: Locally Smoothing
Perspective of Model Interpretation", CVPR 2021 (main-paper Eq. 11, as the authors' code
``JBNU-VL/RelEx`` implements it).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Literal, NamedTuple, Union

import torch
from captum._utils.typing import TargetType, TensorOrTupleOfTensorsGeneric
from captum.attr import GradientAttribution
from torch import Tensor

from captum_ext._compat import (
    ExpansionTypes,
    NullProgress,
    _expand_additional_forward_args,
    _format_additional_forward_args,
    _format_output,
    _is_tuple,
    _run_forward,
    _select_targets,
    log_usage,
    progress,
)
from captum_ext._model_state import eval_mode
from captum_ext._targets import class_index_targets
from captum_ext.attr._utils.contract import (
    NoAttributeFuture,
    check_inputs,
    check_logits,
    chunks,
    default_generator,
    format_inputs,
    select_args,
)
from captum_ext.attr._utils.map_checks import warn_if_degenerate

#: Hyper-parameters that differ between the authors' code and the supplementary (S2.1).
#: ``"default"`` is measured on the benchmark ``small_cnn`` (SyntheticShapes 32 x 32, 6 test
#: images, 50 steps): against the code's 50 copies / momentum 0.99 it costs a third (16 copies),
#: raises seed-to-seed top-10% overlap from 0.53 to 0.57 and the energy in the object from 3.1x
#: to 3.4x its area, and lowers the mass in the outer 2-pixel frame from 0.50x to 0.44x its area
#: share (momentum 0.99 keeps integrating the small, consistent gradient of the model's
#: zero-padding frame into lines along the border).
#: ``average_from``: the default averages the masks of the last four fifths of the steps
#: (Polyak-Ruppert averaging), which raises the seed-to-seed Spearman correlation on that
#: benchmark (8 images, 50 steps) from 0.70 (last step) to 0.86 (second half) at the same cost,
#: and on the 224 x 224 benchmark ResNet-18 (8 images) from 0.92 (second half) to 0.97 with
#: the object's energy 4-6 % lower; the papers' presets return the last step.
#: ``init``: the default starts every mask entry at ``INIT_SCALE / 2`` (the mean of the papers'
#: U[0, INIT_SCALE) draw), so two runs differ only by their noise: on that benchmark (48
#: correctly classified images, two seeds) the seed-to-seed Spearman correlation rises from
#: 0.83 to 0.90 (SmoothGrad's is 0.89), the pointing game from 0.85 to 0.88, energy in the
#: object 3.86x -> 3.88x its area. Step-size schedules that decay (1/sqrt(t), cosine, linear)
#: do not do this: 0.81 with the random start either way.
#: ``antithetic``: the default draws the noisy copies in pairs ``x0 + eps``, ``x0 - eps`` (the
#: objective is unchanged: each copy is still N(x0, s^2 I)); with the same passes the
#: seed-to-seed Spearman correlation rises from 0.90 to 0.92 on that benchmark (48 images) and
#: from 0.86 to 0.88 on the 224 x 224 benchmark ResNet-18 (2 images); localisation unchanged.
#: ``temperature``: the default cools confident examples (``"auto"``), so a saturated softmax
#: does not collapse the mask: on that benchmark with logits x 20 (24 images, two seeds) 7 of
#: 24 masks kept under a fifth of the unscaled model's mass with the paper's raw softmax and
#: none with ``"auto"`` (Spearman with the unscaled model's mask 0.70 -> 0.93, seed-to-seed
#: 0.76 -> 0.90; 224 x 224 ResNet-18 x 20: 0.65-0.69 -> 0.94-0.97); on the unscaled models the
#: masks barely change (Spearman 0.998).
PRESETS: dict[str, dict[str, Any]] = {
    "default": {
        "n_samples": 16, "lr": 0.1, "momentum": 0.9, "baselines": "mean", "average_from": 0.2,
        "init": "constant", "antithetic": True, "temperature": "auto",
    },
    "code": {
        "n_samples": 50, "lr": 0.1, "momentum": 0.99, "baselines": 0.0, "average_from": None,
        "init": "uniform", "antithetic": False, "temperature": None,
    },
    "supplementary": {
        "n_samples": 100, "lr": 1e-3, "momentum": 0.0, "baselines": 0.0, "average_from": None,
        "init": "uniform", "antithetic": False, "temperature": None,
    },
}  # fmt: skip

#: Names accepted by ``init=``.
INITS = ("constant", "uniform")

#: Upper end of the uniform initialisation of the mask, U[0, INIT_SCALE) (``init="uniform"``);
#: ``init="constant"`` starts at its mean, INIT_SCALE / 2.
INIT_SCALE = 0.01

#: Default rows per forward on CPU: large batches of small images thrash the caches (for
#: ``small_cnn`` at 32 x 32, passes of 50-100 rows beat passes of hundreds;
#: ``benchmarks/bench_relex.py --samples-per-eval N`` times RelEx at a given value).
CPU_SAMPLES_PER_EVAL = 64

#: Epsilon of the reference code inside ``log(1 - p + eps)`` (``reference_numerics=True``).
REFERENCE_EPS = 1e-7

GeneratorArg = Union[None, torch.Generator, Sequence[torch.Generator]]

#: ``baselines``: "mean", a number or a tensor, or a tuple of those (one per input tensor).
BaselineArg = Union[None, str, float, Tensor, tuple[Union[str, float, Tensor], ...]]

#: ``temperature="auto"``: the clean input's lead of the target logit over the runner-up after
#: tempering, log(0.99 / 0.01).
AUTO_LOG_ODDS = math.log(99.0)


#: Hint of the degenerate-map warning.
DEGENERATE_HINT = (
    "the mask collapsed to 0 or is not finite: lower lambda1, raise n_iter or lr, or check that "
    "the target's softmax probability depends on the input"
)


@dataclass(frozen=True)
class RelExSettings:
    """The resolved knobs of one RelEx call (the ``attribute`` arguments of that name).

    Built by :meth:`RelEx.attribute` once the preset has filled the knobs left as None and
    every knob is checked, and passed down whole to :meth:`RelEx._attribute`.
    """

    n_iter: int
    n_samples: int
    noise_scale: float
    lambda1: float
    lambda2: float
    lr: float
    momentum: float
    reference_numerics: bool
    samples_per_eval: int
    channels_last: bool
    temperature: Union[str, float, None]
    average_from: float | None
    init: str
    antithetic: bool


@dataclass(frozen=True)
class RelExRows:
    """What every step's model rows share, fixed by the clean forward pass.

    Rows are ordered example-major as in :func:`relex_objective`: for each of the M examples,
    its B foreground copies then its B background copies (``M * 2B`` rows).

    Attributes:
        target: The class explained on each row, ``(M * 2B,)``.
        args: The additional forward arguments already expanded to ``M * 2B`` rows, or None.
        scale: The softmax temperature of each row, ``(M * 2B,)``: logits are divided by it
            (None: 1).
        bases: Per input tensor, the baseline ``b`` ``(M, *s)`` added to every masked copy, the
            noisy copies then holding ``x_i - b`` (None: 0, the noisy copies hold ``x_i``).
    """

    target: Tensor
    args: tuple[Any, ...] | None = None
    scale: Tensor | None = None
    bases: tuple[Tensor, ...] | None = None


class RelEx(NoAttributeFuture, GradientAttribution):
    r"""RelEx: a mask in [0, 1] that keeps the class on noisy copies and loses it on its complement.

    For each example x0 (with class c), RelEx minimises over a mask m shaped like the input

    .. math::
        J(m) = \frac{1}{B}\sum_{i=1}^{B} \big[-\log f_c(m \odot x_i)
               - \lambda_2 \log(1 - f_c((1 - m) \odot x_i))\big] + \lambda_1 \lVert m \rVert_1,
        \qquad x_i = x_0 + \varepsilon_i,\ \varepsilon_i \sim N(0, s^2 I),

    with :math:`f_c` the softmax probability of the model's logits (divided by a temperature,
    see below) and
    :math:`s = \text{noise\_scale}\cdot(\max x_0 - \min x_0)` (per example and input tensor).
    The noise is redrawn at every iteration. Each iteration takes the gradient of J, normalises it
    to unit L2 norm over all mask entries of the example (all input tensors together; a zero
    gradient stays zero), takes an SGD step with momentum (PyTorch semantics, dampening 0) and
    clamps m to [0, 1]. The mask starts at 0.005 everywhere (``init="constant"``, the default)
    or from U[0, 0.01) (``init="uniform"``, the papers' and the authors' code). The random start
    was the main reason two runs disagree: on the benchmark's ``small_cnn`` (48 correctly
    classified images, two seeds) the constant start raises the seed-to-seed Spearman
    correlation of the default's masks from 0.83 to 0.90 (SmoothGrad: 0.89), while 4x the noisy
    copies with the random start reach 0.85, and step sizes that decay (1/sqrt(t), cosine,
    linear) 0.81 (as today's); the pointing game goes from 0.85 to 0.88, the energy in the
    object from 3.86x to 3.88x its area. On the 224 x 224 benchmark ResNet-18 (2 images): 0.81
    -> 0.89 (SmoothGrad: 0.99), pointing game 1.0 and energy 4.7x either way. The numbers
    below were measured with the random start.

    The noisy copies of a step come in antithetic pairs ``x0 + eps``, ``x0 - eps``
    (``antithetic=True``, the default; the papers draw them independently): every copy is still
    ``N(x0, s^2 I)``, so J and its expected gradient are unchanged, and the part of the gradient
    that is odd in the noise cancels within a pair. With the same passes, two seeds agree at a
    Spearman correlation of 0.92 instead of 0.90 on the benchmark's ``small_cnn`` (48 images) and
    0.88 instead of 0.86 on the 224 x 224 benchmark ResNet-18 (2 images; 0.92 on the 4 of
    ``benchmarks/localisation_check.py``, SmoothGrad 0.99 there); pointing game and
    energy are unchanged (0.85 / 3.6x and 1.0 / 4.6x). Cosine or 1/sqrt(t) step sizes, tried
    with the constant start, do not help (0.89 / 0.91 at 32 x 32, the latter with a pointing
    game of 0.83; cosine 0.86 at 224, as constant steps). At 224 the seeds differ in
    pixel-scale noise of the near-zero background: averaged over 2 x 2 (4 x 4) pixel blocks they
    agree at 0.95 (0.98), inside the object at 0.92-0.99, and their top 10 % overlap by 0.93-0.98.

    Where the masks miss the object on the benchmark (pointing game 0.85 on those 48 images,
    IntegratedGradients 1.00), their maximum sits on a distractor shape or along the image
    border: 5 of the 48 masks put more than their area's share of mass in the outer 2-pixel
    frame (at most 1.7x; Saliency and IntegratedGradients none). Both come from the noise
    neighbourhood: with ``noise_scale=0`` the pointing game is 0.96 and no mask is heavy on the
    frame, with 0.05 (0.02) 0.91 (0.92) and one such mask. Adding the noise to the masked input
    instead (the model sees ``b + m * (x0 - b) + eps``) does not remove it (0.76, 4 masks). The
    default keeps the paper's 0.1, the smoothing the method's robustness rests on.

    The steps have a constant length (a normalised gradient times ``lr``), so the mask never
    settles: it keeps moving around, and away from, where it went first. Measured on the
    benchmark's ``small_cnn`` (8 correctly classified images, two seeds), the last step's masks
    agree with a Spearman correlation of 0.70 after 50 steps and no better when run longer,
    while the masks of one seed after 50 and 200 steps agree at 0.60. By default the result is
    therefore the mean of the masks after steps 11 to 50 (``average_from=0.2``, Polyak-Ruppert
    averaging). Averaging the second half (``average_from=0.5``, the previous
    default) gave 0.86 between seeds at the same cost on those 8 images (0.72
    against 0.66 on another training of the same small_cnn configuration) and on 48 images
    0.84 against 0.76, pointing game 0.88 against 0.84, energy in the object 4.0x its area
    against 4.2x. Starting the average at a fifth of the steps helps most at 224 x 224, where
    the early masks are the ones two seeds share (their agreement peaks at 0.98 around step 10
    and falls to 0.72 by step 50): on the benchmark ResNet-18 (other knobs at their defaults,
    8 images in two sets of 4) the Spearman correlation between seeds rises from 0.92 to 0.97
    in both sets, the pointing game is unchanged (1.0 and 0.75) and the energy in the object
    is 4-6 % lower (5.3x -> 5.0x and 8.9x -> 8.5x its area); at 32 x 32 it barely changes
    (48 images: 0.917 -> 0.927, pointing game 0.854 -> 0.844). SmoothGrad's seeds agree at
    0.99 there by rank; RelEx's ranks differ mostly among values no display shows (the
    median background entry is 0.07-0.26 % of the mask's maximum): by value the two seeds'
    masks agree at a Pearson correlation of 0.997-0.999 (SmoothGrad
    0.981-0.990) and their top 10 % overlap by 0.95-0.99 (SmoothGrad 0.88-0.93) on the first
    set. Averaging does not make longer runs converge: averaged over steps 100-200 (200-400)
    the seeds agree at 0.74 (0.69), since the masks keep drifting apart; 50 steps is where the
    default stops.
    ``average_from=None`` returns the last step, as the authors' code does (``preset="code"``).

    The default preset (16 copies, lr 0.1, momentum 0.9, 50 steps) was chosen on a trained CNN
    for stability across seeds, localisation and cost (see :data:`PRESETS`); ``preset="code"``
    uses the authors' code (50 copies, lr 0.1, momentum 0.99) and ``preset="supplementary"``
    the supplementary's 100 copies, lr 1e-3 and no momentum, with
    which a unit-norm step barely moves the mask (see the spec). Every knob can be set directly.

    A call costs ``n_iter * 2 * n_samples`` gradient passes per example, and the steps matter
    more than the copies: on the 224 x 224 benchmark ResNet-18 (4 images in two pairs,
    reference: the mean of four default runs) 4 copies per step, a quarter of the default's
    passes, agree with the reference at a Spearman correlation of 0.95 / 0.98 (Pearson 0.999),
    2 copies at 0.93 / 0.96 (the report's ``fast`` preset) and one default run at 0.97 (first
    pair), while 25 steps of 16 copies, half the passes, reach 0.87, since their average
    still holds the climb (``benchmarks/bench_efficiency.py --size 224``).

    Deleted entries take the value of ``baselines``: by default each example's mean colour
    per channel, not the paper's 0. Measured on the benchmark's ``small_cnn`` (12 correctly
    classified images, 50 steps, two seeds), deleting to black gives masks with stripes along
    the image borders (the model's response to the dark edges that deletion draws, which its
    Saliency, IntegratedGradients and Occlusion maps do not show); deleting to the mean colour
    removes them and raises the energy in the object from 3.9x to 4.2x its area, the pointing
    game from 0.83 to 0.92 and the seed-to-seed Spearman correlation from 0.51 to 0.75.

    A float32 softmax saturates on confident models (``f_c == 1`` exactly once the target leads
    by about 17 nats), which flattens the foreground term. By default (``temperature="auto"``)
    the logits of an example whose target leads the runner-up by more than ``log(99)`` are
    divided by ``margin / log(99)`` (other examples keep the paper's objective), so the mask
    does not depend on how far the logits are scaled up; ``temperature=None`` is the paper's
    raw softmax. Measured on the benchmark's ``small_cnn`` with logits x 20 (24 correctly
    classified images, two seeds), the raw softmax left 7 of the 24 masks with less than a fifth
    of the unscaled model's mask mass, dots on the object instead of its shape (mean mask on
    the object 0.37, unscaled 0.73; Spearman with the unscaled model's mask 0.70, seed-to-seed
    0.76); ``"auto"`` collapses none (0.64, 0.93, 0.90; pointing game 0.92 vs 0.90). On the
    224 x 224 benchmark ResNet-18 x 20 (2 images) the Spearman correlation with the unscaled
    model's mask is 0.65 / 0.69 with the raw softmax and 0.94 / 0.97 with ``"auto"`` (energy
    in the object 4.1x vs 5.5x its area, unscaled 5.5x). On the unscaled models, whose margins
    mostly lie under ``log(99)`` (median 2.9 nats at 32 x 32, 4.2-4.7 at 224), the masks are
    those of the raw softmax (Spearman 0.998 at 32 x 32; at 224 the same energy, pointing
    game and seed-to-seed agreement to two decimals).

    Several examples are optimised together: each iteration evaluates the foreground copies
    ``x_i * m`` and background copies ``x_i * (1 - m)`` of all examples as one batch (chunked by
    ``samples_per_eval``). Normalisation and momentum are per example. With one generator (or the
    default) all examples share the same random stream (common random numbers: the same
    standard-normal noise, scaled by each example's own s, and the same initial mask), so a seeded
    example gets the same mask alone, inside any batch, at any batch position, or repeated by
    ``NoiseTunnel``.

    The model runs in eval mode during the call (BatchNorm statistics are used, not updated, and
    dropout is off); every module's ``training`` flag is restored afterwards, also when the call
    raises, and the global torch RNG state is restored as well.

    The attribution is the mask itself (``multiplies_by_inputs`` is False); for pixel metrics
    its gray map is ``sum_c abs(m)``. "Deleted" entries become 0 in the model's input space.

    Args:
        forward_func: The model or function returning logits of shape ``(N, n_classes)``,
            ``n_classes >= 2`` (the softmax is applied here).

    Examples:
        >>> model = small_cnn(3, 6).eval()
        >>> relex = RelEx(model)
        >>> masks = relex.attribute(images, n_iter=20, n_samples=16,
        ...                         generator=torch.Generator().manual_seed(0))
        >>> masks.shape == images.shape
        True
    """

    def __init__(self, forward_func: Callable[..., Tensor]) -> None:
        GradientAttribution.__init__(self, forward_func)

    @classmethod
    def get_name(cls) -> str:
        """Readable name used in progress bars."""
        return "RelEx"

    @log_usage()
    def attribute(
        self,
        inputs: TensorOrTupleOfTensorsGeneric,
        target: TargetType = None,
        additional_forward_args: Any = None,
        n_iter: int = 50,
        n_samples: int | None = None,
        noise_scale: float = 0.1,
        lambda1: float = 1e-4,
        lambda2: float = 1.0,
        lr: float | None = None,
        momentum: float | None = None,
        baselines: BaselineArg = None,
        preset: Literal["default", "code", "supplementary"] = "default",
        reference_numerics: bool = False,
        samples_per_eval: int | None = None,
        channels_last: bool = False,
        temperature: Union[Literal["auto", "preset"], float, None] = "preset",
        average_from: float | None | Literal["preset"] = "preset",
        init: Literal["constant", "uniform"] | None = None,
        antithetic: bool | None = None,
        generator: GeneratorArg = None,
        show_progress: bool = False,
    ) -> TensorOrTupleOfTensorsGeneric:
        r"""Optimise one RelEx mask per example.

        Args:
            inputs: A tensor or a tuple of tensors, batch on dim 0 (equal across the tuple).
            target: The class explained per example: an int, a list of ints, or an integer
                tensor of shape ``()``, ``(1,)`` or ``(N,)``. None explains the class predicted
                on the clean inputs. Tuple targets are rejected (RelEx needs a class index).
            additional_forward_args: Extra arguments of ``forward_func`` (tensors with a batch
                dimension are repeated for every copy, as in Captum).
            n_iter: Number of optimisation steps (>= 1).
            n_samples: Noisy copies B per example and step (>= 1); each step evaluates 2B model
                inputs per example. None: the preset's value (16; 50 for "code", 100 for
                "supplementary").
            noise_scale: Noise standard deviation relative to ``max(x0) - min(x0)`` (>= 0).
            lambda1: Weight of the L1 norm of the mask (summed over all entries), >= 0.
            lambda2: Weight of the complement (background) term, >= 0.
            lr: SGD step size (> 0). None: the preset's value (0.1, or 1e-3 for "supplementary").
            momentum: SGD momentum in [0, 1). None: the preset's value (0.9; 0.99 for
                "code", 0 for "supplementary").
            baselines: What a deleted entry becomes: the model sees ``b + m * (x_i - b)``
                and ``b + (1 - m) * (x_i - b)``. ``"mean"``: per example and channel, the
                image's mean colour (the mean over the dims after the channel dim; for
                ``(N, D)`` inputs the example's mean); a number; a tensor that broadcasts to
                the input's shape (``(N, ...)`` or ``(1, ...)``, as Captum's baselines); or a
                tuple of these, one per input tensor. None: the preset's value, ``"mean"``
                for "default" and ``0`` (the paper and the authors' code) for "code" and
                "supplementary". Unlike Captum's 0, the default deletes to the mean colour:
                deleting to black draws dark edges into the masked copies, and the mask then
                carries stripes along the image borders; see the class docstring.
            preset: "default" (measured, see :data:`PRESETS`), "code" (the authors' code) or
                "supplementary" (the supplementary's setting); it only supplies the knobs left
                as None.
            reference_numerics: Compute the loss as the reference code does,
                ``-log(p_c) - lambda2 * log(1 - p_c + 1e-7)``, instead of the stable
                log-softmax / log-sum-exp form.
            samples_per_eval: Model inputs per forward pass. None evaluates all
                ``N * 2 * n_samples`` copies of a step in one pass on accelerators, and at most
                64 per pass on CPU (faster there). Results do not depend on it beyond
                floating-point summation order.
            channels_last: Pass 4-D copies to the model in ``torch.channels_last`` memory
                format (same values; faster for ``small_cnn`` on CPU, see
                ``benchmarks/bench_relex.py``, which times both layouts). Off by
                default because models that ``view`` their input need contiguous tensors.
            temperature: Softmax temperature of the objective, per example. ``"auto"``:
                ``max(1, margin / log(99))``, ``margin`` being the clean input's lead of the
                target logit over the runner-up: a confident example is cooled until its
                target leads by the odds 99 : 1, so a saturated softmax (``p == 1`` in float32)
                no longer flattens the objective and the mask does not depend on how far the
                logits are scaled up (see the class docstring for what it changes); an
                unconfident example keeps the raw softmax. ``None``: 1, the paper's objective
                on the raw softmax. A number: that temperature for every example.
                ``"preset"`` (default): the preset's value (``"auto"`` for "default", None for
                "code" and "supplementary").
            average_from: Return the mean of the masks after each step from this fraction of
                ``n_iter`` on (a float in [0, 1): steps ``floor(average_from * n_iter) + 1``
                to ``n_iter``), or the last step's mask (``None``). ``"preset"``: the preset's
                value (0.2 for "default"; None for "code" and "supplementary"). See the class
                docstring for why. The fraction was chosen for the default 50 steps; in much
                shorter runs the average still holds the first steps' diffuse masks (on a
                model that reads a 3 x 3 region, 20 steps average its entries to 0.83-0.96
                instead of 1), so raise ``n_iter`` or ``average_from`` there.
            init: The mask at step 0: ``"constant"`` (``INIT_SCALE / 2 = 0.005`` everywhere) or
                ``"uniform"`` (U[0, 0.01) from ``generator``, the papers' and the authors'
                code). None: the preset's value (``"constant"`` for "default", ``"uniform"``
                for "code" and "supplementary"). See the class docstring for why.
            antithetic: Draw each step's noisy copies in antithetic pairs ``x0 + eps_i``,
                ``x0 - eps_i`` (an odd ``n_samples`` adds one unpaired copy) instead of
                independently. Each copy is still ``N(x0, s^2 I)``, so the objective and its
                expected gradient are unchanged; the part of the gradient that is odd in the
                noise cancels within a pair. None: the preset's value (True for "default",
                False for "code" and "supplementary", as the papers). See the class docstring.
            generator: A ``torch.Generator`` whose stream all examples share (common random
                numbers; it is advanced by the call). Or a sequence of N generators, one per
                example, used directly. None: a fresh generator seeded with
                ``torch.initial_seed()``, so repeated calls repeat the same draws (change them
                with ``torch.manual_seed``). The global RNG is never used nor advanced.
            show_progress: Show a progress bar (one tick per model call).

        Returns:
            The masks, in [0, 1], with the structure and shapes of ``inputs`` (detached).

        Raises:
            ValueError: Non-finite inputs or logits, logits not of shape (N, n_classes >= 2),
                a target of the wrong type, length or range, or a knob out of range.
            TypeError: Non-floating inputs or a generator of the wrong type.
        """
        is_tuple = _is_tuple(inputs)
        inputs_t = format_inputs(inputs)
        additional_forward_args = _format_additional_forward_args(additional_forward_args)
        _check_inputs(inputs_t)
        if preset not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
        knobs = PRESETS[preset]
        n_samples = int(knobs["n_samples"]) if n_samples is None else n_samples
        lr = knobs["lr"] if lr is None else lr
        momentum = knobs["momentum"] if momentum is None else momentum
        bases = _baselines(knobs["baselines"] if baselines is None else baselines, inputs_t)
        _check_knobs(n_iter, n_samples, noise_scale, lambda1, lambda2, lr, momentum)
        resolved = knobs["average_from"] if average_from == "preset" else average_from
        _check_average_from(resolved)
        avg_from: float | None = None if resolved is None else float(resolved)
        init = knobs["init"] if init is None else init
        if init not in INITS:
            raise ValueError(
                f"init must be one of {', '.join(map(repr, INITS))} or None, got {init!r}"
            )
        antithetic = knobs["antithetic"] if antithetic is None else antithetic
        if not isinstance(antithetic, bool):
            raise TypeError(f"antithetic must be a bool or None, got {type(antithetic).__name__}")
        temperature = knobs["temperature"] if temperature == "preset" else temperature
        _check_temperature(temperature)
        num = inputs_t[0].shape[0]
        rows = num * 2 * n_samples
        if samples_per_eval is None:
            on_cpu = inputs_t[0].device.type == "cpu"
            samples_per_eval = min(rows, CPU_SAMPLES_PER_EVAL) if on_cpu else rows
        _check_positive_int("samples_per_eval", samples_per_eval)
        source = _noise_source(generator, num, inputs_t[0].device)
        inputs_t = tuple(x.detach() for x in inputs_t)

        cfg = RelExSettings(
            n_iter=n_iter, n_samples=n_samples, noise_scale=noise_scale, lambda1=lambda1,
            lambda2=lambda2, lr=lr, momentum=momentum, reference_numerics=reference_numerics,
            samples_per_eval=samples_per_eval, channels_last=channels_last,
            temperature=temperature, average_from=avg_from, init=init, antithetic=antithetic,
        )  # fmt: skip
        n_chunks = -(-rows // samples_per_eval)
        bar = (
            progress(desc=f"{self.get_name()} attribution", total=1 + n_iter * n_chunks)
            if show_progress
            else NullProgress()
        )
        try:
            with _eval_mode(self.forward_func, inputs_t[0].device):
                masks = self._attribute(
                    inputs_t, target, additional_forward_args, source, bases, cfg, bar
                )
        finally:
            bar.close()
        warn_if_degenerate(self.get_name(), masks, DEGENERATE_HINT, stacklevel=4)
        return _format_output(is_tuple, masks)

    def _attribute(
        self,
        inputs_t: tuple[Tensor, ...],
        target: TargetType,
        additional_forward_args: Any,
        source: torch.Generator | list[torch.Generator],
        bases: tuple[Tensor, ...],
        cfg: RelExSettings,
        bar: Any,
    ) -> tuple[Tensor, ...]:
        """The optimisation loop of :meth:`attribute` on checked, tuple-formatted inputs.

        Each step draws new noisy copies, takes the objective's gradient, normalises it per
        example and takes a clamped SGD step with momentum; with ``cfg.average_from`` the
        result is the running mean of the masks after the steps from there on.
        """
        rows = self._rows(inputs_t, target, additional_forward_args, bases, cfg, bar)
        scales = tuple(
            cfg.noise_scale * (x.flatten(1).amax(1) - x.flatten(1).amin(1)) for x in inputs_t
        )
        masks = _initial_masks(inputs_t, source, cfg.init)
        buf: tuple[Tensor, ...] | None = None
        first_averaged = (
            cfg.n_iter if cfg.average_from is None else int(cfg.average_from * cfg.n_iter)
        )
        mean: tuple[Tensor, ...] | None = None
        for step in range(cfg.n_iter):
            shifted = _noisy_copies(inputs_t, scales, bases, source, cfg.n_samples, cfg.antithetic)
            grads, _ = relex_objective(self.forward_func, shifted, masks, rows, cfg, bar)
            buf, masks = _sgd_step(masks, buf, normalise_per_example(grads), cfg)
            if step >= first_averaged:  # running mean of the masks after these steps
                mean = _running_mean(mean, masks, step - first_averaged + 1)
        return masks if mean is None else mean

    def _rows(
        self,
        inputs_t: tuple[Tensor, ...],
        target: TargetType,
        additional_forward_args: Any,
        bases: tuple[Tensor, ...],
        cfg: RelExSettings,
        bar: Any,
    ) -> RelExRows:
        """The clean forward pass (one tick of ``bar``) and the rows it fixes for every step.

        It checks the logits, resolves the class explained per example (the prediction for
        ``target=None``) and the temperatures of ``cfg.temperature``, and repeats them and the
        additional forward arguments for the ``2 * cfg.n_samples`` copies of each example.
        """
        num, copies = inputs_t[0].shape[0], 2 * cfg.n_samples
        with torch.no_grad():
            logits = _run_forward(self.forward_func, inputs_t, None, additional_forward_args)
        bar.update()
        n_classes = _check_logits(logits, num, "the clean inputs")
        classes = _resolve_target(target, logits, num, n_classes)
        temperatures = _temperatures(cfg.temperature, logits, classes)
        return RelExRows(
            target=classes.repeat_interleave(copies),
            args=_expand_additional_forward_args(
                additional_forward_args, copies, ExpansionTypes.repeat_interleave
            ),
            scale=None if temperatures is None else temperatures.repeat_interleave(copies),
            bases=bases,
        )


def _initial_masks(
    inputs_t: tuple[Tensor, ...], source: torch.Generator | list[torch.Generator], init: str
) -> tuple[Tensor, ...]:
    """The masks at step 0, ``(N, *s)`` per input tensor.

    ``"constant"``: ``INIT_SCALE / 2`` everywhere (nothing drawn); ``"uniform"``:
    ``U[0, INIT_SCALE)`` drawn from ``source``.
    """
    if init == "constant":
        return tuple(torch.full_like(x, INIT_SCALE / 2) for x in inputs_t)
    return tuple(_draw(torch.rand, source, x.shape[1:], x) * INIT_SCALE for x in inputs_t)


def _noisy_copies(
    inputs_t: tuple[Tensor, ...],
    scales: tuple[Tensor, ...],
    bases: tuple[Tensor, ...],
    source: torch.Generator | list[torch.Generator],
    n_samples: int,
    antithetic: bool,
) -> tuple[Tensor, ...]:
    """One step's noisy copies minus the baseline, ``x0 - b + s * eps``, ``(N, B, *s)`` each.

    The model then sees ``b + m * (x_i - b)`` and its complement. The noise is drawn from
    ``source`` input tensor by input tensor, in order. ``antithetic``: ``ceil(B / 2)`` draws
    ``eps`` followed by the first ``floor(B / 2)`` of them negated.
    """
    drawn = -(-n_samples // 2) if antithetic else n_samples
    out = []
    for x, s, b in zip(inputs_t, scales, bases):
        eps = _draw(torch.randn, source, (drawn, *x.shape[1:]), x)
        if antithetic:
            eps = torch.cat((eps, -eps[:, : n_samples - drawn]), 1)
        out.append((x - b).unsqueeze(1) + s.view(-1, *([1] * x.dim())) * eps)
    return tuple(out)


def _sgd_step(
    masks: tuple[Tensor, ...],
    buf: tuple[Tensor, ...] | None,
    grads: tuple[Tensor, ...],
    cfg: RelExSettings,
) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
    """``(momentum buffer, masks)`` after one SGD step with momentum, clamped to [0, 1].

    PyTorch's semantics with dampening 0: the buffer starts as the first gradient.
    """
    buf = grads if buf is None else tuple(cfg.momentum * b + g for b, g in zip(buf, grads))
    return buf, tuple((m - cfg.lr * b).clamp_(0.0, 1.0) for m, b in zip(masks, buf))


def _running_mean(
    mean: tuple[Tensor, ...] | None, masks: tuple[Tensor, ...], k: int
) -> tuple[Tensor, ...]:
    """The mean of the ``k`` latest averaged masks, updated in place from that of ``k - 1``."""
    if mean is None:
        return tuple(m.clone() for m in masks)
    return tuple(a.add_(m - a, alpha=1.0 / k) for a, m in zip(mean, masks))


def relex_objective(
    forward_func: Callable[..., Tensor],
    noisy: tuple[Tensor, ...],
    masks: tuple[Tensor, ...],
    rows: RelExRows,
    cfg: RelExSettings,
    bar: Any = None,
) -> tuple[tuple[Tensor, ...], Tensor]:
    """The RelEx objective J and its gradient with respect to the masks, for fixed noisy copies.

    Rows of the model batch are ordered example-major: for example e, its B foreground copies
    ``noisy[e, i] * m[e]`` then its B background copies ``noisy[e, i] * (1 - m[e])``. Each chunk
    of ``cfg.samples_per_eval`` rows is one forward and one input-gradient pass; the mask
    gradient is assembled from the input gradients (d/dm of ``x * m`` is ``x``), which is exact
    because J is a mean over rows.

    Args:
        forward_func: Returns logits ``(rows, n_classes)``.
        noisy: Per input tensor, the noisy copies ``x0 + eps``, shape ``(M, B, *s)`` (minus
            ``rows.bases`` where it is set).
        masks: Per input tensor, the masks ``(M, *s)``.
        rows: The class, forward arguments, temperature and baseline of each row.
        cfg: The knobs; only ``lambda1`` (L1 weight), ``lambda2`` (complement-term weight),
            ``samples_per_eval`` (rows per forward), ``reference_numerics`` (the reference
            code's ``-log p``, ``log(1 - p + 1e-7)``) and ``channels_last`` (give 4-D model
            inputs the ``torch.channels_last`` memory format) enter; ``noisy`` fixes B.
        bar: Progress object (``update()`` per forward), or None.

    Returns:
        ``(grads, J)``: per input tensor the gradient ``dJ/dm`` ``(M, *s)`` (including
        ``lambda1 * sign(m)``), and the objective per example ``(M,)``.
    """
    num, n_samples = noisy[0].shape[:2]
    total = num * 2 * n_samples
    device = noisy[0].device
    flat = tuple(x.reshape(num * n_samples, *x.shape[2:]) for x in noisy)
    coefs = tuple(torch.stack((m, 1 - m), 1).reshape(num * 2, *m.shape[1:]) for m in masks)
    coef_grads = tuple(torch.zeros_like(c) for c in coefs)
    data_loss = torch.zeros(num, dtype=noisy[0].dtype, device=device)
    for start, stop in chunks(total, cfg.samples_per_eval):
        chunk = _chunk_rows(start, stop, n_samples, device)
        xs = tuple(f.index_select(0, chunk.sample_idx) for f in flat)
        row_loss, in_grads = _chunk_pass(forward_func, xs, coefs, chunk, rows, cfg)
        for cg, g, x in zip(coef_grads, in_grads, xs):
            if g is not None:
                cg.index_add_(0, chunk.coef_idx, g * x)
        data_loss.index_add_(0, chunk.example, row_loss.detach().to(data_loss.dtype))
        if bar is not None:
            bar.update()
    return _mask_gradients(coef_grads, masks, data_loss, n_samples, cfg.lambda1)


class _Chunk(NamedTuple):
    """Rows ``start:stop`` of the model batch and where each row's data lives."""

    start: int
    stop: int
    example: Tensor  #: the example of each row
    background: Tensor  #: 1 for a background copy, 0 for a foreground one
    sample_idx: Tensor  #: the row's noisy copy among the ``M * B`` flattened ones
    coef_idx: Tensor  #: the row's coefficient (m or 1 - m) among the ``M * 2`` stacked ones


def _chunk_rows(start: int, stop: int, n_samples: int, device: torch.device) -> _Chunk:
    """Where rows ``start:stop`` of the example-major batch take their copy and coefficient."""
    r = torch.arange(start, stop, device=device)
    example, k = r // (2 * n_samples), r % (2 * n_samples)
    background = k // n_samples
    sample_idx = example * n_samples + k % n_samples
    return _Chunk(start, stop, example, background, sample_idx, example * 2 + background)


def _chunk_pass(
    forward_func: Callable[..., Tensor],
    xs: tuple[Tensor, ...],
    coefs: tuple[Tensor, ...],
    chunk: _Chunk,
    rows: RelExRows,
    cfg: RelExSettings,
) -> tuple[Tensor, tuple[Tensor | None, ...]]:
    """One forward and input-gradient pass over a chunk: ``(loss per row, d loss / d input)``.

    ``xs`` holds the chunk's noisy copies and ``coefs`` the stacked ``(m, 1 - m)``; the model
    sees ``x * coef`` (plus the row's baseline). An input tensor the loss does not use gets a
    None gradient.
    """
    start, stop = chunk.start, chunk.stop
    with torch.enable_grad():
        masked = [x * c.index_select(0, chunk.coef_idx) for x, c in zip(xs, coefs)]
        if rows.bases is not None:
            masked = [u + b.index_select(0, chunk.example) for u, b in zip(masked, rows.bases)]
        leaves = tuple(_memory_format(u, cfg.channels_last).requires_grad_() for u in masked)
        row_args = select_args(rows.args, slice(start, stop), rows.target.shape[0])
        logits = _run_forward(forward_func, leaves, None, row_args)
        _check_logits(logits, stop - start, "a masked noisy copy")
        if rows.scale is not None:
            logits = logits / rows.scale[start:stop].to(logits.dtype).unsqueeze(1)
        row_loss = _row_losses(
            logits,
            rows.target[start:stop],
            chunk.background.bool(),
            cfg.lambda2,
            cfg.reference_numerics,
        )
        if not row_loss.requires_grad:
            return row_loss, (None,) * len(leaves)
        return row_loss, torch.autograd.grad(row_loss.sum(), leaves, allow_unused=True)


def _mask_gradients(
    coef_grads: tuple[Tensor, ...],
    masks: tuple[Tensor, ...],
    data_loss: Tensor,
    n_samples: int,
    lambda1: float,
) -> tuple[tuple[Tensor, ...], Tensor]:
    """``(dJ/dm per input tensor, J per example)`` from the summed row gradients and losses.

    ``coef_grads`` holds, per input tensor, the gradients with respect to the stacked
    coefficients ``(m, 1 - m)``; ``data_loss`` the summed row losses per example.
    """
    num = data_loss.shape[0]
    grads = []
    l1 = torch.zeros(num, dtype=data_loss.dtype, device=data_loss.device)
    for cg, m in zip(coef_grads, masks):
        pair = cg.view(num, 2, *m.shape[1:])
        grads.append((pair[:, 0] - pair[:, 1]) / n_samples + lambda1 * torch.sign(m))
        l1 = l1 + m.abs().flatten(1).sum(1)
    return tuple(grads), data_loss / n_samples + lambda1 * l1


def normalise_per_example(grads: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """Divide each example's gradient by its L2 norm over all input tensors (0 stays 0).

    Args:
        grads: Per input tensor, gradients of shape ``(M, *s)``.

    Returns:
        The normalised gradients: unit norm per example, or exactly zero where the norm is 0.
    """
    sq = sum(g.flatten(1).pow(2).sum(1) for g in grads)
    assert isinstance(sq, Tensor)  # grads holds one tensor per input (at least one)
    norm = sq.sqrt()
    inv = torch.where(norm > 0, 1.0 / norm.clamp_min(torch.finfo(norm.dtype).tiny), 0.0)
    return tuple(g * inv.view(-1, *([1] * (g.dim() - 1))) for g in grads)


def _row_losses(
    logits: Tensor,
    target: Tensor,
    background: Tensor,
    lambda2: float,
    reference_numerics: bool,
) -> Tensor:
    """Per row: ``-log f_c`` (foreground rows) or ``-lambda2 * log(1 - f_c)`` (background rows)."""
    if reference_numerics:
        p_c = _select_targets(torch.softmax(logits, 1), target)
        fg = -torch.log(p_c)
        bg = -torch.log(1 - p_c + REFERENCE_EPS)
    else:
        log_z = logits.logsumexp(1)
        fg = log_z - _select_targets(logits, target)
        others = logits.masked_fill(
            torch.nn.functional.one_hot(target, logits.shape[1]).bool(), float("-inf")
        )
        bg = log_z - others.logsumexp(1)
    return torch.where(background, lambda2 * bg, fg)


def _memory_format(x: Tensor, channels_last: bool) -> Tensor:
    if channels_last and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


def _draw(
    fn: Callable[..., Tensor],
    source: torch.Generator | list[torch.Generator],
    shape: Sequence[int],
    like: Tensor,
) -> Tensor:
    """``fn(shape)`` per example, as a tensor of shape ``(N, *shape)``.

    A single generator gives one draw shared by every example (common random numbers), a list
    one draw from each example's own generator.
    """
    num = like.shape[0]
    kw = dict(dtype=like.dtype)
    if isinstance(source, torch.Generator):
        one = fn(tuple(shape), generator=source, device=source.device, **kw).to(like.device)
        return one.unsqueeze(0).expand(num, *one.shape).clone()
    return torch.stack(
        [fn(tuple(shape), generator=g, device=g.device, **kw).to(like.device) for g in source]
    )


def _noise_source(
    generator: GeneratorArg, num: int, device: torch.device
) -> torch.Generator | list[torch.Generator]:
    if generator is None or isinstance(generator, torch.Generator):
        return default_generator(generator, device)
    if isinstance(generator, Sequence) and all(isinstance(g, torch.Generator) for g in generator):
        if len(generator) != num:
            raise ValueError(
                f"generator: a sequence needs one torch.Generator per example ({num}), "
                f"got {len(generator)}"
            )
        return list(generator)
    raise TypeError(
        "generator must be None, a torch.Generator or a sequence of torch.Generator, "
        f"got {type(generator).__name__}"
    )


@contextmanager
def _eval_mode(forward_func: Callable[..., Tensor], device: torch.device) -> Iterator[None]:
    """Run in eval mode and restore every module's flag and the global RNG state afterwards."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), eval_mode(forward_func):
        yield


def _check_inputs(inputs: tuple[Tensor, ...]) -> None:
    if len(inputs) == 0:
        raise ValueError("inputs must contain at least one tensor, got an empty tuple")
    check_inputs(inputs)


def _baselines(baselines: Any, inputs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """Per input tensor, the baseline ``(N, *s)`` deleted entries take (see ``attribute``)."""
    if isinstance(baselines, tuple):
        if len(baselines) != len(inputs):
            raise ValueError(
                f"baselines: a tuple needs one baseline per input tensor ({len(inputs)}), got "
                f"{len(baselines)}"
            )
        return tuple(
            _baseline(b, x, f"baselines[{i}]") for i, (b, x) in enumerate(zip(baselines, inputs))
        )
    return tuple(_baseline(baselines, x, "baselines") for x in inputs)


def _baseline(value: Any, x: Tensor, name: str) -> Tensor:
    if isinstance(value, str):
        if value != "mean":
            raise ValueError(f"{name} must be 'mean', a number or a tensor, got {value!r}")
        dims = tuple(range(2, x.dim())) if x.dim() > 2 else tuple(range(1, x.dim()))
        return x.mean(dims, keepdim=True).expand_as(x) if dims else torch.zeros_like(x)
    if isinstance(value, Tensor):
        if not value.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
        try:
            out = value.to(x.device, x.dtype).expand_as(x)
        except RuntimeError as err:
            raise ValueError(
                f"{name} of shape {tuple(value.shape)} does not broadcast to the inputs' shape "
                f"{tuple(x.shape)}"
            ) from err
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        out = torch.full_like(x, float(value))
    else:
        raise TypeError(f"{name} must be 'mean', a number or a tensor, got {type(value).__name__}")
    if not bool(torch.isfinite(out).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    return out.detach()


def _check_temperature(temperature: Any) -> None:
    if temperature is None or temperature == "auto":
        return
    if isinstance(temperature, bool) or not (
        isinstance(temperature, (int, float)) and 0 < temperature < float("inf")
    ):
        raise ValueError(
            "temperature must be 'preset', None, 'auto' or a finite number > 0, "
            f"got {temperature!r}"
        )


def _temperatures(
    temperature: Union[str, float, None], logits: Tensor, classes: Tensor
) -> Tensor | None:
    """The softmax temperature of each example: ``(N,)``, float64; None for ``None`` (1).

    ``"auto"``: ``max(1, margin / AUTO_LOG_ODDS)`` with ``margin`` the clean input's lead of the
    target logit over the runner-up: a confident example is cooled until the target leads by
    ``log(99)``, an unconfident one is left as it is (sharpening it collapses the mask). For
    examples whose margin is at least ``AUTO_LOG_ODDS``, multiplying the logits by ``c >= 1``
    multiplies the temperature by ``c`` and leaves the objective and the mask unchanged.
    """
    if temperature is None:  # the paper's objective: no division on the hot path
        return None
    if temperature != "auto":
        num = logits.shape[0]
        return torch.full((num,), float(temperature), dtype=torch.float64, device=logits.device)
    z = logits.detach().double()
    own = z.gather(1, classes.view(-1, 1)).squeeze(1)
    runner_up = z.scatter(1, classes.view(-1, 1), float("-inf")).amax(1)
    return ((own - runner_up).abs() / AUTO_LOG_ODDS).clamp_min(1.0)


def _check_average_from(value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"average_from must be None, 'preset' or a float in [0, 1), got {value!r}")


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")


def _check_knobs(
    n_iter: Any,
    n_samples: Any,
    noise_scale: float,
    lambda1: float,
    lambda2: float,
    lr: float,
    momentum: float,
) -> None:
    _check_positive_int("n_iter", n_iter)
    _check_positive_int("n_samples", n_samples)
    for name, value in (("noise_scale", noise_scale), ("lambda1", lambda1), ("lambda2", lambda2)):
        if not (isinstance(value, (int, float)) and 0 <= value < float("inf")):
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    if not (isinstance(lr, (int, float)) and 0 < lr < float("inf")):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    if not (isinstance(momentum, (int, float)) and 0 <= momentum < 1):
        raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")


def _check_logits(logits: Any, rows: int, where: str) -> int:
    check_logits(logits, rows, where)
    if logits.shape[1] < 2:
        raise ValueError(
            f"RelEx needs at least 2 classes (softmax of logits), got {logits.shape[1]}"
        )
    return int(logits.shape[1])


def _resolve_target(target: TargetType, logits: Tensor, num: int, n_classes: int) -> Tensor:
    if target is None:
        return logits.argmax(1)
    return class_index_targets(target, num, logits.device, n_classes).contiguous()
