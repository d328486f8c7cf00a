"""The filter layout of parameter saliency: which weights count and how flat indices map back.

A *filter* is a block of weights that produces one output unit:

- ``nn.Conv1d/2d/3d``: output channel ``j`` (``weight[j]``, shape ``(in/groups, *kernel)``).
- ``nn.ConvTranspose1d/2d/3d`` (``groups=1``): output channel ``j`` is ``weight[:, j]``.
- ``nn.Linear``: output row ``j`` (``weight[j]``).
- ``nn.MultiheadAttention``: one query, key or value head, i.e. a ``head_dim x embed_dim`` row
  block of the fused ``in_proj_weight`` (rows ``[0, D)`` are q, ``[D, 2D)`` k, ``[2D, 3D)`` v), or
  of ``q_proj_weight``/``k_proj_weight``/``v_proj_weight`` when ``kdim``/``vdim`` differ.

Biases, BatchNorm and LayerNorm parameters, and ``out_proj`` are never filters. The flat filter
index runs over the selected layers in ``model.named_modules()`` order, then over the blocks of
each layer (q, k, v for attention), then over the output index.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from torch import nn

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONV_T = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
SUPPORTED_LAYERS = (*_CONV, *_CONV_T, nn.Linear, nn.MultiheadAttention)


@dataclass(frozen=True)
class FilterBlock:
    """Filters of one weight parameter of one layer.

    Attributes:
        module_name: Name of the layer in ``model.named_modules()``.
        param_name: Name of the weight parameter inside the layer.
        kind: ``"conv"``, ``"conv_transpose"``, ``"linear"``, or ``"q"``/``"k"``/``"v"``.
        n_filters: Number of filters in the block.
        offset: Flat index of the block's first filter.
        row_start: First row of the parameter that belongs to the block (fused q/k/v).
        heads: Number of heads for attention blocks, else 0.
    """

    module_name: str
    param_name: str
    kind: str
    n_filters: int
    offset: int
    row_start: int = 0
    heads: int = 0

    def reduce(self, grad: torch.Tensor, inplace: bool = False) -> torch.Tensor:
        """Per-filter ``mean(abs(grad))`` of a batch of gradients of this block's parameter.

        Args:
            grad: ``(N, *weight.shape)`` per-example gradients of the whole parameter.
            inplace: Take the abs in place (``grad`` is a temporary nobody else reads).

        Returns:
            ``(N, n_filters)``.
        """
        g = grad.abs_() if inplace else grad.abs()
        n = g.shape[0]
        if self.kind == "conv_transpose":
            g = g.transpose(1, 2)
        elif self.heads:
            rows = g.shape[1] // 3 if self.param_name == "in_proj_weight" else g.shape[1]
            g = g[:, self.row_start : self.row_start + rows]
        return g.reshape(n, self.n_filters, -1).mean(dim=2)


class FilterTable:
    """The flat filter layout of a layer selection (``ParameterSaliency.filters``).

    Each flat index ``f`` has a row: ``module[f]`` (layer name), ``param[f]`` (weight name),
    ``kind[f]``, ``index[f]`` (output channel/row, or head for attention) and ``head[f]``
    (head index for attention, ``-1`` otherwise).

    Args:
        model: The model.
        layers: The selected layers (modules of ``model``), in any order; they are sorted into
            ``named_modules()`` order.

    Examples:
        >>> table = FilterTable(model, [model.conv1])
        >>> table.lookup(3)
        ('conv1', 'weight', 'conv', 3, -1)
        >>> table.flat_index("conv1", 3)
        3
    """

    def __init__(self, model: nn.Module, layers: list[nn.Module]) -> None:
        names = {id(m): n for n, m in model.named_modules()}
        order = {id(m): i for i, (_, m) in enumerate(model.named_modules())}
        for layer in layers:
            if id(layer) not in names:
                raise ValueError(f"layers must be submodules of the model, got {type(layer)}")
            if not isinstance(layer, SUPPORTED_LAYERS):
                raise TypeError(
                    "layers must be Conv1d/2d/3d, ConvTranspose1d/2d/3d, Linear or "
                    f"MultiheadAttention modules, got {type(layer).__name__}"
                )
        self.layers: list[nn.Module] = sorted(set(layers), key=lambda m: order[id(m)])
        self.layer_names: list[str] = [names[id(m)] for m in self.layers]
        self.blocks: list[list[FilterBlock]] = []
        offset = 0
        for name, layer in zip(self.layer_names, self.layers):
            blocks = _blocks_of(name, layer, offset)
            offset += sum(b.n_filters for b in blocks)
            self.blocks.append(blocks)
        self.n_filters = offset
        self.layer_counts: list[int] = [sum(b.n_filters for b in bl) for bl in self.blocks]
        self.module: list[str] = []
        self.param: list[str] = []
        self.kind: list[str] = []
        self.index: list[int] = []
        self.head: list[int] = []
        for bl in self.blocks:
            for b in bl:
                for j in range(b.n_filters):
                    self.module.append(b.module_name)
                    self.param.append(b.param_name)
                    self.kind.append(b.kind)
                    self.index.append(j)
                    self.head.append(j if b.heads else -1)

    def __len__(self) -> int:
        return self.n_filters

    def lookup(self, flat: int) -> tuple[str, str, str, int, int]:
        """``(module, param, kind, index, head)`` of flat filter ``flat``."""
        if not 0 <= int(flat) < self.n_filters:
            raise ValueError(f"flat must be in [0, {self.n_filters}), got {flat}")
        f = int(flat)
        return self.module[f], self.param[f], self.kind[f], self.index[f], self.head[f]

    def flat_index(self, module_name: str, index: int, kind: str | None = None) -> int:
        """Flat index of output ``index`` of layer ``module_name`` (``kind`` for q/k/v)."""
        for bl in self.blocks:
            for b in bl:
                if b.module_name == module_name and (kind is None or b.kind == kind):
                    if not 0 <= index < b.n_filters:
                        raise ValueError(
                            f"index must be in [0, {b.n_filters}) for {module_name}, got {index}"
                        )
                    return b.offset + index
        raise ValueError(f"no selected layer named {module_name!r} (kind={kind!r})")

    def layout_hash(self) -> str:
        """A short hash of layer names, parameter shapes and filter counts."""
        h = hashlib.sha256()
        for name, layer, bl in zip(self.layer_names, self.layers, self.blocks):
            h.update(name.encode())
            for b in bl:
                shape = tuple(getattr(layer, b.param_name).shape)
                h.update(f"|{b.param_name}:{b.kind}:{b.n_filters}:{shape}".encode())
        return h.hexdigest()[:16]

    def layer_slices(self) -> list[slice]:
        """The flat index range of each selected layer."""
        out, start = [], 0
        for c in self.layer_counts:
            out.append(slice(start, start + c))
            start += c
        return out


def _blocks_of(name: str, layer: nn.Module, offset: int) -> list[FilterBlock]:
    if isinstance(layer, _CONV):
        return [FilterBlock(name, "weight", "conv", layer.weight.shape[0], offset)]
    if isinstance(layer, _CONV_T):
        if layer.groups != 1:
            raise ValueError(
                f"layers: grouped ConvTranspose ({name}, groups={layer.groups}) is not supported"
            )
        return [FilterBlock(name, "weight", "conv_transpose", layer.weight.shape[1], offset)]
    if isinstance(layer, nn.Linear):
        return [FilterBlock(name, "weight", "linear", layer.weight.shape[0], offset)]
    # FilterTable admits SUPPORTED_LAYERS only: what is left is a MultiheadAttention
    assert isinstance(layer, nn.MultiheadAttention)
    h = layer.num_heads
    if layer.in_proj_weight is not None:
        d = layer.embed_dim
        return [
            FilterBlock(name, "in_proj_weight", kind, h, offset + i * h, row_start=i * d, heads=h)
            for i, kind in enumerate("qkv")
        ]
    return [
        FilterBlock(name, f"{kind}_proj_weight", kind, h, offset + i * h, heads=h)
        for i, kind in enumerate("qkv")
    ]


def default_layers(model: nn.Module) -> list[nn.Module]:
    """Every ``nn.Conv2d`` of ``model`` in ``named_modules()`` order (Levin et al.'s choice)."""
    layers: list[nn.Module] = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not layers:
        raise ValueError("layers=None selects every nn.Conv2d, but the model has none")
    return layers


def resnet_group(name: str) -> str:
    """ResNet stage of a layer name: conv1, conv2_x..conv5_x (layer1..layer4), else the name."""
    if name == "conv1" or name.startswith("conv1."):
        return "conv1"
    for i in range(1, 5):
        if name == f"layer{i}" or name.startswith(f"layer{i}."):
            return f"conv{i + 1}_x"
    return name
