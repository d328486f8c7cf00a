"""Seconds per image of every report method at 224 x 224, under each preset, in one run.

Runs each method of ``captum-ext report`` (:data:`captum_ext.report.methods.METHODS`) the way
the report calls it, on a torchvision ResNet-18 with 1,000 classes (random weights: nothing is
downloaded; the cost of every method but CAFO/CASO's lambda1 search does not depend on the
weights) and one 224 x 224 image, for the ``fast`` and ``paper`` presets, and prints a Markdown
table with the ratio paper / fast and each method's cost in Saliency calls (the baseline,
measured in the same run). The README's table comes from this script.

``--weights benchmark`` uses the trained 224 x 224 benchmark ResNet-18 (``resnet18_224``, cached
by :func:`captum_ext.benchmark.train`) on its own test images instead: a confident model, as
users have, on which CASO's default ``hessian="auto"`` takes the closed form (random weights give
a flat softmax over 1,000 classes, so CASO falls back to Hessian-vector products there).

Usage: ``python benchmarks/bench_report_presets.py [--presets fast paper] [--methods ...]
[--size 224] [--images 1] [--weights random|benchmark]``. Takes about 3 minutes for ``fast``
and 30 for ``paper`` on 2 cores.
"""

from __future__ import annotations

import argparse
import time

import torch
import torchvision

from captum_ext.benchmark import SyntheticShapes, train
from captum_ext.report.method_spec import PRESETS
from captum_ext.report.methods import available_methods


def main() -> None:
    """Time the methods and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), choices=PRESETS)
    parser.add_argument("--methods", nargs="+", default=None)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--images", type=int, default=1)
    parser.add_argument("--weights", choices=("random", "benchmark"), default="random")
    args = parser.parse_args()

    methods = available_methods()
    names = args.methods or list(methods)
    if args.weights == "benchmark":
        model = train("resnet18_224", "shapes").model.eval()
        x = SyntheticShapes(n=args.images, split="test", size=224).tensors()[0]
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = torchvision.models.resnet18(num_classes=1000).eval()
            x = torch.rand(args.images, 3, args.size, args.size)
    with torch.no_grad():
        target = model(x).argmax(1)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, ResNet-18 (1,000 "
        f"classes, {args.weights} weights), {args.images} image(s) of {x.shape[-1]} x "
        f"{x.shape[-1]}",
        flush=True,
    )
    methods["Saliency"].run(model, x, target, n_classes=1000)  # warm-up, not timed
    seconds: dict[tuple[str, str], float] = {}
    for preset in args.presets:
        for name in names:
            start = time.perf_counter()
            methods[name].run(model, x, target, preset=preset, n_classes=1000)
            seconds[name, preset] = (time.perf_counter() - start) / args.images
            print(f"  {preset:5s} {name:20s} {seconds[name, preset]:8.2f} s/image", flush=True)
    base = {p: seconds.get(("Saliency", p)) for p in args.presets}
    head = " | ".join(f"{p} (s/image)" for p in args.presets)
    print(f"\n| method | {head} | paper / fast | fast in Saliency calls |")
    print("|---|" + "---:|" * (len(args.presets) + 2))
    for name in names:
        cells = [f"{seconds[name, p]:.2f}" for p in args.presets]
        ratio = "-"
        if "fast" in args.presets and "paper" in args.presets:
            ratio = f"{seconds[name, 'paper'] / seconds[name, 'fast']:.1f}x"
        calls = "-"
        if base.get("fast"):
            calls = f"{seconds[name, 'fast'] / base['fast']:.0f}"
        print(f"| {name} | {' | '.join(cells)} | {ratio} | {calls} |")


if __name__ == "__main__":
    main()
