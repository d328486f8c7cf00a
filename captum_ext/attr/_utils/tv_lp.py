"""The LEG-TV linear program in sparse form (the fast path) and the dense paper formulation.

LEG-TV (Luo, Barut, Jin, Definition 2, Eq. 4) is

    min_g ||D g||_1   s.t.   || D^{+T} (ybar - Sigma g) ||_inf <= L.

With the TV-adapted covariance ``Sigma = sigma^2 (D^T D + 1 1^T / P)`` the dense ``m x P``
matrix ``D^{+T} Sigma`` is ``sigma^2 (D + c 1^T)`` (``c = 0`` for the paper's unpadded ``D``), so
after dividing by ``sigma^2``, with ``w = D^{+T} ybar / sigma^2`` and ``Lt = L / sigma^2``:

    min 1^T u + 1^T v   s.t.   D g - u + v = 0,   1^T g - s = 0,
                               w - Lt <= (u - v) + c s <= w + Lt,   u, v >= 0,

a sparse LP with one dense column. For ``boundary="none"`` ``c = 0``, ``s`` is dropped and the
free mean of ``g`` is fixed by ``1^T g = 1^T ybar / sigma^2`` (the mean of empirical LEG,
paper Section 4.1). For an isotropic ``Sigma = sigma^2 I`` the problem stays sparse with an
auxiliary ``q``: ``D^T D q + g = ybar / sigma^2`` and ``|D q| <= Lt``.

Solvers: HiGHS through ``highspy`` (a dependency, >= 1.13): ``"highs-ds"`` (dual simplex,
vertex solutions, warm-started across L), ``"highs-ipm"``; or cvxpy + ``"clarabel"`` on the
same sparse form. The optimum is a face, not a point: solvers agree on the objective, not on g.
"""

from __future__ import annotations

import functools
import math
import os
import sys
import warnings
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp

from captum_ext.attr._utils.grid import (
    Boundary,
    difference_matrix,
    pinv_transpose_apply,
    solve_tv_system,
    tv_rank_one_column,
)

Covariance = Literal["tv", "isotropic"]
Solver = Literal["auto", "highs-ds", "highs-ipm", "clarabel"]
SOLVERS: tuple[Solver, ...] = ("auto", "highs-ds", "highs-ipm", "clarabel")
#: ``solver="auto"`` uses HiGHS dual simplex (vertex solutions) up to this many grid cells and
#: cvxpy + CLARABEL above, where the simplex falls behind; ``benchmarks/bench_leg_lp.py`` times
#: every solver at each grid size (``--sizes``).
AUTO_SIMPLEX_MAX_CELLS = 24 * 24

__all__ = ["SOLVERS", "LegTVProblem", "TVLPResult", "theoretical_L"]


@dataclass(frozen=True)
class TVLPResult:
    """One LEG-TV solution.

    Attributes:
        g: Solution on the grid, ``(p1, p2)`` float64.
        objective: ``||D g||_1`` at the solution.
        L: The constraint level used (in the units of Eq. 4).
        status: Solver status text (``"trivial"`` when no solver was needed).
    """

    g: np.ndarray
    objective: float
    L: float
    status: str


def _check_solver(solver: Solver) -> Solver:
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    return solver


