"""Quality against cost: the model passes each estimator needs for a given map (issue 18).

For each method, a reference map from a large budget, then the agreement of cheaper runs with it
(Spearman correlation of the absolute maps, and relative L2 error) as a function of the model
passes spent per image, on correctly classified test images of the benchmark (32 x 32
``small_cnn``; ``--size 224`` for the 224 x 224 ResNet-18, with fewer images and budgets). It
prints, per method and estimator, the passes needed to reach a Spearman correlation of 0.95 (the
issue's goal) and 0.85 with the reference (interpolated in log-passes; ``>`` the largest budget
when never reached) and the ratio to today's default estimator, measured in the same run (a bound
when the default never reaches the level).

Passes are forward-equivalents: a gradient pass (forward and backward) counts as the measured
ratio of its time to a forward pass on the same batch (printed as ``grad_cost``), so estimators
that use gradients pay for them.

- **LEG / LEG-TV.** Budgets are evaluations per image. ``ols`` with ``antithetic=False`` is plain
  Monte Carlo, ``ols`` with antithetic pairs is the default, ``sobol`` draws the pairs from a
  scrambled Sobol sequence (``sampler="sobol"``, quasi-Monte Carlo), ``stein`` averages perturbed
  gradients (Lemma 1's identity ``gamma = E[grad_z f(x0 + z)]``; it needs a differentiable
  model). All on the 16 x 16 grid of the default 2,000 draws. The reference is ``stein`` at
  4,096 draws (1,024 at 224): every estimator has the same limit, and the reference is closer
  to it than any estimate compared with it (``stein`` budgets stop at a quarter of it).
- **RelEx.** Budgets are optimisation steps (``n_iter``; 12-100 at 32 x 32, 25 and 50 at 224)
  at the default 16 noisy copies, each step one gradient pass per copy and branch, with the
  default's antithetic copies and with independent ones (``antithetic=False``, the papers'); and
  noisy copies per step (2, 4, 8, 16) at the default 50 steps. RelEx's mask does not converge (its
  steps have a constant length), so the reference is the mean of four default-length runs
  (seeds 100-103, two with each way of drawing): what a call returns on average.
- **CASO.** Deterministic up to its power-iteration start; compared by seconds, not passes: the
  default ``hessian="hvp"`` against ``hessian="closed_form"``, both against the full closed form.

Beside the Spearman correlation every row prints the Pearson correlation and the share of the
top 10 % of pixels a map has in common with its reference: for a map whose background is near
zero (RelEx's mask) Spearman mostly ranks that background, which no display shows.

For LEG, LEG-TV and RelEx it also prints the seconds per image and the agreement with the
reference of the report's ``fast`` preset, before this benchmark (LEG: least squares on 500
evaluations; RelEx: 20 steps of 8 copies) and today.

Usage: ``python benchmarks/bench_efficiency.py [--size 32|224] [--images N] [--methods ...]
[--presets-only]``.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from scipy.stats import pearsonr, spearmanr
from torch import Tensor

from captum_ext.attr import CASO, LEG, LEGTV, RelEx, leg_saliency_map
from captum_ext.attr._core.relex import PRESETS as RELEX_PRESETS
from captum_ext.benchmark import SyntheticShapes, train
from captum_ext.metrics import topk_intersection

#: The issue's goal, and a lower level every estimator reaches within the budgets.
GOALS = (0.95, 0.85)


@dataclass
class Variant:
    """One estimator: its budgets, its call ``run(budget, seed) -> maps`` and its passes."""

    name: str
    budgets: list[int]
    run: Callable[[int, int], Tensor]
    passes: Callable[[int], float]


def display(attr: Tensor) -> Tensor:
    """``(N, H, W)`` channel-summed absolute maps, float64."""
    return leg_saliency_map(attr.detach()).double()


@dataclass
class Agreement:
    """Mean agreement of maps with their references: Spearman (the issue's measure), relative
    L2 error, Pearson correlation and the share of the top 10 % of pixels in common."""

    spearman: float
    rel_l2: float
    pearson: float
    top10: float

    def text(self) -> str:
        return (
            f"spearman {self.spearman:.3f}  relL2 {self.rel_l2:.3f}  "
            f"pearson {self.pearson:.3f}  top10 {self.top10:.3f}"
        )


def agreement(maps: Tensor, ref: Tensor) -> Agreement:
    """Agreement of each map with its reference, averaged over the images."""
    rho = [spearmanr(a.flatten().numpy(), b.flatten().numpy())[0] for a, b in zip(maps, ref)]
    r = [pearsonr(a.flatten().numpy(), b.flatten().numpy())[0] for a, b in zip(maps, ref)]
    l2 = ((maps - ref).flatten(1).norm(dim=1) / ref.flatten(1).norm(dim=1)).mean()
    k = max(1, round(0.1 * ref[0].numel()))
    top = topk_intersection(maps, ref, k=k).mean()
    return Agreement(float(sum(rho) / len(rho)), float(l2), float(sum(r) / len(r)), float(top))


def mean_agreement(scores: list[Agreement]) -> Agreement:
    """Field-wise mean of several seeds' agreements."""
    n = len(scores)
    return Agreement(
        sum(s.spearman for s in scores) / n,
        sum(s.rel_l2 for s in scores) / n,
        sum(s.pearson for s in scores) / n,
        sum(s.top10 for s in scores) / n,
    )


def passes_to_goal(points: list[tuple[float, float]], goal: float) -> tuple[float, bool]:
    """Passes at which Spearman first reaches ``goal`` (log-linear interpolation)."""
    prev = None
    for passes, rho in points:
        if rho >= goal:
            if prev is None or prev[1] >= rho:
                return passes, True
            t = (goal - prev[1]) / (rho - prev[1])
            return math.exp(math.log(prev[0]) + t * (math.log(passes) - math.log(prev[0]))), True
        prev = (passes, rho)
    return points[-1][0], False


def grad_cost(model: torch.nn.Module, x: Tensor, batch: int) -> float:
    """Seconds of a forward + backward pass over those of a forward pass, same batch."""
    xb = x[:1].repeat(batch, 1, 1, 1)

    def fwd() -> None:
        with torch.no_grad():
            model(xb)

    def fwd_bwd() -> None:
        xi = xb.clone().requires_grad_(True)
        torch.autograd.grad(model(xi)[:, 0].sum(), xi)

    def best(fn: Callable[[], None]) -> float:
        fn()
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times)

    return best(fwd_bwd) / best(fwd)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def leg_variants(
    cls: type, model, x, y, budgets: list[int], cost: float, ref_draws: int
) -> tuple[Tensor, list[Variant]]:
    """The reference and the estimators of LEG or LEG-TV."""

    def call(n: int, seed: int, **kw) -> Tensor:
        # the default grid at 2,000 draws for every budget (500 draws would default to 8 x 8):
        # all estimates then have the same limit as the reference
        leg = cls(model)
        return display(
            leg.attribute(x, target=y, n_samples=n, generator=gen(seed), grid=(16, 16), **kw)
        )

    ref = call(ref_draws, 12345, estimator="stein")
    stein_budgets = [b for b in (16, 32, 64, 128, 256, 512) if 4 * b <= ref_draws]
    variants = [
        Variant("ols, plain MC", budgets, lambda n, s: call(n, s, antithetic=False), float),
        Variant("ols, antithetic (default)", budgets, lambda n, s: call(n, s), float),
        Variant("ols, sobol antithetic", budgets, lambda n, s: call(n, s, sampler="sobol"), float),
        Variant(
            "stein, antithetic",
            stein_budgets,
            lambda n, s: call(n, s, estimator="stein"),
            lambda n: n * cost,
        ),
        Variant(
            "stein, sobol antithetic",
            stein_budgets,
            lambda n, s: call(n, s, estimator="stein", sampler="sobol"),
            lambda n: n * cost,
        ),
    ]
    return ref, variants


