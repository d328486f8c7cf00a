"""Thin helpers over ``torch.distributed`` shared by the distributed fit and dataset runs.

:class:`ShardSampler` gives each rank ``indices[rank::world_size]`` of a dataset (no padding
repeats, unlike ``DistributedSampler``): use it for the reference data of
:meth:`captum_ext.attr.ParameterSaliency.fit` or any loader of your own under ``torchrun``. It is
also importable from :mod:`captum_ext.evaluation`, its earlier home.

The rest are no-op-free wrappers: callers first ask :func:`get_context` whether they run in a
multi-process job (``None`` means one process, and no collective is ever called). The wrappers
move tensors to the device the backend needs (CUDA for NCCL, CPU otherwise), count the bytes each
rank sends and receives (reported by the benchmarks), and :func:`agree` turns an exception on one
rank into an error on every rank instead of a hang in the next collective.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator, Sized
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import Sampler

__all__ = [
    "DistContext",
    "ShardSampler",
    "agree",
    "all_gather_object",
    "all_gather_rows",
    "all_gather_tensor",
    "all_to_all",
    "barrier",
    "get_context",
    "shard_indices",
]


@dataclass
class DistContext:
    """The process group a collective runs on, this process's rank and the traffic so far.

    Attributes:
        group: The ``torch.distributed`` process group (``None``: the default group).
        rank: Rank of this process in ``group``.
        world_size: Number of processes in ``group``.
        device: Where collective tensors must live (CUDA for NCCL, CPU for Gloo).
        bytes_sent: Payload bytes this rank contributed to collectives.
        bytes_received: Payload bytes this rank received from collectives.
    """

    group: Any
    rank: int
    world_size: int
    device: torch.device
    bytes_sent: int = 0
    bytes_received: int = 0
    ops: dict[str, int] = field(default_factory=dict)

    def _count(self, op: str, sent: int, received: int) -> None:
        self.bytes_sent += int(sent)
        self.bytes_received += int(received)
        self.ops[op] = self.ops.get(op, 0) + 1


def get_context(process_group: Any = None, distributed: bool | None = None) -> DistContext | None:
    """The distributed context, or ``None`` when running as a single process.

    Args:
        process_group: Group to use (``None``: the default group).
        distributed: ``None`` (default): distributed iff ``torch.distributed`` is initialized
            with more than one process. ``True``: require an initialized process group (also
            with one process). ``False``: never (each process works alone).

    Raises:
        ValueError: ``distributed=True`` without an initialized process group.
    """
    if distributed is not None and not isinstance(distributed, bool):
        raise TypeError(f"distributed must be None, True or False, got {distributed!r}")
    if distributed is False:
        return None
    ready = dist.is_available() and dist.is_initialized()
    if not ready:
        if distributed:
            raise ValueError(
                "distributed=True but torch.distributed is not initialized: call "
                "torch.distributed.init_process_group() first (torchrun sets up the environment)"
            )
        return None
    world = dist.get_world_size(process_group)
    if world == 1 and not distributed:
        return None
    backend = str(dist.get_backend(process_group)).lower()
    if backend == "nccl":
        device = torch.device("cuda", torch.cuda.current_device())
    else:
        device = torch.device("cpu")
    return DistContext(process_group, dist.get_rank(process_group), world, device)


def _nbytes(t: Tensor) -> int:
    return t.numel() * t.element_size()


def all_gather_object(ctx: DistContext, obj: Any) -> list[Any]:
    """``all_gather_object``: every rank's (picklable, small) ``obj``, in rank order."""
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj, group=ctx.group)
    size = len(pickle.dumps(obj))
    ctx._count("all_gather_object", size, sum(len(pickle.dumps(o)) for o in out) - size)
    return out


def all_gather_tensor(ctx: DistContext, t: Tensor) -> list[Tensor]:
    """Every rank's tensor of the same shape and dtype, in rank order, on ``t``'s device."""
    src = t.detach().to(ctx.device).contiguous()
    out = [torch.empty_like(src) for _ in range(ctx.world_size)]
    dist.all_gather(out, src, group=ctx.group)
    n = _nbytes(src)
    ctx._count("all_gather", n, n * (ctx.world_size - 1))
    return [o.to(t.device) for o in out]


