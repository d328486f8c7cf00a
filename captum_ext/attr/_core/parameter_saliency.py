"""ParameterSaliency: which filters of a network cause a (mis)classification.

Levin et al.'s parameter-space saliency with their z-score calibration, and Wang & Sato's
peaks-over-threshold (POT) calibration based on extreme value theory.

References:
    Levin et al., "Where do Models go Wrong? Parameter-Space Saliency Maps for Explainability",
    NeurIPS 2022. Wang & Sato, "Understanding Parameter Saliency via Extreme Value Theory",
    arXiv 2310.17951.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable
from typing import Any, Callable, Literal

import torch
import torch.nn.functional as F
from captum._utils.typing import TargetType, TensorOrTupleOfTensorsGeneric
from captum.attr import GradientAttribution, LayerAttribution
from torch import Tensor, nn

from captum_ext._compat import (
    NullProgress,
    _format_additional_forward_args,
    _format_tensor_into_tuples,
    _run_forward,
    log_usage,
    progress,
)
from captum_ext._targets import class_index_targets
from captum_ext.attr._utils.contract import (
    NoAttributeFuture,
    check_batch_size,
    chunks,
    default_generator,
    format_inputs,
    select_args,
)
from captum_ext.attr._utils.filters import FilterTable, default_layers, resnet_group
from captum_ext.attr._utils.per_sample_grads import (
    LossFn,
    can_use_hooks,
    default_loss,
    func_profiles,
    hooks_profiles,
    saliency_state,
)
from captum_ext.attr._utils.reference_size import global_size, reference_size
from captum_ext.calibration._base import Calibration, Layout
from captum_ext.calibration.distributed import check_same_setup
from captum_ext.calibration.pot import POTCalibration
from captum_ext.calibration.zscore import ZScoreCalibration, floored_std
from captum_ext.distributed import DistContext, agree, get_context

GroupSpec = dict[str, str] | Callable[[str], str] | None


class ParameterSaliency(NoAttributeFuture, LayerAttribution, GradientAttribution):
    r"""Filter-wise parameter saliency with z-score or POT calibration.

    The raw *profile* of filter ``j`` for an example ``(x, y)`` is the mean over the filter's
    weights of ``|d loss(model(x), y) / d weight|`` (Eq. 1), with the model in eval mode and
    ``loss`` the per-example cross-entropy by default. A filter is an output channel of a conv
    layer, an output row of a linear layer, or one q/k/v head of an ``nn.MultiheadAttention``
    (see :class:`~captum_ext.attr._utils.filters.FilterTable`, exposed as ``self.filters``).
    :meth:`fit` streams a reference set once into a calibration, which turns profiles into
    scores: z-scores (Levin et al., Eq. 2; rank descending) or POT tail probabilities (rank
    ascending). Profiles are exact per example but computed in batches (per-sample gradients
    through layer hooks for Conv2d/Linear, ``torch.func`` otherwise).

    *Distributed fit.* Inside a ``torch.distributed`` job (e.g. under ``torchrun``) each rank
    streams its own shard into :meth:`fit` and the statistics are merged exactly, so every rank
    ends with the calibration one process would fit on the union of the shards, whatever the
    number of ranks:

    1. Before streaming the ranks compare their filter layouts and calibration settings; a
       mismatch raises ``ValueError`` on every rank.
    2. An exception on one rank while streaming fails every rank (``RuntimeError`` naming
       the rank); a rank that dies makes the merge fail on the others.
    3. Z-score: float64 moments merged with Chan's rule. POT: local top-K candidates merged
       per filter, so thresholds and peaks are exactly the single-process ones; each rank
       fits the GPDs of its slice of filters (see :mod:`captum_ext.calibration.distributed`).

    Shard with :class:`captum_ext.distributed.ShardSampler` (``indices[rank::world]``). A
    :class:`~torch.utils.data.DistributedSampler` works too: the examples it repeats to pad
    the shards (``drop_last=False``) are dropped, so each example counts once.

    The papers use the **true label** as target; ``target=None`` falls back to the predicted
    class.

    On GPUs with TF32 (Ampere and later), PyTorch runs cuDNN convolutions in TF32 by default,
    and profiles then carry TF32 rounding: on an H100 the ResNet-18 profiles differed from a
    float32 batch-1 loop by up to 6 % of the largest profile, against 1e-7 with
    ``torch.backends.cudnn.allow_tf32 = False``, at a lower throughput
    (``benchmarks/bench_parameter_saliency.py --resnet50 --device cuda [--no-tf32]`` measures
    both). This class does not change that global setting; set it for float32 profiles.

    Args:
        model: A model returning ``(N, n_classes)`` logits.
        layers: ``None`` (every ``nn.Conv2d``, Levin et al.'s choice, incl. ResNet downsample
            convs), one module (``attribute`` returns one tensor) or a list of modules (a list of
            tensors, one per listed layer in the order given). Conv1d/2d/3d, ConvTranspose
            (groups=1), Linear and MultiheadAttention.
        device_ids: Passed to :class:`captum.attr.LayerAttribution` (DataParallel models);
            third positional argument, as in Captum's layer classes.
        loss_fn: Keyword-only. ``loss_fn(outputs, target) -> (N,)`` per-example losses;
            default cross-entropy with ``reduction="none"``.

    Examples:
        >>> ps = ParameterSaliency(model)                     # every Conv2d
        >>> ps.fit(val_loader, ZScoreCalibration())
        >>> top = ps.rank(x_wrong, target=y_true, k=10)       # (N, 10) flat filter indices
        >>> ps.filters.lookup(int(top[0, 0]))                 # ('layer4.1.conv2', 'weight', ...)
    """

    def __init__(
        self,
        model: nn.Module,
        layers: nn.Module | list[nn.Module] | None = None,
        device_ids: list[int] | None = None,
        *,
        loss_fn: LossFn | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if isinstance(model, torch.jit.ScriptModule):
            raise TypeError(
                "model must be an eager nn.Module, got a TorchScript module: ParameterSaliency "
                "finds filters by layer type and takes per-example parameter gradients with "
                "torch.func and hooks, which scripted modules do not support; pass the model "
                "before torch.jit.script / torch.jit.trace"
            )
        if layers is not None and not isinstance(layers, (nn.Module, list, tuple)):
            raise TypeError(
                f"layers must be a module, a list of modules or None, got {type(layers).__name__}"
            )
        if device_ids is not None and (
            not isinstance(device_ids, list)
            or not all(isinstance(d, int) and not isinstance(d, bool) for d in device_ids)
        ):
            raise TypeError(f"device_ids must be None or a list of ints, got {device_ids!r}")
        if loss_fn is not None and not callable(loss_fn):
            raise TypeError(
                f"loss_fn must be callable (outputs, target) -> per-example losses, got "
                f"{type(loss_fn).__name__}"
            )
        self._single = isinstance(layers, nn.Module)
        selected: list[nn.Module]
        if layers is None:
            selected = default_layers(model)
        elif isinstance(layers, nn.Module):
            selected = [layers]
        else:
            selected = list(layers)
        if not selected:
            raise ValueError("layers must select at least one layer, got an empty list")
        if not all(isinstance(m, nn.Module) for m in selected):
            raise TypeError("layers must hold nn.Module objects (submodules of the model)")
        #: the layers as the user listed them (order and repeats kept), one result each
        self._listed = selected
        LayerAttribution.__init__(self, model, layers if self._single else selected, device_ids)
        GradientAttribution.__init__(self, model)
        self.model = model
        self.filters = FilterTable(model, selected)
        self.loss_fn: LossFn = loss_fn if loss_fn is not None else default_loss
        self.calibration: Calibration | None = None
        self._fit_context: DistContext | None = None
        self.last_fit_info: dict[str, Any] = {}

    @classmethod
    def get_name(cls) -> str:
        """Readable name used in progress bars and reports."""
        return "ParameterSaliency"

    def layout(self) -> Layout:
        """The filter layout (layer names, counts, hash) calibrations are checked against."""
        t = self.filters
        return Layout(t.layer_names, t.layer_counts, t.layout_hash())

    # ------------------------------------------------------------------ profiles
    @log_usage()
    def attribute(
        self,
        inputs: TensorOrTupleOfTensorsGeneric,
        target: TargetType = None,
        additional_forward_args: Any = None,
        internal_batch_size: int | None = None,
        method: Literal["auto", "hooks", "func"] = "auto",
        show_progress: bool = False,
    ) -> Tensor | list[Tensor]:
        """Raw filter profiles, exact per example.

        Args:
            inputs: A tensor or tuple of tensors, batch on dim 0.
            target: Class per example (int, list, or ``(N,)`` tensor); ``None`` uses the
                predicted class (the papers use the true label).
            additional_forward_args: Extra forward arguments (tensors with batch dim N are
                treated per example).
            internal_batch_size: Examples per chunk (bounds memory; results do not depend on it).
            method: ``"auto"`` (hooks if every layer is Conv2d/Linear), ``"hooks"`` or ``"func"``.
            show_progress: Show a progress bar over chunks.

        Returns:
            A tensor ``(N, n_filters_of_layer)`` for a single layer, else a list of them, one
            per listed layer, in the order given (a layer listed twice appears twice), as Captum's
            layer methods return. The flat order of :meth:`profiles`, calibrations and
            rankings is ``named_modules()`` order without repeats (see :attr:`filters`).
        """
        prof = self.profiles(
            inputs, target, additional_forward_args, internal_batch_size, method, show_progress
        )
        table = self.filters
        by_layer = {id(m): sl for m, sl in zip(table.layers, table.layer_slices())}
        parts = [prof[:, by_layer[id(m)]] for m in self._listed]
        return parts[0] if self._single else parts

    def profiles(
        self,
        inputs: TensorOrTupleOfTensorsGeneric,
        target: TargetType = None,
        additional_forward_args: Any = None,
        internal_batch_size: int | None = None,
        method: Literal["auto", "hooks", "func"] = "auto",
        show_progress: bool = False,
    ) -> Tensor:
        """All selected filters' raw profiles as one ``(N, n_filters)`` tensor (flat order)."""
        inputs = format_inputs(inputs)
        afa = _format_additional_forward_args(additional_forward_args)
        n = _batch_size(inputs)
        chunk = _chunk(internal_batch_size, n)
        if method not in ("auto", "hooks", "func"):
            raise ValueError(f"method must be 'auto', 'hooks' or 'func', got {method!r}")
        use_hooks = can_use_hooks(self.filters) if method == "auto" else method == "hooks"
        if use_hooks and not can_use_hooks(self.filters):
            raise ValueError("method='hooks' supports Conv2d and Linear layers only; use 'func'")
        weights = [
            self.model.get_parameter(_full(b.module_name, b.param_name))
            for bl in self.filters.blocks
            for b in bl
        ]
        bar = (
            progress(desc=f"{self.get_name()} attribution", total=-(-n // chunk))
            if show_progress
            else NullProgress()
        )
        out = []
        try:
            with saliency_state(self.model, weights), torch.enable_grad():
                y = self._targets(target, n, inputs, afa, chunk)
                for s, e in chunks(n, chunk):
                    xs = tuple(x[s:e] for x in inputs)
                    a = select_args(afa, slice(s, e), n)
                    ys = y[s:e]
                    if use_hooks:
                        p = hooks_profiles(self.model, self.filters, xs, ys, a, self.loss_fn)
                    else:
                        p = func_profiles(self.model, self.filters, xs, ys, a, self.loss_fn)
                    out.append(p.detach())
                    bar.update()
        finally:
            bar.close()
        return torch.cat(out)

    def _targets(
        self, target: TargetType, n: int, inputs: tuple[Tensor, ...], afa: Any, chunk: int
    ) -> Tensor:
        dev = inputs[0].device
        if target is None:
            with torch.no_grad():
                preds = [
                    _run_forward(
                        self.model,
                        tuple(x[s:e] for x in inputs),
                        None,
                        select_args(afa, slice(s, e), n),
                    ).argmax(1)
                    for s, e in chunks(n, chunk)
                ]
            return torch.cat(preds)
        return class_index_targets(target, n, dev)

    # ------------------------------------------------------------------ calibration
    def fit(
        self,
        reference_loader: Iterable,
        calibration: Calibration | None = None,
        show_progress: bool = False,
        internal_batch_size: int | None = None,
        n_total: int | None = None,
        process_group: Any = None,
        distributed: bool | None = None,
    ) -> Calibration:
        """Stream a reference set once into ``calibration`` (default :class:`ZScoreCalibration`).

        Inside a ``torch.distributed`` job (e.g. under ``torchrun``) each rank streams its own
        shard and every rank ends with the calibration one process would fit on the union of
        the shards (how, and how to shard: *Distributed fit* in the class docstring).

        Args:
            reference_loader: Iterable of ``(x, y, ...)`` batches (or bare ``x``: predicted
                class), this rank's shard in a distributed job.
            calibration: ``ZScoreCalibration()`` or ``POTCalibration(level=0.9)``.
            show_progress: Progress bar over batches.
            internal_batch_size: Chunk size for the profiles.
            n_total: Number of reference examples over all ranks, which bounds POT's running
                top-K (memory ``F x K``). Default: inferred from a ``DistributedSampler`` or
                ``ShardSampler`` (the whole dataset), else the sum of the ranks'
                ``len(reference_loader.dataset)``; unknown means every value is kept. Too large
                only costs memory; too small raises ``ValueError``.
            process_group: The ``torch.distributed`` group (default: the default group).
            distributed: ``None``: merge across ranks iff ``torch.distributed`` is initialized
                with several processes; ``False``: fit this rank's data alone; ``True``: require
                a process group.

        Returns:
            The fitted calibration (also stored as ``self.calibration``); identical on every
            rank. ``self.last_fit_info`` records the world size, the examples seen here and in
            all, the seconds spent streaming and merging, and the bytes this rank sent and
            received.

        Raises:
            ValueError: an empty loader, non-finite profiles, too few examples, ranks that
                disagree about the layout or the calibration.

        Examples:
            >>> # torchrun --nproc-per-node 2 fit.py  (each rank runs the same code)
            >>> dist.init_process_group("gloo")
            >>> loader = DataLoader(ds, batch_size=64, sampler=ShardSampler(ds))
            >>> cal = ps.fit(loader, POTCalibration(level=0.9))
            >>> ps.save_calibration("pot.pt")   # written by rank 0 only
        """
        cal, ctx, limit = self._begin_fit(
            reference_loader, calibration, n_total, process_group, distributed
        )
        t0 = time.perf_counter()
        seen = self._stream(reference_loader, cal, ctx, limit, internal_batch_size, show_progress)
        t1 = time.perf_counter()
        _merge(cal, ctx)
        self._store_fit(cal, ctx, seen, t1 - t0, t1)
        return cal

    def _begin_fit(
        self,
        reference_loader: Iterable,
        calibration: Calibration | None,
        n_total: int | None,
        process_group: Any,
        distributed: bool | None,
    ) -> tuple[Calibration, DistContext | None, int | None]:
        """Validation and setup of :meth:`fit`, before any example is streamed.

        Checks the arguments, finds the distributed context (the ranks compare their layouts
        and calibration settings there) and begins the calibration on this layout and the
        announced reference size.

        Returns:
            ``(calibration, context, limit)``: the calibration to fill, the distributed context
            (None: one process) and how many examples this rank keeps (None: all of them).
        """
        cal = calibration if calibration is not None else ZScoreCalibration()
        if not isinstance(cal, Calibration):
            raise TypeError(f"calibration must be a Calibration, got {type(cal).__name__}")
        if n_total is not None and (not isinstance(n_total, int) or n_total < 1):
            raise ValueError(f"n_total must be a positive int or None, got {n_total!r}")
        ctx = get_context(process_group, distributed)
        local_size, limit = reference_size(reference_loader, n_total)
        layout = self.layout()
        announced: int | None
        if ctx is not None:
            announced = global_size(check_same_setup(ctx, layout, cal, local_size))
        else:
            announced = None if local_size is None else local_size[1]
        cal.begin(layout, announced)
        return cal, ctx, limit

    def _stream(
        self,
        reference_loader: Iterable,
        cal: Calibration,
        ctx: DistContext | None,
        limit: int | None,
        internal_batch_size: int | None,
        show_progress: bool,
    ) -> int:
        """The accumulation loop of :meth:`fit`: each batch's profiles into ``cal``.

        Runs inside :func:`~captum_ext.distributed.agree`, so an exception on one rank fails
        every rank. Stops after ``limit`` examples (the ones a ``DistributedSampler`` repeats
        are dropped). Returns the number of examples this rank streamed.
        """
        seen = 0
        bar = (
            progress(desc=f"{self.get_name()} fit", total=None) if show_progress else NullProgress()
        )
        with agree(ctx, "ParameterSaliency.fit"):
            try:
                for batch in reference_loader:
                    if isinstance(batch, (list, tuple)):
                        x, y = batch[0], (batch[1] if len(batch) > 1 else None)
                    else:
                        x, y = batch, None
                    if limit is not None:  # drop the examples a DistributedSampler repeats
                        keep = min(_batch_size(_format_tensor_into_tuples(x)), limit - seen)
                        if keep <= 0:
                            break
                        x = tuple(t[:keep] for t in x) if isinstance(x, tuple) else x[:keep]
                        y = None if y is None else y[:keep]
                    p = self.profiles(x, y, internal_batch_size=internal_batch_size)
                    cal.update(p)
                    seen += p.shape[0]
                    bar.update()
            finally:
                bar.close()
            if seen == 0 and ctx is None:
                raise ValueError("reference_loader is empty: fit needs reference examples")
        return seen

    def _store_fit(
        self,
        cal: Calibration,
        ctx: DistContext | None,
        seen: int,
        stream_seconds: float,
        merged_from: float,
    ) -> None:
        """Keep the fitted calibration and its context, and record ``last_fit_info``.

        ``merged_from`` is the ``time.perf_counter()`` at which the merge began.
        """
        assert cal.n_total is not None  # finalize sets the reference size
        self.calibration = cal
        self._fit_context = ctx
        self.last_fit_info = {
            "world_size": 1 if ctx is None else ctx.world_size,
            "rank": 0 if ctx is None else ctx.rank,
            "n_local": seen,
            "n_total": int(cal.n_total),
            "stream_seconds": stream_seconds,
            "merge_seconds": time.perf_counter() - merged_from,
            "bytes_sent": 0 if ctx is None else ctx.bytes_sent,
            "bytes_received": 0 if ctx is None else ctx.bytes_received,
        }

    def _calibration(self) -> Calibration:
        if self.calibration is None or not self.calibration.fitted:
            raise ValueError("no fitted calibration: call fit() or load_calibration() first")
        assert self.calibration.layout is not None  # fitted: begin() or load() set it
        self.calibration.layout.check(self.layout())
        return self.calibration

    def score(
        self, inputs: TensorOrTupleOfTensorsGeneric, target: TargetType = None, **kwargs: Any
    ) -> Any:
        """Calibrated scores: z ``(N, F)`` float64, or a :class:`POTScore` for POT."""
        cal = self._calibration()
        return cal.score(self.profiles(inputs, target, **kwargs))

    def rank(
        self,
        inputs: TensorOrTupleOfTensorsGeneric,
        target: TargetType = None,
        k: int | None = None,
        additional_forward_args: Any = None,
        internal_batch_size: int | None = None,
        **rank_kwargs: Any,
    ) -> Tensor | list[Tensor]:
        """Flat filter rankings, most salient first.

        Z-score: an ``(N, k)`` LongTensor (``rank_kwargs``: ``rank_by``, ``order``,
        ``generator``). POT: a list of 1-D LongTensors over exceeding filters only
        (``rank_kwargs``: ``rank_all``).
        """
        cal = self._calibration()
        prof = self.profiles(inputs, target, additional_forward_args, internal_batch_size)
        return cal.rank(prof, k=k, **rank_kwargs)

    def save_calibration(self, path: str | os.PathLike) -> None:
        """Save the fitted calibration atomically (tensors only, versioned, with the layout).

        After a distributed :meth:`fit` only rank 0 writes (every rank holds the same
        calibration) and the other ranks return at once. This is not a collective: call it on
        every rank or on rank 0 alone.
        """
        cal = self._calibration()
        ctx = self._fit_context
        if ctx is None or ctx.rank == 0:
            cal.save(path)

    def load_calibration(self, path: str | os.PathLike) -> Calibration:
        """Load a saved calibration; ValueError if it was fitted on another layer layout."""
        self.calibration = Calibration.load(path, layout=self.layout())
        return self.calibration

    # ------------------------------------------------------------------ summaries
    def group_of(self, groups: GroupSpec = None) -> list[str]:
        """Group name of every flat filter (see :meth:`group_summary`)."""
        names = self.filters.module
        if callable(groups):
            return [groups(m) for m in names]
        if isinstance(groups, dict):
            out = []
            for m in names:
                hits = [p for p in groups if m == p or m.startswith(p + ".") or p == ""]
                out.append(groups[max(hits, key=len)] if hits else m)
            return out
        if groups is not None:
            raise TypeError(f"groups must be None, a dict or a callable, got {type(groups)}")
        if any(m.startswith("layer1.") for m in names):
            return [resnet_group(m) for m in names]
        return list(names)

    def group_summary(
        self, rankings: Tensor | list[Tensor], groups: GroupSpec = None, k: int | None = None
    ) -> dict[str, float]:
        """Percentage of top-``k`` ranked filters falling in each group (paper Tables 1-2).

        Args:
            rankings: ``(N, m)`` tensor or list of 1-D rankings (flat filter indices).
            groups: ``None``: ResNet stages by name (conv1, conv2_x..conv5_x, downsample convs
                included) for torchvision-style ResNets, else one group per layer; a dict
                ``{name prefix: group}`` (longest prefix wins); or ``callable(name) -> group``.
            k: Count the first ``k`` of each ranking (default: all of it).

        Returns:
            ``{group: percent}`` over ``sum(min(k, len(ranking)))`` entries (sums to 100), with
            every group present (0 if never ranked), in flat-index order of first appearance.
        """
        gof = self.group_of(groups)
        order = list(dict.fromkeys(gof))
        counts = dict.fromkeys(order, 0)
        rows = list(rankings) if not isinstance(rankings, Tensor) else list(rankings.unbind(0))
        total = 0
        for r in rows:
            r = r[:k] if k is not None else r
            for f in r.tolist():
                counts[gof[f]] += 1
                total += 1
        if total == 0:
            raise ValueError("rankings are empty: nothing to summarise")
        return {g: 100.0 * c / total for g, c in counts.items()}

    # ------------------------------------------------------------------ input space
    def input_saliency(
        self,
        inputs: Tensor,
        target: TargetType = None,
        k: int = 10,
        boost: float = 100.0,
        compare_random: bool = False,
        calibrated: bool = True,
        noise_iters: int = 1,
        noise_percent: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Levin et al.'s projection of parameter saliency back to input space.

        For each example: the (z-scored) profile ``z(x)``, differentiable in ``x``; the target
        ``t = z.detach()`` with its top-``k`` filters (or ``k`` random ones) multiplied by
        ``boost``; returns ``d cos(z(x), t) / dx`` (double backprop), signed, shaped like
        ``inputs``, averaged over ``noise_iters`` copies ``(1 - p) x + p N(0, 1)``.

        Requires a fitted calibration (its reference mean/std) unless ``calibrated=False``;
        Conv2d/Linear layers only.
        """
        self._check_saliency_args(inputs, k, boost, noise_iters, noise_percent, generator)
        mean, std = self._reference_moments(inputs) if calibrated else (None, None)
        generator = default_generator(generator, inputs.device)
        n = inputs.shape[0]
        weights = [
            self.model.get_parameter(_full(b.module_name, b.param_name))
            for bl in self.filters.blocks
            for b in bl
        ]
        out = torch.zeros_like(inputs)
        with saliency_state(self.model, weights), torch.enable_grad():
            y = self._targets(target, n, (inputs,), None, n)
            for i in range(n):
                for _ in range(noise_iters):
                    x = inputs[i : i + 1].detach()
                    if noise_percent:
                        noise = torch.randn(x.shape, generator=generator, device=x.device)
                        x = (1 - noise_percent) * x + noise_percent * noise
                    x = x.clone().requires_grad_(True)
                    prof = hooks_profiles(
                        self.model, self.filters, (x,), y[i : i + 1], None, self.loss_fn, True
                    )
                    # mean and std are set iff calibrated
                    z = (prof - mean) / std if mean is not None and std is not None else prof
                    if compare_random:
                        idx = torch.randperm(z.shape[1], generator=generator, device=x.device)[:k]
                    else:
                        idx = z.detach()[0].topk(k).indices
                    t = z.detach().clone()
                    t[0, idx] = t[0, idx] * boost
                    sim = F.cosine_similarity(z, t, dim=1).sum()
                    (g,) = torch.autograd.grad(sim, x)
                    out[i] += g[0] / noise_iters
        return out

    def _check_saliency_args(
        self,
        inputs: Any,
        k: Any,
        boost: Any,
        noise_iters: Any,
        noise_percent: Any,
        generator: Any,
    ) -> None:
        """Validate the arguments of :meth:`input_saliency` (and that its layers are supported)."""
        if not isinstance(inputs, Tensor):
            raise TypeError("input_saliency takes a single input tensor")
        if not can_use_hooks(self.filters):
            raise ValueError("input_saliency supports Conv2d and Linear layers only")
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= self.filters.n_filters:
            raise ValueError(f"k must be an int in [1, {self.filters.n_filters}], got {k!r}")
        if (
            isinstance(boost, bool)
            or not isinstance(boost, (int, float))
            or not (math.isfinite(boost) and boost > 0)
        ):
            raise ValueError(f"boost must be a finite number > 0, got {boost!r}")
        if isinstance(noise_iters, bool) or not isinstance(noise_iters, int) or noise_iters < 1:
            raise ValueError(f"noise_iters must be an int >= 1, got {noise_iters!r}")
        if not isinstance(noise_percent, (int, float)) or not 0 <= noise_percent <= 1:
            raise ValueError(f"noise_percent must be a number in [0, 1], got {noise_percent!r}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(
                f"generator must be None or a torch.Generator, got {type(generator).__name__}"
            )
        if not inputs.is_floating_point() or not bool(torch.isfinite(inputs).all()):
            raise ValueError("inputs must be a finite floating-point tensor")

    def _reference_moments(self, inputs: Tensor) -> tuple[Tensor, Tensor]:
        """The calibration's reference mean and std (1 where at the floor), like ``inputs``."""
        cal = self._calibration()
        if not isinstance(cal, (ZScoreCalibration, POTCalibration)):
            raise ValueError("input_saliency needs a fitted z-score (or POT) calibration")
        assert cal.moments.mean is not None  # fitted: the moments hold data
        mean = cal.moments.mean.to(inputs.device, inputs.dtype)
        s = cal.moments.std()
        std = floored_std(s).to(inputs.device, inputs.dtype)
        return mean, std


def _merge(cal: Calibration, ctx: DistContext | None) -> None:
    """Finalize ``cal``: alone, or merged exactly across the ranks of ``ctx`` (a collective)."""
    if ctx is None:
        cal.finalize()
    else:
        cal.finalize_distributed(ctx)


def _full(module_name: str, param_name: str) -> str:
    return f"{module_name}.{param_name}" if module_name else param_name


def _batch_size(inputs: tuple[Tensor, ...]) -> int:
    if not inputs or not all(isinstance(x, Tensor) for x in inputs):
        raise TypeError("inputs must be a tensor or a tuple of tensors")
    n = inputs[0].shape[0] if inputs[0].dim() else 0
    if n == 0 or any(x.dim() == 0 or x.shape[0] != n for x in inputs):
        raise ValueError(
            "inputs must share a non-empty batch dim 0, got shapes "
            f"{[tuple(x.shape) for x in inputs]}"
        )
    for x in inputs:
        if x.is_floating_point() and not torch.isfinite(x).all():
            raise ValueError("inputs contain non-finite values (NaN or inf)")
    return n


def _chunk(internal_batch_size: int | None, n: int) -> int:
    size = check_batch_size(internal_batch_size)
    return n if size is None else size
