"""RelEx benchmark: speed against bare model passes and a per-example loop, and fidelity.

Run ``python benchmarks/bench_relex.py`` (``--quick`` for a short run). Three measurements:

1. Overhead: RelEx wall time over ``n_iter`` bare forward + input-gradient passes of the same
   model on the same batch (``M * 2 * n_samples`` images). Goal: <= 1.3.
2. Batching: the authors' per-example loop (separate foreground and background forwards,
   autograd through the mask, ``torch.optim.SGD``) over RelEx at M = 8 examples. Goal: >= 2.
3. Fidelity on the embedded benchmark (small_cnn trained on SyntheticShapes): deletion (lower is
   better) and preservation (higher is better) AUC of RelEx against Captum's Saliency,
   IntegratedGradients and NoiseTunnel(Saliency) (SmoothGrad), via
   ``captum_ext.metrics.fidelity``.

Timings take the minimum over interleaved repeats (the machine may be shared).
"""

from __future__ import annotations

import argparse
import time

import torch
from captum.attr import IntegratedGradients, NoiseTunnel, Saliency

from captum_ext.attr import RelEx
from captum_ext.attr._core.relex import CPU_SAMPLES_PER_EVAL
from captum_ext.benchmark import SyntheticShapes, small_cnn, train


def bare_passes(model: torch.nn.Module, rows: torch.Tensor, n_iter: int, chunk: int) -> None:
    for _ in range(n_iter):
        for start in range(0, rows.shape[0], chunk):
            x = rows[start : start + chunk].detach().requires_grad_()
            torch.autograd.grad(model(x).log_softmax(1)[:, 0].sum(), x)


def naive_loop(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    n_iter: int,
    n_samples: int,
    param_grads: bool,
) -> torch.Tensor:
    """The authors' structure, one example at a time (code defaults).

    ``param_grads=True`` also computes the parameter gradients, as the authors' ``backward()``
    does; ``False`` differentiates with respect to the mask only.
    """
    params = [p for p in model.parameters() if p.requires_grad] if param_grads else []
    out = []
    gen = torch.Generator().manual_seed(0)
    for x0, c in zip(inputs, targets.tolist()):
        m = (torch.rand(x0.shape, generator=gen) * 0.01).unsqueeze(0).requires_grad_()
        opt = torch.optim.SGD([m], lr=0.1, momentum=0.99)
        s = 0.1 * (x0.max() - x0.min())
        for _ in range(n_iter):
            xb = x0 + s * torch.randn((n_samples, *x0.shape), generator=gen)
            p_fg = model(xb * m).softmax(1)[:, c]
            p_bg = model(xb * (1 - m)).softmax(1)[:, c]
            loss = (-torch.log(p_fg) - torch.log(1 - p_bg + 1e-7)).mean() + 1e-4 * m.abs().sum()
            grad = torch.autograd.grad(loss, [m, *params])[0]
            m.grad = grad / grad.norm()
            opt.step()
            with torch.no_grad():
                m.clamp_(0, 1)
        out.append(m.detach())
    return torch.cat(out)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def speed(n_examples: int, n_iter: int, n_samples: int, repeats: int, chunk: int) -> None:
    model = small_cnn(3, 6).eval()
    x, _, _ = SyntheticShapes(n=n_examples, split="test").tensors()
    with torch.no_grad():
        targets = model(x).argmax(1)
    rows = x.repeat_interleave(2 * n_samples, 0)
    relex = RelEx(model)
    relex_kw = dict(n_iter=n_iter, n_samples=n_samples, samples_per_eval=chunk)
    runs = {
        "bare": lambda: bare_passes(model, rows, n_iter, chunk),
        "relex": lambda: relex.attribute(x, target=targets, **relex_kw),
        "relex_channels_last": lambda: relex.attribute(
            x, target=targets, channels_last=True, **relex_kw
        ),
        "naive": lambda: naive_loop(model, x, targets, n_iter, n_samples, False),
        "naive_authors": lambda: naive_loop(model, x, targets, n_iter, n_samples, True),
    }
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(repeats):
        for name, run in runs.items():
            best[name] = min(best[name], timed(run))
    print(
        f"speed: small_cnn 3x32x32, M={n_examples} examples, n_iter={n_iter}, "
        f"n_samples={n_samples} ({rows.shape[0]} images per step, {chunk} per pass), "
        f"{torch.get_num_threads()} threads, min of {repeats}"
    )
    for name, value in best.items():
        print(f"  {name:>20}: {value:8.3f} s")
    print(f"  RelEx / bare passes      = {best['relex'] / best['bare']:.3f}   (goal <= 1.3)")
    print(f"  naive loop / RelEx       = {best['naive'] / best['relex']:.3f}   (goal >= 2)")
    print(
        f"  authors' loop / RelEx    = {best['naive_authors'] / best['relex']:.3f}"
        "   (also computes parameter gradients, as backward() does)"
    )
    nhwc = best["relex_channels_last"]
    print(f"  naive loop / RelEx(channels_last=True)    = {best['naive'] / nhwc:.3f}")
    print(f"  authors' loop / RelEx(channels_last=True) = {best['naive_authors'] / nhwc:.3f}")