def all_gather_rows(ctx: DistContext, t: Tensor) -> list[Tensor]:
    """Every rank's tensor whose first dimension may differ between ranks, in rank order."""
    sizes = [int(s) for s in all_gather_tensor(ctx, torch.tensor([t.shape[0]]))]
    width = max(sizes)
    pad = torch.zeros((width - t.shape[0], *t.shape[1:]), dtype=t.dtype, device=t.device)
    full = all_gather_tensor(ctx, torch.cat([t, pad]))
    return [g[:s] for g, s in zip(full, sizes)]


def all_to_all(ctx: DistContext, chunks: list[Tensor]) -> list[Tensor]:
    """Send ``chunks[r]`` to rank ``r``; returns what every rank sent to this one, in rank order.

    All chunks on a rank must have the same dtype; their shapes may differ between destinations
    but rank ``s``'s ``chunks[r]`` must have the shape rank ``r`` expects (callers pad).
    """
    if len(chunks) != ctx.world_size:
        raise ValueError(f"all_to_all needs {ctx.world_size} chunks, got {len(chunks)}")
    dev = chunks[0].device
    send = [c.detach().to(ctx.device).contiguous() for c in chunks]
    recv = [torch.empty_like(send[ctx.rank]) for _ in range(ctx.world_size)]
    dist.all_to_all(recv, send, group=ctx.group)
    sent = sum(_nbytes(c) for r, c in enumerate(send) if r != ctx.rank)
    got = sum(_nbytes(c) for r, c in enumerate(recv) if r != ctx.rank)
    ctx._count("all_to_all", sent, got)
    return [c.to(dev) for c in recv]


def barrier(ctx: DistContext) -> None:
    """Wait until every rank gets here (a small all-gather, so it also works on NCCL)."""
    all_gather_tensor(ctx, torch.zeros(1))


@contextmanager
def agree(ctx: DistContext | None, what: str) -> Iterator[None]:
    """Run a block on every rank, then make every rank fail if any rank's block raised.

    Without this, a rank that raises skips the next collective and the others wait in it until
    the process group's timeout. Here the failing rank re-raises its own exception and every
    other rank raises ``RuntimeError`` naming the failed rank and its error. A rank that dies
    (killed, out of memory) makes the collective itself fail on the others.

    Args:
        ctx: The distributed context (``None``: single process, the block just runs).
        what: What the block does, for the error message.
    """
    if ctx is None:
        yield
        return
    error: Exception | None = None
    try:
        yield
    except Exception as err:  # noqa: BLE001 - reported to every rank, then re-raised
        error = err
    msg = None if error is None else f"{type(error).__name__}: {error}"
    status = all_gather_object(ctx, msg)
    if error is not None:
        raise error
    failed = [(r, m) for r, m in enumerate(status) if m is not None]
    if failed:
        ranks = ", ".join(str(r) for r, _ in failed)
        raise RuntimeError(f"{what} failed on rank {ranks}: {failed[0][1]}")


def shard_indices(n: int, rank: int, world_size: int) -> range:
    """Indices ``rank, rank + world_size, ...`` below ``n``: each example on exactly one rank."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size), got rank={rank}, world={world_size}")
    return range(rank, n, world_size)


class ShardSampler(Sampler[int]):
    """Sample ``indices[rank::world_size]`` of a dataset: every example on exactly one rank.

    Unlike :class:`torch.utils.data.DistributedSampler` (``drop_last=False``), shards are never
    padded with repeated examples, which would bias statistics; they may differ in length by one.

    Args:
        data_source: A sized dataset, or its length.
        rank: This process's rank (default: ``torch.distributed.get_rank()``, or 0).
        world_size: Number of processes (default: ``torch.distributed.get_world_size()``, or 1).

    Examples:
        >>> loader = DataLoader(ds, batch_size=64, sampler=ShardSampler(ds))
    """

    def __init__(
        self, data_source: Sized | int, rank: int | None = None, world_size: int | None = None
    ) -> None:
        n = data_source if isinstance(data_source, int) else len(data_source)
        ready = dist.is_available() and dist.is_initialized()
        if world_size is None:
            world_size = dist.get_world_size() if ready else 1
        if rank is None:
            rank = dist.get_rank() if ready else 0
        self.indices = shard_indices(int(n), int(rank), int(world_size))
        self.n_total, self.rank, self.world_size = int(n), int(rank), int(world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
