"""The importance-landscape maths of PILCRO, shared by the loss and the metrics.

Used by :class:`captum_ext.losses.PILCRO` (training) and :mod:`captum_ext.metrics.landscape`
(analysis):

- the squared input gradients of a logit whose class is sampled from the model's softmax
  (paper Section 3.3.3), one backward pass for the whole batch;
- the normalised 2-D landscape of Eq. 6, ``I'_{h,w} = sqrt(H W) ||I^2[:, h, w]||_2 / ||I^2||_F``
  (norm over channels, Frobenius norm over ``C x H x W``), so that ``mean(I'^2) = 1``;
- the discrete Laplacians: ``valid`` (no padding) for the curvature penalty and depthwise,
  ``same``-size with reflect padding for the data's smoothness map;
- the two penalties: curvature ``var(Laplacian(I'))`` (Eq. 8) and target casting
  ``||I' - S||_2^2`` (Eq. 9);
- the checks of images, kernels and logits both raise their errors from.

Reference: V. Moens, S. Yu, G. Salimi-Khorshidi, "PILCRO: Making Importance Landscapes Flat
Again", arXiv:2001.09696, 2020.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from captum_ext._compat import _select_targets

__all__ = [
    "KERNELS",
    "check_images",
    "check_logits",
    "check_spatial",
    "choose_classes",
    "curvature_penalty",
    "default_generator",
    "kernel_shape",
    "laplacian_same_reflect",
    "laplacian_valid",
    "normalise_landscape",
    "resolve_kernel",
    "sq_input_gradients",
    "target_penalty",
]

#: Named Laplacian kernels (k = 3, the paper's setting). The paper cites the "variance of
#: Laplacian" focus measure (Pertuz et al. 2013) but names neither kernel nor padding.
KERNELS: dict[str, tuple[tuple[float, ...], ...]] = {
    "laplace": ((0.0, 1.0, 0.0), (1.0, -4.0, 1.0), (0.0, 1.0, 0.0)),
    "laplace8": ((1.0, 1.0, 1.0), (1.0, -8.0, 1.0), (1.0, 1.0, 1.0)),
}


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def resolve_kernel(kernel: str | Tensor, device: torch.device, dtype: torch.dtype) -> Tensor:
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


def kernel_shape(kernel: str | Tensor) -> tuple[int, int]:
    """``(kh, kw)`` of a valid kernel specification."""
    shape = resolve_kernel(kernel, torch.device("cpu"), torch.float64).shape
    return int(shape[0]), int(shape[1])


def check_images(inputs: object, name: str = "inputs", finite: bool = True) -> Tensor:
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


def check_spatial(height: int, width: int, kernel: str | Tensor, name: str = "inputs") -> None:
    """H and W must be at least the kernel's size."""
    kh, kw = kernel_shape(kernel)
    if height < kh or width < kw:
        raise ValueError(
            f"{name} must be at least as large as the {kh}x{kw} Laplacian kernel in H and W, "
            f"got H={height}, W={width}"
        )


def check_logits(logits: object, batch: int) -> Tensor:
    if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[0] != batch:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f"model must return logits of shape (N={batch}, classes), got {shape}")
    if not torch.isfinite(logits).all():
        raise ValueError("model returned non-finite logits (NaN or inf)")
    return logits


# --------------------------------------------------------------------------------------------
# Shared math
# --------------------------------------------------------------------------------------------


def normalise_landscape(maps: Tensor) -> Tensor:
    """Paper Eq. 6 on ``(..., C, H, W)``: ``sqrt(H W) ||m[..., :, h, w]|| / ||m[...]||_F``.

    Returns ``(..., H, W)``. A map whose Frobenius norm is 0 gives NaN; callers check for it.
    """
    h, w = maps.shape[-2:]
    per_location = torch.linalg.vector_norm(maps, dim=-3)
    total = torch.linalg.vector_norm(per_location, dim=(-2, -1), keepdim=True)
    return math.sqrt(h * w) * per_location / total


def laplacian_valid(maps: Tensor, kernel: Tensor) -> Tensor:
    """Cross-correlate ``(..., H, W)`` maps with ``kernel`` without padding (``valid``)."""
    lead = maps.shape[:-2]
    flat = maps.reshape(-1, 1, *maps.shape[-2:])
    out = F.conv2d(flat, kernel[None, None].to(flat.dtype))
    return out.reshape(*lead, *out.shape[-2:])


def laplacian_same_reflect(images: Tensor, kernel: Tensor) -> Tensor:
    """Depthwise Laplacian of ``(N, C, H, W)`` images, ``same`` size with reflect padding."""
    kh, kw = kernel.shape
    top, left = (kh - 1) // 2, (kw - 1) // 2
    padded = F.pad(images, (left, kw - 1 - left, top, kh - 1 - top), mode="reflect")
    c = images.shape[1]
    weight = kernel.to(images.dtype)[None, None].expand(c, 1, kh, kw)
    return F.conv2d(padded, weight, groups=c)


def curvature_penalty(landscape: Tensor, kernel: Tensor) -> Tensor:
    """Paper Eq. 8: population variance (energy) of the ``valid`` Laplacian of ``landscape``."""
    return torch.var(laplacian_valid(landscape, kernel), unbiased=False)


def target_penalty(landscape: Tensor, target: Tensor, reduction: str = "sum") -> Tensor:
    """Paper Eq. 9: squared distance to the target map, summed (paper) or averaged."""
    sq = (landscape - target.to(device=landscape.device, dtype=landscape.dtype)) ** 2
    return sq.sum() if reduction == "sum" else sq.mean()


def default_generator(device: torch.device) -> torch.Generator:
    """A generator on ``device`` seeded from ``torch.initial_seed()`` (global RNG untouched)."""
    return torch.Generator(device=device).manual_seed(torch.initial_seed())


def choose_classes(
    logits: Tensor, label: str, generator: torch.Generator | None, given: Tensor | None
) -> Tensor:
    """The class per example: sampled from softmax(logits), the argmax, or the given labels."""
    if label == "sampled":
        probs = torch.softmax(logits.detach().to(torch.float64), dim=1)
        if generator is None:
            generator = default_generator(probs.device)
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


def sq_input_gradients(
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
        logits = check_logits(model(x), x.shape[0])
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
        classes = choose_classes(logits, label, generator, given)
        selected = _select_targets(logits, classes)
        (g,) = torch.autograd.grad(selected.sum(), x, create_graph=create_graph)
    return (g * g).sum(0), classes
