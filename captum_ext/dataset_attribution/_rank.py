"""One rank's share of :func:`~captum_ext.dataset_attribution.attribute_dataset`.

:class:`RankRun` finds this rank's unfinished chunks (missing, unreadable or not of this run),
removes temporary files left by a crash while saving them, then attributes them batch by batch
and saves each chunk atomically. Batches never straddle two chunks, so a chunk is either saved
whole or not at all.
"""

from __future__ import annotations

import contextlib
import inspect
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Union

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from captum_ext._compat import NullProgress, progress
from captum_ext._io import atomic_torch_save, remove_stale_temp_files, safe_torch_load
from captum_ext.dataset_attribution.shards import (
    FORMAT,
    VERSION,
    chunk_bounds,
    chunk_name,
    chunk_problem,
    manifest_fingerprint,
)

TargetSpec = Union[str, int, Callable[[Any], Any], None]

_NO_LABEL = object()

#: Seed of the generator of the loader a rank iterates (the workers' base seed comes from it).
_LOADER_SEED = 0


@dataclass
class Source:
    """The dataset and how to batch it (taken from a DataLoader, or defaults)."""

    dataset: Any
    collate_fn: Callable
    batch_size: int
    loader_kwargs: dict = field(default_factory=dict)


@dataclass
class _Chunk:
    """The batches of one chunk computed so far."""

    index: int
    start: int
    stop: int
    attributions: list[tuple[Tensor, ...]] = field(default_factory=list)
    targets: list[Tensor | None] = field(default_factory=list)
    deltas: list[Tensor] = field(default_factory=list)
    is_tuple: bool | None = None


