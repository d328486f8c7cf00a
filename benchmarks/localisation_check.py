"""Do the attribution methods work out of the box on real, confident models? (issue 13)

Runs every captum-ext method with its defaults and the Captum-natural call (``LEG(model)``,
``LEGTV(model)``, ``CAFO(model)``, ``CASO(model)``, ``CASO(model)`` with ``hessian="hvp"``,
``RelEx(model)``, and ``RelEx(model)`` with ``temperature=None``, the paper's raw softmax, as
``RelEx-rawT``) next to Captum's Saliency (abs), IntegratedGradients (50 steps), SmoothGrad
(``NoiseTunnel(Saliency)``, 25 samples, stdev 0.15) and Occlusion, on

- ``small``: small_cnn on SyntheticShapes 32x32 (12 correctly classified test images by default;
  Occlusion window 4x4, stride 2), and
- ``224``: the 224x224 benchmark model ``resnet18_224`` (1,000 logits, 4 images by default;
  Occlusion window 32x32, stride 16),

each as trained and wrapped in :func:`captum_ext.benchmark.saturated` (logits x 20, float32
softmax exactly 1). Per method it prints the time per image, the largest ``|attribution|``,
whether any map is blank (``max |a| <= 1e-12``) or non-finite, the energy inside the object
mask over the object's area (``captum_ext.metrics.energy_pointing_game`` of the signed map and
of the absolute map; 1 is chance level), the pointing game of both (ties at the maximum scored
by their share inside the mask, ``ties="mean"``: block-constant maps such as Occlusion's and
LEG's would otherwise be scored by their cells' top-left pixels) with its standard error
``sqrt(PG (1 - PG) / n)``, and for random methods the
seed-to-seed agreement of the absolute maps (two ``torch.Generator`` seeds; SmoothGrad, which
draws from the global RNG, gets two global seeds) by three measures: the tie-aware Spearman
correlation over all pixels (``seedρ``), the Pearson correlation (``seedr``) and the share of the
top 10 % of pixels the two maps have in common (``top10``). Spearman alone ranks a sparse map's
near-zero background as carefully as its object; the other two weigh what a display shows.

A PNG grid (rows: images, columns: methods; channel-summed ``|attribution|``, each map scaled to
its own maximum) is written to ``--out``.

Usage::

    python benchmarks/localisation_check.py                      # everything
    python benchmarks/localisation_check.py --models small --only LEG,Saliency --out /tmp/a.png

Models are trained on first use and cached (``captum_ext.benchmark.train``); the 224 model
takes several minutes on 2 CPU cores the first time.
"""

from __future__ import annotations

import argparse
import inspect
import math
import time
import warnings
from dataclasses import dataclass
from typing import Callable

import torch
from captum.attr import IntegratedGradients, NoiseTunnel, Occlusion, Saliency
from torch import Tensor, nn

from captum_ext.attr import CAFO, CASO, LEG, LEGTV, RelEx
from captum_ext.benchmark import SyntheticShapes, saturated, train
from captum_ext.metrics import (
    energy_pointing_game,
    pointing_game,
    rank_correlation,
    topk_intersection,
)

BLANK = 1e-12
SEEDS = (0, 1)

#: name -> (model, inputs, target, generator) -> attribution
Method = Callable[[nn.Module, Tensor, Tensor, "torch.Generator | None"], Tensor]


def _with_generator(build: Callable[[nn.Module], object], **kwargs) -> Method:
    def run(model: nn.Module, x: Tensor, target: Tensor, gen: torch.Generator | None) -> Tensor:
        method = build(model)
        extra = dict(kwargs)
        if gen is not None:
            extra["generator"] = gen
        return method.attribute(x, target=target, **extra)

    return run


def _occlusion(window: int, stride: int) -> Method:
    def run(model: nn.Module, x: Tensor, target: Tensor, gen: torch.Generator | None) -> Tensor:
        return Occlusion(model).attribute(
            x,
            target=target,
            sliding_window_shapes=(x.shape[1], window, window),
            strides=(x.shape[1], stride, stride),
            perturbations_per_eval=16,
        )

    return run


def _smoothgrad(model: nn.Module, x: Tensor, target: Tensor, gen: torch.Generator | None) -> Tensor:
    # NoiseTunnel draws its noise from the global RNG: seed it (and restore it afterwards).
    with torch.random.fork_rng():
        if gen is not None:
            torch.manual_seed(gen.initial_seed())
        return NoiseTunnel(Saliency(model)).attribute(
            x,
            target=target,
            nt_type="smoothgrad",
            nt_samples=25,
            stdevs=0.15,
            nt_samples_batch_size=5,
        )


def _ig(model: nn.Module, x: Tensor, target: Tensor, gen: torch.Generator | None) -> Tensor:
    batch = 50 if x.shape[-1] <= 64 else 10
    return IntegratedGradients(model).attribute(
        x, target=target, n_steps=50, internal_batch_size=batch
    )


def _saliency(model: nn.Module, x: Tensor, target: Tensor, gen: torch.Generator | None) -> Tensor:
    return Saliency(model).attribute(x, target=target, abs=True)


