"""End-to-end LEG-TV on small_cnn: time vs its model evaluations, KernelShap and Lime.

Run: ``python benchmarks/bench_leg_end_to_end.py [--quick] [--untrained]``.

On SyntheticShapes test images (32 x 32) with the trained small_cnn (cached; ``--untrained``
skips training), f = softmax probability of the label, n = 500 evaluations per image, 28 x 28
grid. Measured in the same run: the n forward passes alone (same batch size), LEG, LEG-TV, and
Captum's KernelShap and Lime with the same number of evaluations on the same 28 x 28 feature
grid (feature_mask = nearest-cell index). Prints seconds per image and the ratios.
"""

from __future__ import annotations

import argparse
import time

import torch
from captum.attr import KernelShap, Lime

from captum_ext.attr import LEG, LEGTV
from captum_ext.attr._utils.grid import grid_index
from captum_ext.benchmark import SyntheticShapes, small_cnn, train


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="2 images instead of 4")
    ap.add_argument("--untrained", action="store_true", help="random small_cnn, no training")
    ap.add_argument("--n", type=int, default=500)
    args = ap.parse_args()
    torch.set_num_threads(2)
    n_img, n, ppe, grid = (2 if args.quick else 4), args.n, 100, (28, 28)
    # the reduced training budget of the test suite (tests/conftest.py): quick to train, cached
    trained = None if args.untrained else train("small_cnn", "shapes")
    model = small_cnn(3, 6).eval() if trained is None else trained.model.eval()
    images, labels, _ = SyntheticShapes(n=n_img, split="test").tensors()

    def f(x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(model(x), 1)

    def timed(fn) -> float:
        t = time.perf_counter()
        fn()
        return (time.perf_counter() - t) / n_img

    def forwards() -> None:  # the same batches LEG evaluates: n_img * ppe rows per pass
        batch = images.repeat(ppe, 1, 1, 1)
        with torch.no_grad():
            for _ in range(0, n, ppe):
                f(batch + 0.04 * torch.randn(batch.shape))

    ih, iw = grid_index(32, grid[0]), grid_index(32, grid[1])
    mask = (ih[:, None] * grid[1] + iw[None, :]).expand(1, 3, 32, 32)

    def captum_method(cls) -> None:
        method = cls(f)
        for i in range(n_img):
            method.attribute(
                images[i : i + 1],
                target=int(labels[i]),
                feature_mask=mask,
                n_samples=n,
                perturbations_per_eval=ppe,
            )

    def ours(cls) -> None:
        cls(f).attribute(
            images,
            target=labels,
            n_samples=n,
            grid=grid,
            perturbations_per_eval=ppe,
            generator=torch.Generator().manual_seed(0),
        )

    ours(LEG)  # warm-up (imports, first HiGHS construction)
    t_fwd = timed(forwards)
    t_leg = timed(lambda: ours(LEG))
    t_tv = timed(lambda: ours(LEGTV))
    t_ks = timed(lambda: captum_method(KernelShap))
    t_lime = timed(lambda: captum_method(Lime))
    print(f"small_cnn 32x32, n={n}, grid {grid}, {n_img} images; seconds per image:")
    print(f"  {n} forward passes alone  {t_fwd:7.3f}")
    print(f"  LEG                      {t_leg:7.3f}  ({t_leg / t_fwd:5.2f}x the forwards)")
    print(f"  LEG-TV                   {t_tv:7.3f}  ({t_tv / t_fwd:5.2f}x the forwards)")
    print(f"  KernelShap               {t_ks:7.3f}  (LEG-TV / KernelShap = {t_tv / t_ks:5.2f})")
    print(f"  Lime                     {t_lime:7.3f}  (LEG-TV / Lime = {t_tv / t_lime:5.2f})")


if __name__ == "__main__":
    main()
