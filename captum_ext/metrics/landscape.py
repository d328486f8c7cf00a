"""Importance landscapes of a classifier and of its data, and their total variation (PILCRO).

- :func:`importance_landscape`: the dataset-level normalised landscape ``I'`` of a model
  (paper Eq. 6), from squared input gradients of a class logit, without a graph;
- :func:`smoothness_map`: the data's smoothness map ``S(X)`` (paper Section 3.3.2), the target
  of :class:`captum_ext.losses.PILCRO` with ``kind="target"``;
- :func:`landscape_total_variation`: the paper's "TV" column (mean squared difference of
  4-neighbours);
- :func:`landscape_summary`: landscape and TV of a model in one call (used by the report).

The maths is shared with the loss (:mod:`captum_ext._landscape`). Inputs are channels first,
``(N, C, H, W)``; a "loader" is any iterable of batches, each a tensor or a tuple/list whose
first element is the image tensor and whose second (if any) holds the labels, such as a
``torch.utils.data.DataLoader`` over :class:`captum_ext.benchmark.SyntheticShapes`.

Reference: V. Moens, S. Yu, G. Salimi-Khorshidi, "PILCRO: Making Importance Landscapes Flat
Again", arXiv:2001.09696, 2020.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Iterator, Sized
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from captum_ext._compat import NullProgress, progress
from captum_ext._landscape import (
    check_images,
    check_spatial,
    laplacian_same_reflect,
    normalise_landscape,
    resolve_kernel,
    sq_input_gradients,
)
from captum_ext._model_state import eval_mode
from captum_ext._targets import class_index_targets

__all__ = [
    "LandscapeSummary",
    "importance_landscape",
    "landscape_summary",
    "landscape_total_variation",
    "smoothness_map",
]

LABELS = ("sampled", "predicted", "given")
Batches = Tensor | Iterable


def _batches(
    data: Batches,
    batch_size: int,
    target: int | list | Tensor | None = None,
    want_labels: bool = False,
) -> Iterator[tuple[Tensor, Tensor | None]]:
    """Yield ``(images, labels or None)`` from a tensor (chunked) or from an iterable.

    Labels are read (from ``target`` or the loader's second element) only if ``want_labels``.
    """
    if isinstance(data, Tensor):
        images = check_images(data)
        labels = None
        if want_labels and target is not None:
            labels = class_index_targets(target, images.shape[0], images.device)
        for i in range(0, images.shape[0], batch_size):
            chunk = labels[i : i + batch_size] if labels is not None else None
            yield images[i : i + batch_size], chunk
        return
    if target is not None:
        raise ValueError("target is only accepted with tensor inputs; a loader yields its labels")
    if not isinstance(data, Iterable):
        raise TypeError(
            f"inputs must be a (N, C, H, W) tensor or an iterable of batches, "
            f"got {type(data).__name__}"
        )
    for batch in data:
        second = None
        if isinstance(batch, (tuple, list)):
            if not batch:
                raise ValueError("a loader batch must not be empty")
            second = batch[1] if len(batch) > 1 else None
            batch = batch[0]
        images = check_images(batch, "loader batch")
        labels = None
        if want_labels and second is not None:
            labels = class_index_targets(second, images.shape[0], images.device)
        yield images, labels


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return value


def importance_landscape(
    model: nn.Module,
    inputs_or_loader: Batches,
    target: int | list | Tensor | None = None,
    *,
    label: str = "sampled",
    exact: bool = False,
    generator: torch.Generator | None = None,
    internal_batch_size: int = 64,
    show_progress: bool = False,
) -> Tensor:
    r"""The dataset-level normalised importance landscape ``I'`` of a classifier (paper Eq. 6).

    ``I^2 = mean_m (d h_{y_m} / d x_m)^2`` over all examples (accumulated in float64; the mean is
    normalised once at the end, never per batch), with ``h`` the logits and ``y_m`` a class
    sampled from ``softmax(h(x_m))`` (``label="sampled"``, the paper's estimator), the predicted
    class or the given label. Then
    ``I'_{h,w} = sqrt(H W) ||I^2[:, h, w]||_2 / ||I^2||_F`` (norm over channels), so
    ``mean(I'^2) = 1``. The model runs in eval mode (each submodule's flag is restored) and no
    graph is kept; parameters and their ``.grad`` are untouched.

    Args:
        model: A classifier returning logits ``(N, classes)``.
        inputs_or_loader: Images ``(N, C, H, W)`` or an iterable of batches (see the module
            docstring).
        target: Labels for ``label="given"`` with tensor inputs (int, list or 1-D tensor).
            A loader supplies them as the second element of each batch.
        label: ``"sampled"`` (default), ``"predicted"`` or ``"given"``.
        exact: Replace the sampled class by the expectation over all classes weighted by
            ``p(y | x)`` (the definition of ``I^2``); one backward pass per class.
        generator: ``torch.Generator`` for ``label="sampled"``. Default: one seeded from
            ``torch.initial_seed()`` on the inputs' device (the global RNG is untouched).
        internal_batch_size: Examples per forward/backward pass for tensor inputs (the result
            does not depend on it). Default: 64.
        show_progress: Show a progress bar (one step per batch).

    Returns:
        ``I'`` of shape ``(H, W)`` in the inputs' dtype. If the landscape is identically zero
        (the logits do not depend on the inputs) a warning is issued and zeros are returned.

    Examples:
        >>> from captum_ext.benchmark import SyntheticShapes, small_cnn
        >>> images = SyntheticShapes(n=32).tensors()[0]
        >>> landscape = importance_landscape(small_cnn(3, 6), images)
        >>> landscape.shape, round(float((landscape**2).mean()), 4)
        (torch.Size([32, 32]), 1.0)

    Reference:
        Moens, Yu, Salimi-Khorshidi, "PILCRO: Making Importance Landscapes Flat Again",
        arXiv:2001.09696, 2020, Eq. 6 and Section 3.3.3.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if label not in LABELS:
        raise ValueError(f"label must be one of {LABELS}, got {label!r}")
    if target is not None and label != "given":
        raise ValueError(f"target is only used with label='given', got label={label!r}")
    batch_size = _positive_int(internal_batch_size, "internal_batch_size")
    if isinstance(inputs_or_loader, Tensor):
        total: int | None = math.ceil(inputs_or_loader.shape[0] / batch_size)
    else:
        total = len(inputs_or_loader) if isinstance(inputs_or_loader, Sized) else None
    bar = progress(desc="Importance landscape", total=total) if show_progress else NullProgress()
    acc: Tensor | None = None
    count, shape, dtype = 0, None, None
    try:
        with eval_mode(model):
            for images, labels in _batches(
                inputs_or_loader, batch_size, target, want_labels=label == "given"
            ):
                if shape is None:
                    shape, dtype = images.shape[1:], images.dtype
                    if generator is None and label == "sampled" and not exact:
                        generator = torch.Generator(device=images.device).manual_seed(
                            torch.initial_seed()
                        )
                elif images.shape[1:] != shape:
                    raise ValueError(
                        f"all batches must share (C, H, W)={tuple(shape)}, "
                        f"got {tuple(images.shape[1:])}"
                    )
                if label == "given" and labels is None and not exact:
                    raise ValueError(
                        "label='given' needs target= (tensor inputs) or a loader yielding "
                        "(images, labels, ...)"
                    )
                sq, _ = sq_input_gradients(
                    model,
                    images,
                    label=label,
                    generator=generator,
                    given=labels,
                    exact=exact,
                )
                sq = sq.detach().to(torch.float64)
                acc = sq if acc is None else acc + sq
                count += images.shape[0]
                bar.update()
    finally:
        bar.close()
    if acc is None:
        raise ValueError("inputs_or_loader yielded no examples")
    assert dtype is not None
    mean_sq = acc / count
    if not bool(torch.linalg.vector_norm(mean_sq) > 0):
        warnings.warn(
            "the importance landscape is identically zero (the logits do not depend on the "
            "inputs); returning zeros",
            RuntimeWarning,
            stacklevel=2,
        )
        return torch.zeros(mean_sq.shape[-2:], dtype=dtype, device=mean_sq.device)
    return normalise_landscape(mean_sq).to(dtype)


def smoothness_map(
    images_or_loader: Batches,
    kernel: str | Tensor = "laplace",
    *,
    internal_batch_size: int = 256,
) -> Tensor:
    r"""The data's smoothness map ``S(X)``: the target of PILCRO's target casting (paper §3.3.2).

    ``S = (1/M) sum_m sqrt(H W) ||(L X_m)[:, h, w]||_2 / ||L X_m||_F`` with ``L`` the discrete
    Laplacian applied per channel (depthwise). As in the paper, the Laplacian itself is
    normalised (not its square, unlike the gradients in ``I'``). The output keeps the input size
    through **reflect** padding: our choice, as the paper does not say and zero padding would
    invent edges at the border. Constant images (zero Laplacian) cannot be normalised: they
    are skipped, counted and reported in a warning. Accumulated in float64.

    Args:
        images_or_loader: Images ``(N, C, H, W)`` or an iterable of batches.
        kernel: ``"laplace"`` (default), ``"laplace8"`` or a 2-D tensor (see
            :class:`captum_ext.losses.PILCRO`).
        internal_batch_size: Images per vectorised step for tensor inputs. Default: 256.

    Returns:
        ``S`` of shape ``(H, W)`` in the images' dtype.

    Examples:
        >>> from captum_ext.benchmark import SyntheticShapes
        >>> target = smoothness_map(SyntheticShapes(n=64).tensors()[0])
        >>> target.shape
        torch.Size([32, 32])

    Reference:
        Moens, Yu, Salimi-Khorshidi, "PILCRO: Making Importance Landscapes Flat Again",
        arXiv:2001.09696, 2020, Section 3.3.2.
    """
    batch_size = _positive_int(internal_batch_size, "internal_batch_size")
    resolve_kernel(kernel, torch.device("cpu"), torch.float64)  # validates early
    acc: Tensor | None = None
    count, skipped, shape, dtype = 0, 0, None, None
    weight: Tensor | None = None
    for images, _ in _batches(images_or_loader, batch_size):
        if shape is None:
            shape, dtype = images.shape[1:], images.dtype
            check_spatial(shape[-2], shape[-1], kernel, "images")
            if min(shape[-2:]) < 2:
                raise ValueError(f"reflect padding needs H, W >= 2, got {tuple(shape[-2:])}")
            weight = resolve_kernel(kernel, images.device, torch.float64)
        elif images.shape[1:] != shape:
            raise ValueError(
                f"all batches must share (C, H, W)={tuple(shape)}, got {tuple(images.shape[1:])}"
            )
        assert weight is not None
        x = images.detach().to(torch.float64)
        lap = laplacian_same_reflect(x, weight)
        norms = torch.linalg.vector_norm(lap, dim=(1, 2, 3))
        scale = weight.abs().sum() * x.abs().flatten(1).amax(1) * math.sqrt(x[0].numel())
        keep = norms > 1e-12 * scale
        skipped += int((~keep).sum())
        if bool(keep.any()):
            maps = normalise_landscape(lap[keep]).sum(0)
            acc = maps if acc is None else acc + maps
            count += int(keep.sum())
    if shape is None:
        raise ValueError("images_or_loader yielded no images")
    if acc is None:
        raise ValueError(f"all {skipped} images are constant (zero Laplacian); S is undefined")
    if skipped:
        warnings.warn(
            f"smoothness_map skipped {skipped} constant image(s) (zero Laplacian) of "
            f"{skipped + count}",
            RuntimeWarning,
            stacklevel=2,
        )
    assert dtype is not None
    return (acc / count).to(dtype)


def landscape_total_variation(landscape: Tensor) -> Tensor:
    """The paper's TV of a landscape: mean squared difference of 4-neighbouring locations.

    Every horizontal and vertical pair of neighbours is counted once:
    ``TV = (sum (I[h, w+1] - I[h, w])^2 + sum (I[h+1, w] - I[h, w])^2) / (H (W-1) + (H-1) W)``.
    Lower TV meant higher accuracy in the paper's Tables 1-2.

    Args:
        landscape: A map ``(H, W)`` or a stack ``(..., H, W)`` with ``H * W >= 2``.

    Returns:
        A scalar tensor, or one value per map for stacked input (shape ``(...)``).

    Examples:
        >>> landscape_total_variation(torch.tensor([[0.0, 1.0], [2.0, 3.0]]))
        tensor(2.5000)
    """
    if not isinstance(landscape, Tensor):
        raise TypeError(f"landscape must be a torch.Tensor, got {type(landscape).__name__}")
    if landscape.dim() < 2:
        raise ValueError(f"landscape must be (H, W) or (..., H, W), got {tuple(landscape.shape)}")
    h, w = landscape.shape[-2:]
    if h * w < 2:
        raise ValueError(f"landscape needs at least two locations, got (H, W)={(h, w)}")
    if not torch.isfinite(landscape).all():
        raise ValueError("landscape contains non-finite values (NaN or inf)")
    x = landscape if landscape.is_floating_point() else landscape.to(torch.get_default_dtype())
    horizontal = (x[..., :, 1:] - x[..., :, :-1]).pow(2).sum((-2, -1))
    vertical = (x[..., 1:, :] - x[..., :-1, :]).pow(2).sum((-2, -1))
    return (horizontal + vertical) / (h * (w - 1) + (h - 1) * w)


class LandscapeSummary(NamedTuple):
    """Landscape of a model and its total variation (see :func:`landscape_summary`)."""

    landscape: Tensor
    total_variation: float


def landscape_summary(
    model: nn.Module, inputs_or_loader: Batches, **kwargs: Any
) -> LandscapeSummary:
    """Importance landscape ``I'`` of ``model`` on some images and its TV, in one call.

    Args:
        model: A classifier returning logits.
        inputs_or_loader: Images ``(N, C, H, W)`` or an iterable of batches.
        **kwargs: Passed to :func:`importance_landscape` (``label``, ``generator``, ...).

    Returns:
        ``LandscapeSummary(landscape (H, W), total_variation: float)``.

    Examples:
        >>> from captum_ext.benchmark import SyntheticShapes, small_cnn
        >>> images = SyntheticShapes(n=16).tensors()[0]
        >>> summary = landscape_summary(small_cnn(3, 6), images)
        >>> summary.landscape.shape, summary.total_variation >= 0
        (torch.Size([32, 32]), True)
    """
    landscape = importance_landscape(model, inputs_or_loader, **kwargs)
    return LandscapeSummary(landscape, float(landscape_total_variation(landscape)))