def methods(size: int) -> dict[str, tuple[Method, bool]]:
    """The compared methods at image side ``size``: name -> (run, is_random)."""

    def accepts_generator(cls: type) -> bool:
        return "generator" in inspect.signature(cls.attribute).parameters

    window, stride = (4, 2) if size <= 64 else (32, 16)
    table: dict[str, tuple[Method, bool]] = {
        "LEG": (_with_generator(LEG), accepts_generator(LEG)),
        "LEGTV": (_with_generator(LEGTV), accepts_generator(LEGTV)),
        "CAFO": (_with_generator(CAFO), False),
        "CASO": (_with_generator(CASO), accepts_generator(CASO)),
        "CASO-hvp": (_with_generator(CASO, hessian="hvp"), accepts_generator(CASO)),
        "RelEx": (_with_generator(RelEx), accepts_generator(RelEx)),
        "RelEx-rawT": (_with_generator(RelEx, temperature=None), accepts_generator(RelEx)),
        "Saliency": (_saliency, False),
        "IG": (_ig, False),
        "SmoothGrad": (_smoothgrad, True),
        "Occlusion": (_occlusion(window, stride), False),
    }
    return table


@dataclass
class Result:
    """Measurements of one method on one model."""

    seconds_per_image: float = math.nan
    max_abs: float = math.nan
    blank: int = 0
    nonfinite: int = 0
    energy_ratio: float = math.nan
    energy_ratio_abs: float = math.nan
    pointing: float = math.nan
    pointing_abs: float = math.nan
    spearman: float = math.nan
    pearson: float = math.nan
    top10: float = math.nan
    error: str = ""
    maps: Tensor | None = None


def pearson(a: Tensor, b: Tensor) -> Tensor:
    """Per-example Pearson correlation of two (N, H, W) maps, float64."""
    a, b = a.flatten(1).double(), b.flatten(1).double()
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-300)


def seed_agreement(a: Tensor, b: Tensor) -> tuple[float, float, float]:
    """Mean Spearman (tie-aware), Pearson and top-10 % overlap of two (N, H, W) maps."""
    k = max(1, round(0.1 * a[0].numel()))
    return (
        float(rank_correlation(a, b).mean()),
        float(pearson(a, b).mean()),
        float(topk_intersection(a, b, k=k).mean()),
    )