def relex_variants(model, x, y, cost, size: int) -> tuple[Tensor, list[Variant]]:
    """The reference (mean of four default runs) and RelEx's step and copy budgets."""
    steps, copies = 50, RELEX_PRESETS["default"]["n_samples"]

    def call(n_iter: int, seed: int, antithetic: bool = True, n_samples: int = copies) -> Tensor:
        relex = RelEx(model)
        return display(
            relex.attribute(
                x,
                target=y,
                n_iter=n_iter,
                n_samples=n_samples,
                generator=gen(seed),
                antithetic=antithetic,
            )
        )

    # half the reference runs with each way of drawing the copies, so it favours neither
    ref = torch.stack([call(steps, s, antithetic=s % 2 == 0) for s in range(100, 104)]).mean(0)

    def passes(n_iter: int) -> float:
        return n_iter * 2 * copies * cost

    budgets = [12, 25, 50, 100] if size == 32 else [25, 50]
    copy_budgets = [c for c in (2, 4, 8) if c < copies] + [copies]
    return ref, [
        Variant("independent copies", budgets, lambda n, s: call(n, s, False), passes),
        Variant(
            f"default (antithetic, avg {RELEX_PRESETS['default']['average_from']})",
            budgets,
            call,
            passes,
        ),
        Variant(
            f"fewer copies, {steps} steps",
            copy_budgets,
            lambda c, s: call(steps, s, n_samples=c),
            lambda c: steps * 2 * c * cost,
        ),
    ]


