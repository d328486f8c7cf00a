"""Shared set-up of the subcommands that also run under ``torchrun``.

``torchrun`` starts one process per rank with ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the
rendezvous address in the environment; :func:`setup_distributed` joins that process group (NCCL
when the rank works on a GPU, Gloo otherwise) and :func:`train_once` lets rank 0 train or load
the benchmark model before the other ranks read it from the cache.
"""

from __future__ import annotations

import argparse
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from captum_ext.distributed import DistContext, barrier


def setup_distributed(device_arg: str, usage_error: type) -> torch.device:
    """Join the torchrun process group if there is one; the device this rank works on."""
    if device_arg not in ("auto", "cpu", "cuda"):
        raise usage_error(f"--device must be 'auto', 'cpu' or 'cuda', got {device_arg!r}")
    cuda = torch.cuda.is_available() and device_arg != "cpu"
    if device_arg == "cuda" and not torch.cuda.is_available():
        raise usage_error("--device cuda but no CUDA device is available")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group(
            "nccl" if cuda else "gloo",
            device_id=device if cuda else None,
            timeout=timedelta(minutes=30),
        )
    return device


def train_once(model: str, dataset: str, ctx: DistContext | None) -> Any:
    """``train(model, dataset)`` on rank 0 first, then on the others (a cache hit for them)."""
    from captum_ext.benchmark.training import train

    rank = 0 if ctx is None else ctx.rank
    trained = train(model, dataset) if rank == 0 else None
    if ctx is not None:
        barrier(ctx)
    return trained if trained is not None else train(model, dataset)


def collate_to(items: list, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack ``(image, label, ...)`` items onto ``device``."""
    x = torch.stack([it[0] for it in items]).to(device)
    y = torch.as_tensor([int(it[1]) for it in items]).to(device)
    return x, y


def add_benchmark_options(parser: argparse.ArgumentParser) -> None:
    """``--dataset``, ``--model``, ``--device`` and ``--no-progress``, shared by subcommands."""
    parser.add_argument("--dataset", default="shapes", help="benchmark dataset")
    parser.add_argument("--model", default="small_cnn", help="benchmark model")
    parser.add_argument(
        "--device", default="auto", help="'auto' (cuda:LOCAL_RANK if available), 'cpu' or 'cuda'"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def check_benchmark_options(args: argparse.Namespace, usage_error: type) -> None:
    """Raise ``usage_error`` for an unknown ``--dataset`` or ``--model``."""
    from captum_ext.benchmark.models import MODELS
    from captum_ext.benchmark.training import DATASETS

    if args.dataset not in DATASETS:
        raise usage_error(f"unknown --dataset {args.dataset!r}; choose from {', '.join(DATASETS)}")
    if args.model not in MODELS:
        raise usage_error(f"unknown --model {args.model!r}; choose from {', '.join(MODELS)}")


def _nearest_existing(path: Path) -> Path:
    probe = path
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    return probe


def check_out_folder(out: Path, usage_error: type, flag: str = "--out") -> None:
    """``out`` is, or can be created as, a writable folder (nothing is created here)."""
    if out.exists() and not out.is_dir():
        raise usage_error(f"{flag} {str(out)!r} is not a writable folder (it is a file)")
    probe = _nearest_existing(out)
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        reason = "not a folder" if not probe.is_dir() else "permission denied"
        raise usage_error(f"{flag} {str(out)!r} is not a writable folder ({probe}: {reason})")


def check_out_file(out: Path, usage_error: type, flag: str = "--out") -> None:
    """``out`` names a file we may write (nothing is created here).

    It must not be a folder or a read-only file, and its folder must be, or be creatable as, a
    writable folder.
    """
    if out.is_dir():
        raise usage_error(f"{flag} {str(out)!r} is a folder; give a file name such as cal.pt")
    if out.exists() and not os.access(out, os.W_OK):
        raise usage_error(f"{flag} {str(out)!r} is not writable (permission denied)")
    check_out_folder(out.parent, usage_error, flag=f"{flag} {str(out)!r}: the folder")
