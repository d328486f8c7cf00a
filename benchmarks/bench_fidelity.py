"""Deletion-curve benchmark: batched ``captum_ext.metrics.deletion`` vs one forward per step.

Run ``python benchmarks/bench_fidelity.py`` (``--quick`` skips the 224 x 224 case). Goal of the
metrics issue: >= 5x over one forward per step at 225 steps on ``small_cnn``; it is judged on the
RISE protocol (one image, one forward per step). With N images the per-step loop already batches
the N images, and on CPU both paths are then compute-bound, so the gain is smaller (printed).

Cases (``small_cnn``, random weights: the timing does not depend on them):

1. 30 x 30 images (900 px), ``pixels_per_step=4``: 225 steps (226 points), N = 1 and N = 8.
2. (full run only) 224 x 224 images, the RISE / RelEx setting ``k = 224``: 224 steps.

The baseline builds the N images of one step and runs one forward per step (RISE's per-step
loop, batched over the N examples, which is the fastest per-step loop); ours evaluates all
``N * (n + 1)`` images in chunks of ``max_examples_per_batch`` rows. Both give the same curves
(the maximum difference is printed). Timings take the minimum over interleaved repeats, since
the machine may be shared.
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from captum_ext.benchmark import small_cnn
from captum_ext.metrics import deletion


@torch.no_grad()
def per_step_deletion(model, inputs, attributions, k):
    """One forward per step: the straightforward loop over steps."""
    n_ex, _, h, w = inputs.shape
    p = h * w
    n = math.ceil(p / k)
    smap = attributions.abs().sum(1).reshape(n_ex, -1)
    order = torch.sort(smap, dim=1, descending=True, stable=True).indices
    target = model(inputs).argmax(1)
    rows = torch.arange(n_ex)
    ys = []
    for i in range(n + 1):
        mask = torch.zeros(n_ex, p, dtype=torch.bool)
        mask.scatter_(1, order[:, : min(i * k, p)], True)
        x = torch.where(mask.view(n_ex, 1, h, w), 0.0, inputs)
        ys.append(torch.softmax(model(x), 1)[rows, target])
    return torch.stack(ys, 1)


def timed(fn, repeats):
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def run_case(size, n_ex, k, repeats, chunk):
    torch.manual_seed(0)
    model = small_cnn(3, 6).eval()
    x = torch.rand(n_ex, 3, size, size)
    attr = torch.randn(n_ex, 3, size, size)
    n = math.ceil(size * size / k)
    t_base, t_ours = float("inf"), float("inf")
    for _ in range(repeats):  # interleave baseline and ours
        tb, base = timed(lambda: per_step_deletion(model, x, attr, k), 1)
        to, ours = timed(
            lambda: deletion(model, x, attr, pixels_per_step=k, max_examples_per_batch=chunk), 1
        )
        t_base, t_ours = min(t_base, tb), min(t_ours, to)
    diff = (base - ours.curves).abs().max().item()
    print(
        f"{size:>4} px  N={n_ex:<2} steps={n:<4} per-step loop {t_base:7.3f} s   "
        f"batched {t_ours:7.3f} s   speed-up {t_base / t_ours:5.1f}x   max |diff| {diff:.1e}"
    )
    return t_base / t_ours


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip the 224 x 224 case")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunk", type=int, default=128, help="max_examples_per_batch")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    ratios = [run_case(30, 1, 4, args.repeats, args.chunk)]
    ratios.append(run_case(30, 8, 4, args.repeats, args.chunk))
    if not args.quick:
        ratios.append(run_case(224, 1, 224, max(1, args.repeats - 1), args.chunk))
    verdict = "met" if ratios[0] >= 5 else "NOT met"
    print(f"goal >= 5x over RISE's loop (one forward per step, one image): {verdict}")
    print(
        f"with 8 images per step-forward the baseline is already batched: {ratios[1]:.1f}x "
        "(both are compute-bound on CPU)"
    )


if __name__ == "__main__":
    main()
