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

Timings take the minimum over interleaved repeats (the machine may be shared). With
``--device cuda`` everything runs on the GPU: each timing starts and ends with
``torch.cuda.synchronize()``, every run is called twice before timing, and RelEx and the bare
passes evaluate all rows of a step in one pass unless ``--samples-per-eval`` says otherwise.
"""

from __future__ import annotations

import argparse
import time

import torch
from captum.attr import IntegratedGradients, NoiseTunnel, Saliency

from captum_ext.attr import RelEx
from captum_ext.attr._core.relex import CPU_SAMPLES_PER_EVAL
from captum_ext.benchmark import SyntheticShapes, small_cnn, train

CPU = torch.device("cpu")


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so that the clock measures it (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
    dev = inputs.device
    gen = torch.Generator(device=dev).manual_seed(0)  # on the inputs' device: no host copies
    for x0, c in zip(inputs, targets.tolist()):
        m = (torch.rand(x0.shape, generator=gen, device=dev) * 0.01).unsqueeze(0).requires_grad_()
        opt = torch.optim.SGD([m], lr=0.1, momentum=0.99)
        s = 0.1 * (x0.max() - x0.min())
        for _ in range(n_iter):
            xb = x0 + s * torch.randn((n_samples, *x0.shape), generator=gen, device=dev)
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


def timed(fn, device: torch.device = CPU) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def speed(
    n_examples: int,
    n_iter: int,
    n_samples: int,
    repeats: int,
    chunk: int | None,
    device: torch.device = CPU,
) -> None:
    cuda = device.type == "cuda"
    model = small_cnn(3, 6).eval().to(device)
    x, _, _ = SyntheticShapes(n=n_examples, split="test").tensors()
    x = x.to(device)
    with torch.no_grad():
        targets = model(x).argmax(1)
    rows = x.repeat_interleave(2 * n_samples, 0)
    if chunk is None:  # RelEx's own default: 64 rows per pass on CPU, all rows on a GPU
        chunk = min(rows.shape[0], CPU_SAMPLES_PER_EVAL) if not cuda else rows.shape[0]
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
    if cuda:  # warm-up: cuDNN algorithm choice, allocator, lazy module loading
        for run in runs.values():
            run()
            run()
    for _ in range(repeats):
        for name, run in runs.items():
            best[name] = min(best[name], timed(run, device))
    where = torch.cuda.get_device_name(device) if cuda else f"{torch.get_num_threads()} threads"
    print(
        f"speed: small_cnn 3x32x32, M={n_examples} examples, n_iter={n_iter}, "
        f"n_samples={n_samples} ({rows.shape[0]} images per step, {chunk} per pass), "
        f"{where}, min of {repeats}"
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


def fidelity(n_images: int, n_iter: int, n_samples: int, device: torch.device = CPU) -> None:
    from captum_ext.metrics.fidelity import deletion, preservation

    model = train("small_cnn", "shapes").model.eval().to(device)
    x, labels, _ = SyntheticShapes(n=n_images, split="test").tensors()
    x, labels = x.to(device), labels.to(device)
    with torch.no_grad():
        pred = model(x).argmax(1)
    gen = torch.Generator(device=device).manual_seed(0)
    relex_kw = dict(n_iter=n_iter, n_samples=n_samples, generator=gen)
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
        sync(device)
        start = time.perf_counter()
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(0)
            attr = fn().detach()
        sync(device)
        seconds = time.perf_counter() - start
        d = deletion(model, x, attr, target=pred).auc.mean().item()
        p = preservation(model, x, attr, target=pred).auc.mean().item()
        print(f"  {name:<22} {d:9.4f} {p:9.4f} {seconds:8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short run")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument(
        "--samples-per-eval",
        type=int,
        default=None,
        help=f"rows per pass (default: RelEx's, {CPU_SAMPLES_PER_EVAL} on CPU, all on CUDA)",
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=None, help="speed repeats (default 3)")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-fidelity", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    chunk = args.samples_per_eval
    if not args.skip_speed:
        if args.quick:
            speed(8, 2, 50, args.repeats or 2, chunk, device)
        else:
            speed(8, 5, 50, args.repeats or 3, chunk, device)
    if not args.skip_fidelity:
        if args.quick:
            fidelity(n_images=8, n_iter=20, n_samples=8, device=device)
        else:
            fidelity(n_images=16, n_iter=30, n_samples=16, device=device)


if __name__ == "__main__":
    main()
