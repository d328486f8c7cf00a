"""Exact per-example filter profiles ``mean(abs(d loss_i / d W[filter]))``, computed in batches.

The abs must be taken per example, so the batch-summed ``.grad`` is useless. In eval mode the
examples of a batch are independent, which gives two exact routes:

- ``"hooks"`` (``nn.Conv2d`` and ``nn.Linear``; the fast path): forward hooks keep each layer's
  input ``A`` and output ``Z``; one ``torch.autograd.grad`` of the summed loss with respect to the
  ``Z`` gives ``G``; the per-example weight gradient is ``G`` contracted with ``unfold(A)`` (conv,
  exact for stride, padding, padding modes, dilation and groups) or ``G (x) A`` summed over
  tokens (linear). A layer called several times per forward sums its calls before the abs.
- ``"func"`` (every supported layer, incl. transposed convs and attention): ``torch.func``
  ``vmap(grad(loss of one example))`` with ``functional_call``, chunked.

Neither route touches ``.grad``: gradients are taken with ``torch.autograd.grad``/``torch.func``.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from captum_ext._compat import _run_forward
from captum_ext._model_state import eval_mode
from captum_ext.attr._utils.contract import chunks, is_batched
from captum_ext.attr._utils.filters import FilterTable

LossFn = Callable[[Tensor, Tensor], Tensor]
_HOOKABLE = (nn.Conv2d, nn.Linear)


def default_loss(outputs: Tensor, target: Tensor) -> Tensor:
    """Per-example cross-entropy, ``(N,)``."""
    return F.cross_entropy(outputs, target, reduction="none")


@contextmanager
def saliency_state(model: nn.Module, weights: Sequence[Tensor]) -> Iterator[None]:
    """Eval mode on every module and ``requires_grad`` on ``weights``; all restored on exit."""
    req = [(w, w.requires_grad) for w in weights]
    try:
        with eval_mode(model):
            for w in weights:
                w.requires_grad_(True)
            yield
    finally:
        for w, r in req:
            w.requires_grad_(r)


def check_target(target: Tensor, outputs: Tensor) -> None:
    """Raise ValueError if a class index is outside ``[0, n_classes)``."""
    if outputs.dim() < 2:
        raise ValueError(f"the model must return (N, n_classes) logits, got {tuple(outputs.shape)}")
    n_classes = outputs.shape[1]
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= n_classes):
        raise ValueError(
            f"target must be class indices in [0, {n_classes}), got values in "
            f"[{int(target.min())}, {int(target.max())}]"
        )
    if not torch.isfinite(outputs).all():
        raise ValueError("the model returned non-finite outputs (NaN or inf) for the inputs")


def _per_example_loss(
    loss_fn: LossFn, outputs: Tensor, target: Tensor, check: bool = True
) -> Tensor:
    if check:
        check_target(target, outputs)
    loss = loss_fn(outputs, target)
    if loss.shape != (outputs.shape[0],):
        raise ValueError(
            "loss_fn must return one loss per example, shape "
            f"({outputs.shape[0]},) (e.g. reduction='none'), got {tuple(loss.shape)}"
        )
    return loss


def _conv2d_factors(layer: nn.Conv2d, a: Tensor, g: Tensor) -> tuple[Tensor, Tensor]:
    """``unfold(A)`` as ``(n, groups, in/groups * k, P)`` and G as ``(n, groups, out/groups, P)``.

    The per-example weight gradient is ``einsum("ngop,ngip->ngoi", G, U)``.
    """
    kh, kw = layer.kernel_size
    padding: Any = layer.padding
    if layer.padding_mode != "zeros":
        a = F.pad(a, layer._reversed_padding_repeated_twice, mode=layer.padding_mode)
        padding = 0
    elif padding == "same":
        pads = []
        for d, k in zip(reversed(layer.dilation), (kw, kh)):
            total = d * (k - 1)
            pads += [total // 2, total - total // 2]
        a = F.pad(a, pads)
        padding = 0
    elif padding == "valid":
        padding = 0
    u = F.unfold(a, (kh, kw), dilation=layer.dilation, padding=padding, stride=layer.stride)
    n, groups = a.shape[0], layer.groups
    u = u.reshape(n, groups, -1, u.shape[-1])
    gv = g.reshape(n, groups, g.shape[1] // groups, -1)
    return u, gv


def _factors(layer: nn.Module, a: Tensor, g: Tensor) -> tuple[Tensor, Tensor]:
    """Per-example gradient factors ``(U, G)`` of a Conv2d or Linear (Linear: one group)."""
    if isinstance(layer, nn.Conv2d):
        return _conv2d_factors(layer, a, g)
    n = a.shape[0]
    u = a.reshape(n, -1, a.shape[-1]).transpose(1, 2).unsqueeze(1)  # (n, 1, in, T)
    gv = g.reshape(n, -1, g.shape[-1]).transpose(1, 2).unsqueeze(1)  # (n, 1, out, T)
    return u, gv


def hooks_profiles(
    model: nn.Module,
    table: FilterTable,
    inputs: tuple[Tensor, ...],
    target: Tensor,
    additional_forward_args: Any,
    loss_fn: LossFn,
    create_graph: bool = False,
) -> Tensor:
    """``(n, F)`` profiles of one chunk through forward hooks (Conv2d/Linear layers only)."""
    calls: dict[int, list[tuple[Tensor, Tensor]]] = {id(m): [] for m in table.layers}

    def hook(module: nn.Module, args: tuple, out: Tensor) -> Tensor:
        calls[id(module)].append((args[0], out))
        return out.clone()  # later in-place ops (ReLU(inplace)) must not alter the kept output

    handles = [m.register_forward_hook(hook) for m in table.layers]
    try:
        outputs = _run_forward(model, inputs, None, additional_forward_args)
    finally:
        for h in handles:
            h.remove()
    loss = _per_example_loss(loss_fn, outputs, target)
    zs = [z for m in table.layers for _, z in calls[id(m)]]
    if not zs:
        raise ValueError("none of the selected layers ran during the forward pass")
    grads = torch.autograd.grad(loss.sum(), zs, create_graph=create_graph, allow_unused=True)
    with torch.set_grad_enabled(create_graph):  # no autograd bookkeeping unless asked for
        it = iter(grads)
        cols = []
        for layer, blocks in zip(table.layers, table.blocks):
            used = [(a, next(it)) for a, _z in calls[id(layer)]]
            factors = [_factors(layer, a, g) for a, g in used if g is not None]
            n = outputs.shape[0]
            if not factors:
                cols.append(outputs.new_zeros(n, sum(b.n_filters for b in blocks)))
            elif len(factors) == 1 and factors[0][0].shape[-1] == 1:
                # one call, one position: the gradient is an outer product, so
                # mean_i |G_o U_i| = |G_o| mean_i |U_i| without materialising it
                u, gv = factors[0]
                prof = gv[..., 0].abs() * u[..., 0].abs().mean(-1, keepdim=True)
                cols.append(prof.reshape(n, -1))
            else:
                assert isinstance(layer, _HOOKABLE)  # the hooks route: can_use_hooks(table)
                cols.append(_reduce_in_chunks(layer, blocks, factors, create_graph))
        return torch.cat(cols, dim=1)


#: Per-example weight-gradient numbers materialised at a time by :func:`_reduce_in_chunks`
#: (1M floats, 4 MB: the gradient stays in cache between the matmul and the abs-mean).
_CHUNK_NUMBERS = 1 << 20


def _reduce_in_chunks(
    layer: nn.Conv2d | nn.Linear,
    blocks: Sequence[Any],
    factors: list[tuple[Tensor, Tensor]],
    create_graph: bool,
) -> Tensor:
    """``(n, F_layer)`` profiles from the factors, a few examples' gradients at a time.

    The per-example gradient ``sum_p G_op U_ip`` has ``n * weight.numel()`` numbers; written all
    at once (75 MB for ResNet-18's layer3 convs at batch 32) the matmul and the abs-mean that
    follows run at memory speed. Chunks of examples keep it in cache (measured on 2 CPU cores,
    a 256 x 2304 conv at 2 x 2 positions: 28 ms for 32 examples at once, 3.3 ms one at a time).
    On a GPU the whole batch stays one matmul: there small ones would cost launches, and the
    GPU throughput was measured without chunks.
    """
    weight_shape = layer.weight.shape
    n = factors[0][0].shape[0]
    step = max(1, _CHUNK_NUMBERS // max(1, layer.weight.numel()))
    if factors[0][0].device.type != "cpu":
        step = n
    inplace = len(blocks) == 1 and not create_graph
    (u0, g0), rest = factors[0], factors[1:]
    parts = []
    for s, e in chunks(n, step):
        total = torch.einsum("ngop,ngip->ngoi", g0[s:e], u0[s:e])
        for u, gv in rest:  # a layer called several times: sum before the abs
            total = total + torch.einsum("ngop,ngip->ngoi", gv[s:e], u[s:e])
        w = total.reshape(total.shape[0], *weight_shape)
        if inplace:
            parts.append(blocks[0].reduce(w, inplace=True))
        else:
            parts.append(torch.cat([b.reduce(w) for b in blocks], dim=1))
    return torch.cat(parts)


def func_profiles(
    model: nn.Module,
    table: FilterTable,
    inputs: tuple[Tensor, ...],
    target: Tensor,
    additional_forward_args: Any,
    loss_fn: LossFn,
    chunk_size: int | None = None,
) -> Tensor:
    """``(n, F)`` profiles through ``torch.func.vmap(grad(...))`` (every supported layer)."""
    from torch.func import functional_call, grad, vmap

    n = inputs[0].shape[0]
    names, params = [], {}
    for bl in table.blocks:
        for b in bl:
            full = f"{b.module_name}.{b.param_name}" if b.module_name else b.param_name
            if full not in params:
                names.append(full)
                params[full] = model.get_parameter(full).detach()
    afa = additional_forward_args if additional_forward_args is not None else ()
    batched = [is_batched(a, n) for a in afa]
    batched_args = tuple(a for a, b in zip(afa, batched) if b)

    def loss_one(p: dict, xs: tuple, bargs: tuple, y: Tensor) -> Tensor:
        it = iter(bargs)
        args = tuple(next(it).unsqueeze(0) if b else a for a, b in zip(afa, batched))
        xs1 = tuple(x.unsqueeze(0) for x in xs)
        out = _run_forward(
            lambda *a: functional_call(model, p, a), xs1, None, args if args else None
        )
        return _per_example_loss(loss_fn, out, y.unsqueeze(0), check=False).sum()

    with torch.no_grad():
        first = _run_forward(model, tuple(x[:1] for x in inputs), None, _first(afa, batched))
    check_target(target, first)
    per = vmap(grad(loss_one), in_dims=(None, 0, 0, 0), chunk_size=chunk_size)(
        params, inputs, batched_args, target
    )
    cols = []
    for bl in table.blocks:
        for b in bl:
            full = f"{b.module_name}.{b.param_name}" if b.module_name else b.param_name
            cols.append(b.reduce(per[full].detach()))
    return torch.cat(cols, dim=1)


def _first(afa: Any, batched: list[bool]) -> Any:
    if not afa:
        return None
    return tuple(a[:1] if b else a for a, b in zip(afa, batched))


def can_use_hooks(table: FilterTable) -> bool:
    """Whether every selected layer is a Conv2d or Linear (the hooks route applies)."""
    return all(type(m) in _HOOKABLE or isinstance(m, _HOOKABLE) for m in table.layers)
