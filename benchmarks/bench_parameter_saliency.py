"""Per-example filter profiles for torchvision ResNet-18 at 32x32 on CPU: batched vs batch-1.

The baseline is the reference implementation's strategy: one forward + backward per example
(batch size 1), then mean |grad| per filter from ``.grad``. Ours computes the same profiles
exactly in batches (layer hooks + unfold/einsum, and the torch.func route for comparison). Goal
(issue 6): >= 5x the batch-1 loop's throughput. Both run in this process, back to back.

``--resnet50`` also measures the spec's absolute goal: profiles of torchvision ResNet-50 (random
weights, 1000 classes) at 224x224 in images/s, >= 500 img/s on an H200-class GPU, with a batch-1
loop on a few of the same images for the ratio and an exactness check. ``--device cuda`` runs
everything on the GPU; timings then start and end with ``torch.cuda.synchronize()``.

Each of the three is run ``--repeats`` times, alternating, and its best time is kept.

Usage: python benchmarks/bench_parameter_saliency.py [--quick] [--n N] [--batch B] [--repeats R]
       [--device cuda] [--resnet50 [--r50-n 256] [--r50-batch 64] [--r50-loop 32]]
"""

from __future__ import annotations

import argparse
import time

import torch
import torchvision
from torch import nn

from captum_ext.attr import ParameterSaliency


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so that the clock measures it (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def clock(device: torch.device) -> float:
    """``time.perf_counter()`` once the GPU work queued so far is done."""
    sync(device)
    return time.perf_counter()


def batch1_loop(model: nn.Module, convs: list[nn.Conv2d], x: torch.Tensor, y: torch.Tensor):
    rows = []
    for i in range(x.shape[0]):
        model.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x[i : i + 1]), y[i : i + 1]).backward()
        rows.append(torch.cat([c.weight.grad.abs().flatten(1).mean(1) for c in convs]))
    model.zero_grad(set_to_none=True)
    return torch.stack(rows)


def resnet50_throughput(
    device: torch.device, n: int, batch: int, n_loop: int, repeats: int = 2
) -> None:
    """ResNet-50 profiles at 224x224 in images/s (spec goal: >= 500 img/s on an H200-class GPU)."""
    torch.manual_seed(0)
    model = torchvision.models.resnet50(weights=None, num_classes=1000).eval().to(device)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    x = torch.rand(n, 3, 224, 224, device=device)
    y = torch.randint(0, 1000, (n,), device=device)
    ps = ParameterSaliency(model)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"ResNet-50 (random weights), {len(ps.filters)} filters, {n} images 224x224, "
        f"chunk {batch}, {where}, tf32 matmul {torch.backends.cuda.matmul.allow_tf32}, "
        f"tf32 cudnn {torch.backends.cudnn.allow_tf32}"
    )
    for _ in range(2):  # warm-up: cuDNN algorithm choice, allocator
        ps.profiles(x[:batch], y[:batch], internal_batch_size=batch)
    best = float("inf")
    for _ in range(repeats):
        t0 = clock(device)
        ours = ps.profiles(x, y, internal_batch_size=batch)
        best = min(best, clock(device) - t0)
    print(f"ResNet-50 profiles: {n / best:7.1f} img/s (best of {repeats}; goal >= 500 img/s)")
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**30
        print(f"ResNet-50 peak GPU memory allocated: {peak:.1f} GiB")
    if n_loop:
        m = min(n_loop, n)
        batch1_loop(model, convs, x[:2], y[:2])  # warm-up
        t0 = clock(device)
        ref = batch1_loop(model, convs, x[:m], y[:m])
        t_ref = clock(device) - t0
        err = (ours[:m] - ref).abs().max().item()
        print(
            f"ResNet-50 batch-1 loop: {m / t_ref:7.1f} img/s ({m} images); ours / loop "
            f"{(n / best) / (m / t_ref):.1f}x; max abs difference {err:.2e} "
            f"(max profile {ref.abs().max():.2e})"
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3, help="best of this many runs of each")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--resnet50", action="store_true", help="also ResNet-50 224x224 img/s")
    ap.add_argument(
        "--no-tf32", action="store_true", help="disable TF32 in cuDNN and matmuls (CUDA precision)"
    )
    ap.add_argument("--r50-n", type=int, default=256, help="ResNet-50 images timed")
    ap.add_argument("--r50-batch", type=int, default=64, help="ResNet-50 chunk size")
    ap.add_argument("--r50-loop", type=int, default=32, help="ResNet-50 batch-1 loop images")
    args = ap.parse_args()
    if args.no_tf32:
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    n = 16 if args.quick else args.n
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    x, y = torch.rand(n, 3, 32, 32), torch.randint(0, 10, (n,))  # drawn on CPU: same data
    model, x, y = model.to(device), x.to(device), y.to(device)
    ps = ParameterSaliency(model)
    where = (
        torch.cuda.get_device_name(device) if cuda else f"torch threads {torch.get_num_threads()}"
    )
    print(f"{where}; ResNet-18, {len(ps.filters)} filters, {n} images 32x32, chunk {args.batch}")
    for _ in range(2 if cuda else 1):  # warm-up
        ps.profiles(x[:2], y[:2])
        batch1_loop(model, convs, x[:2], y[:2])
    if cuda:  # warm the chunk shapes that are timed, for both methods
        ps.profiles(x, y, internal_batch_size=args.batch, method="hooks")
        ps.profiles(x, y, internal_batch_size=args.batch, method="func")

    def best(fn):  # best of --repeats, alternating with the others: load drifts hit all alike
        t0 = clock(device)
        out = fn()
        return out, clock(device) - t0

    t_ref = t_hooks = t_func = float("inf")
    for _ in range(args.repeats):
        ref, t = best(lambda: batch1_loop(model, convs, x, y))
        t_ref = min(t_ref, t)
        ours, t = best(lambda: ps.profiles(x, y, internal_batch_size=args.batch, method="hooks"))
        t_hooks = min(t_hooks, t)
        func, t = best(lambda: ps.profiles(x, y, internal_batch_size=args.batch, method="func"))
        t_func = min(t_func, t)
    err = max((ours - ref).abs().max().item(), (func - ref).abs().max().item())
    print(f"batch-1 loop: {n / t_ref:7.1f} img/s")
    print(f"hooks (ours): {n / t_hooks:7.1f} img/s  ratio {t_ref / t_hooks:.1f}x (goal >= 5x)")
    print(f"torch.func:   {n / t_func:7.1f} img/s  ratio {t_ref / t_func:.1f}x")
    print(f"max abs difference to the loop: {err:.2e} (max profile {ref.abs().max():.2e})")
    if args.resnet50:
        resnet50_throughput(device, args.r50_n, args.r50_batch, args.r50_loop)


if __name__ == "__main__":
    main()
