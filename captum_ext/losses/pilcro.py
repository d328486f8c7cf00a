"""PILCRO: importance-landscape regularisation as a loss module (Moens, Yu, Salimi-Khorshidi).

This file holds the math shared by the loss and the analysis functions of
:mod:`captum_ext.metrics.landscape`:

- the squared input gradients of a logit whose class is sampled from the model's softmax
  (paper Section 3.3.3), one backward pass for the whole batch;
- the normalised 2-D landscape of Eq. 6, ``I'_{h,w} = sqrt(H W) ||I^2[:, h, w]||_2 / ||I^2||_F``
  (norm over channels, Frobenius norm over ``C x H x W``), so that ``mean(I'^2) = 1``;
- the discrete Laplacians: ``valid`` (no padding) for the curvature penalty and depthwise,
  ``same``-size with reflect padding for the data's smoothness map;
- the two penalties: curvature ``var(Laplacian(I'))`` (Eq. 8) and target casting
  ``||I' - S||_2^2`` (Eq. 9).

Reference: V. Moens, S. Yu, G. Salimi-Khorshidi, "PILCRO: Making Importance Landscapes Flat
Again", arXiv:2001.09696, 2020.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from captum_ext._compat import _select_targets
from captum_ext._model_state import eval_mode

__all__ = ["KERNELS", "PILCRO"]

#: Named Laplacian kernels (k = 3, the paper's setting). The paper cites the "variance of
#: Laplacian" focus measure (Pertuz et al. 2013) but names neither kernel nor padding.
KERNELS: dict[str, tuple[tuple[float, ...], ...]] = {
    "laplace": ((0.0, 1.0, 0.0), (1.0, -4.0, 1.0), (0.0, 1.0, 0.0)),
    "laplace8": ((1.0, 1.0, 1.0), (1.0, -8.0, 1.0), (1.0, 1.0, 1.0)),
}
KINDS = ("target", "curvature")
REDUCTIONS = ("sum", "mean")


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def _resolve_kernel(kernel: str | Tensor, device: torch.device, dtype: torch.dtype) -> Tensor:
    """The Laplacian kernel as a ``(kh, kw)`` tensor on ``device``."""
    if isinstance(kernel, str):
        if kernel not in KERNELS:
            raise ValueError(
                f"kernel must be one of {sorted(KERNELS)} or a 2-D tensor, got {kernel!r}"
            )
        return torch.tensor(KERNELS[kernel], device=device, dtype=dtype)
    if not isinstance(kernel, Tensor):
        raise TypeError(f"kernel must be a str or a 2-D tensor, got {type(kernel).__name__}")
    if kernel.dim() != 2 or kernel.numel() == 0:
        raise ValueError(f"kernel must be a non-empty 2-D tensor, got shape {tuple(kernel.shape)}")
    if not torch.isfinite(kernel).all():
        raise ValueError("kernel must contain only finite values")
    return kernel.detach().to(device=device, dtype=dtype)


def _kernel_shape(kernel: str | Tensor) -> tuple[int, int]:
    """``(kh, kw)`` of a valid kernel specification."""
    shape = _resolve_kernel(kernel, torch.device("cpu"), torch.float64).shape
    return int(shape[0]), int(shape[1])


def _check_images(inputs: object, name: str = "inputs", finite: bool = True) -> Tensor:
    """Check that ``inputs`` is a floating ``(N, C, H, W)`` tensor with N >= 1 (and finite)."""
    if not isinstance(inputs, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(inputs).__name__}")
    if inputs.dim() != 4:
        raise ValueError(
            f"{name} must be 4-D (N, C, H, W), channels first; got shape {tuple(inputs.shape)}"
        )
    if inputs.shape[0] < 1 or inputs.shape[1] < 1:
        raise ValueError(f"{name} must have N >= 1 and C >= 1, got shape {tuple(inputs.shape)}")
    if not inputs.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {inputs.dtype}")
    if finite and not torch.isfinite(inputs).all():
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")
    return inputs


def _check_spatial(height: int, width: int, kernel: str | Tensor, name: str = "inputs") -> None:
    """H and W must be at least the kernel's size."""
    kh, kw = _kernel_shape(kernel)
    if height < kh or width < kw:
        raise ValueError(
            f"{name} must be at least as large as the {kh}x{kw} Laplacian kernel in H and W, "
            f"got H={height}, W={width}"
        )


def _check_logits(logits: object, batch: int) -> Tensor:
    if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[0] != batch:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f"model must return logits of shape (N={batch}, classes), got {shape}")
    if not torch.isfinite(logits).all():
        raise ValueError("model returned non-finite logits (NaN or inf)")
    return logits


# --------------------------------------------------------------------------------------------
# Shared math
# --------------------------------------------------------------------------------------------