def measure(variants: list[Variant], ref: Tensor, seeds: tuple[int, ...]) -> list[dict]:
    """Per variant: Spearman and L2 against the reference at each budget, and passes to goal."""
    rows = []
    for v in variants:
        points = []
        for b in v.budgets:
            t0 = time.perf_counter()
            score = mean_agreement([agreement(v.run(b, seed), ref) for seed in seeds])
            sec = (time.perf_counter() - t0) / len(seeds)
            points.append((v.passes(b), score.spearman))
            print(
                f"  {v.name:28s} budget {b:6d}  passes/img {v.passes(b):9.0f}  "
                f"{score.text()}  s/call {sec:.1f}",
                flush=True,
            )
        rows.append({"variant": v.name, **{g: passes_to_goal(points, g) for g in GOALS}})
    return rows


def ratio_text(ours: tuple[float, bool], base: tuple[float, bool]) -> str:
    """``ours / base`` passes; a bound when either never reached the goal."""
    (p, reached), (q, base_reached) = ours, base
    if reached and base_reached:
        return f"{p / q:.3f}"
    if reached:  # the default needs more than its largest budget
        return f"< {p / q:.3f}"
    return f"> {p / q:.3f}" if base_reached else "n/a (neither reached)"


def summary(method: str, rows: list[dict]) -> None:
    """Passes to each goal per variant and the ratio to the default's."""
    base = next(r for r in rows if "default" in r["variant"])
    for goal in GOALS:
        print(f"{method}: passes per image for Spearman {goal} with the reference")
        for r in rows:
            passes, reached = r[goal]
            mark = "" if reached else ">"
            ratio = ratio_text(r[goal], base[goal])
            print(f"  {r['variant']:28s} {mark}{passes:8.0f}   ratio to default {ratio}")


#: The report's ``fast`` preset on images above 64 x 64 before this benchmark, measured beside
#: today's: LEG / LEG-TV least squares on 500 evaluations (an 8 x 8 grid), RelEx 20 steps of 8
#: noisy copies.
FAST_BEFORE: dict[str, tuple[str, dict]] = {
    "LEG": ("ols, 500", {"n_samples": 500, "perturbations_per_eval": 100}),
    "LEGTV": ("ols, 500", {"n_samples": 500, "perturbations_per_eval": 100}),
    "RelEx": ("20 steps x 8", {"n_iter": 20, "n_samples": 8}),
}
_CLASSES = {"LEG": (LEG, "LEG"), "LEGTV": (LEGTV, "LEG-TV"), "RelEx": (RelEx, "RelEx")}