@functools.lru_cache(maxsize=8)
def _pinv_l1_norm(grid: tuple[int, int], boundary: Boundary) -> float:
    """``||D^+||_1``: the largest L1 norm of a row of ``D^{+T}`` (row j = ``Solve(D^T e_j)``)."""
    d = difference_matrix(grid, boundary)
    best = 0.0
    chunk = max(1, 2_000_000 // (grid[0] * grid[1]))
    for start in range(0, d.shape[0], chunk):
        rows = d[start : start + chunk].toarray().reshape(-1, *grid)
        best = max(best, float(np.abs(solve_tv_system(rows, boundary)).sum(axis=(1, 2)).max()))
    return best


def theoretical_L(
    grid: tuple[int, int], n: int, boundary: Boundary = "padded", eps: float = 0.05
) -> float:
    """The L of Theorem 1 / Lemma 2: ``sqrt(2 ||D^+||_1 log(P / eps) / n)``.

    It assumes outputs in [0, 1] and inputs scaled to [0, 1]; the paper calls it conservative.
    ``||D^+||_1`` costs ``m`` Laplacian solves once per (grid, boundary) and is cached.
    """
    if not 0 < eps < 1:
        raise ValueError(f"eps must be in (0, 1), got {eps!r}")
    p = grid[0] * grid[1]
    return math.sqrt(2 * _pinv_l1_norm(tuple(grid), boundary) * math.log(p / eps) / n)


class LegTVProblem:
    """The LEG-TV LP of one grid and one right-hand side ``ybar``, solvable for many L.

    Build once per (example, tensor, channel); :meth:`solve` for one L, or :meth:`path` for
    several L values from one solver model (HiGHS keeps its basis, so later solves warm-start).

    Args:
        ybar: ``(1/n) sum_i ytilde_i z_i`` on the grid, ``(p1, p2)``.
        sigma: The covariance scale (``Sigma = sigma^2 (...)``).
        covariance: ``"tv"`` (``sigma^2 (D^T D + 1 1^T / P)``) or ``"isotropic"`` (``sigma^2 I``).
        boundary: ``"padded"`` or ``"none"`` (see :mod:`captum_ext.attr._utils.grid`).
        solver: One of :data:`SOLVERS`.
    """

    def __init__(
        self,
        ybar: np.ndarray,
        sigma: float,
        *,
        covariance: Covariance = "tv",
        boundary: Boundary = "padded",
        solver: Solver = "auto",
    ) -> None:
        if covariance not in ("tv", "isotropic"):
            raise ValueError(f"covariance must be 'tv' or 'isotropic', got {covariance!r}")
        self.ybar = np.asarray(ybar, dtype=np.float64)
        self.grid = tuple(self.ybar.shape)
        self.sigma = float(sigma)
        self.covariance = covariance
        self.boundary = boundary
        p = self.grid[0] * self.grid[1]
        solver = _check_solver(solver)
        if solver == "auto":
            solver = "highs-ds" if p <= AUTO_SIMPLEX_MAX_CELLS else "clarabel"
        self.solver = solver
        #: ``w = D^{+T} ybar / sigma^2`` and ``L_max = sigma^2 max|w|``.
        self.w = pinv_transpose_apply(self.ybar, boundary) / self.sigma**2
        self.L_max = float(np.abs(self.w).max()) * self.sigma**2
        self._model: _HighsModel | _ClarabelModel | None = None

    def solve(self, L: float) -> TVLPResult:
        """Solve Eq. 4 at level ``L >= 0`` (same units as :attr:`L_max`)."""
        return self.path([L])[0]

    def path(self, Ls: list[float]) -> list[TVLPResult]:
        """Solve at several levels in the order given, reusing one solver model."""
        out = []
        for L in Ls:
            if not (math.isfinite(L) and L >= 0):
                raise ValueError(f"L must be a finite number >= 0, got {L!r}")
            trivial = self._trivial(L)
            out.append(trivial if trivial is not None else self._solve(L))
        return out

    def _trivial(self, L: float) -> TVLPResult | None:
        """``L >= L_max``: ``D g = 0`` is feasible, so the optimum has zero TV.

        Padded: ``g = 0`` (the only zero-TV grid). Unpadded: the constant grid with the
        mean of empirical LEG (``1^T Sigma^-1 ybar / P = mean(ybar) / sigma^2`` for both
        covariances), the mean rule of Section 4.1.
        """
        if L < self.L_max:
            return None
        if self.boundary == "padded":
            return TVLPResult(np.zeros(self.grid), 0.0, L, "trivial")
        g = np.full(self.grid, self.ybar.mean() / self.sigma**2)
        return TVLPResult(g, 0.0, L, "trivial")

    def _assemble(self) -> tuple:
        """Sparse constraint matrix, variable bounds, fixed rows and the L-dependent rows."""
        grid, boundary = self.grid, self.boundary
        d = difference_matrix(grid, boundary).tocsc()
        m, p = d.shape
        eye = sp.identity(m, format="csc")
        s2 = self.sigma**2
        if self.covariance == "tv":
            c = tv_rank_one_column(grid, boundary)
            has_s = boundary == "padded"
            ns = int(has_s)
            # variables: g (p), u (m), v (m), [s]
            z_ms = sp.csc_matrix((m, ns))
            blocks = [[d, -eye, eye, z_ms]]  # D g - u + v = 0
            if has_s:
                blocks.append([sp.csc_matrix(np.ones((1, p))), None, None, sp.csc_matrix([[-1.0]])])
                fixed_lo = fixed_hi = np.zeros(m + 1)
            else:
                blocks.append([sp.csc_matrix(np.ones((1, p))), None, None, None])
                mean = self.ybar.sum() / s2
                fixed_lo = fixed_hi = np.concatenate([np.zeros(m), [mean]])
            cs = sp.csc_matrix(c[:, None]) if has_s else z_ms
            blocks.append([sp.csc_matrix((m, p)), eye, -eye, cs])  # (u - v) + c s
            n_var = p + 2 * m + ns
            col_lo = np.concatenate([np.full(p, -np.inf), np.zeros(2 * m), np.full(ns, -np.inf)])
            center = self.w
        else:
            # variables: g (p), u (m), v (m), q (p);  D^T D q + g = ybar / s2,  |D q| <= Lt
            lap = (d.T @ d).tocsc()
            blocks = [
                [d, -eye, eye, None],
                [sp.identity(p, format="csc"), None, None, lap],
                [sp.csc_matrix((m, p)), sp.csc_matrix((m, m)), None, d],
            ]
            fixed_lo = fixed_hi = np.concatenate([np.zeros(m), self.ybar.ravel() / s2])
            n_var = 2 * p + 2 * m
            col_lo = np.concatenate([np.full(p, -np.inf), np.zeros(2 * m), np.full(p, -np.inf)])
            center = np.zeros(m)
        a = sp.bmat(blocks, format="csc")
        cost = np.concatenate([np.zeros(p), np.ones(2 * m), np.zeros(n_var - p - 2 * m)])
        return a, cost, col_lo, fixed_lo, fixed_hi, center, n_var - 2 * m - p

    def _solve(self, L: float) -> TVLPResult:
        lt = L / self.sigma**2
        if self._model is None:
            self._model = (_HighsModel if self.solver.startswith("highs") else _ClarabelModel)(
                self, self.solver
            )
        g, status = self._model.solve(lt)
        p = self.grid[0] * self.grid[1]
        g = g[:p].reshape(self.grid)
        dg = difference_matrix(self.grid, self.boundary) @ g.ravel()
        return TVLPResult(g, float(np.abs(dg).sum()), L, status)


def _fail(status: str, solver: str) -> RuntimeError:
    return RuntimeError(
        f"LEG-TV LP solver {solver!r} returned status {status!r}; try a larger K_L / L or "
        f"another solver (one of {SOLVERS[1:]})"
    )


_HIGHS_BANNER_SHOWN = False


def _new_highs() -> Any:
    """A new ``highspy.Highs`` instance, without the copyright banner on stdout.

    HiGHS prints the banner on its first construction, before any option can be set; that one
    construction runs with file descriptor 1 pointed at /dev/null.
    """
    import highspy

    global _HIGHS_BANNER_SHOWN
    if _HIGHS_BANNER_SHOWN:
        return highspy.Highs()
    _HIGHS_BANNER_SHOWN = True
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no real stdout: nothing to protect
        return highspy.Highs()
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            return highspy.Highs()
    finally:
        os.dup2(saved, 1)
        os.close(saved)


class _HighsModel:
    """HiGHS (highspy) model; changing L only changes row bounds, so the basis is reused."""

    def __init__(self, problem: LegTVProblem, solver: str) -> None:
        import highspy

        a, cost, col_lo, fixed_lo, fixed_hi, center, _ = problem._assemble()
        self.n_fixed = fixed_lo.size
        self.center = center
        h = _new_highs()
        h.setOptionValue("output_flag", False)
        if solver == "highs-ds":
            h.setOptionValue("solver", "simplex")
            h.setOptionValue("simplex_strategy", 1)
        else:
            h.setOptionValue("solver", "ipm")
        inf = highspy.kHighsInf
        lp = highspy.HighsLp()
        lp.num_col_, lp.num_row_ = a.shape[1], a.shape[0]
        lp.col_cost_ = cost
        lp.col_lower_ = np.where(np.isinf(col_lo), -inf, col_lo)
        lp.col_upper_ = np.full(a.shape[1], inf)
        lp.row_lower_ = np.concatenate([fixed_lo, center])
        lp.row_upper_ = np.concatenate([fixed_hi, center])
        lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
        lp.a_matrix_.start_ = a.indptr
        lp.a_matrix_.index_ = a.indices
        lp.a_matrix_.value_ = a.data
        h.passModel(lp)
        self.h, self.solver = h, solver
        self.rows = np.arange(self.n_fixed, a.shape[0], dtype=np.int32)

    def solve(self, lt: float) -> tuple[np.ndarray, str]:
        import highspy

        h = self.h
        h.changeRowsBounds(self.rows.size, self.rows, self.center - lt, self.center + lt)
        h.run()
        status = h.getModelStatus()
        text = h.modelStatusToString(status)
        if status != highspy.HighsModelStatus.kOptimal:
            raise _fail(text, self.solver)
        return np.asarray(h.getSolution().col_value), text


class _ClarabelModel:
    """cvxpy + CLARABEL on the same sparse form; L is a parameter (DPP), so re-solves reuse it."""

    def __init__(self, problem: LegTVProblem, solver: str) -> None:
        import cvxpy as cp

        a, cost, col_lo, fixed_lo, _, center, _ = problem._assemble()
        n = a.shape[1]
        x = cp.Variable(n)
        self.lt = cp.Parameter(nonneg=True)
        nf = fixed_lo.size
        a_fixed, a_var = a[:nf], a[nf:]
        bounded = np.flatnonzero(np.isfinite(col_lo))
        cons = [
            a_fixed @ x == fixed_lo,
            cp.abs(a_var @ x - center) <= self.lt,
            x[bounded] >= 0,
        ]
        self.prob = cp.Problem(cp.Minimize(cost @ x), cons)
        self.x, self.solver = x, solver

    def solve(self, lt: float) -> tuple[np.ndarray, str]:
        import cvxpy as cp

        self.lt.value = lt
        try:
            self.prob.solve(solver=cp.CLARABEL)
        except cp.SolverError as err:
            raise _fail(str(err), self.solver) from err
        if self.prob.status != cp.OPTIMAL:
            raise _fail(self.prob.status, self.solver)
        return np.asarray(self.x.value), self.prob.status


def dense_paper_lp(
    ybar: np.ndarray,
    sigma: float,
    L: float,
    *,
    boundary: Boundary = "padded",
    covariance: Covariance = "tv",
    solver: str = "HIGHS",
) -> TVLPResult:
    """Reference: Eq. 4 as the paper (and the authors' code) states it, with dense matrices.

    ``D^{+T}`` from a dense ``pinv`` and ``Sigma`` (``sigma^2 (D^T D + 1 1^T/P)`` or
    ``sigma^2 I``) materialised, unscaled, solved by cvxpy. For ``boundary="none"`` the mean is
    fixed as in the fast path. Slow (``benchmarks/bench_leg_lp.py`` times it at 28 x 28 against
    :class:`LegTVProblem`); for tests and benchmarks only.
    """
    import cvxpy as cp

    ybar = np.asarray(ybar, dtype=np.float64)
    grid = ybar.shape
    d = difference_matrix(grid, boundary).toarray()
    p = d.shape[1]
    if covariance == "tv":
        cov = sigma**2 * (d.T @ d + np.full((p, p), 1.0 / p))
    else:
        cov = sigma**2 * np.eye(p)
    dpt = np.linalg.pinv(d).T
    g = cp.Variable(p)
    cons = [cp.norm_inf(dpt @ ybar.ravel() - (dpt @ cov) @ g) <= L]
    if boundary == "none":
        cons.append(cp.sum(g) == ybar.sum() / sigma**2)
    prob = cp.Problem(cp.Minimize(cp.norm1(d @ g)), cons)
    with warnings.catch_warnings():  # cvxpy's bound propagation multiplies inf by 0 here
        warnings.simplefilter("ignore", RuntimeWarning)
        prob.solve(solver=solver)
    if prob.status != cp.OPTIMAL:
        raise _fail(prob.status, solver)
    gv = np.asarray(g.value).reshape(grid)
    return TVLPResult(gv, float(np.abs(d @ gv.ravel()).sum()), L, prob.status)


def constraint_violation(
    g: np.ndarray, ybar: np.ndarray, sigma: float, L: float, boundary: Boundary = "padded"
) -> float:
    """``max(0, ||D^{+T}(ybar - Sigma g)||_inf - L)`` for the TV covariance (feasibility check)."""
    grid = ybar.shape
    d = difference_matrix(grid, boundary)
    p = grid[0] * grid[1]
    sigma_g = sigma**2 * ((d.T @ (d @ g.ravel())) + np.full(p, g.sum() / p))
    r = pinv_transpose_apply(ybar - sigma_g.reshape(grid), boundary)
    return max(0.0, float(np.abs(r).max()) - L)
