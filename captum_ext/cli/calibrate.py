"""``captum-ext calibrate``: fit a parameter-saliency calibration, on one process or under torchrun.

Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) every rank joins a process group
(NCCL on GPUs, Gloo on CPUs), streams its ``ShardSampler`` shard of the reference images through
:meth:`captum_ext.attr.ParameterSaliency.fit`, and rank 0 writes the calibration and prints one
JSON line (sizes, seconds, bytes exchanged). Rank 0 trains or loads the benchmark model first;
the other ranks then read it from the cache.

Examples (one process, then two under ``torchrun``)::

    captum-ext calibrate --calibration pot --out pot.pt
    torchrun --standalone --nproc-per-node 2 -m captum_ext calibrate --calibration pot --out pot.pt
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch.distributed as dist
from torch.utils.data import DataLoader, Subset

from captum_ext.benchmark.training import load_data
from captum_ext.cli.launch import (
    add_benchmark_options,
    check_benchmark_options,
    check_out_file,
    collate_to,
    setup_distributed,
    train_once,
)
from captum_ext.distributed import ShardSampler, get_context

CALIBRATIONS = ("zscore", "pot")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the ``calibrate`` subcommand."""
    cal = sub.add_parser(
        "calibrate",
        help="fit a ParameterSaliency calibration (runs under torchrun too)",
        description=(
            "Fit a z-score or POT calibration of ParameterSaliency on held-out images of the "
            "embedded benchmark. Under torchrun each rank streams its shard and rank 0 saves."
        ),
    )
    cal.add_argument("--out", required=True, type=Path, help="calibration file to write (.pt)")
    cal.add_argument("--calibration", default="zscore", help=f"one of {', '.join(CALIBRATIONS)}")
    cal.add_argument("--level", type=float, default=0.9, help="POT threshold quantile")
    cal.add_argument(
        "--n-ref", type=int, default=None, help="reference images (default: the test split)"
    )
    cal.add_argument("--batch-size", type=int, default=64, help="images per batch and rank")

    add_benchmark_options(cal)


def run(args: argparse.Namespace, usage_error: type) -> int:
    """Run ``captum-ext calibrate``; returns the exit status."""
    from captum_ext.attr import ParameterSaliency
    from captum_ext.calibration import POTCalibration, ZScoreCalibration

    check_benchmark_options(args, usage_error)
    if args.calibration not in CALIBRATIONS:
        raise usage_error(
            f"unknown --calibration {args.calibration!r}; choose from {', '.join(CALIBRATIONS)}"
        )
    if not 0.0 < args.level < 1.0:
        raise usage_error(f"--level must be in (0, 1), got {args.level}")
    if args.batch_size < 1:
        raise usage_error(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.n_ref is not None and args.n_ref < 2:
        raise usage_error(f"--n-ref must be at least 2, got {args.n_ref}")
    check_out_file(args.out, usage_error)
    device = setup_distributed(args.device, usage_error)
    try:
        ctx = get_context()
        rank = 0 if ctx is None else ctx.rank
        trained = train_once(args.model, args.dataset, ctx)
        model = trained.model.to(device).eval()
        reference = load_data(trained.config, "test")
        n_ref = len(reference) if args.n_ref is None else min(args.n_ref, len(reference))
        if args.n_ref is not None and args.n_ref > len(reference) and rank == 0:
            print(
                f"warning: --n-ref {args.n_ref} is more than the {len(reference)} images of the "
                f"test split; calibrating on all {len(reference)}",
                file=sys.stderr,
            )
        reference = Subset(reference, range(n_ref))
        loader = DataLoader(
            reference,
            batch_size=args.batch_size,
            sampler=ShardSampler(reference),
            collate_fn=lambda items: collate_to(items, device),
        )
        calibration = (
            POTCalibration(level=args.level) if args.calibration == "pot" else ZScoreCalibration()
        )
        ps = ParameterSaliency(model)
        ps.fit(loader, calibration, show_progress=not args.no_progress and rank == 0)
        ps.save_calibration(args.out)
        if rank == 0:
            info = {"out": str(args.out.resolve()), "calibration": args.calibration}
            info.update(ps.last_fit_info, n_filters=ps.filters.n_filters)
            print(json.dumps(info))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0