class RankRun:
    """One rank's share of a run: find unfinished chunks, compute and save them."""

    def __init__(
        self,
        method: Any,
        source: Source,
        out: Path,
        manifest: dict,
        target: TargetSpec,
        kwargs: dict,
        device: torch.device | None,
        rank: int,
        world: int,
        seed: int | None = None,
    ) -> None:
        self.method, self.source, self.out = method, source, out
        self.seed = seed
        self.takes_generator = seed is not None and _takes_generator(method)
        self.target, self.kwargs, self.device = target, kwargs, device
        self.n, self.chunk_size = manifest["n"], manifest["chunk_size"]
        self.fingerprint = manifest_fingerprint(manifest)
        self.with_delta = bool(kwargs.get("return_convergence_delta", False))
        n_chunks = -(-self.n // self.chunk_size)
        self.mine = range(rank, n_chunks, world)
        self.rank = rank

    def run(self, show_progress: bool) -> None:
        self._remove_temp_files()
        pending = self._pending()
        plan = [
            (c, s, min(s + self.source.batch_size, stop))
            for c in pending
            for start, stop in [chunk_bounds(c, self.n, self.chunk_size)]
            for s in range(start, stop, self.source.batch_size)
        ]
        if not plan:
            return
        loader = DataLoader(
            self.source.dataset,
            batch_sampler=[list(range(s, e)) for _, s, e in plan],
            collate_fn=self.source.collate_fn,
            # Iterating a loader draws its workers' base seed from this generator; without
            # one, from the global RNG, which a run (or one that raises midway) must leave as
            # it found it. A fixed seed also gives every run and resume the same worker seeds.
            generator=torch.Generator().manual_seed(_LOADER_SEED),
            **self.source.loader_kwargs,
        )
        bar = (
            progress(
                desc=f"attribute_dataset (rank {self.rank})", total=sum(e - s for _, s, e in plan)
            )
            if show_progress
            else NullProgress()
        )
        chunk: _Chunk | None = None
        try:
            for (c, s, e), batch in zip(plan, loader):
                if chunk is None or chunk.index != c:
                    chunk = _Chunk(c, *chunk_bounds(c, self.n, self.chunk_size))
                with self._seeded(c, s, batch) as extra:
                    self._attribute(chunk, batch, e - s, extra)
                if e == chunk.stop:
                    self._save(chunk)
                bar.update(e - s)
        finally:
            bar.close()

    def _remove_temp_files(self) -> None:
        """Delete temp files left by a killed save of one of this rank's chunks.

        Temp files of live writers (another run on the same folder) are kept.
        """
        mine = set(self.mine)

        def is_mine(name: str) -> bool:
            if not (name.startswith(".chunk-") and name.endswith(".tmp")):
                return False
            try:
                return int(name[len(".chunk-") :].split(".", 1)[0]) in mine
            except ValueError:
                return False

        remove_stale_temp_files(self.out, is_mine)

    def _pending(self) -> list[int]:
        """This rank's chunks without a usable file; warns once about unusable files."""
        pending, problems = [], []
        for c in self.mine:
            path = self.out / chunk_name(c)
            if not path.exists():
                pending.append(c)
                continue
            try:
                problem = chunk_problem(
                    safe_torch_load(path), c, *chunk_bounds(c, self.n, self.chunk_size),
                    self.fingerprint,
                )  # fmt: skip
            except Exception as err:  # noqa: BLE001 - any unreadable file is recomputed
                problem = f"unreadable ({type(err).__name__})"
            if problem is not None:
                pending.append(c)
                problems.append(f"{path.name}: {problem}")
        if problems:
            warnings.warn(
                f"attribute_dataset: recomputing {len(problems)} chunk file(s) that are corrupt "
                f"or not of this run: {'; '.join(problems[:5])}"
                + (" ..." if len(problems) > 5 else ""),
                stacklevel=4,
            )
        return pending

    @contextlib.contextmanager
    def _seeded(self, chunk: int, start: int, batch: Any) -> Iterator[dict]:
        """With a seed: the batch of ids ``start ..`` of ``chunk`` draws from its own streams.

        The global torch RNG (CPU, and the inputs' CUDA device) is forked and seeded, and a
        method whose ``attribute`` takes ``generator`` gets a fresh generator, both seeded by
        ``(seed, chunk, start)``: a chunk recomputed on a resume or by another rank draws
        exactly what it drew the first time, whatever ran before it. Yields the extra keyword
        arguments of the batch's ``attribute`` call.
        """
        if self.seed is None:
            yield {}
            return
        state = np.random.SeedSequence([self.seed, chunk, start]).generate_state(2, np.uint32)
        batch_seed = int(state[0]) << 31 | int(state[1]) >> 1  # 63 bits, fits manual_seed
        device = _batch_device(batch) if self.device is None else self.device
        cuda = []
        if device.type == "cuda":
            cuda = [torch.cuda.current_device() if device.index is None else device.index]
        with torch.random.fork_rng(devices=cuda):
            # (not torch.manual_seed: it would also reseed CUDA devices the fork does not restore)
            torch.default_generator.manual_seed(batch_seed)
            for index in cuda:
                torch.cuda.default_generators[index].manual_seed(batch_seed)
            yield (
                {"generator": torch.Generator(device=device).manual_seed(batch_seed)}
                if self.takes_generator
                else {}
            )

    def _inputs_and_target(self, batch: Any) -> tuple[Any, Any]:
        if isinstance(batch, Tensor):
            inputs, label = batch, _NO_LABEL
        elif isinstance(batch, (list, tuple)) and len(batch) > 0:
            first = batch[0]
            if (
                isinstance(first, (list, tuple))
                and first
                and all(isinstance(x, Tensor) for x in first)
            ):
                first = tuple(first)
            elif not isinstance(first, Tensor):
                raise TypeError(
                    "data: the first element of each item must be the inputs (a tensor or a "
                    f"tuple of tensors), got a batch whose first element is {type(first).__name__}"
                )
            inputs, label = first, batch[1] if len(batch) > 1 else _NO_LABEL
        else:
            raise TypeError(
                "data: items must be a tensor of inputs or a tuple (inputs, label, ...), got a "
                f"batch of type {type(batch).__name__}; pass a DataLoader whose collate_fn "
                "returns (inputs, label)"
            )
        if self.target == "label":
            if label is _NO_LABEL:
                raise ValueError(
                    "target='label' but the items of data have no label (they are not "
                    "(inputs, label, ...) tuples); pass target=None (the method's default), "
                    "an int or a callable"
                )
            target = label
        elif callable(self.target):
            target = self.target(batch)
        else:
            target = self.target
        if self.device is not None:
            inputs = (
                tuple(x.to(self.device) for x in inputs)
                if isinstance(inputs, tuple)
                else inputs.to(self.device)
            )
            if isinstance(target, Tensor):
                target = target.to(self.device)
        return inputs, target

    def _attribute(self, chunk: _Chunk, batch: Any, n: int, extra: dict) -> None:
        inputs, target = self._inputs_and_target(batch)
        result = self.method.attribute(inputs, target=target, **self.kwargs, **extra)
        delta = None
        if self.with_delta:
            if not (isinstance(result, tuple) and len(result) == 2):
                raise ValueError(
                    "method: with return_convergence_delta=True, attribute must return "
                    f"(attributions, delta), got {type(result).__name__}"
                )
            result, delta = result
            if not (isinstance(delta, Tensor) and delta.dim() > 0 and delta.shape[0] == n):
                raise ValueError(
                    f"method: the convergence delta must have one row per example ({n}), got "
                    f"{tuple(delta.shape) if isinstance(delta, Tensor) else type(delta).__name__}"
                )
            chunk.deltas.append(delta.detach().cpu())
        is_tuple = isinstance(result, tuple)
        tensors = result if is_tuple else (result,)
        if not tensors or not all(
            isinstance(t, Tensor) and t.dim() > 0 and t.shape[0] == n for t in tensors
        ):
            shapes = [tuple(t.shape) if isinstance(t, Tensor) else type(t) for t in tensors]
            raise ValueError(
                "method: attribute must return a tensor or a tuple of tensors with the batch "
                f"({n} examples) on dim 0, got {shapes}"
            )
        if chunk.is_tuple is not None and chunk.is_tuple != is_tuple:
            raise ValueError(
                "method: attribute returned a tensor for some batches, a tuple for others"
            )
        chunk.is_tuple = is_tuple
        chunk.attributions.append(tuple(t.detach().cpu() for t in tensors))
        chunk.targets.append(_class_targets(target, n))

    def _save(self, chunk: _Chunk) -> None:
        parts = chunk.attributions
        attrs = tuple(torch.cat([p[i] for p in parts]) for i in range(len(parts[0])))
        bad = sum(int((~torch.isfinite(a)).sum()) for a in attrs if a.is_floating_point())
        if bad:
            total = sum(a.numel() for a in attrs)
            raise ValueError(
                f"attributions of chunk {chunk.index} (ids {chunk.start}..{chunk.stop - 1}) "
                f"contain {bad} non-finite values (NaN or inf) out of {total}; the chunk was not "
                "saved. Check these examples, the model's outputs and the method's settings"
            )
        targets = [t for t in chunk.targets if t is not None]
        has_targets = len(targets) == len(chunk.targets)
        record = {
            "format": FORMAT,
            "version": VERSION,
            "chunk": chunk.index,
            "fingerprint": self.fingerprint,
            "ids": torch.arange(chunk.start, chunk.stop),
            "attributions": attrs,
            "is_tuple": bool(chunk.is_tuple),
            "targets": torch.cat(targets) if has_targets else None,
            "deltas": torch.cat(chunk.deltas) if chunk.deltas else None,
        }
        atomic_torch_save(record, self.out / chunk_name(chunk.index))


def _takes_generator(method: Any) -> bool:
    """Whether ``method.attribute`` has a parameter named ``generator`` (not only ``**kwargs``)."""
    try:
        params = inspect.signature(method.attribute).parameters
    except (TypeError, ValueError):
        return False
    param = params.get("generator")
    return param is not None and param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY)


def _batch_device(batch: Any) -> torch.device:
    """The device of a collated batch: its first tensor not on the CPU (else the CPU)."""
    if isinstance(batch, Tensor):
        return batch.device
    if isinstance(batch, (list, tuple)):
        for item in batch:
            found = _batch_device(item)
            if found.type != "cpu":
                return found
    return torch.device("cpu")


def _class_targets(target: Any, n: int) -> Tensor | None:
    """One class index per example as a CPU LongTensor, or ``None`` if ``target`` is not that."""
    if isinstance(target, int) and not isinstance(target, bool):
        return torch.full((n,), target, dtype=torch.long)
    if isinstance(target, list) and len(target) == n:
        if all(isinstance(t, int) and not isinstance(t, bool) for t in target):
            return torch.tensor(target, dtype=torch.long)
    if isinstance(target, Tensor) and not (target.is_floating_point() or target.is_complex()):
        if target.dtype != torch.bool and target.dim() <= 1:
            if target.numel() == n and target.dim() == 1:
                return target.detach().cpu().long()
            if target.numel() == 1:
                return target.detach().cpu().long().reshape(1).expand(n).clone()
    return None