def preset_rows(method: str, model, x, y, ref: Tensor, seeds: tuple[int, ...]) -> None:
    """Seconds per image and agreement with ``ref`` of the report's presets of ``method``."""
    from captum_ext.report.methods import METHODS

    cls, report_name = _CLASSES[method]
    spec = METHODS[report_name]
    label, before = FAST_BEFORE[method]
    runs: dict[str, Callable[[int], Tensor]] = {
        f"fast before ({label})": lambda s: cls(model).attribute(
            x, target=y, generator=gen(s), **before
        ),
        "fast (report today)": lambda s: spec.run(model, x, y, seed=s, preset="fast"),
    }
    for name, run in runs.items():
        t0 = time.perf_counter()
        score = mean_agreement([agreement(display(run(s)), ref) for s in seeds])
        sec = (time.perf_counter() - t0) / len(seeds) / len(x)
        print(f"  preset {name:28s} s/image {sec:6.1f}  {score.text()}")


def caso_rows(model, x, y) -> None:
    """CASO's default route against the closed form, by seconds and agreement."""
    t0 = time.perf_counter()
    ref = display(CASO(model).attribute(x, target=y, hessian="closed_form", hessian_tol=None))
    t_full = time.perf_counter() - t0
    print(f"  closed_form, every class    s/call {t_full:.1f}  (reference)")
    routes = (("closed_form (hessian_tol)", {"hessian": "closed_form"}), ("hvp (default)", {}))
    for name, kw in routes:
        t0 = time.perf_counter()
        maps = display(CASO(model).attribute(x, target=y, generator=gen(0), **kw))
        sec = time.perf_counter() - t0
        print(f"  {name:28s} s/call {sec:.1f}  {agreement(maps, ref).text()}")


def images(size: int, count: int):
    """A benchmark model and ``count`` correctly classified test images of its size."""
    trained = train("small_cnn", "shapes") if size == 32 else train("resnet18_224", "shapes")
    model = trained.model.eval()
    ds = SyntheticShapes(n=8 * count, split="test", size=size)
    x, y, _ = ds.tensors(list(range(8 * count)))
    with torch.no_grad():
        ok = model(x).argmax(1) == y
    return model, x[ok][:count], y[ok][:count]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=32, choices=(32, 224))
    p.add_argument("--images", type=int, default=None, help="default: 4 at 32, 1 at 224")
    p.add_argument("--methods", nargs="+", default=["LEG", "LEGTV", "RelEx", "CASO"])
    p.add_argument(
        "--presets-only",
        action="store_true",
        help="LEG, LEG-TV, RelEx: only the reference and the report's fast preset, before and "
        "today",
    )
    args = p.parse_args()
    count = args.images or (4 if args.size == 32 else 1)
    model, x, y = images(args.size, count)
    cost = grad_cost(model, x, 64 if args.size == 32 else 8)
    # antithetic least squares needs 2 draws per coefficient: 512 on the 16 x 16 grid
    budgets = [1000, 2000, 4000, 8000] if args.size == 32 else [1000, 2000]
    seeds = (1, 2)
    print(f"{args.size}x{args.size}, {count} images, grad_cost {cost:.2f} forward passes")
    for method in args.methods:
        print(f"== {method}", flush=True)
        if method in ("LEG", "LEGTV"):
            cls = LEG if method == "LEG" else LEGTV
            ref_draws = 4096 if args.size == 32 else 1024
            ref, variants = leg_variants(cls, model, x, y, budgets, cost, ref_draws)
            preset_rows(method, model, x, y, ref, seeds)
            if args.presets_only:
                continue
        elif method == "RelEx":
            ref, variants = relex_variants(model, x, y, cost, args.size)
            preset_rows(method, model, x, y, ref, seeds)
            if args.presets_only:
                continue
        elif method == "CASO":
            caso_rows(model, x, y)
            continue
        else:
            raise SystemExit(f"unknown method {method!r}")
        summary(method, measure(variants, ref, seeds))


if __name__ == "__main__":
    main()
