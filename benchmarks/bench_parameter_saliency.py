"""Per-example filter profiles for torchvision ResNet-18 at 32x32 on CPU: batched vs batch-1.

The baseline is the reference implementation's strategy: one forward + backward per example
(batch size 1), then mean |grad| per filter from ``.grad``. Ours computes the same profiles
exactly in batches (layer hooks + unfold/einsum, and the torch.func route for comparison). Goal
(issue 6): >= 5x the batch-1 loop's throughput. Both run in this process, back to back.

Usage: python benchmarks/bench_parameter_saliency.py [--quick] [--n N] [--batch B]
"""

from __future__ import annotations

import argparse
import time

import torch
import torchvision
from torch import nn

from captum_ext.attr import ParameterSaliency


def batch1_loop(model: nn.Module, convs: list[nn.Conv2d], x: torch.Tensor, y: torch.Tensor):
    rows = []
    for i in range(x.shape[0]):
        model.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x[i : i + 1]), y[i : i + 1]).backward()
        rows.append(torch.cat([c.weight.grad.abs().flatten(1).mean(1) for c in convs]))
    model.zero_grad(set_to_none=True)
    return torch.stack(rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()
    n = 16 if args.quick else args.n
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    x, y = torch.rand(n, 3, 32, 32), torch.randint(0, 10, (n,))
    ps = ParameterSaliency(model)
    print(
        f"torch threads {torch.get_num_threads()}; ResNet-18, {len(ps.filters)} filters, "
        f"{n} images 32x32, chunk {args.batch}"
    )
    ps.profiles(x[:2], y[:2])  # warm-up
    batch1_loop(model, convs, x[:2], y[:2])

    t0 = time.perf_counter()
    ref = batch1_loop(model, convs, x, y)
    t_ref = time.perf_counter() - t0
    t0 = time.perf_counter()
    ours = ps.profiles(x, y, internal_batch_size=args.batch, method="hooks")
    t_hooks = time.perf_counter() - t0
    t0 = time.perf_counter()
    func = ps.profiles(x, y, internal_batch_size=args.batch, method="func")
    t_func = time.perf_counter() - t0
    err = max((ours - ref).abs().max().item(), (func - ref).abs().max().item())
    print(f"batch-1 loop: {n / t_ref:7.1f} img/s")
    print(f"hooks (ours): {n / t_hooks:7.1f} img/s  ratio {t_ref / t_hooks:.1f}x (goal >= 5x)")
    print(f"torch.func:   {n / t_func:7.1f} img/s  ratio {t_ref / t_func:.1f}x")
    print(f"max abs difference to the loop: {err:.2e} (max profile {ref.abs().max():.2e})")


if __name__ == "__main__":
    main()
