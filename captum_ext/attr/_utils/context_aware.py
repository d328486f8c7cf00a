"""Shared machinery of CAFO and CASO: inputs, targets, Smooth copies, the lambda1 rule, output.

Private; the public classes live in :mod:`captum_ext.attr._core.caso`.
"""

from __future__ import annotations

import numbers
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass, fields
from typing import Any, Callable, ClassVar, Sequence, Union

import torch
import torch.nn.functional as F
from captum._utils.typing import TargetType, TensorOrTupleOfTensorsGeneric
from captum.attr import GradientAttribution
from torch import Tensor

from captum_ext._compat import (
    NullProgress,
    _format_additional_forward_args,
    _format_output,
    _is_tuple,
    _run_forward,
    progress,
)
from captum_ext._model_state import eval_mode
from captum_ext._targets import class_index_targets
from captum_ext.attr._utils.contract import (
    NoAttributeFuture,
    check_batch_size,
    check_inputs,
    check_logits,
    default_generator,
    format_inputs,
    select_args,
)
from captum_ext.attr._utils.map_checks import DegenerateAttributionWarning, warn_if_degenerate
from captum_ext.attr._utils.sparsity import (
    quantile_lambda1,
    refine_lambda1,
    refine_lambda1_max_solves,
    select_lambda1,
    select_lambda1_max_solves,
    sparsity_ratio,
)

#: Table 2-3 grid of the paper (ImageNet, ResNet-50, [0, 1] pixels), here in units of
#: ``max |g|`` (see :class:`ContextAware`); the start of ``lambda1_rule="paper"``.
DEFAULT_LAMBDA1_GRID = (0.0, 1e-5, 1e-4, 1e-3, 6.25e-3, 1.25e-2, 2.5e-2, 5e-2)

#: Names accepted by ``lambda1_rule=``.
LAMBDA1_RULES = ("refine", "paper")

#: Width of the target band above the window's lower edge, as a fraction of the window.
_BAND = 0.2


def normalise_gradient(g: Tensor) -> tuple[Tensor, Tensor]:
    """``(g / u, u)`` with ``u = max |g|`` per example (1 where ``g`` vanishes)."""
    unit = g.abs().amax(-1)
    unit = torch.where(unit > 0, unit, torch.ones_like(unit))
    return g / unit[:, None], unit


#: Names accepted by ``loss=`` (see :class:`ContextAware`).
LOSSES = ("cross_entropy", "logit", "log_prob")

#: Loss ``(logits, target) -> (R,)``.
LossCallable = Callable[[Tensor, Tensor], Tensor]


def _log_odds_against(logits: Tensor, target: Tensor) -> Tensor:
    """``m = log sum_{j != y} exp(z_j - z_y)`` per row, without cancellation.

    Cross-entropy is ``softplus(m)`` and ``1 - p_y = sigmoid(m)``; ``dm/dz = q - e_y`` with
    ``q`` the softmax of the non-target logits, so neither ``m`` nor its derivatives vanish when
    the softmax saturates (``p_y == 1`` in floating point).
    """
    if logits.shape[1] < 2:
        raise ValueError(
            f"loss='cross_entropy'/'log_prob' needs at least 2 classes, got {logits.shape[1]}"
        )
    zy = logits.gather(1, target[:, None])
    rest = (logits - zy).masked_fill(F.one_hot(target, logits.shape[1]).bool(), float("-inf"))
    return torch.logsumexp(rest, 1)


def _scaled_cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    """Cross-entropy divided by its (detached) scale ``s = 1 - p_y``, to second order.

    With ``m`` from :func:`_log_odds_against` and ``m0, s0 = sigmoid(m0)`` its detached value,
    returns ``m + (1 - s0) (m - m0)^2 / 2``. Its first and second derivatives at the current
    point are those of the cross-entropy ``softplus(m)`` divided by ``s0`` (``s0 dm`` and
    ``s0 ((1 - s0) dm dm^T + d^2 m)``), but computed from ``m``'s derivatives, which never
    underflow: this is the closed form ``sum_{j != y} p_j (grad z_j - grad z_y)`` of the gradient
    without the cancellation of ``p - e_y`` in floating point.
    """
    m = _log_odds_against(logits, target)
    m0 = m.detach()
    return m + 0.5 * (1 - torch.sigmoid(m0)) * (m - m0) ** 2


