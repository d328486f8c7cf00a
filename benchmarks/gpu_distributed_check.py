"""ParameterSaliency.fit's distributed merge on CUDA tensors through NCCL, on one GPU.

A process group of world size 1 with ``distributed=True`` forces the distributed code path
(layout/settings handshake, Chan merge of the moments, POT top-K merge by filter slice, the GPD
fits of this rank's slice), whose collectives then run on CUDA tensors through NCCL. For
``ZScoreCalibration()`` and ``POTCalibration(level=0.8)``:

- merge: the same CUDA profiles streamed into ``finalize_distributed`` and ``finalize`` give
  bit-identical calibrations, and a save/load round trip scores those profiles alike (1e-12);
- end to end: ``ParameterSaliency.fit(..., distributed=True)`` agrees with ``distributed=False``
  up to float32 rounding (rtol 1e-5; GPD parameters 1e-3), since cuDNN's backward passes are
  not bit-reproducible between two runs, so the two fits see slightly different profiles.

Prints PASS/FAIL per check and exits 1 on any FAIL.

    python benchmarks/gpu_distributed_check.py                        # NCCL on cuda:0
    python benchmarks/gpu_distributed_check.py --backend gloo --device cpu   # CPU smoke run
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import time
import traceback
from typing import Callable

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, TensorDataset

from captum_ext.attr import ParameterSaliency
from captum_ext.benchmark.models import build_model
from captum_ext.calibration import Calibration, POTCalibration, ZScoreCalibration
from captum_ext.distributed import ShardSampler, get_context

RTOL = 1e-9
FAILED: list[str] = []


def report(name: str, ok: bool, detail: str = "") -> None:
    print(f"{'PASS' if ok else 'FAIL'}  {name}{'  ' + detail if detail else ''}", flush=True)
    if not ok:
        FAILED.append(name)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest |a - b| / |b| over entries; inf where shapes or non-finite entries differ."""
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    if a.shape != b.shape:
        return float("inf")
    fin = torch.isfinite(b)
    if not torch.equal(fin, torch.isfinite(a)) or not torch.equal(a[~fin], b[~fin]):
        return float("inf")
    if not fin.any():
        return 0.0
    a, b = a[fin], b[fin]
    return ((a - b).abs() / b.abs().clamp_min(1e-300)).max().item()


def close(name: str, a: torch.Tensor, b: torch.Tensor, rtol: float = RTOL) -> None:
    err = rel_err(a, b)
    report(name, err <= rtol, f"max rel err {err:.2e} (tol {rtol:g}), device {a.device}")


def same(name: str, a: torch.Tensor, b: torch.Tensor) -> None:
    a_c, b_c = a.detach().cpu(), b.detach().cpu()
    ok = a_c.shape == b_c.shape and torch.equal(a_c, b_c)
    n_diff = "shape differs" if a_c.shape != b_c.shape else f"{int((a_c != b_c).sum())} differ"
    report(name, ok, f"exact: {n_diff}, device {a.device}")


def init_group(backend: str, device: torch.device) -> None:
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(free_port()))
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    if backend == "nccl":
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
    else:
        dist.init_process_group(backend)
    print(
        f"process group: backend {dist.get_backend()}, world size {dist.get_world_size()}, "
        f"rank {dist.get_rank()}, MASTER_PORT {os.environ['MASTER_PORT']}",
        flush=True,
    )


def fit(
    model: torch.nn.Module,
    ds: TensorDataset,
    cal: ZScoreCalibration | POTCalibration,
    distributed: bool,
    chunk: int,
) -> ParameterSaliency:
    sampler = ShardSampler(ds) if distributed else None
    loader = DataLoader(ds, batch_size=50, sampler=sampler)
    ps = ParameterSaliency(model)
    t0 = time.perf_counter()
    ps.fit(loader, cal, internal_batch_size=chunk, distributed=distributed)
    info = ps.last_fit_info
    print(
        f"  fit {type(cal).__name__} distributed={distributed}: {time.perf_counter() - t0:.2f} s, "
        f"world {info['world_size']}, n_total {info['n_total']}, "
        f"sent {info['bytes_sent']} B, received {info['bytes_received']} B",
        flush=True,
    )
    return ps