def _normalise_landscape(maps: Tensor) -> Tensor:
    """Paper Eq. 6 on ``(..., C, H, W)``: ``sqrt(H W) ||m[..., :, h, w]|| / ||m[...]||_F``.

    Returns ``(..., H, W)``. A map whose Frobenius norm is 0 gives NaN; callers check for it.
    """
    h, w = maps.shape[-2:]
    per_location = torch.linalg.vector_norm(maps, dim=-3)
    total = torch.linalg.vector_norm(per_location, dim=(-2, -1), keepdim=True)
    return math.sqrt(h * w) * per_location / total


def _laplacian_valid(maps: Tensor, kernel: Tensor) -> Tensor:
    """Cross-correlate ``(..., H, W)`` maps with ``kernel`` without padding (``valid``)."""
    lead = maps.shape[:-2]
    flat = maps.reshape(-1, 1, *maps.shape[-2:])
    out = F.conv2d(flat, kernel[None, None].to(flat.dtype))
    return out.reshape(*lead, *out.shape[-2:])


def _laplacian_same_reflect(images: Tensor, kernel: Tensor) -> Tensor:
    """Depthwise Laplacian of ``(N, C, H, W)`` images, ``same`` size with reflect padding."""
    kh, kw = kernel.shape
    top, left = (kh - 1) // 2, (kw - 1) // 2
    padded = F.pad(images, (left, kw - 1 - left, top, kh - 1 - top), mode="reflect")
    c = images.shape[1]
    weight = kernel.to(images.dtype)[None, None].expand(c, 1, kh, kw)
    return F.conv2d(padded, weight, groups=c)


def _curvature_penalty(landscape: Tensor, kernel: Tensor) -> Tensor:
    """Paper Eq. 8: population variance (energy) of the ``valid`` Laplacian of ``landscape``."""
    return torch.var(_laplacian_valid(landscape, kernel), unbiased=False)


def _target_penalty(landscape: Tensor, target: Tensor, reduction: str = "sum") -> Tensor:
    """Paper Eq. 9: squared distance to the target map, summed (paper) or averaged."""
    sq = (landscape - target.to(device=landscape.device, dtype=landscape.dtype)) ** 2
    return sq.sum() if reduction == "sum" else sq.mean()


def _default_generator(device: torch.device) -> torch.Generator:
    """A generator on ``device`` seeded from ``torch.initial_seed()`` (global RNG untouched)."""
    return torch.Generator(device=device).manual_seed(torch.initial_seed())


def _choose_classes(
    logits: Tensor, label: str, generator: torch.Generator | None, given: Tensor | None
) -> Tensor:
    """The class per example: sampled from softmax(logits), the argmax, or the given labels."""
    if label == "sampled":
        probs = torch.softmax(logits.detach().to(torch.float64), dim=1)
        if generator is None:
            generator = _default_generator(probs.device)
        drawn = torch.multinomial(probs.to(generator.device), 1, generator=generator)
        return drawn[:, 0].to(logits.device)
    if label == "predicted":
        return logits.detach().argmax(dim=1)
    assert given is not None
    n_classes = logits.shape[1]
    if given.numel() and (int(given.min()) < 0 or int(given.max()) >= n_classes):
        raise ValueError(
            f"target labels must lie in [0, {n_classes - 1}], "
            f"got values in [{int(given.min())}, {int(given.max())}]"
        )
    return given.to(logits.device)


def _sq_input_gradients(
    model: nn.Module,
    inputs: Tensor,
    *,
    label: str = "sampled",
    generator: torch.Generator | None = None,
    given: Tensor | None = None,
    exact: bool = False,
    create_graph: bool = False,
) -> tuple[Tensor, Tensor]:
    """Squared input gradients of the chosen class logits, summed over the batch.

    One backward pass of ``sum_m h_{y_m}(x_m)`` gives every per-example gradient at once, as
    examples are independent when the model is in eval mode (callers switch it). With
    ``exact=True`` the squared gradients of every class are weighted by ``p(y | x)`` (one
    backward pass per class) and ``label`` is ignored.

    Returns:
        ``(sum over the batch of g^2 with shape (C, H, W), classes (N,))``; ``classes`` is
        empty with ``exact=True``.
    """
    x = inputs.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = _check_logits(model(x), x.shape[0])
        if exact:
            probs = torch.softmax(logits.detach(), dim=1)
            total = torch.zeros_like(x[0])
            k = logits.shape[1]
            for c in range(k):
                (g,) = torch.autograd.grad(
                    logits[:, c].sum(), x, retain_graph=c < k - 1, create_graph=create_graph
                )
                weight = probs[:, c].to(g.dtype).reshape(-1, 1, 1, 1)
                total = total + (weight * g * g).sum(0)
            return total, torch.empty(0, dtype=torch.long, device=x.device)
        classes = _choose_classes(logits, label, generator, given)
        selected = _select_targets(logits, classes)
        (g,) = torch.autograd.grad(selected.sum(), x, create_graph=create_graph)
    return (g * g).sum(0), classes