def _log_loss_scale(logits: Tensor, target: Tensor, loss: Any) -> Tensor:
    """``log s`` per row: the factor the loss was divided by (0 for unscaled losses)."""
    if loss in ("cross_entropy", "log_prob"):
        return F.logsigmoid(_log_odds_against(logits, target)).double()
    return torch.zeros(logits.shape[0], dtype=torch.float64, device=logits.device)


def _loss_function(loss: Any) -> LossCallable:
    """The (rescaled) per-row loss whose derivatives CAFO/CASO use."""
    if loss == "cross_entropy":
        return _scaled_cross_entropy
    if loss == "log_prob":
        return lambda z, t: -_scaled_cross_entropy(z, t)
    if loss == "logit":
        return lambda z, t: z.gather(1, t[:, None])[:, 0]
    return loss


@dataclass(frozen=True)
class ContextAwareSettings:
    """The ``lambda1`` search, Smooth-copy and output (``abs``) knobs of one CAFO / CASO call.

    The ``attribute`` arguments of that name, shared by both methods, with the same defaults
    (``lambda1`` is a list for ``lambda1_path``); built by :meth:`ContextAware._configure` and
    passed down whole to :meth:`ContextAware._attribute`. The method-specific knobs travel in the
    ``options`` dict.
    """

    lambda1: Union[str, float, list[float]]
    sparsity_range: tuple[float, float] = (0.75, 1.0)
    lambda1_grid: Sequence[float] = DEFAULT_LAMBDA1_GRID
    max_halvings: int = 20
    n_samples: int = 0
    stdevs: float = 0.15
    generator: torch.Generator | None = None
    show_progress: bool = False
    abs: bool = True


#: The fields of :class:`ContextAwareSettings` (the other knobs are the method's options).
SETTINGS = frozenset(f.name for f in fields(ContextAwareSettings))


