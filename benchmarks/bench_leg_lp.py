"""LEG-TV LP time: our sparse formulation vs the dense paper formulation (cvxpy + HiGHS).

Run: ``python benchmarks/bench_leg_lp.py [--quick] [--sizes 28,56,112,224] [--no-dense]``.

The right-hand side ``ybar`` comes from n = 2000 TV draws and a two-blob linear model (sigma 0.02,
padded D, K_L = 0.1), as in the issue. At 28 x 28 the dense paper formulation (dense ``pinv`` and
``D^{+T} Sigma``, unscaled, cvxpy + HiGHS) is timed in the same run and the ratio printed, with
the relative objective difference. Then ours at each size with every applicable solver, and the
warm-started solution path over 5 values of K_L.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from captum_ext.attr._utils.grid import sample_tv_perturbations
from captum_ext.attr._utils.tv_lp import LegTVProblem, constraint_violation, dense_paper_lp

SIGMA = 0.02


def make_ybar(p: int, n: int = 2000, seed: int = 0) -> np.ndarray:
    gen = torch.Generator().manual_seed(seed)
    w = torch.zeros(p, p, dtype=torch.float64)
    w[p // 5 : p // 2, p // 5 : p // 2] = 1.0
    w[p // 2 : 4 * p // 5, p // 2 : p - 2] = -0.7
    y = torch.zeros(p, p, dtype=torch.float64)
    for _ in range(n // 250):  # stream to keep memory low at 224 x 224
        z = sample_tv_perturbations(250, (p, p), SIGMA, generator=gen, dtype=torch.float64)
        f = (z * w).sum((1, 2)) * 784 / p**2 + 0.002 * torch.randn(250, generator=gen)
        y += (f[:, None, None] * z).sum(0)
    return (y / n).numpy()


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="28 and 56 only, no 224")
    ap.add_argument("--sizes", default=None)
    ap.add_argument("--no-dense", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(2)
    sizes = (
        [int(s) for s in args.sizes.split(",")]
        if args.sizes
        else ([28, 56] if args.quick else [28, 56, 112, 224])
    )
    if not args.no_dense:
        ybar = make_ybar(28)
        prob = LegTVProblem(ybar, SIGMA, solver="highs-ds")
        L = 0.1 * prob.L_max
        ours, t_ours = timed(lambda: prob.solve(L))
        dense, t_dense = timed(lambda: dense_paper_lp(ybar, SIGMA, L))
        rel = abs(ours.objective - dense.objective) / dense.objective
        print(
            f"28x28  dense paper LP (cvxpy+HiGHS) {t_dense:8.2f} s | ours (highs-ds) "
            f"{t_ours:6.3f} s | speed-up {t_dense / t_ours:7.1f}x | objective rel diff {rel:.1e}"
        )
    for p in sizes:
        ybar = make_ybar(p)
        solvers = ["highs-ds", "clarabel"] if p <= 56 else ["clarabel"]
        for solver in solvers:
            prob = LegTVProblem(ybar, SIGMA, solver=solver)
            res, t = timed(lambda prob=prob: prob.solve(0.1 * prob.L_max))
            viol = constraint_violation(res.g, ybar, SIGMA, res.L) / prob.L_max
            print(
                f"{p}x{p}  ours ({solver:9s}) {t:8.3f} s  objective {res.objective:.6g}  "
                f"relative violation {viol:.1e}"
            )
        if p <= 56:
            prob = LegTVProblem(ybar, SIGMA, solver="highs-ds")
            ks = (0.3, 0.2, 0.1, 0.075, 0.05)
            _, t = timed(lambda prob=prob, ks=ks: prob.path([k * prob.L_max for k in ks]))
            print(
                f"{p}x{p}  solution path, {len(ks)} K_L, highs-ds warm-started: "
                f"{t / len(ks):.3f} s per L"
            )


if __name__ == "__main__":
    main()