def check_fits(kind: str, ps_d: ParameterSaliency, ps_s: ParameterSaliency) -> None:
    cd, cs = ps_d.calibration, ps_s.calibration
    report(f"{kind}: n_total", int(cd.n_total) == int(cs.n_total), f"{cd.n_total} vs {cs.n_total}")
    # float32 profile noise (~1e-7) moves thresholds by as much, and the GPD fits a bit more
    tols = {"mean": 1e-5, "std": 1e-5, "threshold": 1e-5, "xi": 1e-3, "sigma": 1e-3}
    names = ("mean", "std") if kind == "zscore" else ("threshold", "xi", "sigma")
    for name in names:
        close(f"{kind} end to end: {name}", getattr(cd, name), getattr(cs, name), rtol=tols[name])


def check_merge(kind: str, make: Callable[[], Calibration], ps: ParameterSaliency, prof) -> None:
    """Same profiles through the NCCL merge and the local finalize: identical results."""
    ctx = get_context(distributed=True)
    cal_d, cal_s = make(), make()
    for cal in (cal_d, cal_s):
        cal.begin(ps.layout(), prof.shape[0])
        for s in range(0, prof.shape[0], 50):
            cal.update(prof[s : s + 50])
    cal_d.finalize_distributed(ctx)
    cal_s.finalize()
    report(
        f"{kind} merge: collectives ran on", ctx.device.type == prof.device.type, str(ctx.device)
    )
    names = ("mean", "std") if kind == "zscore" else ("threshold", "n_peaks", "xi", "sigma")
    for name in names:
        same(f"{kind} merge: {name}", getattr(cal_d, name), getattr(cal_s, name))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f"{kind}.pt")
        cal_d.save(path)
        loaded = Calibration.load(path, layout=ps.layout())
    before, after = cal_d.score(prof), loaded.score(prof)
    if kind == "pot":
        same(f"{kind} save/load: exceeds", after.exceeds, before.exceeds)
        before, after = before.tail_prob, after.tail_prob
    close(f"{kind} save/load: scores", after, before, rtol=1e-12)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backend", default="nccl", choices=["nccl", "gloo"])
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--n", type=int, default=200, help="random reference images")
    ap.add_argument("--chunk", type=int, default=32, help="internal_batch_size (both fits)")
    args = ap.parse_args()
    if args.backend == "nccl" and args.device != "cuda":
        ap.error("--backend nccl needs --device cuda")
    device = torch.device("cuda", 0) if args.device == "cuda" else torch.device("cpu")
    print(f"torch {torch.__version__}, device {device}", flush=True)
    if device.type == "cuda":
        print(f"GPU {torch.cuda.get_device_name(device)}, NCCL {torch.cuda.nccl.version()}")
    init_group(args.backend, device)
    try:
        torch.manual_seed(0)
        model = build_model("small_cnn", 3, 6).eval().to(device)
        gen = torch.Generator(device=device).manual_seed(0)
        x = torch.rand(args.n, 3, 32, 32, generator=gen, device=device)
        y = torch.randint(0, 6, (args.n,), generator=gen, device=device)
        ds = TensorDataset(x, y)
        prof = ParameterSaliency(model).profiles(x, y, internal_batch_size=args.chunk)
        for kind, make in (
            ("zscore", ZScoreCalibration),
            ("pot", lambda: POTCalibration(level=0.8)),
        ):
            print(f"{kind}:", flush=True)
            try:
                check_merge(kind, make, ParameterSaliency(model), prof)
                ps_d = fit(model, ds, make(), True, args.chunk)
                ps_s = fit(model, ds, make(), False, args.chunk)
                report(
                    f"{kind}: fit went through the distributed path",
                    ps_d.last_fit_info["world_size"] == 1 and ps_d._fit_context is not None,
                    f"context device {getattr(ps_d._fit_context, 'device', None)}",
                )
                check_fits(kind, ps_d, ps_s)
            except Exception:  # report and go on with the next calibration
                traceback.print_exc()
                report(f"{kind}: ran without an exception", False)
    finally:
        dist.destroy_process_group()
    print(f"{'FAIL' if FAILED else 'PASS'}: {len(FAILED)} failed check(s) {FAILED}", flush=True)
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