def fidelity(n_images: int, n_iter: int, n_samples: int) -> None:
    from captum_ext.metrics.fidelity import deletion, preservation

    model = train("small_cnn", "shapes").model.eval()
    x, labels, _ = SyntheticShapes(n=n_images, split="test").tensors()
    with torch.no_grad():
        pred = model(x).argmax(1)
    relex_kw = dict(n_iter=n_iter, n_samples=n_samples, generator=torch.Generator().manual_seed(0))
    methods = {
        "Saliency": lambda: Saliency(model).attribute(x, target=pred, abs=True),
        "IntegratedGradients": lambda: IntegratedGradients(model).attribute(
            x, target=pred, n_steps=50, internal_batch_size=256
        ),
        "SmoothGrad": lambda: NoiseTunnel(Saliency(model)).attribute(
            x, nt_type="smoothgrad", nt_samples=25, stdevs=0.15, target=pred
        ),
        "RelEx (lambda1=1e-4)": lambda: RelEx(model).attribute(x, target=pred, **relex_kw),
        "RelEx (lambda1=1e-2)": lambda: RelEx(model).attribute(
            x, target=pred, lambda1=1e-2, **relex_kw
        ),
    }
    print(
        f"fidelity: small_cnn on {n_images} SyntheticShapes test images "
        f"(accuracy {(pred == labels).float().mean():.2f}), substrate 0, "
        f"RelEx n_iter={n_iter}, n_samples={n_samples}"
    )
    print(f"  {'method':<22} {'deletion':>9} {'preserv.':>9} {'seconds':>8}")
    for name, fn in methods.items():
        start = time.perf_counter()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            attr = fn().detach()
        seconds = time.perf_counter() - start
        d = deletion(model, x, attr, target=pred).auc.mean().item()
        p = preservation(model, x, attr, target=pred).auc.mean().item()
        print(f"  {name:<22} {d:9.4f} {p:9.4f} {seconds:8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short run")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument(
        "--samples-per-eval", type=int, default=CPU_SAMPLES_PER_EVAL, help="rows per pass"
    )
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-fidelity", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.skip_speed:
        if args.quick:
            speed(8, n_iter=2, n_samples=50, repeats=2, chunk=args.samples_per_eval)
        else:
            speed(8, n_iter=5, n_samples=50, repeats=3, chunk=args.samples_per_eval)
    if not args.skip_fidelity:
        if args.quick:
            fidelity(n_images=8, n_iter=20, n_samples=8)
        else:
            fidelity(n_images=16, n_iter=30, n_samples=16)


if __name__ == "__main__":
    main()