class ContextAware(NoAttributeFuture, GradientAttribution, ABC):
    """Shared machinery of CAFO and CASO (inputs, targets, copies, lambda1 rule, output)."""

    _name = ""

    #: The first value ``lambda1_rule="refine"`` tries, as a multiple of the CAFO quantile
    #: (the ``lambda1`` at which CAFO's sparsity ratio reaches the window's lower edge).
    _seed_factor: ClassVar[float] = 1.0

    #: The method-specific keyword knobs of ``attribute`` (those not in
    #: :class:`ContextAwareSettings`) with their defaults, for ``lambda1_path``; ``attribute``'s
    #: signature repeats them (``tests/attr/test_caso.py`` checks that both agree).
    _option_defaults: ClassVar[dict[str, Any]] = {}

    def __init__(
        self,
        forward_func: Callable[..., Tensor],
        loss: Union[str, LossCallable] = "cross_entropy",
        loss_fn: LossCallable | None = None,
    ) -> None:
        GradientAttribution.__init__(self, forward_func)
        if loss_fn is not None:  # the earlier name of a callable ``loss``
            if not callable(loss_fn):
                raise TypeError(f"loss_fn must be callable or None, got {type(loss_fn).__name__}")
            loss = loss_fn
        # one documented error for every bad loss, as for the other knobs (issue 13)
        if not (callable(loss) or (isinstance(loss, str) and loss in LOSSES)):
            raise ValueError(
                f"loss must be one of {', '.join(repr(k) for k in LOSSES)} or a callable "
                f"(logits, target) -> per-example losses, got {loss!r}"
            )
        self.loss = loss
        self.loss_fn = loss if callable(loss) else None
        #: Per-example details of the last call (see the class docstring).
        self.last_info: dict[str, Any] = {}

    @classmethod
    def get_name(cls) -> str:
        """The method's display name."""
        return cls._name

    def _configure(
        self, lambda1: Union[str, float, list[float]], knobs: dict[str, Any]
    ) -> tuple[ContextAwareSettings, dict[str, Any]]:
        """``(settings, options)`` of one call from ``attribute``'s keyword knobs (not ``lambda1``).

        The knobs not given take their defaults (:class:`ContextAwareSettings`' and
        :attr:`_option_defaults`).
        """
        shared = {k: v for k, v in knobs.items() if k in SETTINGS}
        own = {k: v for k, v in knobs.items() if k not in SETTINGS}
        if not isinstance(shared.get("abs", True), bool):
            raise TypeError(f"abs must be a bool, got {type(shared['abs']).__name__}")
        return ContextAwareSettings(lambda1=lambda1, **shared), {**self._option_defaults, **own}

    # ----------------------------------------------------------------------------- set-up
    def _setup(
        self,
        inputs: Any,
        target: TargetType,
        additional_forward_args: Any,
        n_samples: int,
        stdevs: float,
        generator: torch.Generator | None,
    ) -> dict[str, Any]:
        """Check the inputs, resolve the target and draw the Smooth copies: the call's context."""
        is_tuple = _is_tuple(inputs)
        tensors = format_inputs(inputs)
        n = check_inputs(tensors)
        _check_smooth(n_samples, stdevs, generator)
        args = _format_additional_forward_args(additional_forward_args)
        shapes = [t.shape[1:] for t in tensors]
        sizes = [int(t[0].numel()) for t in tensors]
        x = torch.cat([t.detach().reshape(n, -1) for t in tensors], 1)

        def unflatten(rows: Tensor) -> tuple[Tensor, ...]:
            parts = torch.split(rows, sizes, dim=1)
            return tuple(p.reshape(rows.shape[0], *s) for p, s in zip(parts, shapes))

        def row_logits(rows: Tensor, ex: Tensor) -> Tensor:
            row_args = select_args(args, ex, n)
            return _run_forward(self.forward_func, unflatten(rows), None, row_args)

        loss = _loss_function(self.loss)

        def loss_fn(logits: Tensor, tgt: Tensor) -> Tensor:
            _check_target(logits, tgt)
            return loss(logits, tgt)

        tgt = self._format_target(target, n, x, row_logits)
        generator = default_generator(generator)
        xs = _smooth_copies(x, sizes, n_samples, stdevs, generator)
        log_scale, weights = self._loss_scales(xs, tgt, row_logits, _check_target)
        return {
            "is_tuple": is_tuple,
            "x": x,
            "xs": xs,
            "target": tgt,
            "row_logits": row_logits,
            "loss_fn": loss_fn,
            "unflatten": unflatten,
            "generator": generator,
            "dtypes": [t.dtype for t in tensors],
            "log_loss_scale": log_scale,
            "weights": weights,
        }

    def _loss_scales(
        self,
        xs: Tensor,
        tgt: Tensor,
        row_logits: Callable[[Tensor, Tensor], Tensor],
        check_target: Callable[[Tensor, Tensor], None],
    ) -> tuple[Tensor, Tensor | None]:
        """Per-example ``log s`` (mean over the copies) and the copies' relative weights.

        For cross-entropy the loss is divided by ``s = 1 - p_y`` (see
        :func:`_scaled_cross_entropy`). A Smooth copy ``j`` of an example then enters with the
        weight ``s_j / max_j s_j`` (computed in the log domain), so the averaged gradient and
        Hessian keep Def. 4's weighting up to one positive factor per example.
        """
        n, c, d = xs.shape
        if callable(self.loss) or self.loss == "logit":
            return torch.zeros(n, dtype=torch.float64), None
        with torch.no_grad():
            rows = xs.reshape(-1, d)
            ex = torch.arange(n, device=xs.device).repeat_interleave(c)
            logits = row_logits(rows, ex)
            check_logits(logits, rows.shape[0])
            check_target(logits, tgt[ex])
            log_s = _log_loss_scale(logits, tgt[ex], self.loss).reshape(n, c)
        top = log_s.amax(1, keepdim=True)
        weights = None if c == 1 else torch.exp(log_s - top).to(xs.dtype)
        log_mean = top[:, 0] + torch.log(torch.exp(log_s - top).mean(1))
        return log_mean.cpu(), weights

    @staticmethod
    def _format_target(
        target: TargetType, n: int, x: Tensor, row_logits: Callable[[Tensor, Tensor], Tensor]
    ) -> Tensor:
        if target is None:
            with torch.no_grad():
                logits = row_logits(x, torch.arange(n, device=x.device))
            check_logits(logits, n)
            return logits.argmax(1)
        return class_index_targets(target, n, x.device)

    @staticmethod
    def _check_common(
        lambda1: Union[str, float],
        lambda2: float | None,
        c1: float,
        sparsity_range: tuple[float, float],
        lambda1_grid: Sequence[float],
        max_halvings: int,
        internal_batch_size: int | None,
    ) -> None:
        if isinstance(lambda1, str):
            if lambda1 != "auto":
                raise ValueError(f"lambda1 must be 'auto' or a float >= 0, got {lambda1!r}")
        elif not (isinstance(lambda1, (int, float)) and 0 <= lambda1 < float("inf")):
            raise ValueError(f"lambda1 must be 'auto' or a finite float >= 0, got {lambda1!r}")
        if lambda2 is not None and not (_is_number(lambda2) and 0 < lambda2 < float("inf")):
            raise ValueError(
                f"lambda2 must be None or a finite float > 0 (the objective is not concave "
                f"otherwise), got {lambda2!r}"
            )
        if not (_is_number(c1) and 0 < c1 < float("inf")):
            raise ValueError(f"c1 must be a finite float > 0, got {c1!r}")
        if (
            isinstance(sparsity_range, str)
            or not isinstance(sparsity_range, Sequence)
            or len(sparsity_range) != 2
            or not all(_is_number(v) for v in sparsity_range)
        ):
            raise ValueError(
                f"sparsity_range must be a pair (lo, hi) of numbers, got {sparsity_range!r}"
            )
        lo, hi = sparsity_range
        if not 0 <= lo < hi <= 1:
            raise ValueError(
                f"sparsity_range must be (lo, hi) with 0 <= lo < hi <= 1, got {sparsity_range!r}"
            )
        grid = list(lambda1_grid)
        if not grid or any(not (0 <= float(v) < float("inf")) for v in grid):
            raise ValueError(
                f"lambda1_grid must be a non-empty sequence of finite floats >= 0, got {grid!r}"
            )
        if not isinstance(max_halvings, int) or max_halvings < 0:
            raise ValueError(f"max_halvings must be an int >= 0, got {max_halvings!r}")
        check_batch_size(internal_batch_size)

    def _attribute(
        self,
        inputs: Any,
        target: TargetType,
        additional_forward_args: Any,
        cfg: ContextAwareSettings,
        options: dict[str, Any],
    ) -> tuple[dict[str, Any], dict[str, Tensor]]:
        """Check, set up, solve and choose ``lambda1``: the body of every public method.

        Returns:
            ``(ctx, out)``: the context of :meth:`_setup` and the output of :meth:`_choose`;
            sets :attr:`last_info`.
        """
        self._check_common(
            cfg.lambda1 if not isinstance(cfg.lambda1, list) else 0.0,
            options["lambda2"],
            options["c1"],
            cfg.sparsity_range,
            cfg.lambda1_grid,
            cfg.max_halvings,
            options["internal_batch_size"],
        )
        self._check_options(options)
        rule = options.get("lambda1_rule", "refine")
        if rule not in LAMBDA1_RULES:
            raise ValueError(
                f"lambda1_rule must be one of {', '.join(repr(r) for r in LAMBDA1_RULES)}, "
                f"got {rule!r}"
            )
        with torch.enable_grad(), eval_mode(self.forward_func):
            ctx = self._setup(
                inputs, target, additional_forward_args, cfg.n_samples, cfg.stdevs, cfg.generator
            )
            total = self._n_steps(options, _max_solves(cfg, rule))
            bar = Ticks(f"{self.get_name()} attribution", total, cfg.show_progress)
            try:
                solve, info = self._solver(ctx, options, bar)
                out = self._choose(solve, cfg, ctx, rule)
                bar.finish()
            finally:
                bar.close()
        info.update({k: v for k, v in out.items() if k != "delta"})
        info["gradient_unit"] = ctx["unit"].double().cpu()
        info["log_loss_scale"] = ctx["log_loss_scale"]
        self.last_info = info
        return ctx, out

    def _check_options(self, options: dict[str, Any]) -> None:
        """Validate the method-specific options (overridden)."""

    def _n_steps(self, options: dict[str, Any], n_solves: int) -> int:
        """The most progress ticks of one call that makes at most ``n_solves`` solves."""
        return 1

    @abstractmethod
    def _solver(
        self, ctx: dict[str, Any], options: dict[str, Any], bar: Ticks
    ) -> tuple[Callable[[Tensor, Tensor], tuple[Tensor, Tensor]], dict[str, Any]]:
        """The per-method solve function (``solve(l1, l2) -> (delta, loss)``) and its info.

        ``bar`` is ticked at most :meth:`_n_steps` times.
        """

    def _choose(
        self,
        solve: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]],
        cfg: ContextAwareSettings,
        ctx: dict[str, Any],
        rule: str,
    ) -> dict[str, Tensor]:
        """The solution(s) for ``cfg.lambda1``: the automatic rule's choice, or the values given."""
        n = ctx["x"].shape[0]
        lambda1, max_halvings = cfg.lambda1, cfg.max_halvings
        lo, hi = float(cfg.sparsity_range[0]), float(cfg.sparsity_range[1])
        if isinstance(lambda1, str):
            if rule == "paper":
                grid = [float(v) for v in cfg.lambda1_grid]
                choice = select_lambda1(solve, grid, n, (lo, hi), max_halvings=max_halvings)
            else:
                base = quantile_lambda1(ctx["g"], lo)
                seeds = base[:, None] * self._seed_factor
                choice = refine_lambda1(
                    solve, seeds, (lo, hi), _BAND * (hi - lo), max_rounds=max_halvings
                )
            return {
                "delta": choice.delta[:, None],
                "lambda1": choice.lambda1[:, None],
                "eta": choice.eta[:, None],
                "in_window": choice.in_window[:, None],
                "loss": choice.q[:, None],
            }
        values = lambda1 if isinstance(lambda1, list) else [float(lambda1)]
        lam = torch.tensor(values, dtype=torch.float64).expand(n, len(values))
        delta, q = solve(lam, torch.arange(n))
        eta = sparsity_ratio(delta).cpu()
        return {
            "delta": delta,
            "lambda1": lam.clone(),
            "eta": eta,
            "in_window": (eta >= lo) & (eta < hi),
            "loss": q.double().cpu(),
        }

    def _checked_output(
        self, ctx: dict[str, Any], delta: Tensor, auto: bool, rule: str, absolute: bool
    ) -> TensorOrTupleOfTensorsGeneric:
        """The output of ``attribute``, after the warnings of :mod:`.map_checks`."""
        name = self.get_name()
        out = self._finish(ctx, delta, absolute)
        warn_if_degenerate(
            name,
            out,
            "the loss gradient vanishes there (try loss='logit', check the target, or a "
            "smaller lambda1)",
            stacklevel=5,
        )
        missed = ~self.last_info["in_window"]
        if auto and bool(missed.any()):
            knobs = "sparsity_range or max_halvings" + (
                ", lambda1_grid" if rule == "paper" else ", or lambda1_rule='paper'"
            )
            idx = missed.nonzero().flatten().tolist()
            warnings.warn(
                f"{name}: the automatic lambda1 found no solution with sparsity in "
                f"sparsity_range for example(s) {idx[:8]} (eta "
                f"{[round(float(e), 3) for e in self.last_info['eta'][missed][:8]]}); the "
                f"closest one is returned. Change {knobs}, or pass lambda1 explicitly",
                DegenerateAttributionWarning,
                stacklevel=4,
            )
        return out

    def _finish(
        self, ctx: dict[str, Any], delta: Tensor, absolute: bool
    ) -> TensorOrTupleOfTensorsGeneric:
        """``Delta`` (``|Delta|`` when ``absolute``) shaped and typed like the inputs."""
        parts = ctx["unflatten"](delta.detach().abs() if absolute else delta.detach())
        parts = tuple(p.to(dt) for p, dt in zip(parts, ctx["dtypes"]))
        return _format_output(ctx["is_tuple"], parts)

    def _squeeze_info(self) -> None:
        for key in ("lambda1", "eta", "in_window", "loss"):
            self.last_info[key] = self.last_info[key][:, 0]


