"""Filter-editing evaluations of parameter-saliency rankings (Levin et al.; POT-saliency).

For each (misclassified) example and its ranking of flat filter indices:

- :func:`pruning_curves`: zero the weights of the top-1..k filters cumulatively (a bias is
  kept) and record, per k, the change of the softmax probability of the originally predicted
  (wrong) class, of the true class, and whether the prediction became correct.
- :func:`finetuning_curves`: one gradient of ``CE(model(x), y_true)`` at the original weights;
  for k = 1..K update only the top-k filters' weight slices, ``W[f] -= lr * dW[f]``.

Both are exact and batched over k, without touching the weights: the K + 1 variants of one
example run as one batch whose copies get per-copy output-channel masks through forward hooks
(zeroing filter j equals replacing output channel j by its bias; the fine-tuned layer's output
is ``conv(x, W) - lr * mask * conv(x, dW)``). Hooks are removed in ``finally`` and the model's
parameters, ``requires_grad`` flags and train/eval flags are as before, also on exceptions.

References:
    Levin et al., NeurIPS 2022 (Section 5); Wang & Sato, arXiv 2310.17951 (Section 5.1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from captum_ext.attr._utils.filters import FilterTable
from captum_ext.attr._utils.per_sample_grads import default_loss, saliency_state

_EDITABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_Editable = nn.Conv1d | nn.Conv2d | nn.Conv3d | nn.Linear


@dataclass
class EditCurves:
    """Per-k averages of a filter-editing protocol (column k = k filters edited, k = 0..K).

    Attributes:
        wrong_prob_delta: Mean change of the originally predicted class's probability.
        true_prob_delta: Mean change of the true class's probability.
        corrected: Fraction of examples whose prediction equals the label.
        counts: Examples reaching column k (a POT ranking may be shorter than K).
        per_example: ``(n, K + 1, 3)`` values (wrong delta, true delta, corrected) with NaN
            where an example's ranking is shorter than k.
    """

    wrong_prob_delta: Tensor
    true_prob_delta: Tensor
    corrected: Tensor
    counts: Tensor
    per_example: Tensor


def _as_rankings(rankings: Tensor | Sequence[Tensor], n: int) -> list[Tensor]:
    rows = list(rankings.unbind(0)) if isinstance(rankings, Tensor) else list(rankings)
    if len(rows) != n:
        raise ValueError(f"rankings must have one row per example ({n}), got {len(rows)}")
    return [torch.as_tensor(r).long().reshape(-1) for r in rows]


def _layer_masks(
    table: FilterTable, ranking: Tensor, k_max: int, device: torch.device
) -> dict[int, Tensor]:
    """``{layer index: (k_max + 1, n_out) float mask}``; copy k marks the top-k filters."""
    slices = table.layer_slices()
    masks: dict[int, Tensor] = {}
    for step, f in enumerate(ranking[:k_max].tolist()):
        li = next(i for i, s in enumerate(slices) if s.start <= f < s.stop)
        if not isinstance(table.layers[li], _EDITABLE):
            raise ValueError(
                f"filter {f} ({table.module[f]}) is in a {type(table.layers[li]).__name__}; "
                "the editing protocols support Conv1d/2d/3d and Linear layers"
            )
        if li not in masks:
            masks[li] = torch.zeros(k_max + 1, table.layer_counts[li], device=device)
        masks[li][step + 1 :, f - slices[li].start] = 1.0
    return masks


def _channel_view(mask: Tensor, out: Tensor, layer: nn.Module) -> Tensor:
    """Broadcast a ``(copies, C)`` mask to the layer output (channel dim 1 for conv, -1 linear)."""
    if isinstance(layer, nn.Linear):
        return mask.reshape(mask.shape[0], *([1] * (out.dim() - 2)), mask.shape[1])
    return mask.reshape(*mask.shape, *([1] * (out.dim() - 2)))


def _bias_view(layer: _Editable, out: Tensor) -> Tensor | float:
    if layer.bias is None:
        return 0.0
    b = layer.bias
    if isinstance(layer, nn.Linear):
        return b
    return b.reshape(1, -1, *([1] * (out.dim() - 2)))


def _extra_output(layer: _Editable, a: Tensor, dw: Tensor) -> Tensor:
    if isinstance(layer, nn.Linear):
        return F.linear(a, dw)
    return layer._conv_forward(a, dw, None)


def _edit_hook(mask: Tensor, dws: list[tuple[slice, Tensor]] | None, lr: float | None) -> Callable:
    """Forward hook giving each row of the batch its own edit of the layer's output.

    ``mask`` is ``(rows, C)``; pruning replaces masked channels by their bias; fine-tuning
    subtracts ``lr * mask * layer(x, dW_i)`` with example ``i``'s gradient on its row slice.
    """

    def hook(layer: nn.Module, args: tuple, out: Tensor) -> Tensor:
        # hooks go only on layers that _layer_masks accepted (it raises for any other type)
        assert isinstance(layer, _EDITABLE)
        m = _channel_view(mask, out, layer)
        if dws is None or lr is None:
            return m * _bias_view(layer, out) + (1 - m) * out
        extra = torch.zeros_like(out)
        for rows, dw in dws:
            extra[rows] = _extra_output(layer, args[0][rows], dw)
        return out - lr * m * extra

    return hook


def _curves(
    model: nn.Module,
    table: FilterTable,
    inputs: Tensor,
    labels: Tensor,
    rankings: Tensor | Sequence[Tensor],
    max_k: int,
    lr: float | None,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    examples_per_batch: int,
) -> EditCurves:
    if not isinstance(inputs, Tensor) or inputs.dim() < 1:
        raise TypeError("inputs must be a tensor with the batch on dim 0")
    n = inputs.shape[0]
    labels = torch.as_tensor(labels, device=inputs.device).long().reshape(-1)
    if labels.numel() != n:
        raise ValueError(f"labels must have one class per example ({n}), got {labels.numel()}")
    if not isinstance(max_k, int) or max_k < 1:
        raise ValueError(f"max_k must be a positive int, got {max_k!r}")
    if not isinstance(examples_per_batch, int) or examples_per_batch < 1:
        raise ValueError(f"examples_per_batch must be a positive int, got {examples_per_batch!r}")
    ranks = _as_rankings(rankings, n)
    weights = [_weight(layer) for layer in table.layers]
    per = torch.full((n, max_k + 1, 3), float("nan"), dtype=torch.float64)
    dev = inputs.device
    with saliency_state(model, weights):
        for start in range(0, n, examples_per_batch):
            idx = list(range(start, min(n, start + examples_per_batch)))
            masks: dict[int, Tensor] = {}
            grads: dict[int, list[tuple[slice, Tensor]]] = {}
            rows: list[slice] = []
            xs: list[Tensor] = []
            offset = 0
            for i in idx:
                k_i = min(max_k, len(ranks[i]))
                m_i = _layer_masks(table, ranks[i], k_i, dev)
                k_i = k_i if m_i else 0  # an empty ranking has only column 0
                sl = slice(offset, offset + k_i + 1)
                offset += k_i + 1
                rows.append(sl)
                xs.append(inputs[i : i + 1].expand(k_i + 1, *inputs.shape[1:]))
                if lr is not None and m_i:
                    with torch.enable_grad():
                        loss = loss_fn(model(inputs[i : i + 1]), labels[i : i + 1]).sum()
                        gs = torch.autograd.grad(loss, [weights[li] for li in m_i])
                    for li, g in zip(m_i, gs):
                        grads.setdefault(li, []).append((sl, g.detach()))
                for li, m in m_i.items():
                    if li not in masks:
                        masks[li] = torch.zeros(0, m.shape[1], device=dev)
                    masks[li] = _pad_rows(masks[li], sl.start)
                    masks[li] = torch.cat([masks[li], m])
            handles = []
            try:
                for li in masks:
                    fn = _edit_hook(_pad_rows(masks[li], offset), grads.get(li), lr)
                    handles.append(table.layers[li].register_forward_hook(fn))
                with torch.no_grad():
                    logits = model(torch.cat(xs))
            finally:
                for h in handles:
                    h.remove()
            for i, sl in zip(idx, rows):
                p = logits[sl].double().softmax(1)
                y, wrong, kk = int(labels[i]), int(p[0].argmax()), sl.stop - sl.start
                per[i, :kk, 0] = (p[:, wrong] - p[0, wrong]).cpu()
                per[i, :kk, 1] = (p[:, y] - p[0, y]).cpu()
                per[i, :kk, 2] = (p.argmax(1) == y).double().cpu()
    reached = ~torch.isnan(per[:, :, 0])
    counts = reached.sum(0)
    mean = torch.where(reached[..., None], per, 0.0).sum(0) / counts.clamp_min(1)[:, None]
    return EditCurves(mean[:, 0], mean[:, 1], mean[:, 2], counts, per)


def _weight(layer: nn.Module) -> Tensor:
    w = layer.weight
    # a FilterTable layer's ``weight`` is a Parameter, or a plain tensor under weight
    # parametrisation (a MultiheadAttention has none: the line above raises AttributeError)
    assert isinstance(w, Tensor)
    return w


def _pad_rows(m: Tensor, rows: int) -> Tensor:
    """Append zero rows to ``m`` up to ``rows`` rows."""
    if m.shape[0] >= rows:
        return m
    return torch.cat([m, m.new_zeros(rows - m.shape[0], m.shape[1])])


def pruning_curves(
    model: nn.Module,
    table: FilterTable,
    inputs: Tensor,
    labels: Tensor,
    rankings: Tensor | Sequence[Tensor],
    max_k: int = 50,
    examples_per_batch: int = 8,
) -> EditCurves:
    """Cumulative filter pruning, batched over k (see the module docstring).

    Args:
        model: The classifier (its weights are never modified).
        table: The filter layout of the rankings (``ParameterSaliency.filters``).
        inputs: ``(n, ...)`` examples (usually the misclassified ones).
        labels: True labels ``(n,)``.
        rankings: ``(n, m)`` tensor or list of 1-D flat filter rankings, most salient first.
        max_k: Largest number of filters pruned (paper: 50).
        examples_per_batch: Examples whose ``K + 1`` variants share one forward pass (memory
            knob; results do not depend on it).

    Returns:
        :class:`EditCurves` with ``K + 1`` columns.

    Examples:
        >>> ranks = ps.rank(x_wrong, target=y_wrong, k=50)
        >>> curves = pruning_curves(model, ps.filters, x_wrong, y_wrong, ranks)
        >>> curves.corrected[-1]  # fraction corrected after pruning 50 filters
    """
    return _curves(
        model, table, inputs, labels, rankings, max_k, None, default_loss, examples_per_batch
    )


def finetuning_curves(
    model: nn.Module,
    table: FilterTable,
    inputs: Tensor,
    labels: Tensor,
    rankings: Tensor | Sequence[Tensor],
    max_k: int = 25,
    lr: float = 1e-3,
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
    examples_per_batch: int = 8,
) -> EditCurves:
    """One-step fine-tuning of the top-1..k filters, batched over k.

    The gradient of ``loss_fn(model(x), y)`` (default cross-entropy) is taken once per example at
    the original weights in eval mode; copy k uses ``W[f] - lr * dW[f]`` for its top-k filters
    (weight slices only: biases and BatchNorm untouched). Arguments as in
    :func:`pruning_curves`; ``lr`` defaults to the papers' 1e-3 and ``max_k`` to 25.
    """
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    return _curves(
        model,
        table,
        inputs,
        labels,
        rankings,
        max_k,
        float(lr),
        loss_fn or default_loss,
        examples_per_batch,
    )