def evaluate(
    run: Method,
    is_random: bool,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    masks: Tensor,
    seed_check: bool = True,
) -> Result:
    """Run one method (twice with different seeds when random) and measure it."""
    res = Result()
    gen = torch.Generator().manual_seed(SEEDS[0]) if is_random else None
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            attr = run(model, x, y, gen).detach()
    except Exception as err:  # report, keep going: this is a survey of many methods
        res.error = f"{type(err).__name__}: {str(err)[:120]}"
        return res
    res.seconds_per_image = (time.perf_counter() - start) / len(x)
    flat = attr.flatten(1)
    finite = torch.isfinite(flat).all(1)
    res.nonfinite = int((~finite).sum())
    absmax = torch.where(torch.isfinite(flat), flat.abs(), 0.0).amax(1)
    res.max_abs = float(absmax.max())
    res.blank = int((absmax <= BLANK).sum())
    clean = torch.nan_to_num(attr, nan=0.0, posinf=0.0, neginf=0.0)
    abs_map = clean.abs().sum(1)
    area = masks.flatten(1).float().mean(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res.energy_ratio = float((energy_pointing_game(clean, masks) / area).mean())
        res.energy_ratio_abs = float((energy_pointing_game(abs_map, masks) / area).mean())
    res.pointing = float(pointing_game(clean, masks, ties="mean").mean())
    res.pointing_abs = float(pointing_game(abs_map, masks, ties="mean").mean())
    res.maps = abs_map
    if is_random and seed_check:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                again = run(model, x, y, torch.Generator().manual_seed(SEEDS[1])).detach()
            again = torch.nan_to_num(again, nan=0.0, posinf=0.0, neginf=0.0).abs().sum(1)
            res.spearman, res.pearson, res.top10 = seed_agreement(abs_map, again)
        except Exception as err:
            res.error = f"second seed: {type(err).__name__}: {str(err)[:100]}"
    return res


def correct_images(model: nn.Module, size: int, count: int) -> tuple[Tensor, Tensor, Tensor]:
    """The first ``count`` SyntheticShapes test images of side ``size`` the model gets right."""
    data = SyntheticShapes(n=8 * count, size=size, split="test")
    picked: list[int] = []
    with torch.no_grad():
        for start in range(0, len(data), count):
            idx = list(range(start, start + count))
            images, labels, _ = data.tensors(idx)
            picked += [i for i, ok in zip(idx, (model(images).argmax(1) == labels).tolist()) if ok]
            if len(picked) >= count:
                break
    return data.tensors(picked[:count])


def load_models(
    which: list[str], counts: dict[str, int] | None = None
) -> list[tuple[str, nn.Module, tuple[Tensor, Tensor, Tensor]]]:
    """``(name, model, (images, labels, masks))`` for the requested models and their wrappers.

    ``counts`` overrides the number of images per model (defaults: small 12, 224 4).
    """
    counts = {"small": 12, "224": 4, **(counts or {})}
    out = []
    for key in which:
        if key == "small":
            model, size = train("small_cnn", "shapes").model.eval(), 32
        elif key == "224":
            model, size = train("resnet18_224", "shapes").model.eval(), 224
        else:
            raise SystemExit(f"--models: unknown model {key!r} (choose from small, 224)")
        data = correct_images(model, size, counts[key])
        out.append((key, model, data))
        out.append((f"{key}-sat", saturated(model), data))
    return out


def _fmt(v: float, spec: str = ".3g") -> str:
    return "-" if isinstance(v, float) and math.isnan(v) else format(v, spec)


def _se(p: float, n: int) -> float:
    """Binomial standard error of a pointing game ``p`` over ``n`` images."""
    return math.sqrt(max(p * (1 - p), 0.0) / n) if n else math.nan


def print_table(name: str, results: dict[str, Result], n: int) -> None:
    """Print one row per method."""
    print(f"\n== {name} ({n} images) ==")
    head = (
        f"{'method':<11} {'s/img':>8} {'max|a|':>9} {'blank':>5} {'nonfin':>6} "
        f"{'E/area':>7} {'|E|/area':>8} {'PG':>5} {'|PG|':>5} {'±se':>4} {'seedρ':>6} "
        f"{'seedr':>6} {'top10':>6}"
    )
    print(head, flush=True)
    for method, r in results.items():
        if r.error and r.maps is None:
            print(f"{method:<11} ERROR {r.error}")
            continue
        print(
            f"{method:<11} {_fmt(r.seconds_per_image, '8.3f')} {_fmt(r.max_abs, '9.2e')} "
            f"{r.blank:>5d} {r.nonfinite:>6d} {_fmt(r.energy_ratio, '7.2f')} "
            f"{_fmt(r.energy_ratio_abs, '8.2f')} {_fmt(r.pointing, '5.2f')} "
            f"{_fmt(r.pointing_abs, '5.2f')} {_fmt(_se(r.pointing, n), '4.2f')} "
            f"{_fmt(r.spearman, '6.2f')} {_fmt(r.pearson, '6.2f')} {_fmt(r.top10, '6.2f')}"
            + (f"  ({r.error})" if r.error else "")
        )


def save_grid(rows: list[tuple[str, Tensor, Tensor, dict[str, Tensor | None]]], path: str) -> None:
    """PNG: one row per image (its name, the image, the mask outline), one column per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(rows[0][3])
    fig, axes = plt.subplots(
        len(rows), len(names) + 1, figsize=(1.3 * (len(names) + 1), 1.3 * len(rows)), squeeze=False
    )
    for r, (label, image, mask, maps) in enumerate(rows):
        axes[r, 0].imshow(image.permute(1, 2, 0).clamp(0, 1).numpy())
        axes[r, 0].contour(mask.numpy(), levels=[0.5], colors="white", linewidths=0.6)
        axes[r, 0].set_ylabel(label, fontsize=6)
        for c, name in enumerate(names, start=1):
            m = maps[name]
            if m is not None:
                axes[r, c].imshow(
                    (m / m.max().clamp_min(1e-30)).numpy(), cmap="inferno", vmin=0, vmax=1
                )
                axes[r, c].contour(mask.numpy(), levels=[0.5], colors="cyan", linewidths=0.4)
            if r == 0:
                axes[r, c].set_title(name, fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    print(f"\nwrote {path}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="/tmp/localisation.png", help="PNG grid path")
    parser.add_argument("--only", default="", help="comma-separated method names")
    parser.add_argument("--models", default="small,224", help="comma-separated: small, 224")
    parser.add_argument("--no-saturated", action="store_true", help="skip the saturated wrappers")
    parser.add_argument("--count-small", type=int, default=12, help="images for the small model")
    parser.add_argument("--count-224", type=int, default=4, help="images for the 224 model")
    parser.add_argument(
        "--no-seed-check", action="store_true", help="skip the second seed (no agreement)"
    )
    args = parser.parse_args(argv)
    rows = []
    counts = {"small": args.count_small, "224": args.count_224}
    for name, model, (x, y, masks) in load_models(args.models.split(","), counts):
        if args.no_saturated and name.endswith("-sat"):
            continue
        table = methods(x.shape[-1])
        wanted = [m for m in args.only.split(",") if m] or list(table)
        unknown = set(wanted) - set(table)
        if unknown:
            raise SystemExit(
                f"--only: unknown method(s) {sorted(unknown)}; choose from {list(table)}"
            )
        results = {}
        for method in wanted:
            run, is_random = table[method]
            results[method] = evaluate(
                run, is_random, model, x, y, masks, seed_check=not args.no_seed_check
            )
            print_table(name, {method: results[method]}, len(x))
        print_table(name, results, len(x))
        for i in range(len(x)):
            maps = {m: (r.maps[i] if r.maps is not None else None) for m, r in results.items()}
            rows.append((f"{name} #{i}", x[i], masks[i], maps))
    if rows:
        save_grid(rows, args.out)


if __name__ == "__main__":
    main()
