"""Distributed ParameterSaliency calibration: wall time of 1 vs W processes, and traffic per rank.

Part 1 fits z-score and POT calibrations of ResNet-18 (4,800 filters) on SyntheticShapes test
images with 1 process (all cores) and with W processes under ``torchrun`` (cores split between
them), and prints the fit wall times and their ratio. Both use every core, so on a 2-core machine
the ideal speed-up is at most 2x (each process also pays its own start-up, which is reported
apart from the fit). It also prints the per-process scaling: 1 process with one thread
against W processes with one thread each.

Part 2 streams synthetic profiles with ResNet-18's and ResNet-50's filter counts (4,800 and
26,560) on 2 ranks and prints the bytes each rank sent and received in the merge, next to the
closed form of :mod:`captum_ext.calibration.distributed`, and that closed form for the papers'
50,000 ImageNet validation images.

    python benchmarks/bench_distributed_calibration.py [--n-ref 256] [--world 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Subset

from captum_ext.attr import ParameterSaliency
from captum_ext.benchmark import SyntheticShapes
from captum_ext.benchmark.models import build_model
from captum_ext.calibration import Layout, POTCalibration, ZScoreCalibration, n_exceed
from captum_ext.distributed import ShardSampler, barrier, get_context


def _calibration(kind: str, level: float = 0.9):
    return POTCalibration(level=level) if kind == "pot" else ZScoreCalibration()


def _collate(items: list) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.stack([i[0] for i in items]), torch.tensor([i[1] for i in items])


def worker(args: argparse.Namespace) -> None:
    """One rank (or the single process): fit, then rank 0 prints a JSON line."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group("gloo")
    ctx = get_context()
    rank = 0 if ctx is None else ctx.rank
    if args.mode == "fit":
        torch.manual_seed(0)
        model = build_model("resnet18", 3, 6).eval()
        ds = Subset(SyntheticShapes(n=args.n_ref, split="test"), range(args.n_ref))
        loader = DataLoader(
            ds,
            batch_size=32,
            sampler=ShardSampler(ds),
            collate_fn=lambda it: (
                torch.stack([i[0] for i in it]),
                torch.tensor([i[1] for i in it]),
            ),
        )
        ps = ParameterSaliency(model)
        ps.fit(loader, _calibration(args.kind))
        info = dict(ps.last_fit_info)
    else:  # traffic: synthetic profiles, no model
        f, n = args.filters, args.n_ref
        torch.manual_seed(rank)
        world = 1 if ctx is None else ctx.world_size
        local = torch.distributions.Exponential(1.0).sample((len(range(rank, n, world)), f))
        cal = _calibration(args.kind)
        cal.begin(Layout(["synthetic"], [f], "synthetic"), n)
        cal.update(local)
        if ctx is not None:
            barrier(ctx)  # time the merge alone
        t0 = time.perf_counter()
        cal.finalize() if ctx is None else cal.finalize_distributed(ctx)
        info = {
            "merge_seconds": time.perf_counter() - t0,
            "bytes_sent": 0 if ctx is None else ctx.bytes_sent,
            "bytes_received": 0 if ctx is None else ctx.bytes_received,
        }
    if rank == 0:
        print("RESULT " + json.dumps(info), flush=True)
    if dist.is_initialized():
        dist.destroy_process_group()


def _launch(world: int, extra: list[str], threads: int | None = None) -> tuple[dict, float]:
    threads = threads or max(1, (os.cpu_count() or 1) // world)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    if world == 1:
        cmd = [sys.executable, __file__, "--worker", *extra]
    else:
        cmd = [
            sys.executable, "-m", "torch.distributed.run", "--standalone",
            "--nproc-per-node", str(world), __file__, "--worker", *extra,
        ]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(proc.stderr[-4000:])
    line = next(s for s in proc.stdout.splitlines() if s.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :]), wall


def predicted_bytes(f: int, n: int, world: int, kind: str, level: float = 0.9) -> int:
    """Closed-form tensor payload each rank sends (pickled status objects not included)."""
    moments = (1 + 2 * f) * 8
    if kind == "zscore":
        return moments
    k = n_exceed(level, n)
    width = min(k, -(-n // world))
    rows = -(-f // world)
    return moments + 8 + (world - 1) * rows * width * 4 + 8 + rows * 4 * 8


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--mode", default="fit", choices=["fit", "traffic"])
    ap.add_argument("--kind", default="zscore", choices=["zscore", "pot"])
    ap.add_argument("--n-ref", type=int, default=256)
    ap.add_argument("--filters", type=int, default=4800)
    ap.add_argument("--world", type=int, default=2)
    ap.add_argument("--traffic-n", type=int, default=5000)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    print(f"machine: {os.cpu_count()} cores, torch {torch.__version__}")
    print(f"\n== Part 1: ResNet-18 calibration on {args.n_ref} images, 1 vs {args.world} processes")
    for kind in ("zscore", "pot"):
        extra = ["--mode", "fit", "--kind", kind, "--n-ref", str(args.n_ref)]
        one, wall1 = _launch(1, extra)
        lone, _ = _launch(1, extra, threads=1)
        many, wall_w = _launch(args.world, extra)
        fit1 = one["stream_seconds"] + one["merge_seconds"]
        fit_lone = lone["stream_seconds"] + lone["merge_seconds"]
        fit_w = many["stream_seconds"] + many["merge_seconds"]
        print(
            f"{kind:6s}  1 proc: fit {fit1:6.2f} s ({args.n_ref / fit1:5.1f} img/s), "
            f"process {wall1:5.1f} s | {args.world} procs: fit {fit_w:6.2f} s "
            f"(merge {many['merge_seconds']:.3f} s), process {wall_w:5.1f} s | "
            f"speed-up fit {fit1 / fit_w:.2f}x, end to end {wall1 / wall_w:.2f}x\n"
            f"        per-process scaling: 1 proc x 1 thread fit {fit_lone:6.2f} s -> "
            f"{args.world} procs x 1 thread {fit_w:6.2f} s = {fit_lone / fit_w:.2f}x"
        )
    print(f"\n== Part 2: traffic per rank on 2 ranks, N = {args.traffic_n} (level 0.9)")
    for name, f in (("ResNet-18", 4800), ("ResNet-50", 26560)):
        for kind in ("zscore", "pot"):
            extra = ["--mode", "traffic", "--kind", kind, "--filters", str(f)]
            res, _ = _launch(2, [*extra, "--n-ref", str(args.traffic_n)])
            pred = predicted_bytes(f, args.traffic_n, 2, kind)
            at_50k = predicted_bytes(f, 50_000, 2, kind)
            print(
                f"{name} ({f} filters) {kind:6s}: sent {res['bytes_sent'] / 1e6:8.2f} MB, "
                f"received {res['bytes_received'] / 1e6:8.2f} MB (closed form {pred / 1e6:8.2f} "
                f"MB); merge {res['merge_seconds']:.2f} s | closed form at N=50,000: "
                f"{at_50k / 1e6:8.2f} MB sent per rank"
            )


if __name__ == "__main__":
    main()
