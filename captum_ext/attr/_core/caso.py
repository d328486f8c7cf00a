"""CAFO and CASO: context-aware first- and second-order saliency (with Smooth variants).

Singla, Wallace, Feng, Feizi. "Understanding Impacts of High-Order Loss Approximations and
Features in Deep Learning Interpretation", ICML 2019.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, ClassVar, Literal, Sequence, Union

import torch
from captum._utils.typing import TargetType, TensorOrTupleOfTensorsGeneric
from torch import Tensor

from captum_ext._compat import log_usage
from captum_ext.attr._utils.context_aware import (
    DEFAULT_LAMBDA1_GRID,
    ContextAware,
    Ticks,
    lambda1_path,
    normalise_gradient,
)
from captum_ext.attr._utils.fista import fista, power_iteration, soft_threshold
from captum_ext.attr._utils.hessian_choice import Operator, choose_hessian
from captum_ext.attr._utils.hvp import AutogradHessian, ClosedFormHessian, check_hessian_tol

__all__ = ["CAFO", "CASO"]


class CAFO(ContextAware):
    r"""Context-Aware First-Order interpretation (Singla et al., ICML 2019, Def. 2).

    For the loss ``l(x) = loss_fn(forward_func(x), target)`` (cross-entropy of the logits by
    default) with input gradient ``g``, returns

        Delta* = argmax_D  g^T D - lambda1 ||D||_1 - lambda2 ||D||_2^2 = S_lambda1(g) / (2 lambda2)

    with ``S`` the soft-threshold: a closed form, so one gradient pass per call and the whole
    ``lambda1`` sweep is free (the sparsity ratio of ``S_lambda1(g)`` is the fraction of
    ``|g| <= lambda1``). ``lambda2`` defaults to ``c1`` (the authors' code uses
    ``lambda_eff = 2 c1 = 20``); it only scales the output. ``n_samples > 0`` gives SmoothCAFO:
    ``g`` averaged over Gaussian copies with the target kept fixed (the paper's Def. 4; the
    authors' code relabels each copy by its own argmax, which we do not copy).

    The output is ``|Delta*|``, shaped like the inputs: the paper's importance values, which it
    displays as ``sum_c |Delta|`` normalised as in SmoothGrad (Appendix D); ``abs=False``
    returns the signed ``Delta*`` (as Captum's ``Saliency``, whose ``abs`` it mirrors). Measured
    with the Captum-natural call, the pointing game of the signed map (the maximum of
    ``sum_c Delta``) ignores pixels whose ``Delta`` is negative: on 48 ``small_cnn`` benchmark
    images CAFO scores 0.35 signed against 0.52 for ``|Delta|`` (Saliency 0.56), energy in
    the object 2.3x against 3.0x its area (Saliency 1.8x); on 4 images of the 224 x 224
    benchmark ResNet-18 1.00 either way (Saliency 1.00), energy 4.8x against 4.9x.

    Where CAFO's maximum differs from Saliency's, the loss is the cause, not the sparsity:
    with ``loss="logit"`` CAFO (and :class:`CASO`) point at the same pixel as Saliency on all
    48 of those images, and ``lambda1=0`` changes no maximum. The paper's cross-entropy
    explains the target's lead over the other classes, weighted by their probabilities,
    which on 18 of the 48 images peaks elsewhere: CAFO hits the object on 8 where Saliency
    misses and misses on 10 where it hits (McNemar exact p = 0.81; CASO the same); on the
    logits x 20 wrapper, where the lead is over the runner-up alone, 9 against 14 (0.46
    against 0.56, p = 0.40; CASO 8 against 14, p = 0.29).

    ``lambda1`` and ``c1`` depend on the input scale
    (the grid is tuned for [0, 1] pixels; scaling inputs by ``s`` scales ``g`` by ``1/s``).
    After each call :attr:`last_info` holds per-example tensors ``lambda1``, ``lambda2``,
    ``eta`` (sparsity ratio), ``in_window`` and ``loss`` (the first-order surrogate
    ``g^T Delta``).

    Args:
        forward_func: Model returning logits ``(N, C)``.
        loss_fn: ``loss_fn(logits, target) -> (N,)`` per-example losses; default
            cross-entropy.

    Examples:
        >>> cafo = CAFO(model)
        >>> attr = cafo.attribute(images, target=labels)  # lambda1 chosen per example
        >>> cafo.last_info["eta"]  # sparsity ratios, in [0.75, 1) where possible
    """

    _name = "CAFO"
    _option_defaults: ClassVar[dict[str, Any]] = {
        "lambda2": None, "c1": 10.0, "lambda1_rule": "refine", "internal_batch_size": None,
    }  # fmt: skip

    @log_usage()
    def attribute(
        self,
        inputs: TensorOrTupleOfTensorsGeneric,
        target: TargetType = None,
        additional_forward_args: Any = None,
        lambda1: Union[Literal["auto"], float] = "auto",
        lambda2: float | None = None,
        c1: float = 10.0,
        sparsity_range: tuple[float, float] = (0.75, 1.0),
        lambda1_grid: Sequence[float] = DEFAULT_LAMBDA1_GRID,
        max_halvings: int = 20,
        lambda1_rule: Literal["refine", "paper"] = "refine",
        n_samples: int = 0,
        stdevs: float = 0.15,
        internal_batch_size: int | None = None,
        generator: torch.Generator | None = None,
        show_progress: bool = False,
        abs: bool = True,
    ) -> TensorOrTupleOfTensorsGeneric:
        """Compute CAFO (or SmoothCAFO) attributions.

        Args:
            inputs: Tensor or tuple of tensors, batch on dim 0. ``Delta`` spans all tensors
                jointly (one L1/L2 norm and one sparsity ratio per example).
            target: Class index per example: int, list, or 1-D tensor. ``None`` uses the
                argmax of the logits on the clean input. Tuple targets are rejected (the loss
                needs a class index).
            additional_forward_args: Extra arguments of ``forward_func`` (tensors with the
                batch on dim 0 are expanded with the inputs).
            lambda1: ``"auto"`` (the sparsity-ratio rule of Sec. 4.1, per example) or a
                float >= 0.
            lambda2: ``None`` for the paper's default (see the class docstring) or a float > 0.
            c1: Margin added to ``lambda2`` (the paper's 10).
            sparsity_range: ``(lo, hi)``: ``lo <= eta < hi`` is the window of the auto rule.
            lambda1_grid: Starting values of the auto rule (Tables 2-3 of the paper).
            max_halvings: Halving/bisection steps of the auto rule per example (refinement
                rounds for ``lambda1_rule="refine"``).
            lambda1_rule: How ``lambda1="auto"`` searches: ``"refine"`` (default) starts from
                the CAFO quantile of ``|g|`` (exact for CAFO; 1.6 times it for CASO) and narrows
                a bracket, one value per round by a safeguarded secant step, until the sparsity
                ratio lies just above the window's lower edge (the lowest fifth of the window),
                where the paper's criterion (highest loss inside the window) sits; ``"paper"``
                is the paper's factor-10 grid with halving, which often jumps over the window
                to near one-pixel maps.
            n_samples: ``> 0`` gives the Smooth variant (Def. 4): gradients (and Hessians)
                averaged over this many Gaussian copies inside one objective; the paper uses 50.
            stdevs: Noise std of the copies as a fraction of each example's value range
                ``max(x) - min(x)`` per input tensor (the authors' code; 0.15 in the paper).
            internal_batch_size: Rows per model pass (``None``: no chunking). Results do not
                depend on it (up to floating-point rounding).
            generator: Randomness of the Smooth copies (default: a generator seeded from
                ``torch.initial_seed()``).
            show_progress: Show a progress bar (Captum's ``progress``).
            abs: Return ``|Delta*|``, the paper's feature importance values (Sec. 3: "the
                vector ``|x~* - x|`` contains the feature importance values that are
                visualized"), as Captum's ``Saliency`` returns ``|g|``; False returns the
                signed ``Delta*``.

        Returns:
            ``|Delta*|`` (or ``Delta*`` with ``abs=False``) shaped like ``inputs`` (detached).
        """
        cfg, options = self._configure(
            lambda1,
            {
                "lambda2": lambda2, "c1": c1, "sparsity_range": sparsity_range,
                "lambda1_grid": lambda1_grid, "max_halvings": max_halvings,
                "lambda1_rule": lambda1_rule, "n_samples": n_samples, "stdevs": stdevs,
                "internal_batch_size": internal_batch_size, "generator": generator,
                "show_progress": show_progress, "abs": abs,
            },
        )  # fmt: skip
        ctx, out = self._attribute(inputs, target, additional_forward_args, cfg, options)
        self._squeeze_info()
        return self._checked_output(
            ctx, out["delta"][:, 0], isinstance(lambda1, str), lambda1_rule, abs
        )

    def lambda1_path(
        self,
        inputs: TensorOrTupleOfTensorsGeneric,
        lambda1: Sequence[float] = DEFAULT_LAMBDA1_GRID,
        target: TargetType = None,
        additional_forward_args: Any = None,
        **kwargs: Any,
    ) -> list[TensorOrTupleOfTensorsGeneric]:
        """Solutions for several ``lambda1`` values (the paper's Fig. 3 sweep), in one batch.

        Args:
            inputs: Tensor or tuple of tensors, batch on dim 0. ``Delta`` spans all tensors
                jointly (one L1/L2 norm and one sparsity ratio per example and value).
            lambda1: The values, a non-empty sequence of finite floats >= 0 (no ``"auto"``).
            target: Class index per example: int, list, or 1-D tensor. ``None`` uses the
                argmax of the logits on the clean input. Tuple targets are rejected (the loss
                needs a class index).
            additional_forward_args: Extra arguments of ``forward_func`` (tensors with the
                batch on dim 0 are expanded with the inputs).
            **kwargs: Other keyword arguments of :meth:`attribute` (``lambda2``, ``c1``,
                ``n_samples``, ``stdevs``, ``generator``, ...; not ``lambda1``). The gradient
                is computed once and shared by every value.

        Returns:
            One attribution per value, in the order given; :attr:`last_info` then holds
            ``(N, len(lambda1))`` tensors.
        """
        return lambda1_path(self, inputs, lambda1, target, additional_forward_args, kwargs)

    def _solver(
        self, ctx: dict[str, Any], options: dict[str, Any], bar: Ticks
    ) -> tuple[Callable[[Tensor, Tensor], tuple[Tensor, Tensor]], dict[str, Any]]:
        op = AutogradHessian(
            ctx["row_logits"], ctx["loss_fn"], ctx["xs"], ctx["target"],
            options["internal_batch_size"], ctx["weights"],
        )  # fmt: skip
        g, ctx["unit"] = normalise_gradient(op.gradient(hessian_next=False))
        ctx["g"] = g
        bar.update()
        lam2_value = options["lambda2"] if options["lambda2"] is not None else options["c1"]
        lam2 = torch.full((g.shape[0],), float(lam2_value), dtype=g.dtype, device=g.device)

        def solve(lam: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
            tau = lam.to(device=g.device, dtype=g.dtype)[..., None]
            gi = g[idx.to(g.device)][:, None]
            delta = soft_threshold(gi, tau) / (2 * lam2[idx.to(g.device)][:, None, None])
            return delta, (gi * delta).sum(-1)

        return solve, {"lambda2": lam2.double().cpu()}


class CASO(ContextAware):
    r"""Context-Aware Second-Order interpretation (Singla et al., ICML 2019, Def. 3).

    For the loss ``l(x) = loss_fn(forward_func(x), target)`` (cross-entropy of the logits by
    default) with input gradient ``g`` and input Hessian ``H``, returns

        Delta* = argmax_D  g^T D + 1/2 D^T H D - lambda1 ||D||_1 - lambda2 ||D||_2^2,

    solved by FISTA with backtracking (10 iterations, ``D = 0`` at the start, step decay 0.5;
    the proximal map is soft-thresholding), with per-example step sizes.
    ``lambda2 = L/2 + c1`` with ``L`` the top eigenvalue of ``H`` from power iteration, which
    makes the objective strongly concave (Thm. 3). ``lambda1="auto"`` chooses ``lambda1`` per
    example by the sparsity-ratio rule of Sec. 4.1, all grid values solved as one batch.
    ``H`` is never materialised:

    - ``hessian="auto"`` (default): the closed form below for each example where it gives the
      exact product (checked on one vector against double backward: relative difference at
      most 1e-3, true of ReLU networks), double backward elsewhere, and double backward for all
      when the closed form would keep more than 64 logit directions (a flat softmax).
      ``last_info["closed_form"]`` says which examples used the closed form and
      ``["hessian_check"]`` the measured difference. The check costs one gradient graph and one
      product, which double backward reuses.
    - ``hessian="hvp"``: exact Hessian-vector products by double backward through a
      retained gradient graph, for any twice-differentiable model. Each product costs about
      two Saliency passes per vector (forward-over-reverse ``torch.func.jvp`` of ``grad`` costs
      about four on ResNet-18 at 224 x 224 on a CPU); a call makes 10 for power iteration and
      10 per lambda1 value the rule tries (1-3 on the benchmark): 30-85x Saliency's time on
      the 224 x 224 benchmark ResNet-18 (2 CPU cores).
    - ``hessian="closed_form"``: ``H = J^T A J`` with ``J`` the logit Jacobian and ``A`` the
      loss Hessian in the logits (``diag(p) - p p^T`` for cross-entropy; Prop. 1), after which
      no power or FISTA iteration, for any ``lambda1``, needs a model pass. Exact for
      piecewise-linear networks (ReLU, max-pool, eval-mode batch norm); for other networks it
      is the Gauss-Newton approximation of ``H``. Only the leading eigen-directions of ``A``
      are kept (``hessian_tol``): ``k + 1`` gradient passes instead of one per class, with
      ``k = 1-6`` on the 1,000-class benchmark ResNet-18 at 224 x 224 (the operator 3-5x
      Saliency's time, the whole call 4-9x, against ~560x for all classes). A model unsure among
      many classes (a flat softmax, e.g. random weights) has a flat spectrum and keeps up to
      ``C`` directions. Memory ``N * n * k * d`` numbers (``n`` Smooth copies).

    ``step="fixed"`` (default) starts each line search at ``1/(2 lambda2)`` instead of the
    paper's ``lr = 0.1`` (``step="backtrack"``). For a positive semidefinite ``H`` (ReLU
    networks with cross-entropy) that step always passes the sufficient-decrease test, so
    each iteration costs one Hessian-vector product instead of the paper's 2-5 trials (its
    first trial, ``t = 0.1``, always fails when ``2 lambda2 >= 20``), and an indefinite ``H``
    still gets halvings until the test holds. Measured on the embedded benchmark (16 images,
    8 lambda1 values), after 10 iterations it is also closer to the optimum: median relative
    error 1e-5 against 1e-3, with 10 products against 30 (``benchmarks/bench_caso.py``).
    ``n_samples > 0`` gives SmoothCASO (Def. 4): ``g`` and ``H`` averaged over Gaussian copies
    inside one objective, the target kept fixed (the authors' code relabels each copy by its
    argmax; Def. 4 does not).

    The output is ``|Delta*|`` as for :class:`CAFO` (the paper's importance values; signed with
    ``abs=False``): on the same 48 ``small_cnn`` images CASO's pointing game is 0.46 signed and
    0.48 for ``|Delta|``, energy 2.4x and 3.1x its area; at 224 1.00 either way, energy 4.9x and
    5.1x.

    ``lambda1`` and ``c1`` depend on the input scale
    (the grid is tuned for [0, 1] pixels). After each call :attr:`last_info` holds per-example
    tensors ``lambda1``, ``lambda2``, ``eta`` (sparsity ratio), ``in_window``, ``loss`` (the
    surrogate ``g^T D + 1/2 D^T H D`` used by the rule), ``top_eigenvalue``,
    ``lambda2_raised`` (a user ``lambda2 <= L/2`` replaced by ``L/2 + c1``), the int ``n_hvp``
    (batched Hessian-vector products), the bool ``indefinite`` (power iteration saw a
    negative eigenvalue), with the closed form the int ``hessian_rank`` and, with
    ``hessian="auto"``, the per-example ``closed_form`` and ``hessian_check`` (see above).

    Args:
        forward_func: Model returning logits ``(N, C)``.
        loss_fn: ``loss_fn(logits, target) -> (N,)`` per-example losses; default
            cross-entropy.

    Examples:
        >>> caso = CASO(model)
        >>> attr = caso.attribute(images, target=labels)
        >>> smooth = caso.attribute(images, target=labels, n_samples=50, stdevs=0.15)
    """

    _name = "CASO"
    # The Hessian term keeps CASO's solution denser than CAFO's at the same lambda1: after the
    # default 10 FISTA steps the window's lower edge sits at 1.3-2.8 (median ~1.6) times the
    # CAFO quantile on the benchmark (24 small_cnn and 6 resnet18_224 test images). Only the
    # number of rounds depends on this guess, not which band the search stops in.
    _seed_factor: ClassVar[float] = 1.6
    _option_defaults: ClassVar[dict[str, Any]] = {
        **CAFO._option_defaults, "n_iter": 10, "lr": 0.1, "backtrack": 0.5, "power_iter": 10,
        "hessian": "auto", "hessian_tol": 1e-4, "step": "fixed", "monotone": False,
    }  # fmt: skip

    @log_usage()
    def attribute(
        self,
        inputs: TensorOrTupleOfTensorsGeneric,
        target: TargetType = None,
        additional_forward_args: Any = None,
        lambda1: Union[Literal["auto"], float] = "auto",
        lambda2: float | None = None,
        c1: float = 10.0,
        n_iter: int = 10,
        lr: float = 0.1,
        backtrack: float = 0.5,
        power_iter: int = 10,
        hessian: Literal["auto", "hvp", "closed_form"] = "auto",
        hessian_tol: float | None = 1e-4,
        step: Literal["fixed", "backtrack"] = "fixed",
        monotone: bool = False,
        sparsity_range: tuple[float, float] = (0.75, 1.0),
        lambda1_grid: Sequence[float] = DEFAULT_LAMBDA1_GRID,
        max_halvings: int = 20,
        lambda1_rule: Literal["refine", "paper"] = "refine",
        n_samples: int = 0,
        stdevs: float = 0.15,
        internal_batch_size: int | None = None,
        generator: torch.Generator | None = None,
        show_progress: bool = False,
        abs: bool = True,
    ) -> TensorOrTupleOfTensorsGeneric:
        """Compute CASO (or SmoothCASO) attributions.

        Args:
            inputs: Tensor or tuple of tensors, batch on dim 0. ``Delta`` spans all tensors
                jointly (one L1/L2 norm and one sparsity ratio per example).
            target: Class index per example: int, list, or 1-D tensor. ``None`` uses the
                argmax of the logits on the clean input. Tuple targets are rejected (the loss
                needs a class index).
            additional_forward_args: Extra arguments of ``forward_func`` (tensors with the
                batch on dim 0 are expanded with the inputs).
            lambda1: ``"auto"`` (the sparsity-ratio rule of Sec. 4.1, per example) or a
                float >= 0.
            lambda2: ``None`` for the paper's default (see the class docstring) or a float > 0.
            c1: Margin added to ``lambda2`` (the paper's 10).
            sparsity_range: ``(lo, hi)``: ``lo <= eta < hi`` is the window of the auto rule.
            lambda1_grid: Starting values of the auto rule (Tables 2-3 of the paper).
            max_halvings: Halving/bisection steps of the auto rule per example (refinement
                rounds for ``lambda1_rule="refine"``).
            lambda1_rule: How ``lambda1="auto"`` searches: ``"refine"`` (default) starts from
                the CAFO quantile of ``|g|`` (exact for CAFO; 1.6 times it for CASO) and narrows
                a bracket, one value per round by a safeguarded secant step, until the sparsity
                ratio lies just above the window's lower edge (the lowest fifth of the window),
                where the paper's criterion (highest loss inside the window) sits; ``"paper"``
                is the paper's factor-10 grid with halving, which often jumps over the window
                to near one-pixel maps.
            n_samples: ``> 0`` gives the Smooth variant (Def. 4): gradients (and Hessians)
                averaged over this many Gaussian copies inside one objective; the paper uses 50.
            stdevs: Noise std of the copies as a fraction of each example's value range
                ``max(x) - min(x)`` per input tensor (the authors' code; 0.15 in the paper).
            internal_batch_size: Rows per model pass (``None``: no chunking). Results do not
                depend on it (up to floating-point rounding).
            n_iter: FISTA iterations (exactly this many, as in the paper).
            lr: First trial step of every FISTA iteration with ``step="backtrack"``.
            backtrack: Step decay per failed sufficient-decrease test, in (0, 1).
            power_iter: Power iterations for the top Hessian eigenvalue.
            hessian: ``"auto"``, ``"hvp"`` or ``"closed_form"`` (see the class docstring).
            hessian_tol: With ``hessian="closed_form"`` or ``"auto"``: eigen-directions of
                the loss Hessian in the logits whose eigenvalue is below this fraction of the
                largest are dropped (``None``: every class, ``C`` gradient passes). On the 224 x 224
                benchmark ResNet-18 (1,000 classes, 4 test images) the default ``1e-4`` keeps
                2-6 directions instead of 1,000 passes, and the Hessian is within 1.7e-5 to
                8.4e-5 (relative, operator norm) of the full closed form on three images and
                2.1e-4 on the fourth (``1e-6`` would fix that one but keeps 982 directions on
                another, whose spectrum has a plateau there); the CASO maps are within 6.6e-6
                to 6.8e-5 (relative L2) of every class's on all four (timings in
                ``benchmarks/bench_caso_classes.py``). :attr:`last_info` ``["hessian_rank"]``
                holds the directions kept. Ignored by ``"hvp"``.
            step: ``"fixed"`` (each line search starts at ``1/(2 lambda2)``; see the class
                docstring) or ``"backtrack"`` (the paper: it starts at ``lr``).
            monotone: Use MFISTA (the objective never gets worse across iterations).
            generator: Randomness of the power-iteration start and the Smooth copies (default:
                a generator seeded from ``torch.initial_seed()``).
            show_progress: Show a progress bar (Captum's ``progress``).
            abs: Return ``|Delta*|``, the paper's feature importance values (Sec. 3: "the
                vector ``|x~* - x|`` contains the feature importance values that are
                visualized"), as Captum's ``Saliency`` returns ``|g|``; False returns the
                signed ``Delta*``.

        Returns:
            ``|Delta*|`` (or ``Delta*`` with ``abs=False``) shaped like ``inputs`` (detached).
        """
        cfg, options = self._configure(
            lambda1,
            {
                "lambda2": lambda2, "c1": c1, "n_iter": n_iter, "lr": lr, "backtrack": backtrack,
                "power_iter": power_iter, "hessian": hessian, "hessian_tol": hessian_tol,
                "step": step, "monotone": monotone, "sparsity_range": sparsity_range,
                "lambda1_grid": lambda1_grid, "max_halvings": max_halvings,
                "lambda1_rule": lambda1_rule, "n_samples": n_samples, "stdevs": stdevs,
                "internal_batch_size": internal_batch_size, "generator": generator,
                "show_progress": show_progress, "abs": abs,
            },
        )  # fmt: skip
        ctx, out = self._attribute(inputs, target, additional_forward_args, cfg, options)
        self._squeeze_info()
        return self._checked_output(
            ctx, out["delta"][:, 0], isinstance(lambda1, str), lambda1_rule, abs
        )

    def lambda1_path(
        self,
        inputs: TensorOrTupleOfTensorsGeneric,
        lambda1: Sequence[float] = DEFAULT_LAMBDA1_GRID,
        target: TargetType = None,
        additional_forward_args: Any = None,
        **kwargs: Any,
    ) -> list[TensorOrTupleOfTensorsGeneric]:
        """Solutions for several ``lambda1`` values (the paper's Fig. 3 sweep), in one batch.

        Args:
            inputs: Tensor or tuple of tensors, batch on dim 0. ``Delta`` spans all tensors
                jointly (one L1/L2 norm and one sparsity ratio per example and value).
            lambda1: The values, a non-empty sequence of finite floats >= 0 (no ``"auto"``).
            target: Class index per example: int, list, or 1-D tensor. ``None`` uses the
                argmax of the logits on the clean input. Tuple targets are rejected (the loss
                needs a class index).
            additional_forward_args: Extra arguments of ``forward_func`` (tensors with the
                batch on dim 0 are expanded with the inputs).
            **kwargs: Other keyword arguments of :meth:`attribute` (``lambda2``, ``c1``,
                ``n_iter``, ``hessian``, ``step``, ``n_samples``, ``generator``, ...; not
                ``lambda1``). The gradient, the Hessian operator and the top eigenvalue are
                computed once; the FISTA problems of all values are solved as one batch.

        Returns:
            One attribution per value, in the order given; :attr:`last_info` then holds
            ``(N, len(lambda1))`` tensors.
        """
        return lambda1_path(self, inputs, lambda1, target, additional_forward_args, kwargs)

    def _check_options(self, options: dict[str, Any]) -> None:
        for name in ("n_iter", "power_iter"):
            value = options[name]
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if not (isinstance(options["lr"], (int, float)) and options["lr"] > 0):
            raise ValueError(f"lr must be a float > 0, got {options['lr']!r}")
        if not (isinstance(options["backtrack"], (int, float)) and 0 < options["backtrack"] < 1):
            raise ValueError(f"backtrack must be a float in (0, 1), got {options['backtrack']!r}")
        if options["hessian"] not in ("auto", "hvp", "closed_form"):
            raise ValueError(
                f"hessian must be 'auto', 'hvp' or 'closed_form', got {options['hessian']!r}"
            )
        check_hessian_tol(options["hessian_tol"])
        if options["step"] not in ("backtrack", "fixed"):
            raise ValueError(f"step must be 'backtrack' or 'fixed', got {options['step']!r}")

    def _n_steps(self, options: dict[str, Any], n_solves: int) -> int:
        # power iteration (twice for an indefinite Hessian), then n_iter FISTA steps per solve
        return 2 * options["power_iter"] + options["n_iter"] * n_solves

    def _solver(
        self, ctx: dict[str, Any], options: dict[str, Any], bar: Ticks
    ) -> tuple[Callable[[Tensor, Tensor], tuple[Tensor, Tensor]], dict[str, Any]]:
        raw, auto_info = _operator(ctx, options)
        g, unit = normalise_gradient(raw.gradient())
        ctx["g"], ctx["unit"] = g, unit
        op = _Normalised(raw, unit)
        n = g.shape[0]
        top, n_hvp, indefinite = _top_eigenvalue(
            op, g, ctx["generator"], options["power_iter"], bar
        )
        lam2, raised = _lambda2(top, options["lambda2"], float(options["c1"]))
        step = options["step"]
        info: dict[str, Any] = {
            "lambda2": lam2.double().cpu(),
            "top_eigenvalue": top.double().cpu(),
            "lambda2_raised": raised,
            "n_hvp": n_hvp,
            "indefinite": indefinite,
        }
        if isinstance(raw, ClosedFormHessian):
            info["hessian_rank"] = raw.rank
        info.update(auto_info)
        subsets: dict[tuple[int, ...], Any] = {}

        def solve(lam: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
            key = tuple(idx.tolist())
            sel: slice | Tensor
            if len(key) == n:
                sub_op, sel = op, slice(None)
            else:
                sel_idx = idx.to(g.device)
                if key not in subsets:
                    subsets[key] = op.subset(sel_idx)
                sub_op, sel = subsets[key], sel_idx
            gi, lam2_i = g[sel][:, None], lam2[sel][:, None]
            res = fista(
                sub_op, gi, lam.to(device=g.device, dtype=g.dtype), lam2_i,
                n_iter=options["n_iter"], lr=float(options["lr"]),
                backtrack=float(options["backtrack"]), step=step, monotone=options["monotone"],
                on_iteration=bar.update,
            )  # fmt: skip
            info["n_hvp"] += res.n_hvp
            q = (gi * res.b).sum(-1) + 0.5 * (res.b * res.hb).sum(-1)
            return res.b, q

        return solve, info


def _operator(ctx: dict[str, Any], options: dict[str, Any]) -> tuple[Operator, dict[str, Any]]:
    """The Hessian operator ``options["hessian"]`` names, and what ``"auto"`` chose."""
    args = (ctx["row_logits"], ctx["loss_fn"], ctx["xs"], ctx["target"])
    rows, weights, tol = options["internal_batch_size"], ctx["weights"], options["hessian_tol"]
    if options["hessian"] == "closed_form":
        return ClosedFormHessian(*args, rows, weights, tol=tol), {}
    if options["hessian"] == "hvp":
        return AutogradHessian(*args, rows, weights), {}
    choice = choose_hessian(*args, rows, weights, tol)
    info: dict[str, Any] = {"closed_form": choice.closed_form, "hessian_check": choice.check_error}
    if bool(choice.closed_form.any()):
        info["hessian_rank"] = choice.rank
    return choice.operator, info


def _top_eigenvalue(
    op: Callable[[Tensor], Tensor], g: Tensor, gen: torch.Generator, n_iter: int, bar: Ticks
) -> tuple[Tensor, int, bool]:
    """Power iteration on ``op`` (one bar tick per product): ``(top, n_hvp, indefinite)``."""
    n, d = g.shape
    # one start vector shared by every example: a result never depends on batch position
    v0 = torch.rand((1, 1, d), generator=gen, device=gen.device, dtype=g.dtype) - 0.5
    v0 = v0.to(g.device).expand(n, 1, d)

    def power_hvp(v: Tensor) -> Tensor:
        out = op(v)
        bar.update()
        return out

    return power_iteration(power_hvp, v0, n_iter)


def _lambda2(top: Tensor, lambda2: float | None, c1: float) -> tuple[Tensor, Tensor]:
    """``(lambda2, raised)`` per example: ``L/2 + c1``, or the user's value where it is > L/2.

    A user ``lambda2 <= L/2`` makes the objective non-concave: it is replaced by ``L/2 + c1``
    there, with a warning, and ``raised`` (on the CPU) flags those examples.
    """
    if lambda2 is None:
        return top / 2 + c1, torch.zeros(top.shape[0], dtype=torch.bool)
    lam2 = torch.full_like(top, float(lambda2))
    raised = lam2 <= top / 2
    if bool(raised.any()):
        warnings.warn(
            f"CASO: lambda2={lambda2} <= L/2 (top Hessian eigenvalue / 2) "
            f"for {int(raised.sum())} example(s), which makes the objective "
            "non-concave; using L/2 + c1 there instead (see last_info['lambda2_raised'])",
            stacklevel=5,
        )
    return torch.where(raised, top / 2 + c1, lam2), raised.cpu()


class _Normalised:
    """A Hessian operator divided by the per-example gradient unit ``u = max |g|``."""

    def __init__(self, op: Any, unit: Tensor) -> None:
        self.op, self.unit = op, unit

    def __call__(self, v: Tensor) -> Tensor:
        return self.op(v) / self.unit[:, None, None].to(v.dtype)

    def subset(self, idx: Tensor) -> _Normalised:
        return _Normalised(self.op.subset(idx), self.unit[idx])
