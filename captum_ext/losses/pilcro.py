"""PILCRO: importance-landscape regularisation as a loss module (Moens, Yu, Salimi-Khorshidi).

The maths (squared input gradients, the normalised landscape of Eq. 6, the Laplacians and the
two penalties of Eqs. 8-9) lives in :mod:`captum_ext._landscape`, shared with the analysis
functions of :mod:`captum_ext.metrics.landscape`.

Reference: V. Moens, S. Yu, G. Salimi-Khorshidi, "PILCRO: Making Importance Landscapes Flat
Again", arXiv:2001.09696, 2020.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from captum_ext._landscape import (
    KERNELS,
    check_images,
    check_spatial,
    curvature_penalty,
    default_generator,
    normalise_landscape,
    resolve_kernel,
    sq_input_gradients,
    target_penalty,
)
from captum_ext._model_state import eval_mode

__all__ = ["KERNELS", "PILCRO"]

KINDS = ("target", "curvature")
REDUCTIONS = ("sum", "mean")


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
        >>> import torch.nn.functional as F
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
        resolve_kernel(kernel, torch.device("cpu"), torch.float32)  # validates
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
        inputs = check_images(inputs, finite=False)  # finiteness: on computed steps only
        h, w = inputs.shape[-2:]
        check_spatial(h, w, self.kernel)
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
        inputs = check_images(inputs)
        check_spatial(inputs.shape[-2], inputs.shape[-1], self.kernel)
        if self.generator is None:
            self.generator = default_generator(inputs.device)
        keep_graph = torch.is_grad_enabled()
        with eval_mode(model):
            sq, _ = sq_input_gradients(
                model, inputs, generator=self.generator, create_graph=keep_graph
            )
        with torch.set_grad_enabled(keep_graph):
            sq = sq / inputs.shape[0]
            if not bool(torch.linalg.vector_norm(sq.detach()) > 0):
                raise ValueError(
                    "the importance landscape is identically zero (the sampled logits do not "
                    "depend on the inputs), so it cannot be normalised"
                )
            landscape = normalise_landscape(sq)
            if self.kind == "curvature":
                kernel = resolve_kernel(self.kernel, inputs.device, landscape.dtype)
                return curvature_penalty(landscape, kernel)
            assert self.target_map is not None
            return target_penalty(landscape, self.target_map, self.reduction)