def _max_solves(cfg: ContextAwareSettings, rule: str) -> int:
    """The most calls of the solve function :meth:`ContextAware._choose` makes for ``cfg``."""
    if not isinstance(cfg.lambda1, str):
        return 1  # the values given, as one batch
    if rule == "paper":
        return select_lambda1_max_solves(cfg.max_halvings)
    return refine_lambda1_max_solves(cfg.max_halvings)


class Ticks:
    """The progress bar of one call: its total, fixed at creation, bounds the ticks.

    The total is the most work the call can do (the lambda1 rule stops as soon as every example
    is resolved, and power iteration runs twice only for an indefinite Hessian);
    :meth:`finish` fills the bar when the call ends early, so it never runs past its total and
    always ends at 100%. ``show=False`` ticks Captum's ``NullProgress``.
    """

    def __init__(self, desc: str, total: int, show: bool) -> None:
        self.total, self.done = total, 0
        self.bar = progress(desc=desc, total=total) if show else NullProgress()

    def update(self) -> None:
        """One step of work; a step past the total leaves the bar full.

        A display must never stop the user's call; the bounds themselves are checked by
        ``test_rules_never_solve_more_than_their_stated_bound``.
        """
        if self.done < self.total:
            self.done += 1
            self.bar.update()

    def finish(self) -> None:
        """Fill the bar: the call is done."""
        self.bar.update(self.total - self.done)
        self.done = self.total

    def close(self) -> None:
        """Close the bar."""
        self.bar.close()


