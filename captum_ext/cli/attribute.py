"""``captum-ext attribute``: one report method over a benchmark split, resumable, torchrun too.

Runs :func:`captum_ext.dataset_attribution.attribute_dataset` with a method of the report on
the embedded benchmark: every rank (under ``torchrun``) computes its chunks, rank 0 writes the
index and prints one JSON line. Running the same command again resumes an interrupted run.

Examples (one process, then two under ``torchrun``)::

    captum-ext attribute --method LEG-TV --out runs/legtv --n-images 200
    torchrun --standalone --nproc-per-node 2 -m captum_ext attribute --method CASO --out runs/caso
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import Subset

from captum_ext.cli.launch import (
    add_benchmark_options,
    check_benchmark_options,
    check_out_folder,
    setup_distributed,
    train_once,
)
from captum_ext.distributed import get_context
from captum_ext.report.method_spec import PRESETS


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the ``attribute`` subcommand."""
    att = sub.add_parser(
        "attribute",
        help="attribute a benchmark split with one method into resumable shards (torchrun too)",
        description=(
            "Run one registered method over a split of the embedded benchmark and save the "
            "attributions in chunk files (resumable; every rank takes its chunks under torchrun)."
        ),
    )
    att.add_argument("--method", required=True, help="a registered method name (see `report`)")
    att.add_argument("--out", required=True, type=Path, help="results folder")
    att.add_argument("--split", default="test", help="'test' or 'train'")
    att.add_argument(
        "--n-images", type=int, default=None, help="the first N images (default: the whole split)"
    )
    att.add_argument("--chunk-size", type=int, default=64, help="images per chunk file")
    att.add_argument("--batch-size", type=int, default=16, help="images per attribute call")
    att.add_argument(
        "--preset", default=PRESETS[0], choices=PRESETS, help="the report's method presets"
    )
    att.add_argument("--quick", action="store_true", help="the report's lighter settings")
    att.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of randomised methods: each batch draws from (seed, chunk, first id), so a "
        "resumed or distributed run equals one run",
    )

    add_benchmark_options(att)


def run(args: argparse.Namespace, usage_error: type) -> int:
    """Run ``captum-ext attribute``; returns the exit status."""
    from captum_ext.benchmark.training import load_data
    from captum_ext.dataset_attribution import attribute_dataset
    from captum_ext.report.method_spec import resolve_kwargs
    from captum_ext.report.methods import available_methods

    methods = available_methods()
    if args.method not in methods:
        raise usage_error(f"unknown --method {args.method!r}; choose from {', '.join(methods)}")
    check_benchmark_options(args, usage_error)
    if args.split not in ("test", "train"):
        raise usage_error(f"--split must be 'test' or 'train', got {args.split!r}")
    for flag, value in (("--n-images", args.n_images), ("--chunk-size", args.chunk_size)):
        if value is not None and value < 1:
            raise usage_error(f"{flag} must be at least 1, got {value}")
    if args.batch_size < 1:
        raise usage_error(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.seed < 0:
        raise usage_error(f"--seed must be at least 0, got {args.seed}")
    check_out_folder(args.out, usage_error)
    device = setup_distributed(args.device, usage_error)
    try:
        ctx = get_context()
        trained = train_once(args.model, args.dataset, ctx)
        model = trained.model.to(device).eval()
        data = load_data(trained.config, args.split)
        n = len(data) if args.n_images is None else min(args.n_images, len(data))
        data = Subset(data, range(n))
        spec = methods[args.method]
        sample = torch.stack([data[i][0] for i in range(min(n, args.batch_size))]).to(device)
        with torch.no_grad():
            n_classes = int(model(sample[:1]).shape[-1])
        kwargs = resolve_kwargs(spec, sample, args.quick, preset=args.preset, n_classes=n_classes)
        start = time.perf_counter()
        try:
            shards = attribute_dataset(
                spec.build(model),
                data,
                args.out,
                attribute_kwargs=kwargs,
                chunk_size=args.chunk_size,
                batch_size=args.batch_size,
                seed=args.seed,
                device=device,
                show_progress=not args.no_progress and (ctx is None or ctx.rank == 0),
            )
        except ValueError as err:  # its checks of the folder and settings: one line, exit 2
            raise usage_error(str(err)) from err
        if ctx is None or ctx.rank == 0:
            info = {
                "out": str(args.out.resolve()),
                "method": args.method,
                "n": len(shards),
                "world_size": 1 if ctx is None else ctx.world_size,
                "seconds": time.perf_counter() - start,
            }
            print(json.dumps(info))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0