# --------------------------------------------------------------------------------------------
# The loss module
# --------------------------------------------------------------------------------------------


class PILCRO(nn.Module):
    r"""The PILCRO (paper: "¶") regulariser of a classifier's importance landscape.

    Every ``every``-th call (the first call included) computes, in eval mode, the normalised
    importance landscape ``I'`` of the batch (paper Eq. 6: squared input gradients of the
    logit of a class sampled from the softmax, one backward pass with ``create_graph=True``
    so the penalty trains the weights) and returns ``alpha0 * every**2 * penalty``:

    - ``kind="target"`` (paper ¶t, Eq. 9): ``sum_{h,w} (I' - S)^2`` with ``S`` the data's
      smoothness map from :func:`captum_ext.metrics.landscape.smoothness_map`;
    - ``kind="curvature"`` (paper ¶c, Eq. 8): the population variance of the discrete
      Laplacian of ``I'``, applied ``valid`` (no padding) so borders add no artefacts.

    All other calls return a zero scalar without touching the model (no forward, no backward).
    The paper leaves the Laplacian kernel and its padding open: ``kernel="laplace"`` (4-neighbour)
    and ``valid`` padding are our choices.

    Each submodule's train/eval flag is recorded and restored after the penalty (also when the
    forward raises), so the cross-entropy of the same step still runs in train mode; eval mode
    makes BatchNorm affine, so for ReLU nets the second derivative vanishes almost everywhere
    while the mixed derivatives keep the parameter gradients non-zero. Under ``torch.no_grad()``
    the penalty is still computed but carries no graph. Inputs are channels first,
    ``(N, C, H, W)``, and the model must return logits ``(N, classes)``.

    The α ambiguity: the paper tried α in {1, 10, 100} without saying whether that is α or α0.
    The default ``alpha0=0.1`` gives α = alpha0 * T² = 10 at T = 10 (the paper's best ¶t run if
    its tables report the effective α); the other reading is ``alpha0=10`` (α = 1000).
    Scale note: the paper's Eq. 9 sums over the H x W locations, so at α = 10 the penalty of a
    32 x 32 model is typically ~10^3 times its cross-entropy; in ``benchmarks/bench_pilcro.py``
    (small_cnn, AdamW) that stalled learning, while ``reduction="mean"`` (the same penalty
    divided by H W) trained normally and still lowered the landscape's TV.

    Args:
        kind: ``"target"`` (needs ``target_map``) or ``"curvature"``.
        alpha0: Base weight; the penalty is scaled by ``alpha0 * every**2`` on the steps it
            is computed. Default: 0.1.
        every: The interval T: the penalty is computed when ``step % every == 0``. Default: 10.
        kernel: ``"laplace"`` (``[[0,1,0],[1,-4,1],[0,1,0]]``), ``"laplace8"`` (all ones with
            -8 in the centre) or a 2-D tensor. Used by the curvature penalty; inputs smaller
            than the kernel are rejected for both kinds.
        target_map: The target ``S`` of shape ``(H, W)`` (kind ``"target"``), e.g.
            ``smoothness_map(train_images)``. Stored as a buffer, so ``.to(device)`` moves it.
        generator: ``torch.Generator`` for sampling the classes. Default: one seeded from
            ``torch.initial_seed()`` on the inputs' device at the first computed step.
        reduction: ``"sum"`` over H x W as in the paper, or ``"mean"`` (target penalty only).

    Examples:
        >>> from captum_ext.benchmark import SyntheticShapes, small_cnn
        >>> from captum_ext.losses import PILCRO
        >>> from captum_ext.metrics.landscape import smoothness_map
        >>> images, labels, _ = SyntheticShapes(n=64).tensors()
        >>> model = small_cnn(3, 6)
        >>> pilcro = PILCRO("target", target_map=smoothness_map(images))
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.01)
        >>> for i in range(0, 64, 16):
        ...     x, y = images[i : i + 16], labels[i : i + 16]
        ...     opt.zero_grad()
        ...     loss = F.cross_entropy(model(x), y) + pilcro(model, x)
        ...     loss.backward()
        ...     opt.step()
        >>> pilcro.step
        4

    Reference:
        V. Moens, S. Yu, G. Salimi-Khorshidi, "PILCRO: Making Importance Landscapes Flat
        Again", arXiv:2001.09696, 2020 (Sections 3.3-3.3.3).
    """

    target_map: Tensor | None

    def __init__(
        self,
        kind: str = "target",
        alpha0: float = 0.1,
        every: int = 10,
        kernel: str | Tensor = "laplace",
        target_map: Tensor | None = None,
        generator: torch.Generator | None = None,
        reduction: str = "sum",
    ) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be an int >= 1, got {every!r}")
        if not isinstance(alpha0, (int, float)) or not math.isfinite(alpha0) or alpha0 < 0:
            raise ValueError(f"alpha0 must be a finite number >= 0, got {alpha0!r}")
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        _resolve_kernel(kernel, torch.device("cpu"), torch.float32)  # validates
        if kind == "target":
            if target_map is None:
                raise ValueError(
                    "kind='target' needs target_map (an (H, W) tensor, e.g. from "
                    "captum_ext.metrics.landscape.smoothness_map(train_images))"
                )
            if not isinstance(target_map, Tensor) or target_map.dim() != 2:
                got = (
                    tuple(target_map.shape)
                    if isinstance(target_map, Tensor)
                    else type(target_map).__name__
                )
                raise ValueError(f"target_map must be a 2-D (H, W) tensor, got {got}")
            if not torch.isfinite(target_map).all():
                raise ValueError("target_map contains non-finite values (NaN or inf)")
            target_map = target_map.detach().clone()
        elif target_map is not None:
            raise ValueError("target_map is only used with kind='target'; got kind='curvature'")
        self.kind, self.alpha0, self.every, self.reduction = kind, float(alpha0), every, reduction
        self.kernel = kernel.detach().clone() if isinstance(kernel, Tensor) else kernel
        self.generator = generator
        self.register_buffer("target_map", target_map)
        self._step = 0

    @property
    def step(self) -> int:
        """How many calls have completed since construction or :meth:`reset`."""
        return self._step

    @property
    def alpha(self) -> float:
        """The weight on the steps the penalty is computed: ``alpha0 * every**2``."""
        return self.alpha0 * self.every**2

    def reset(self) -> None:
        """Set the step counter back to 0 (the next call computes the penalty)."""
        self._step = 0

    def extra_repr(self) -> str:
        """The settings shown by ``repr``."""
        kernel = self.kernel if isinstance(self.kernel, str) else "custom"
        return f"kind={self.kind!r}, alpha0={self.alpha0}, every={self.every}, kernel={kernel!r}"

    def forward(self, model: nn.Module, inputs: Tensor) -> Tensor:
        """The scaled penalty on every ``every``-th call, else a zero scalar.

        Args:
            model: The classifier being trained (an ``nn.Module`` returning logits).
            inputs: The training batch, ``(N, C, H, W)``.

        Returns:
            A scalar tensor on the inputs' device to add to the training loss.
        """
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        inputs = _check_images(inputs, finite=False)  # finiteness: on computed steps only
        h, w = inputs.shape[-2:]
        _check_spatial(h, w, self.kernel)
        if self.target_map is not None and tuple(self.target_map.shape) != (h, w):
            raise ValueError(
                f"target_map must have the inputs' spatial shape (H, W)={(h, w)}, "
                f"got {tuple(self.target_map.shape)}"
            )
        if self._step % self.every != 0:
            self._step += 1
            return inputs.new_zeros(())
        value = self.penalty(model, inputs)
        self._step += 1
        return self.alpha * value

    def penalty(self, model: nn.Module, inputs: Tensor) -> Tensor:
        """The unscaled penalty of this batch, ignoring the schedule (the counter is unchanged).

        Args:
            model: The classifier (an ``nn.Module`` returning logits).
            inputs: A batch ``(N, C, H, W)``.

        Returns:
            A scalar tensor; it carries a graph when grad mode is on.
        """
        inputs = _check_images(inputs)
        _check_spatial(*inputs.shape[-2:], self.kernel)
        if self.generator is None:
            self.generator = _default_generator(inputs.device)
        keep_graph = torch.is_grad_enabled()
        with eval_mode(model):
            sq, _ = _sq_input_gradients(
                model, inputs, generator=self.generator, create_graph=keep_graph
            )
        with torch.set_grad_enabled(keep_graph):
            sq = sq / inputs.shape[0]
            if not bool(torch.linalg.vector_norm(sq.detach()) > 0):
                raise ValueError(
                    "the importance landscape is identically zero (the sampled logits do not "
                    "depend on the inputs), so it cannot be normalised"
                )
            landscape = _normalise_landscape(sq)
            if self.kind == "curvature":
                kernel = _resolve_kernel(self.kernel, inputs.device, landscape.dtype)
                return _curvature_penalty(landscape, kernel)
            assert self.target_map is not None
            return _target_penalty(landscape, self.target_map, self.reduction)