def lambda1_path(
    method: ContextAware,
    inputs: Any,
    lambda1: Sequence[float],
    target: TargetType,
    additional_forward_args: Any,
    kwargs: dict[str, Any],
) -> list[Any]:
    """Shared body of ``CAFO.lambda1_path`` and ``CASO.lambda1_path`` (see there)."""
    if "lambda1" in kwargs:
        raise TypeError("lambda1_path takes the lambda1 values as its second argument")
    values = [float(v) for v in lambda1]
    if not values or any(not (0 <= v < float("inf")) for v in values):
        raise ValueError(
            f"lambda1 must be a non-empty sequence of finite floats >= 0, got {values}"
        )
    unknown = set(kwargs) - SETTINGS - set(method._option_defaults)
    if unknown:
        raise TypeError(f"unexpected keyword arguments for lambda1_path: {sorted(unknown)}")
    cfg, options = method._configure(values, kwargs)
    ctx, out = method._attribute(inputs, target, additional_forward_args, cfg, options)
    return [method._finish(ctx, out["delta"][:, k], cfg.abs) for k in range(len(values))]


def _is_number(value: Any) -> bool:
    """A real number (Python or NumPy) that is not a bool; NaN passes, range checks reject it."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_smooth(n_samples: Any, stdevs: Any, generator: Any) -> None:
    """Validate the Smooth-copy knobs ``n_samples``, ``stdevs`` and ``generator``."""
    if not isinstance(n_samples, int) or isinstance(n_samples, bool) or n_samples < 0:
        raise ValueError(f"n_samples must be an int >= 0, got {n_samples!r}")
    if n_samples > 0 and not (isinstance(stdevs, (int, float)) and stdevs > 0):
        raise ValueError(f"stdevs must be a float > 0 when n_samples > 0, got {stdevs!r}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")


def _check_target(logits: Tensor, tgt: Tensor) -> None:
    """Reject targets outside ``[0, n_classes)`` of these logits."""
    k = logits.shape[1]
    if bool((tgt < 0).any()) or bool((tgt >= k).any()):
        raise ValueError(
            f"target must be class indices in [0, {k}), got values {sorted(set(tgt.tolist()))}"
        )


def _smooth_copies(
    x: Tensor, sizes: list[int], n_samples: int, stdevs: float, generator: torch.Generator
) -> Tensor:
    """The copies ``(N, max(n_samples, 1), d)``: ``x`` itself, or Def. 4's Gaussian copies.

    One draw shared by every example: an example's copies do not depend on its position in the
    batch or on the other examples. The noise std is ``stdevs`` times each example's value range
    per input tensor (``sizes`` are the flattened sizes of the input tensors).
    """
    if n_samples == 0:
        return x[:, None]
    n = x.shape[0]
    noise = torch.randn(
        (1, n_samples, x.shape[1]),
        generator=generator,
        device=generator.device,
        dtype=x.dtype,
    ).to(x.device)
    scale = torch.cat(
        [
            (stdevs * (p.amax(1) - p.amin(1)))[:, None].expand(n, s)
            for p, s in zip(torch.split(x, sizes, dim=1), sizes)
        ],
        1,
    )
    return x[:, None] + noise * scale[:, None]
