"""How many reference examples a (possibly sharded) loader holds, for ParameterSaliency.fit.

POT's running top-K needs the reference size over all ranks in advance; a loader only knows its
own shard, or the whole dataset when it shards with a ``DistributedSampler``/``ShardSampler``.
"""

from __future__ import annotations

from collections.abc import Sized
from typing import Any

from torch.utils.data import DistributedSampler

from captum_ext.distributed import ShardSampler


def reference_size(loader: Any, n_total: int | None) -> tuple[tuple[str, int] | None, int | None]:
    """What this rank knows of the reference size, and how many of its examples to use.

    Returns ``(announced, limit)``: ``announced`` is ``("global", N)`` (the size over all ranks),
    ``("share", n)`` (this rank's part) or ``None``; ``limit`` is the number of examples of
    this rank's shard that are not padding repeats of a ``DistributedSampler`` (else ``None``).
    """
    if n_total is not None:
        return ("global", n_total), None
    sampler = getattr(loader, "sampler", None)
    if isinstance(sampler, DistributedSampler):
        # DistributedSampler.__init__ took len(dataset) already, so the dataset is sized
        assert isinstance(sampler.dataset, Sized)
        n = len(sampler.dataset)
        if sampler.drop_last:
            return ("global", sampler.num_samples * sampler.num_replicas), None
        return ("global", n), len(range(sampler.rank, n, sampler.num_replicas))
    if isinstance(sampler, ShardSampler):
        return ("global", sampler.n_total), None
    try:
        return ("share", len(loader.dataset)), None
    except (AttributeError, TypeError):
        return None, None


def global_size(announced: list[Any]) -> int | None:
    """The reference size over all ranks from every rank's :func:`reference_size` answer."""
    if any(a is None for a in announced):
        return None
    kinds = {a[0] for a in announced}
    if kinds == {"global"}:
        sizes = {a[1] for a in announced}
        if len(sizes) > 1:
            raise ValueError(f"the ranks announce different n_total values: {sorted(sizes)}")
        return sizes.pop()
    if kinds == {"share"}:
        return sum(a[1] for a in announced)
    return None
