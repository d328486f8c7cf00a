"""Workers of the distributed ``attribute_dataset`` tests, run by ``dist_launch.run_ranks``.

Every process builds the same data and model from a seed, so all ranks (and the test process)
agree. :class:`LoggedMethod` wraps a Captum method and appends the ids of the rows it attributes
to a log file, so a test can count which examples each run computed; it can also kill its
process (``os._exit``) or raise once it has attributed a given number of examples.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from captum.attr import IntegratedGradients, Saliency
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from captum_ext.dataset_attribution import attribute_dataset

N_FEATURES = 6
N_CLASSES = 3


def build(n: int, seed: int = 0) -> tuple[nn.Module, Tensor, Tensor]:
    """A tiny MLP and ``n`` random examples ``(X, y)``, identical in every process."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, N_FEATURES, generator=g)
    y = torch.randint(0, N_CLASSES, (n,), generator=g)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(N_FEATURES, 8), nn.Tanh(), nn.Linear(8, N_CLASSES)).eval()
    return model, x, y


def make_method(name: str, model: nn.Module) -> tuple[Any, dict]:
    """A Captum method and its ``attribute_kwargs`` by name."""
    if name == "saliency":
        return Saliency(model), {}
    if name == "ig":
        return IntegratedGradients(model), {"n_steps": 8, "baselines": torch.zeros(1, N_FEATURES)}
    raise ValueError(name)


def row_ids(x: Tensor, rows: Tensor) -> list[int]:
    """Index in ``x`` of each row of ``rows`` (rows are random floats, hence unique)."""
    eq = (rows[:, None, :] == x[None, :, :]).all(-1)
    assert bool(eq.any(1).all()), "a row that is not in the dataset was attributed"
    return eq.float().argmax(1).tolist()


class LoggedMethod:
    """Wrap ``inner``; log attributed ids; die or raise after ``stop_after`` examples."""

    def __init__(
        self,
        inner: Any,
        x: Tensor,
        log: str | os.PathLike | None = None,
        stop_after: int | None = None,
        stop: str = "raise",
    ) -> None:
        self.inner, self.x, self.log = inner, x, log
        self.forward_func = inner.forward_func
        self.stop_after, self.stop = stop_after, stop
        self.seen: list[int] = []

    def attribute(self, inputs: Tensor, target: Any = None, **kwargs: Any) -> Any:
        if self.stop_after is not None and len(self.seen) >= self.stop_after:
            if self.stop == "die":
                os._exit(1)
            raise RuntimeError(f"injected failure after {len(self.seen)} examples")
        ids = row_ids(self.x, inputs.detach().cpu())
        self.seen.extend(ids)
        if self.log is not None:
            with open(self.log, "a") as f:
                f.write("".join(f"{i}\n" for i in ids))
        return self.inner.attribute(inputs, target=target, **kwargs)


def read_log(path: Path) -> list[int]:
    """Ids in a log written by :class:`LoggedMethod` (empty if there is none)."""
    return [int(s) for s in path.read_text().split()] if path.exists() else []


def run(
    rank: int,
    world_size: int,
    out: str,
    n: int,
    chunk_size: int,
    batch_size: int,
    method: str = "saliency",
    log_dir: str | None = None,
    tag: str = "run",
    die_rank: int | None = None,
    stop_after: int | None = None,
    fail_rank: int | None = None,
) -> None:
    """``attribute_dataset`` on every rank; ``die_rank`` dies / ``fail_rank`` raises midway."""
    model, x, y = build(n)
    inner, kwargs = make_method(method, model)
    log = Path(log_dir) / f"{tag}-rank{rank}.log" if log_dir else None
    stop = "die" if rank == die_rank else "raise" if rank == fail_rank else None
    wrapped = LoggedMethod(inner, x, log, stop_after if stop else None, stop or "raise")
    attribute_dataset(
        wrapped,
        TensorDataset(x, y),
        out,
        attribute_kwargs=kwargs,
        chunk_size=chunk_size,
        batch_size=batch_size,
    )
